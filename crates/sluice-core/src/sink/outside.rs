//! Outside sinks: results written to another system (a Kafka topic) around
//! the batch's checkpoint commit.

use std::sync::Arc;
use std::time::Duration;

use crate::exec::catch_panic;
use crate::scope::BatchScope;
use crate::stream::{run_stage, Node, Output};
use crate::{Batch, BatchInfo, BoxError, DStream, DeadLetter, Error, Result};

/// The side of an outside sink the driver sees: one transaction per batch,
/// committed before the checkpoint commit, and a check at start for the
/// batch a crash may have left between the two commits.
///
/// For each batch the driver calls [`begin`](OutsideSink::begin), runs the
/// batch (the typed [`Sink::write`] receives the sink's values), then
/// [`commit`](OutsideSink::commit), then commits the checkpoint. A batch
/// that fails anywhere before its checkpoint commit gets
/// [`abort`](OutsideSink::abort). Each call happens on the driver thread,
/// one batch at a time.
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
    /// Writes a batch's values, after [`OutsideSink::begin`] and before
    /// [`OutsideSink::commit`]. It is called once per batch with all the
    /// values the batch computed for this sink, on the driver thread: a
    /// task retry can never write a partition twice.
    fn write(&self, batch: Batch<T>, info: &BatchInfo) -> Result<(), BoxError>;
}

struct SinkOutput<T, S> {
    node: Arc<dyn Node<T>>,
    sink: Arc<S>,
}

impl<T: Send + 'static, S: Sink<T>> Output for SinkOutput<T, S> {
    fn run(&self, scope: &Arc<BatchScope>) -> Result<()> {
        // Collected first, so the sink sees only values of tasks that
        // succeeded, each once.
        let partitions = run_stage(scope, &self.node, "sink", |_, values| values.collect())?;
        let context = || format!("sink {:?}", self.sink.name());
        catch_panic(|| self.sink.write(Batch::new(partitions), &scope.info))?.map_err(|e| {
            Error::Sink {
                sink: context(),
                source: e,
            }
        })
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
        self.graph.register_outside(sink, Arc::new(output))
    }
}
