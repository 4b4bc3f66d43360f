//! `cache`: a stream computed once a batch, however many outputs (or
//! sides of a union or join) use it.

use std::sync::Arc;

use crate::lineage::Lineage;
use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, run_stage, Node, PartIter};
use crate::{DStream, Result};

/// Where a cached value came from: its record's offset and Kafka
/// timestamp, when its task still followed the source records.
type Position = Option<(i64, Option<i64>)>;

/// One partition of a cached stream, as computed.
struct Partition<T> {
    /// The topic and partition its values follow, if any.
    source: Option<(Arc<str>, i32)>,
    values: Vec<T>,
    /// Where each run of values from one record starts, and its record's
    /// position: a record often gives several values (`flat_map`).
    runs: Vec<(usize, Position)>,
}

impl<T> Partition<T> {
    fn push(&mut self, value: T, position: Position) {
        if self.runs.last().map(|(_, p)| p) != Some(&position) {
            self.runs.push((self.values.len(), position));
        }
        self.values.push(value);
    }
}

/// Hands the position of each value of a partition to the task reading
/// it, as a source task would: call [`Runs::at`] with each value's index,
/// in order.
struct Runs<'a> {
    task: &'a TaskContext,
    next: usize,
}

impl Runs<'_> {
    fn at(&mut self, index: usize, runs: &[(usize, Position)]) {
        while let Some((start, position)) = runs.get(self.next) {
            if *start > index {
                break;
            }
            match position {
                Some((offset, timestamp)) => self.task.at_record(*offset, *timestamp),
                None => self.task.leave_source(),
            }
            self.next += 1;
        }
    }
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
        let positioned: Arc<dyn Node<_>> = Arc::new(Positioned {
            parent: Arc::clone(&self.parent),
        });
        let partitions = run_stage(scope, &positioned, "cache", |_, values| {
            let mut partition = Partition {
                source: None,
                values: Vec::new(),
                runs: Vec::new(),
            };
            for (value, position, source) in values {
                partition.source = partition.source.take().or(source);
                partition.push(value, position);
            }
            partition
        })?;
        // Kept whole until the batch ends: a task that reads it may be
        // retried, and must find it again.
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
        let mut runs = Runs { task, next: 0 };
        Ok(Box::new((0..partitions[part].values.len()).map(move |i| {
            let partition = &partitions[part];
            runs.at(i, &partition.runs);
            partition.values[i].clone()
        })))
    }
}

/// The parent's values with the position of the record each comes from,
/// read from the task as each value is handed out, and with the first, the
/// topic and partition the task follows.
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
        let mut first = true;
        Ok(Box::new(values.map(move |value| {
            // The source is the partition's: asked for once.
            let source = std::mem::take(&mut first).then(|| task.source()).flatten();
            (value, task.position(), source)
        })))
    }
}

impl<T: Clone + Send + Sync + 'static> DStream<T> {
    /// The same stream, computed once a batch however many output
    /// operations (or sides of a `union` or join) use it, and kept in
    /// memory until the batch ends; each user gets its own copy of the
    /// values. Like Spark's `DStream.cache()`, for streams that are costly
    /// to compute: a parse, a lookup, a join; where Spark keeps a DStream's
    /// data serialised by default, sluice keeps the values as they are, in
    /// memory only.
    ///
    /// Nothing else changes: the values come in the same partitions and
    /// order, and keep the Kafka coordinates and timestamp of the record
    /// each comes from, so errors downstream still name their record and
    /// event-time windows still read record timestamps. The job's input
    /// itself needs no `cache`: it is read once a batch for all outputs
    /// (see [`StreamGraph::set_shared_input_bytes`](crate::StreamGraph::set_shared_input_bytes)),
    /// and reads through a cached stream count once.
    ///
    /// A cached stream holds a whole batch of its values at once (and the
    /// offset and timestamp of each record they come from): cache a stream
    /// after the filters and projections that make it small (a filtered
    /// stream of `Record`s stays as large as its input: each kept record
    /// holds the 64 KiB payload block it points into; cache what is derived
    /// from them), and do not
    /// cache what costs no more to compute than to copy: in the `pipeline`
    /// bench, two outputs of a stream of words split from lines ran about
    /// 2× slower cached (computing them again streams through the
    /// processor's cache; keeping them does not), two outputs of a costlier
    /// per-line transform about 1.4× faster.
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
            lineage: Lineage::cached(id, &self.lineage),
            ..cached
        }
    }

    /// [`DStream::cache`], under the name Spark's `DStream.persist()` also
    /// gives it. sluice keeps a stream in memory only, as its values, for
    /// the batch: there is no storage level to choose.
    pub fn persist(&self) -> DStream<T> {
        self.cache()
    }
}
