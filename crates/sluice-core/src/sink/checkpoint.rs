//! Checkpoint sinks: their writes join the batch's atomic checkpoint commit.

use std::sync::Arc;

use crate::exec::catch_panic;
use crate::scope::BatchScope;
use crate::stream::{run_stage, Node, Output};
use crate::{Batch, BatchInfo, BoxError, DStream, Error, Result, WriteSet};

/// An output whose effects are staged as checkpoint writes: they are
/// committed in the same atomic write as the batch's next offsets, so they
/// happen exactly once even across crashes.
pub trait CheckpointSink<T>: Send + Sync + 'static {
    /// Checkpoint families this sink writes to; created before the first
    /// batch.
    fn families(&self) -> Vec<String>;

    /// Stages the writes for one batch.
    fn write(
        &self,
        batch: Batch<T>,
        info: &BatchInfo,
        writes: &mut WriteSet,
    ) -> Result<(), BoxError>;
}

/// Adds each `(key, delta)` of a batch to the counter `key` in a checkpoint
/// family: running totals that are exact across restarts.
#[derive(Debug, Clone)]
pub struct CounterSink {
    family: String,
}

impl CounterSink {
    /// Counters kept in `family`.
    pub fn new(family: impl Into<String>) -> Self {
        Self {
            family: family.into(),
        }
    }
}

impl<K: AsRef<[u8]> + Send + 'static> CheckpointSink<(K, i64)> for CounterSink {
    fn families(&self) -> Vec<String> {
        vec![self.family.clone()]
    }

    fn write(
        &self,
        batch: Batch<(K, i64)>,
        _info: &BatchInfo,
        writes: &mut WriteSet,
    ) -> Result<(), BoxError> {
        for (key, delta) in batch {
            writes.add(&self.family, key.as_ref(), delta);
        }
        Ok(())
    }
}

/// Stores the latest value of each key of a batch in a checkpoint family.
#[derive(Debug, Clone)]
pub struct LatestValueSink {
    family: String,
}

impl LatestValueSink {
    /// Values kept in `family`.
    pub fn new(family: impl Into<String>) -> Self {
        Self {
            family: family.into(),
        }
    }
}

impl<K, V> CheckpointSink<(K, V)> for LatestValueSink
where
    K: AsRef<[u8]> + Send + 'static,
    V: AsRef<[u8]> + Send + 'static,
{
    fn families(&self) -> Vec<String> {
        vec![self.family.clone()]
    }

    fn write(
        &self,
        batch: Batch<(K, V)>,
        _info: &BatchInfo,
        writes: &mut WriteSet,
    ) -> Result<(), BoxError> {
        for (key, value) in batch {
            writes.put(&self.family, key.as_ref(), value.as_ref());
        }
        Ok(())
    }
}

struct SinkOutput<T, S> {
    node: Arc<dyn Node<T>>,
    sink: S,
}

impl<T: Send + 'static, S: CheckpointSink<T>> Output for SinkOutput<T, S> {
    fn run(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let partitions = run_stage(scope, &self.node, "sink", |_, values| values.collect())?;
        let mut staged = WriteSet::new();
        catch_panic(|| {
            self.sink
                .write(Batch::new(partitions), &scope.info, &mut staged)
        })?
        .map_err(|e| Error::user("sink", e))?;
        scope
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(&mut staged);
        Ok(())
    }
}

impl<T: Send + 'static> DStream<T> {
    /// Writes every batch through the checkpoint sink `sink`, atomically
    /// with the batch's offsets.
    ///
    /// Fails with [`Error::RegisteredAfterStart`] once the job started:
    /// register every output before it starts, so its families exist
    /// before the first commit.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// use sluice_core::LatestValueSink;
    ///
    /// graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|line| (line.clone(), line))
    ///     .checkpoint_sink(LatestValueSink::new("latest"))?;
    /// assert_eq!(graph.families(), ["latest"]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    #[must_use = "an output registered after the job started is refused with this error"]
    pub fn checkpoint_sink<S: CheckpointSink<T>>(&self, sink: S) -> Result<()> {
        let families = sink.families();
        self.register_sink(|| format!("sink to {}", quoted(&families)), sink)
    }

    fn register_sink<S: CheckpointSink<T>>(
        &self,
        name: impl FnOnce() -> String,
        sink: S,
    ) -> Result<()> {
        let families = sink.families();
        let output = SinkOutput {
            node: Arc::clone(&self.node),
            sink,
        };
        self.graph
            .register(name, Arc::new(output), &self.lineage, &families)
    }
}

/// `"a", "b"`: family names as an error quotes them.
fn quoted(families: &[String]) -> String {
    let names: Vec<String> = families.iter().map(|f| format!("{f:?}")).collect();
    names.join(", ")
}

impl<K: AsRef<[u8]> + Send + 'static> DStream<(K, i64)> {
    /// Adds each `(key, count)` to a running total kept in the checkpoint
    /// family `family` (see [`CounterSink`]).
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// # let words = graph.input().values_utf8();
    /// words.count_by_value().save_counts("word_counts")?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    ///
    /// Fails with [`Error::RegisteredAfterStart`] once the job started.
    #[must_use = "an output registered after the job started is refused with this error"]
    pub fn save_counts(&self, family: &str) -> Result<()> {
        self.register_sink(
            || format!("save_counts({family:?})"),
            CounterSink::new(family),
        )
    }
}
