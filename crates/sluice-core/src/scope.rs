//! Everything one batch's computation shares: its identity, input,
//! executor, staged writes and materialised stage outputs.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{BatchInfo, Error, Executor, InputReader, Result, WriteSet};

/// State of one batch while it is computed. Dropped when the batch ends, so
/// nothing leaks from one batch into the next.
pub(crate) struct BatchScope {
    pub(crate) info: BatchInfo,
    pub(crate) input: Arc<dyn InputReader>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) writes: Mutex<WriteSet>,
    cancelled: Arc<AtomicBool>,
    stages: Mutex<HashMap<usize, Arc<dyn Any + Send + Sync>>>,
}

impl BatchScope {
    pub(crate) fn new(
        info: BatchInfo,
        input: Arc<dyn InputReader>,
        executor: Arc<dyn Executor>,
        cancelled: Arc<AtomicBool>,
    ) -> Self {
        Self {
            info,
            input,
            executor,
            writes: Mutex::new(WriteSet::new()),
            cancelled,
            stages: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn check_cancelled(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled {
                time: self.info.time,
            });
        }
        Ok(())
    }

    /// The materialised output of stage `id`, if it already ran this batch.
    pub(crate) fn stage<T: Send + 'static>(&self, id: usize) -> Option<Arc<StageOutput<T>>> {
        let stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        stages.get(&id).map(|s| {
            Arc::clone(s)
                .downcast::<StageOutput<T>>()
                .expect("stage id reused for another type")
        })
    }

    pub(crate) fn set_stage<T: Send + 'static>(&self, id: usize, partitions: Vec<Vec<T>>) {
        let output: Arc<dyn Any + Send + Sync> = Arc::new(StageOutput::new(partitions));
        self.stages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, output);
    }

    pub(crate) fn stage_partitions<T: Send + 'static>(&self, id: usize) -> usize {
        self.stage::<T>(id).map_or(0, |s| s.len())
    }
}

/// Partitions materialised by a stage (a shuffle, a repartition, a
/// transform). Each partition is handed out once: the task that reads it
/// takes ownership, so no element is copied.
pub(crate) struct StageOutput<T> {
    partitions: Vec<Mutex<Option<Vec<T>>>>,
}

impl<T> StageOutput<T> {
    fn new(partitions: Vec<Vec<T>>) -> Self {
        Self {
            partitions: partitions
                .into_iter()
                .map(|p| Mutex::new(Some(p)))
                .collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Takes partition `index`. A second take (a retry after a failure
    /// downstream of the stage) finds it gone: the batch must be recomputed.
    pub(crate) fn take(&self, index: usize) -> Result<Vec<T>> {
        self.partitions[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(Error::ShuffleLost { partition: index })
    }
}

/// Per-task state: where a fallible operator deep inside a fused iterator
/// chain leaves its error, since the iterator itself yields plain values.
#[derive(Default)]
pub(crate) struct TaskContext {
    failure: RefCell<Option<Error>>,
}

impl TaskContext {
    pub(crate) fn fail(&self, error: Error) {
        self.failure.borrow_mut().get_or_insert(error);
    }

    pub(crate) fn into_result(self) -> Result<()> {
        self.failure.into_inner().map_or(Ok(()), Err)
    }
}
