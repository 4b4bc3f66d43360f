//! The worker pool: a fixed set of threads fed through a crossbeam channel,
//! running the tasks of one stage at a time and retrying failed tasks.

use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};
use sluice_core::{run_task, Error, Executor, Result, TaskFn};

use crate::error::config;

struct Job {
    task: TaskFn,
    index: usize,
    done: Sender<(usize, Result<()>)>,
}

/// The threaded [`Executor`] a `StreamingContext` runs its tasks on:
/// `workers` threads; a task that fails is run again, from the same
/// partition, up to `task_attempts` times in all.
///
/// Public so a [`StreamGraph`](sluice_core::StreamGraph) can be run on
/// threads without a context, as benchmarks do. The threads stop when the
/// pool is dropped.
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use sluice_core::{BatchInfo, MemoryInput, StreamGraph};
/// use sluice_runtime::WorkerPool;
///
/// let graph = StreamGraph::new();
/// graph.input().values_utf8().count_by_value().save_counts("words")?;
/// let input = MemoryInput::new().with_partition("t", 0, ["a", "b", "a"]);
/// let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
/// let pool = Arc::new(WorkerPool::new(2, 1)?);
/// let output = graph.run_batch(info, Arc::new(input), pool).unwrap();
/// assert_eq!(output.writes.len(), 2);
///
/// // A pool needs a thread to run anything.
/// assert!(WorkerPool::new(0, 1).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WorkerPool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    task_attempts: u32,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.threads.len())
            .field("task_attempts", &self.task_attempts)
            .finish()
    }
}

impl WorkerPool {
    /// Starts `workers` threads (named `sluice-worker-N`); `task_attempts`
    /// is raised to at least 1.
    ///
    /// Fails with [`Error::Config`](crate::Error::Config) when `workers` is
    /// zero (no thread would run the tasks), and with
    /// [`Error::Io`](crate::Error::Io) when a thread cannot be spawned.
    pub fn new(workers: usize, task_attempts: u32) -> crate::Result<Self> {
        if workers == 0 {
            return Err(config(
                "workers",
                "must be at least 1: a pool without threads runs no task",
            ));
        }
        let (jobs, queue) = unbounded::<Job>();
        let threads = (0..workers)
            .map(|i| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-worker-{i}"))
                    .spawn(move || work(&queue))
            })
            .collect::<std::io::Result<_>>()
            .map_err(|source| crate::Error::Io {
                what: "start the worker threads",
                source,
            })?;
        Ok(Self {
            jobs: Some(jobs),
            threads,
            task_attempts: task_attempts.max(1),
        })
    }

    fn submit(&self, job: Job) {
        self.jobs
            .as_ref()
            .expect("pool is running")
            .send(job)
            .expect("workers live as long as the pool");
    }
}

fn work(queue: &Receiver<Job>) {
    for job in queue {
        let result = run_task(&job.task, job.index);
        // The stage may have given up on its other tasks already.
        let _ = job.done.send((job.index, result));
    }
}

/// Errors a retry cannot fix (the same attempt would fail the same way),
/// or must not try: a sink's write may have sent part of the values.
fn retryable(error: &Error) -> bool {
    !matches!(
        error,
        Error::Cancelled { .. } | Error::ShuffleLost { .. } | Error::Sink { .. }
    )
}

impl Executor for WorkerPool {
    fn parallelism(&self) -> usize {
        self.threads.len()
    }

    fn run(&self, stage: &str, tasks: usize, task: TaskFn) -> Result<()> {
        let (done, finished) = unbounded();
        for index in 0..tasks {
            self.submit(Job {
                task: task.clone(),
                index,
                done: done.clone(),
            });
        }
        let mut attempts = vec![1u32; tasks];
        let mut pending = tasks;
        let mut failure = None;
        while pending > 0 {
            let (index, result) = finished.recv().expect("a sender is held here");
            match result {
                Ok(()) => pending -= 1,
                Err(error)
                    if failure.is_none()
                        && retryable(&error)
                        && attempts[index] < self.task_attempts =>
                {
                    attempts[index] += 1;
                    tracing::warn!(stage, task = index, attempt = attempts[index], %error, "task failed; retrying it from the same range");
                    self.submit(Job {
                        task: task.clone(),
                        index,
                        done: done.clone(),
                    });
                }
                Err(error) => {
                    pending -= 1;
                    failure.get_or_insert(Error::Task {
                        stage: stage.to_owned(),
                        task: index,
                        attempts: attempts[index],
                        source: Box::new(error),
                    });
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn failed_task_is_retried_until_it_succeeds() {
        let pool = WorkerPool::new(2, 3).unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&calls);
        let task: TaskFn = Arc::new(move |index| {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            if index == 1 && call < 3 {
                return Err(Error::Panic("poison".into()));
            }
            Ok(())
        });
        pool.run("test", 2, task).unwrap();
        assert!(calls.load(Ordering::SeqCst) >= 3);
    }

    /// A task retried after a panic reads its range from the input again:
    /// the batch counts those records twice in `records_fetched`, once in
    /// `records_read` and in its results.
    #[test]
    fn a_retried_task_fetches_its_range_again_and_counts_it_once() {
        use sluice_core::{BatchInfo, MemoryInput, StreamGraph};
        use std::sync::atomic::AtomicBool;
        use std::sync::Mutex;
        use std::time::SystemTime;

        let graph = StreamGraph::new();
        let failed = Arc::new(AtomicBool::new(false));
        let first_attempt = Arc::clone(&failed);
        let counted = Arc::new(Mutex::new(Vec::new()));
        let sums = Arc::clone(&counted);
        graph
            .input()
            .values_utf8()
            .map(move |line| {
                if line == "boom" && !first_attempt.swap(true, Ordering::SeqCst) {
                    panic!("the first attempt of the task of partition 1 fails");
                }
                line
            })
            .count()
            .foreach_batch(move |counts, _| {
                sums.lock().unwrap().push(counts.iter().sum::<i64>());
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        let input = MemoryInput::new()
            .with_partition("t", 0, ["a", "b", "c"])
            .with_partition("t", 1, ["d", "boom"]);
        let info = BatchInfo::new(1, SystemTime::UNIX_EPOCH, input.full_ranges());
        let pool: Arc<dyn Executor> = Arc::new(WorkerPool::new(2, 2).unwrap());
        let output = graph.run_batch(info, Arc::new(input), pool).unwrap();
        assert!(failed.load(Ordering::SeqCst), "the task failed once");
        assert_eq!(*counted.lock().unwrap(), [5]);
        assert_eq!(output.records_read, [3, 2]);
        assert_eq!(output.records_fetched, 3 + 2 * 2);
    }

    #[test]
    fn task_failing_every_attempt_fails_the_stage_with_attempt_count() {
        let pool = WorkerPool::new(2, 3).unwrap();
        let task: TaskFn = Arc::new(|index| match index {
            0 => Ok(()),
            _ => panic!("always broken"),
        });
        match pool.run("stage-x", 2, task).unwrap_err() {
            Error::Task {
                stage,
                task,
                attempts,
                source,
            } => {
                assert_eq!((stage.as_str(), task, attempts), ("stage-x", 1, 3));
                assert!(source.to_string().contains("always broken"));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn pool_without_workers_is_refused_instead_of_panicking_on_its_first_task() {
        match WorkerPool::new(0, 1) {
            Err(crate::Error::Config { setting, reason }) => {
                assert_eq!(setting, "workers");
                assert!(reason.contains("at least 1"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn tasks_run_on_several_threads() {
        let pool = WorkerPool::new(2, 1).unwrap();
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        // Task 0 waits for task 1: only possible with two threads at once.
        let task: TaskFn = Arc::new(move |index| {
            if index == 0 {
                rx.recv_timeout(std::time::Duration::from_secs(30))
                    .map_err(|e| Error::Panic(e.to_string()))
            } else {
                tx.send(()).map_err(|e| Error::Panic(e.to_string()))
            }
        });
        pool.run("pair", 2, task).unwrap();
    }
}
