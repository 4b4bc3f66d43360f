//! Output operations: what a job does with each batch.

use std::fmt::Debug;
use std::sync::Arc;

use crate::exec::catch_panic;
use crate::scope::BatchScope;
use crate::stream::{run_stage, Node, Output};
use crate::{Batch, BatchInfo, BoxError, DStream, Error, Result};

struct ForeachBatch<T, F> {
    node: Arc<dyn Node<T>>,
    f: F,
}

impl<T, E, F> Output for ForeachBatch<T, F>
where
    T: Send + 'static,
    E: Into<BoxError>,
    F: Fn(Batch<T>, &BatchInfo) -> Result<(), E> + Send + Sync,
{
    fn run(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let partitions = run_stage(scope, &self.node, "foreach_batch", |_, values| {
            values.collect()
        })?;
        catch_panic(|| (self.f)(Batch::new(partitions), &scope.info))?
            .map_err(|e| Error::user("foreach_batch", e))
    }
}

impl<T: Send + 'static> DStream<T> {
    /// Runs `f` on every batch, on the driver, with the batch's data and its
    /// [`BatchInfo`] (id, time, offset ranges).
    ///
    /// An error fails the batch: nothing of it is committed and it is not
    /// counted as processed. Side effects `f` has on outside systems are
    /// at-least-once — a batch that fails after `f` ran runs `f` again —
    /// so key them with [`BatchInfo::idempotency_key`].
    ///
    /// Fails with [`Error::RegisteredAfterStart`] once the job started:
    /// register every output before it starts.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// graph.input().foreach_batch(|batch, info| {
    ///     println!("batch {} read {} records from {} ranges", info.id, batch.len(), info.ranges.len());
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    #[must_use = "an output registered after the job started is refused with this error"]
    pub fn foreach_batch<E, F>(&self, f: F) -> Result<()>
    where
        E: Into<BoxError>,
        F: Fn(Batch<T>, &BatchInfo) -> Result<(), E> + Send + Sync + 'static,
    {
        self.register_foreach("foreach_batch", f)
    }

    fn register_foreach<E, F>(&self, name: &'static str, f: F) -> Result<()>
    where
        E: Into<BoxError>,
        F: Fn(Batch<T>, &BatchInfo) -> Result<(), E> + Send + Sync + 'static,
    {
        let output = ForeachBatch {
            node: Arc::clone(&self.node),
            f,
        };
        self.graph
            .register(|| name.to_owned(), Arc::new(output), &self.lineage, &[])
    }
}

impl<T: Debug + Send + 'static> DStream<T> {
    /// Prints the first `n` values of every batch to standard output, under
    /// a header with the batch id and time.
    ///
    /// Fails with [`Error::RegisteredAfterStart`] once the job started.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// graph.input().values_utf8().print(10)?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    #[must_use = "an output registered after the job started is refused with this error"]
    pub fn print(&self, n: usize) -> Result<()> {
        self.register_foreach("print", move |batch, info| {
            let total = batch.len();
            let mut out = format!(
                "-------------------------------------------\nBatch {} at {} ms ({total} values)\n-------------------------------------------\n",
                info.id,
                info.time_ms()
            );
            for value in batch.iter().take(n) {
                out.push_str(&format!("{value:?}\n"));
            }
            if total > n {
                out.push_str("...\n");
            }
            print!("{out}");
            Ok::<_, BoxError>(())
        })
    }
}
