//! How the tasks of a stage are run: the [`Executor`] trait and a
//! sequential [`InlineExecutor`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::{Error, Result};

/// The body of a stage: called once per task with the task's partition
/// index. Retrying a task means calling it again with the same index.
pub type TaskFn = Arc<dyn Fn(usize) -> Result<()> + Send + Sync>;

/// Runs the tasks of one stage to completion.
///
/// The runtime's worker pool implements this with threads and per-task
/// retries; [`InlineExecutor`] runs tasks one after another on the calling
/// thread.
pub trait Executor: Send + Sync {
    /// How many tasks can run at once. A graph without
    /// [`shuffle_partitions`](crate::StreamGraph::set_shuffle_partitions)
    /// also uses it as the number of reduce partitions of a shuffle.
    fn parallelism(&self) -> usize;

    /// Runs `task(0..tasks)`, returning once every task finished. Fails with
    /// the first task that failed on all of its attempts.
    fn run(&self, stage: &str, tasks: usize, task: TaskFn) -> Result<()>;
}

/// Runs every task on the calling thread, once, in index order.
///
/// Useful for tests and for measuring the single-threaded cost of a job.
#[derive(Debug, Default, Clone, Copy)]
pub struct InlineExecutor;

impl Executor for InlineExecutor {
    fn parallelism(&self) -> usize {
        1
    }

    fn run(&self, stage: &str, tasks: usize, task: TaskFn) -> Result<()> {
        for index in 0..tasks {
            run_task(&task, index).map_err(|e| Error::Task {
                stage: stage.to_owned(),
                task: index,
                attempts: 1,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

/// Runs one attempt of a task, turning a panic in user code into an error.
pub fn run_task(task: &TaskFn, index: usize) -> Result<()> {
    catch_panic(|| task(index))?
}

/// Calls user code that runs outside any task (`foreach_batch`, sinks,
/// `transform`), turning its panic into an error that fails the batch
/// instead of unwinding through the driver.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| Error::Panic(panic_message(&panic)))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
