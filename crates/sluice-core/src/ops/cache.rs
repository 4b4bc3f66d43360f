//! `cache`: a stream computed once a batch, however many outputs (or
//! sides of a union or join) use it.

use std::sync::Arc;

use crate::scope::{BatchScope, TaskContext};
use crate::shared_reads::InputUse;
use crate::stream::{next_stage_id, run_stage, Node, PartIter};
use crate::{DStream, Result};

/// Where a cached value came from: its record's offset and Kafka
/// timestamp, when its task still followed the source records.
type Position = Option<(i64, Option<i64>)>;

/// One partition of a cached stream, as computed.
struct Partition<T> {
    /// The topic and partition its values follow, if any.
    source: Option<(Arc<str>, i32)>,
    values: Vec<(T, Position)>,
}

struct Cached<T> {
    id: usize,
    parent: Arc<dyn Node<T>>,
}

impl<T: Clone + Send + Sync + 'static> Node<T> for Cached<T> {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        if scope.kept::<Vec<Partition<T>>>(self.id).is_some() {
            return Ok(()); // computed for an earlier user this batch
        }
        let positioned = Arc::new(Positioned {
            parent: Arc::clone(&self.parent),
        });
        let partitions = run_stage(
            scope,
            &(positioned as Arc<dyn Node<_>>),
            "cache",
            |_, values| {
                let mut partition = Partition {
                    source: None,
                    values: Vec::new(),
                };
                for (value, position, source) in values {
                    if partition.source.is_none() {
                        partition.source = source;
                    }
                    partition.values.push((value, position));
                }
                partition
            },
        )?;
        scope.keep(self.id, partitions);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope
            .kept::<Vec<Partition<T>>>(self.id)
            .map_or(0, |partitions| partitions.len())
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, T>> {
        let partitions = scope
            .kept::<Vec<Partition<T>>>(self.id)
            .expect("prepare runs before compute");
        if let Some(source) = &partitions[part].source {
            task.follow(source.clone());
        }
        let len = partitions[part].values.len();
        Ok(Box::new((0..len).map(move |i| {
            let (value, position) = &partitions[part].values[i];
            match position {
                Some((offset, timestamp)) => task.at_record(*offset, *timestamp),
                None => task.leave_source(),
            }
            value.clone()
        })))
    }
}

/// The parent's values with the position of the record each comes from,
/// read from the task as each value is handed out.
struct Positioned<T> {
    parent: Arc<dyn Node<T>>,
}

type WithPosition<T> = (T, Position, Option<(Arc<str>, i32)>);

impl<T: Send + 'static> Node<WithPosition<T>> for Positioned<T> {
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, WithPosition<T>>> {
        let values = self.parent.compute(scope, task, part)?;
        Ok(Box::new(
            values.map(move |value| (value, task.position(), task.source())),
        ))
    }
}

impl<T: Clone + Send + Sync + 'static> DStream<T> {
    /// The same stream, computed once a batch however many output
    /// operations (or sides of a `union` or join) use it, and kept in
    /// memory until the batch ends; each user gets its own copy of the
    /// values. Like Spark's `DStream.cache()` (memory only, values kept as
    /// they are), for streams that are costly to compute: a parse, a
    /// lookup, a join.
    ///
    /// Nothing else changes: the values come in the same partitions and
    /// order, and keep the Kafka coordinates and timestamp of the record
    /// each comes from, so errors downstream still name their record and
    /// event-time windows still read record timestamps. The job's input
    /// itself needs no `cache`: it is read once a batch for all outputs
    /// (see [`StreamGraph::set_shared_input_bytes`](crate::StreamGraph::set_shared_input_bytes)),
    /// and reads through a cached stream count once.
    ///
    /// A cached stream holds a whole batch of its values at once, with
    /// 16 bytes more each: cache a stream after the filters and
    /// projections that make it small, and do not cache what is cheap to
    /// compute again.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let events = graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|line| line.to_uppercase()) // say, an expensive parse
    ///     .cache();
    /// events.count_by_value().save_counts("event_counts")?;
    /// events.foreach_batch(|batch, _| {
    ///     println!("{} events", batch.len());
    ///     Ok::<_, std::convert::Infallible>(())
    /// })?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn cache(&self) -> DStream<T> {
        let id = next_stage_id();
        let cached = self.derive(Cached {
            id,
            parent: Arc::clone(&self.node),
        });
        DStream {
            reads: InputUse::cached(id, &self.reads),
            ..cached
        }
    }
}
