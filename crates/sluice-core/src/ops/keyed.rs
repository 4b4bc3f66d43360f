//! Keyed aggregation: a map-side combine in every source task, a hash
//! shuffle, and the final reduce in the reduce tasks.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::ops::ControlFlow;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, run_stage_with, Node, PartIter};
use crate::{DStream, Error, Result};

/// The most reduce partitions a shuffle may have. Each map task keeps a
/// bucket per reduce partition, so the count costs memory in every task.
pub const MAX_SHUFFLE_PARTITIONS: usize = 1 << 16;

/// XXH3 (64 bits, default secret, seed 0): a specified algorithm, so a key
/// lands in the same reduce partition on every attempt, run, machine and
/// build, for a given number of partitions.
pub(crate) fn partitioner() -> Xxh3DefaultBuilder {
    Xxh3DefaultBuilder::new()
}

/// The reduce partition of `key` among `partitions`: XXH3 of the bytes
/// `key`'s `Hash` writes (a string's bytes then `0xff`), modulo
/// `partitions`.
pub(crate) fn reduce_partition<K: Hash + ?Sized>(
    hasher: &Xxh3DefaultBuilder,
    key: &K,
    partitions: usize,
) -> usize {
    (hasher.hash_one(key) % partitions as u64) as usize
}

/// How a source task folds the values of its partition into its
/// map-side combine.
enum MapSide<T, K, S> {
    /// Takes the values ([`Node::compute`]).
    Owned(Box<FoldValues<T, K, S>>),
    /// Looks at each value ([`Node::lend`]), as `count_keys` does.
    Lent(Box<FoldLent<T, K, S>>),
}

/// Folds a partition's values into a combine.
type FoldValues<T, K, S> = dyn Fn(PartIter<'_, T>, &mut Combined<K, S>) + Send + Sync;

/// Folds one lent value into a combine.
type FoldLent<T, K, S> = dyn Fn(&T, &mut Combined<K, S>) + Send + Sync;

/// A keyed aggregation: values combined per key inside every source task,
/// shuffled by key hash, and combined again by the reduce tasks. The
/// combines keep each key's value in an accumulator `S` ([`Accumulator`]).
struct ReduceByKey<T, K, V, S> {
    id: usize,
    parent: Arc<dyn Node<T>>,
    map_side: Arc<MapSide<T, K, S>>,
    reduce: Arc<dyn Fn(V, V) -> V + Send + Sync>,
    partitions: Option<usize>,
}

/// Values combined per key with the reduce function, each in an
/// accumulator `S`. Each value costs one hash and one probe of the table:
/// the key's accumulator is reduced with the new value in place, and a key
/// seen before is dropped where it is; a new key is moved (or, borrowed,
/// copied) into the free place the probe ends at, without a second search.
/// (A `HashMap` needs two searches for a new key when the key is looked up
/// by reference first: with every key new, a batch took 1.4–1.6× as long.)
pub(crate) struct Combined<K, S> {
    entries: HashTable<(K, S)>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, S> Combined<K, S> {
    fn new() -> Self {
        Self {
            entries: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Folds `values` in, combining values of equal keys with `reduce`.
    fn extend<V>(&mut self, values: impl Iterator<Item = (K, V)>, reduce: &impl Fn(V, V) -> V)
    where
        S: Accumulator<V>,
    {
        for (key, value) in values {
            let hash = self.hasher.hash_one(&key);
            match self
                .entries
                .entry(hash, |(k, _)| *k == key, |(k, _)| self.hasher.hash_one(k))
            {
                Entry::Occupied(mut entry) => entry.get_mut().1.fold(value, reduce),
                Entry::Vacant(entry) => {
                    entry.insert((key, S::new(value)));
                }
            }
        }
    }

    /// Folds in one value under a borrowed key, copying the key only when
    /// it is new.
    fn add_borrowed<Q, V>(&mut self, key: &Q, value: V, reduce: &impl Fn(V, V) -> V)
    where
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        K: Borrow<Q>,
        S: Accumulator<V>,
    {
        // `Borrow` promises a key and its borrowed form hash alike.
        let hash = self.hasher.hash_one(key);
        let found = |(k, _): &(K, S)| k.borrow() == key;
        match self
            .entries
            .entry(hash, found, |(k, _)| self.hasher.hash_one(k))
        {
            Entry::Occupied(mut entry) => entry.get_mut().1.fold(value, reduce),
            Entry::Vacant(entry) => {
                entry.insert((key.to_owned(), S::new(value)));
            }
        }
    }

    fn into_iter<V>(self) -> impl Iterator<Item = (K, V)>
    where
        S: Accumulator<V>,
    {
        self.entries
            .into_iter()
            .map(|(key, acc)| (key, acc.into_value()))
    }
}

/// How a combine keeps a key's value between reductions: its
/// accumulator, in the table entry of the key.
pub(crate) trait Accumulator<V> {
    /// The accumulator of a key's first value.
    fn new(value: V) -> Self;
    /// Reduces the kept value with `value`, in place.
    fn fold(&mut self, value: V, reduce: &impl Fn(V, V) -> V);
    /// The value reduced so far.
    fn into_value(self) -> V;
}

/// Any value: taken out for `reduce`, which takes it by value, and put
/// back.
impl<V> Accumulator<V> for Option<V> {
    fn new(value: V) -> Self {
        Some(value)
    }

    fn fold(&mut self, value: V, reduce: &impl Fn(V, V) -> V) {
        let old = self.take().expect("an accumulator always holds a value");
        *self = Some(reduce(old, value));
    }

    fn into_value(self) -> V {
        self.expect("an accumulator always holds a value")
    }
}

/// A count (`count_by_value`, `count_keys`): reduced where it lies, without
/// an `Option` around it, so a table entry is as small as a hand-written
/// count's and more of a task's table stays in the CPU's cache (the general
/// wordcount on one thread takes about 8 % less time than with
/// `Option<i64>` accumulators).
impl Accumulator<i64> for i64 {
    fn new(value: i64) -> Self {
        value
    }

    fn fold(&mut self, value: i64, reduce: &impl Fn(i64, i64) -> i64) {
        *self = reduce(*self, value);
    }

    fn into_value(self) -> i64 {
        self
    }
}

impl<T, K, V, S> Node<(K, V)> for ReduceByKey<T, K, V, S>
where
    T: Send + 'static,
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: Accumulator<V> + Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let reducers = self.partitions.unwrap_or(scope.shuffle_partitions).max(1);
        if reducers > MAX_SHUFFLE_PARTITIONS {
            return Err(Error::user(
                "reduce_by_key_into",
                format!(
                    "{reducers} reduce partitions is more than the {MAX_SHUFFLE_PARTITIONS} a \
                     shuffle may have"
                ),
            ));
        }
        let map_side = Arc::clone(&self.map_side);
        // Map side: combine within the task, then split by key hash.
        let map_outputs = run_stage_with(
            scope,
            &self.parent,
            "reduce_by_key",
            move |parent, scope, task, part| {
                let mut combined = Combined::<K, S>::new();
                match map_side.as_ref() {
                    MapSide::Owned(fold) => fold(parent.compute(scope, task, part)?, &mut combined),
                    MapSide::Lent(fold) => parent.lend(scope, task, part, &mut |value| {
                        fold(value, &mut combined);
                        ControlFlow::Continue(())
                    })?,
                }
                let hasher = partitioner();
                let mut buckets: Vec<Vec<(K, V)>> = (0..reducers).map(|_| Vec::new()).collect();
                for (key, value) in combined.into_iter() {
                    let bucket = reduce_partition(&hasher, &key, reducers);
                    buckets[bucket].push((key, value));
                }
                Ok(buckets)
            },
        )?;
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
        let mut reduced = Combined::<K, S>::new();
        for bucket in stage.take(part)? {
            reduced.extend(bucket.into_iter(), &self.reduce.as_ref());
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
    /// each source task, then shuffled by key hash to the job's number of
    /// shuffle partitions ([`StreamGraph::set_shuffle_partitions`]; the
    /// runtime keeps it fixed in the checkpoint), so partition `i` of a batch
    /// holds the same keys however many workers compute it.
    ///
    /// [`StreamGraph::set_shuffle_partitions`]: crate::StreamGraph::set_shuffle_partitions
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

    /// [`DStream::reduce_by_key`] with an explicit number of reduce tasks,
    /// whatever the job's shuffle partitions. Zero counts as one; a batch
    /// with more than [`MAX_SHUFFLE_PARTITIONS`] fails.
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
        let reduce = Arc::new(reduce);
        let map_reduce = Arc::clone(&reduce);
        self.derive(ReduceByKey {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            map_side: Arc::new(MapSide::Owned(Box::new(
                move |values, combined: &mut Combined<K, Option<V>>| {
                    // The pairs pass through an inlined closure, as
                    // `stream::boxed` explains: 84 against 63 ms a batch.
                    #[expect(clippy::map_identity, reason = "see `stream::boxed`")]
                    let pairs = values.map(|(key, value)| (key, value));
                    combined.extend(pairs, &*map_reduce)
                },
            ))),
            reduce,
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
    /// words.count_by_value().save_counts("word_counts")?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn count_by_value(&self) -> DStream<(T, i64)> {
        // `map(|v| (v, 1)).reduce_by_key(+)`, with the pairing done inside
        // the map-side combine rather than by a `map` node of its own: one
        // iterator less between the values and the table.
        let add = |a: i64, b: i64| a + b;
        self.derive(ReduceByKey {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            map_side: Arc::new(MapSide::Owned(Box::new(
                move |values, combined: &mut Combined<T, i64>| {
                    combined.extend(values.map(|value| (value, 1)), &add)
                },
            ))),
            reduce: Arc::new(add),
            partitions: None,
        })
    }
}

impl<T: Send + 'static> DStream<T> {
    /// Counts the keys `keys` finds in each value, as `(key, count)` pairs,
    /// like `flat_map` followed by [`DStream::count_by_value`] — but `keys`
    /// lends each key by reference (`count(key)`), and a source task copies
    /// a key only the first time it meets it. Counting the words of text
    /// this way allocates per distinct word, not per word.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// # let lines = graph.input().values_utf8();
    /// lines
    ///     .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
    ///     .save_counts("word_counts")?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn count_keys<Q, F>(&self, keys: F) -> DStream<(Q::Owned, i64)>
    where
        Q: ?Sized + Hash + Eq + ToOwned,
        Q::Owned: Hash + Eq + Borrow<Q> + Send + 'static,
        F: Fn(&T, &mut dyn FnMut(&Q)) + Send + Sync + 'static,
    {
        let add = |a: i64, b: i64| a + b;
        self.derive(ReduceByKey {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            map_side: Arc::new(MapSide::Lent(Box::new(
                move |value, combined: &mut Combined<Q::Owned, i64>| {
                    keys(value, &mut |key| combined.add_borrowed(key, 1, &add));
                },
            ))),
            reduce: Arc::new(add),
            partitions: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket of a key is part of what an idempotency key names after a
    /// shuffle, and of what a checkpoint redoes after a restart: it must
    /// never change. A new hash algorithm, secret or seed, or a change in
    /// the bytes std's `Hash` feeds it, fails here.
    #[test]
    fn the_reduce_partition_of_a_key_is_a_fixed_value() {
        let hasher = partitioner();
        // XXH3-64 of the empty input, seed 0: the reference value.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        // A string hashes as its bytes then 0xff.
        for word in ["", "a", "hello", "ümlaut"] {
            let bytes = [word.as_bytes(), &[0xff]].concat();
            assert_eq!(
                hasher.hash_one(word),
                xxhash_rust::xxh3::xxh3_64(&bytes),
                "{word:?}"
            );
            assert_eq!(hasher.hash_one(word), hasher.hash_one(word.to_owned()));
        }
        // Computed once with xxhash-rust 0.8; they must never change.
        let pinned: [(&str, u64, [usize; 3]); 4] = [
            ("", 0xd6bc_ec3c_6b29_d72e, [0, 6, 102]),
            ("a", 0x13ac_ce35_37d6_b799, [2, 1, 145]),
            ("hello", 0x3e7c_905d_6f73_6c83, [0, 3, 43]),
            ("ümlaut", 0xe85c_ae0e_1f32_6246, [2, 6, 126]),
        ];
        for (word, hash, buckets) in pinned {
            assert_eq!(hasher.hash_one(word), hash, "XXH3 of {word:?}");
            for (partitions, bucket) in [3, 8, 200].into_iter().zip(buckets) {
                assert_eq!(
                    reduce_partition(&hasher, word, partitions),
                    bucket,
                    "{word:?} among {partitions} partitions"
                );
            }
        }
    }
}
