//! Keyed aggregation: a map-side combine in every source task, a hash
//! shuffle, and the final reduce in the reduce tasks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use ahash::RandomState;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, run_stage, Node, PartIter};
use crate::{DStream, Result};

/// Fixed seeds: a key must land in the same reduce partition on every
/// attempt and every run, so retried and restarted batches shuffle alike.
fn partitioner() -> RandomState {
    RandomState::with_seeds(0x736c_7569, 0x6365_2d63, 0x6f72_652d, 0x6861_7368)
}

struct ReduceByKey<K, V, F> {
    id: usize,
    parent: Arc<dyn Node<(K, V)>>,
    reduce: Arc<F>,
    partitions: Option<usize>,
}

/// Folds `values` into `map`, combining values of equal keys with `reduce`.
fn combine<K: Hash + Eq, V>(
    map: &mut HashMap<K, V, RandomState>,
    values: impl Iterator<Item = (K, V)>,
    reduce: &impl Fn(V, V) -> V,
) {
    for (key, value) in values {
        match map.remove_entry(&key) {
            Some((key, old)) => {
                map.insert(key, reduce(old, value));
            }
            None => {
                map.insert(key, value);
            }
        }
    }
}

impl<K, V, F> Node<(K, V)> for ReduceByKey<K, V, F>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    F: Fn(V, V) -> V + Send + Sync + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let reducers = self
            .partitions
            .unwrap_or_else(|| scope.executor.parallelism())
            .max(1);
        let reduce = Arc::clone(&self.reduce);
        // Map side: combine within the task, then split by key hash.
        let map_outputs = run_stage(scope, &self.parent, "reduce_by_key", move |_, values| {
            let mut combined = HashMap::with_hasher(RandomState::new());
            combine(&mut combined, values, &*reduce);
            let hasher = partitioner();
            let mut buckets: Vec<Vec<(K, V)>> = (0..reducers).map(|_| Vec::new()).collect();
            for (key, value) in combined {
                let bucket = (hasher.hash_one(&key) % reducers as u64) as usize;
                buckets[bucket].push((key, value));
            }
            buckets
        })?;
        // Shuffle: reduce partition r receives bucket r of every map task.
        let mut inputs: Vec<Vec<Vec<(K, V)>>> = (0..reducers).map(|_| Vec::new()).collect();
        for buckets in map_outputs {
            for (r, bucket) in buckets.into_iter().enumerate() {
                if !bucket.is_empty() {
                    inputs[r].push(bucket);
                }
            }
        }
        scope.add_stage(self.id, inputs);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<Vec<(K, V)>>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, (K, V)>> {
        let stage = scope
            .stage::<Vec<(K, V)>>(self.id)
            .expect("prepare runs before compute");
        let mut reduced = HashMap::with_hasher(RandomState::new());
        for bucket in stage.take(part)? {
            combine(&mut reduced, bucket.into_iter(), &*self.reduce);
        }
        Ok(Box::new(reduced.into_iter()))
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
{
    /// Combines the values of each key within a batch with `reduce`, which
    /// must be associative and commutative. Values are first combined inside
    /// each source task, then shuffled by key hash to as many reduce tasks as
    /// the executor has workers.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// # let words = graph.input().values_utf8();
    /// let counts = words.map(|w| (w, 1i64)).reduce_by_key(|a, b| a + b);
    /// ```
    pub fn reduce_by_key<F>(&self, reduce: F) -> DStream<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.build_reduce(reduce, None)
    }

    /// [`DStream::reduce_by_key`] with an explicit number of reduce tasks.
    pub fn reduce_by_key_into<F>(&self, reduce: F, partitions: usize) -> DStream<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.build_reduce(reduce, Some(partitions))
    }

    fn build_reduce<F>(&self, reduce: F, partitions: Option<usize>) -> DStream<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.derive(ReduceByKey {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            reduce: Arc::new(reduce),
            partitions,
        })
    }
}

impl<T: Hash + Eq + Send + 'static> DStream<T> {
    /// How many times each distinct value occurs in the batch, as
    /// `(value, count)` pairs (counts are `i64`, like the counters of the
    /// checkpoint).
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// # let words = graph.input().values_utf8();
    /// words.count_by_value().save_counts("word_counts");
    /// ```
    pub fn count_by_value(&self) -> DStream<(T, i64)> {
        self.map(|value| (value, 1i64)).reduce_by_key(|a, b| a + b)
    }
}
