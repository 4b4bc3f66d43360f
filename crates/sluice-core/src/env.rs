//! [`BatchEnv`]: everything a batch runs with besides the job's graph.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::state::{MemoryState, StateStore};
use crate::{BatchInfo, Executor, InputReader};

/// What one batch runs with: its identity and ranges, where its records
/// come from, where its tasks run, the state earlier batches committed,
/// and a flag that cancels it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use sluice_core::state::MemoryState;
/// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
///
/// let graph = StreamGraph::new();
/// graph.input().values_utf8().print(3)?;
/// let input = MemoryInput::new().with_partition("t", 0, ["a", "b"]);
/// let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
/// let state = Arc::new(MemoryState::new());
/// let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
///     .with_state(state.clone());
/// let output = graph.run(env)?;
/// state.apply(&output.writes); // commit the batch's state changes
/// # Ok::<(), sluice_core::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct BatchEnv {
    /// The batch's id, time and offset ranges.
    pub info: BatchInfo,
    /// Reads the records of the ranges.
    pub input: Arc<dyn InputReader>,
    /// Runs the batch's tasks.
    pub executor: Arc<dyn Executor>,
    /// The keyed state committed by earlier batches.
    pub state: Arc<dyn StateStore>,
    /// Set it to fail the batch at its next task boundary.
    pub cancelled: Arc<AtomicBool>,
}

impl BatchEnv {
    /// A batch reading `input` on `executor`, with empty state and never
    /// cancelled.
    pub fn new(info: BatchInfo, input: Arc<dyn InputReader>, executor: Arc<dyn Executor>) -> Self {
        Self {
            info,
            input,
            executor,
            state: Arc::new(MemoryState::new()),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reads keyed state from `state`.
    pub fn with_state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = state;
        self
    }

    /// Cancels the batch once `cancelled` is set.
    pub fn with_cancel(mut self, cancelled: Arc<AtomicBool>) -> Self {
        self.cancelled = cancelled;
        self
    }
}

impl std::fmt::Debug for BatchEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEnv")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
