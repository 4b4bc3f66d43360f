//! Outside sinks: results written to another system (a Kafka topic) around
//! the batch's checkpoint commit.

use std::sync::Arc;
use std::time::Duration;

use crate::exec::catch_panic;
use crate::scope::BatchScope;
use crate::stream::{run_stage_finishing, Node, Output};
use crate::{BatchInfo, BoxError, DStream, DeadLetter, Error, Result};

/// The side of an outside sink the driver sees: one transaction per batch,
/// committed before the checkpoint commit, and a check at start for the
/// batch a crash may have left between the two commits.
///
/// For each batch the driver calls [`begin`](OutsideSink::begin), runs the
/// batch (the typed [`Sink::write`] receives the sink's values, partition
/// by partition, on the worker threads), then
/// [`commit`](OutsideSink::commit), then commits the checkpoint. A batch
/// that fails anywhere before its checkpoint commit gets
/// [`abort`](OutsideSink::abort). These calls happen on the driver thread,
/// one batch at a time, never while a `write` runs.
///
/// Exactly-once rests on two properties of sluice's batches: a batch redone
/// after a crash has the same [`BatchInfo::id`], [`BatchInfo::time`] and
/// ranges (the write-ahead plan), so it produces the same values; and
/// [`recover`](OutsideSink::recover) tells whether the outside system
/// already holds that batch's output, so it is not written twice.
pub trait OutsideSink: Send + Sync {
    /// The sink's name: unique in the job, and stable across restarts,
    /// because the sink finds its progress by it.
    fn name(&self) -> &str;

    /// Called once when the job starts, before its first batch.
    /// [`SinkStart::pending`] is the batch planned before a restart whose
    /// checkpoint commit did not happen, if any; it is redone first.
    /// Returns true when the sink already committed that batch's output
    /// (the crash fell between the two commits): the sink must then drop
    /// what that batch writes, since the batch is redone for the checkpoint
    /// only.
    ///
    /// This is also where a sink fences writers of an earlier run.
    fn recover(&self, start: &SinkStart<'_>) -> Result<bool, BoxError>;

    /// Starts `batch`'s output (a transaction).
    fn begin(&self, batch: &BatchInfo) -> Result<(), BoxError>;

    /// Makes `batch`'s output durable and visible, before the checkpoint
    /// commit. After an error the batch fails; the sink must have nothing
    /// of it visible, or (after a commit that did happen) skip its writes
    /// when the same batch is redone.
    fn commit(&self, batch: &BatchInfo) -> Result<(), BoxError>;

    /// The batch's dead letters (records set aside under
    /// [`PoisonPolicy::DeadLetter`](crate::PoisonPolicy::DeadLetter)),
    /// after every output ran and before [`commit`](OutsideSink::commit):
    /// a sink that routes them to its system (a Kafka sink with a
    /// dead-letter topic) writes them in the batch's transaction. They are
    /// staged in the checkpoint's dead-letter family all the same. The
    /// default ignores them.
    fn write_dead_letters(
        &self,
        letters: &[DeadLetter],
        batch: &BatchInfo,
    ) -> Result<(), BoxError> {
        let _ = (letters, batch);
        Ok(())
    }

    /// Drops whatever `batch` wrote since [`begin`](OutsideSink::begin).
    /// Best effort: a failure is the sink's to log.
    fn abort(&self, batch: &BatchInfo);
}

/// What a job tells its outside sinks when it starts.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SinkStart<'a> {
    /// The job's app id: with the sink's name, it names the sink's
    /// transactions and progress.
    pub app_id: &'a str,
    /// The job's batch interval, from which a sink sizes its transaction
    /// timeout.
    pub batch_interval: Duration,
    /// The batch planned before a restart whose checkpoint commit did not
    /// happen, redone first; `None` when the last planned batch committed.
    pub pending: Option<&'a BatchInfo>,
}

impl<'a> SinkStart<'a> {
    /// The start of job `app_id`.
    pub fn new(app_id: &'a str, batch_interval: Duration, pending: Option<&'a BatchInfo>) -> Self {
        Self {
            app_id,
            batch_interval,
            pending,
        }
    }
}

/// An outside sink taking values of type `T`.
pub trait Sink<T>: OutsideSink + 'static {
    /// Writes one partition's values of a batch, in order, after
    /// [`OutsideSink::begin`] and before [`OutsideSink::commit`].
    ///
    /// It is called on the worker thread that computed the partition, as
    /// soon as its task has succeeded, so the writes of different
    /// partitions may run at the same time, and while other partitions are
    /// still being read. It is called once for each partition with values
    /// (`partition` is its index in the batch's offset ranges): a task that
    /// failed and was retried writes only the values of the attempt that
    /// succeeded. An error (or a panic) here fails the batch without a
    /// retry of the task, since part of the values may have been written;
    /// the driver then calls [`OutsideSink::abort`].
    fn write(&self, values: Vec<T>, partition: usize, info: &BatchInfo) -> Result<(), BoxError>;
}

struct SinkOutput<T, S> {
    node: Arc<dyn Node<T>>,
    sink: Arc<S>,
}

impl<T: Send + 'static, S: Sink<T>> Output for SinkOutput<T, S> {
    fn run(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let sink = Arc::clone(&self.sink);
        let info = Arc::clone(scope);
        // Collected first, so the sink sees only values of tasks that
        // succeeded, each once.
        run_stage_finishing(
            scope,
            &self.node,
            "sink",
            |_, values| values.collect::<Vec<T>>(),
            move |part, values| {
                if values.is_empty() {
                    return Ok(());
                }
                let written = catch_panic(|| sink.write(values, part, &info.info))
                    .map_err(|panic| -> BoxError { panic.to_string().into() })
                    .and_then(|result| result);
                written.map_err(|source| Error::Sink {
                    sink: format!("sink {:?}", sink.name()),
                    source,
                })
            },
        )
    }
}

impl<T: Send + 'static> DStream<T> {
    /// Writes every batch to the outside sink `sink` (for example a Kafka
    /// topic), in one transaction per batch committed just before the
    /// checkpoint commit; see [`OutsideSink`] for the protocol and what a
    /// crash between the two commits leaves.
    ///
    /// Fails with [`Error::RegisteredAfterStart`] once the job started, and
    /// with [`Error::SinkName`] when another sink of the job has the same
    /// name.
    #[must_use = "an output registered after the job started is refused with this error"]
    pub fn sink<S: Sink<T>>(&self, sink: S) -> Result<()> {
        let sink = Arc::new(sink);
        let output = SinkOutput {
            node: Arc::clone(&self.node),
            sink: Arc::clone(&sink),
        };
        self.graph
            .register_outside(sink, Arc::new(output), &self.lineage)
    }
}
