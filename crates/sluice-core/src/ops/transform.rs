//! Whole-batch operators: `transform`, `repartition` and `count`.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::materialize::Materialized;
use crate::exec::catch_panic;
use crate::stream::{run_stage, run_stage_with};
use crate::{Batch, BatchInfo, DStream, Error, MAX_SHUFFLE_PARTITIONS};

impl<T: Send + 'static> DStream<T> {
    /// Applies `f` to each batch as a whole — for anything the element
    /// operators cannot express (sorting a batch, joining it with a lookup
    /// table loaded per batch, dropping it by batch time…).
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let newest_first = graph.input().transform(|batch, _info| {
    ///     let mut records: Vec<_> = batch.into_iter().collect();
    ///     records.sort_by_key(|r| std::cmp::Reverse(r.timestamp));
    ///     sluice_core::Batch::new(vec![records])
    /// });
    /// ```
    pub fn transform<U, F>(&self, f: F) -> DStream<U>
    where
        U: Send + 'static,
        F: Fn(Batch<T>, &BatchInfo) -> Batch<U> + Send + Sync + 'static,
    {
        let parent = Arc::clone(&self.node);
        self.derive(Materialized::new(move |scope| {
            let partitions = run_stage(scope, &parent, "transform", |_, values| values.collect())?;
            Ok(catch_panic(|| f(Batch::new(partitions), &scope.info))?.into_partitions())
        }))
    }

    /// Redistributes the values evenly over `partitions` partitions, so the
    /// operators after it run with that many tasks (for instance more tasks
    /// than Kafka partitions for an expensive per-record step). Zero counts
    /// as one; a batch with more than [`MAX_SHUFFLE_PARTITIONS`] fails.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let spread = graph.input().repartition(8);
    /// ```
    pub fn repartition(&self, partitions: usize) -> DStream<T> {
        let parent = Arc::clone(&self.node);
        let partitions = partitions.max(1);
        self.derive(Materialized::new(move |scope| {
            if partitions > MAX_SHUFFLE_PARTITIONS {
                return Err(Error::user(
                    "repartition",
                    format!(
                        "{partitions} partitions is more than the {MAX_SHUFFLE_PARTITIONS} \
                         allowed"
                    ),
                ));
            }
            let inputs: Vec<Vec<T>> =
                run_stage(scope, &parent, "repartition", |_, values| values.collect())?;
            let mut outputs: Vec<Vec<T>> = (0..partitions).map(|_| Vec::new()).collect();
            for (i, value) in inputs.into_iter().flatten().enumerate() {
                outputs[i % partitions].push(value);
            }
            Ok(outputs)
        }))
    }

    /// A stream with one value per batch: the number of values in it.
    /// On the input, that is the records read, those a later operator
    /// rejects included; after `values_utf8` (or any operator that rejects
    /// values), only the values it let through. The values are only
    /// looked at (lent, not handed over): counting the input, or
    /// `values_utf8` and `filter`s over it, makes no owned value per
    /// record.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// graph.input().count().print(1)?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn count(&self) -> DStream<i64> {
        let parent = Arc::clone(&self.node);
        self.derive(Materialized::new(move |scope| {
            let counts = run_stage_with(scope, &parent, "count", |parent, scope, task, part| {
                let mut count = 0;
                parent.lend(scope, task, part, &mut |_| {
                    count += 1;
                    ControlFlow::Continue(())
                })?;
                Ok(count)
            })?;
            Ok(vec![vec![counts.into_iter().sum()]])
        }))
    }
}
