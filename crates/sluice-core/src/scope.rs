//! Everything one batch's computation shares: its identity, input,
//! executor, staged writes and materialised stage outputs.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{BatchInfo, Error, Executor, InputReader, Result, WriteSet};

/// State of one batch while it is computed. Dropped when the batch ends, so
/// nothing leaks from one batch into the next.
pub(crate) struct BatchScope {
    pub(crate) info: BatchInfo,
    pub(crate) input: Arc<dyn InputReader>,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) writes: Mutex<WriteSet>,
    records_read: Vec<AtomicU64>,
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
            input,
            executor,
            records_read: info.ranges.iter().map(|_| AtomicU64::new(0)).collect(),
            writes: Mutex::new(WriteSet::new()),
            cancelled,
            stages: Mutex::new(HashMap::new()),
            info,
        }
    }

    /// Notes how many records the source task of range `part` read. Stored,
    /// not added: a range read again (a retry, a second output) has the same
    /// records.
    pub(crate) fn note_records_read(&self, part: usize, records: usize) {
        self.records_read[part].store(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn records_read(&self) -> Vec<u64> {
        self.records_read
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
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

    /// Adds one computed copy of stage `id`'s partitions. Every consumer
    /// (an output, a side of a union) prepares the stage once and takes
    /// each partition once, so a stage read by several consumers in a batch
    /// is computed once per consumer.
    pub(crate) fn add_stage<T: Send + 'static>(&self, id: usize, partitions: Vec<Vec<T>>) {
        let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        match stages.get(&id) {
            Some(existing) => existing
                .downcast_ref::<StageOutput<T>>()
                .expect("stage id reused for another type")
                .add(partitions),
            None => {
                stages.insert(id, Arc::new(StageOutput::new(partitions)));
            }
        }
    }

    pub(crate) fn stage_partitions<T: Send + 'static>(&self, id: usize) -> usize {
        self.stage::<T>(id).map_or(0, |s| s.len())
    }
}

/// Partitions materialised by a stage (a shuffle, a repartition, a
/// transform), one copy per consumer. Each copy of a partition is handed
/// out once: the task that reads it takes ownership, so no element is
/// copied.
pub(crate) struct StageOutput<T> {
    partitions: Vec<Mutex<Vec<Vec<T>>>>,
}

impl<T> StageOutput<T> {
    fn new(partitions: Vec<Vec<T>>) -> Self {
        Self {
            partitions: partitions
                .into_iter()
                .map(|p| Mutex::new(vec![p]))
                .collect(),
        }
    }

    fn add(&self, partitions: Vec<Vec<T>>) {
        assert_eq!(
            partitions.len(),
            self.partitions.len(),
            "a stage computed twice for one batch gave different partition counts"
        );
        for (copies, partition) in self.partitions.iter().zip(partitions) {
            copies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(partition);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Takes a copy of partition `index`. A take beyond the copies prepared
    /// (a retry after a failure downstream of the stage) finds none left:
    /// the batch must be recomputed.
    pub(crate) fn take(&self, index: usize) -> Result<Vec<T>> {
        self.partitions[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
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
