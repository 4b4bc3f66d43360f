//! Per-batch joins of two keyed streams: `cogroup`, the general one, and
//! the inner and outer joins built on it. Both sides are hash-shuffled by
//! key, without a map-side combine, to the job's shuffle partitions.

use std::collections::HashMap;
use std::hash::Hash;
use std::iter::repeat_n;
use std::sync::Arc;

use super::shuffle::shuffle_by_key;
use crate::scope::{BatchScope, TaskContext};
use crate::stream::{next_stage_id, Node, PartIter};
use crate::{DStream, Error, Result};

/// The values of one key on each side of a cogroup.
type Grouped<V, W> = (Vec<V>, Vec<W>);

/// Both sides shuffled into the same reduce partitions, then grouped by
/// key in each reduce task.
struct CoGroup<K, V, W> {
    /// The public operator, for the stage name and errors.
    operator: &'static str,
    left_id: usize,
    right_id: usize,
    left: Arc<dyn Node<(K, V)>>,
    right: Arc<dyn Node<(K, W)>>,
    /// False when the sides belong to different graphs: a node reads the
    /// input of whichever batch runs it, so the right side would silently
    /// read the left side's records.
    same_graph: bool,
}

impl<K, V, W> Node<(K, Grouped<V, W>)> for CoGroup<K, V, W>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    W: Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        if !self.same_graph {
            return Err(Error::user(
                self.operator,
                "the two streams belong to different StreamGraphs; derive both from the input \
                 of the graph that runs the job",
            ));
        }
        let reducers = scope.shuffle_partitions;
        let left = shuffle_by_key(scope, &self.left, self.operator, reducers)?;
        let right = shuffle_by_key(scope, &self.right, self.operator, reducers)?;
        scope.add_stage(self.left_id, left);
        scope.add_stage(self.right_id, right);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<Vec<(K, V)>>(self.left_id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, (K, Grouped<V, W>)>> {
        let left = scope
            .stage::<Vec<(K, V)>>(self.left_id)
            .expect("prepare runs before compute")
            .take(part)?;
        let right = scope
            .stage::<Vec<(K, W)>>(self.right_id)
            .expect("prepare runs before compute")
            .take(part)?;
        Ok(Box::new(group(left, right).into_iter()))
    }
}

/// Groups the values of each side by key. Keys come in the order they
/// first appear, left side first, so a partition's output is the same on
/// every attempt: a map keyed by a randomly seeded hash would not be.
fn group<K: Hash + Eq, V, W>(
    left: Vec<Vec<(K, V)>>,
    right: Vec<Vec<(K, W)>>,
) -> Vec<(K, Grouped<V, W>)> {
    let mut groups: Groups<K, V, W> = HashMap::default();
    for (key, value) in left.into_iter().flatten() {
        slot(&mut groups, key).0.push(value);
    }
    for (key, value) in right.into_iter().flatten() {
        slot(&mut groups, key).1.push(value);
    }
    let mut ordered: Vec<Option<(K, Grouped<V, W>)>> = (0..groups.len()).map(|_| None).collect();
    for (key, (rank, grouped)) in groups {
        ordered[rank] = Some((key, grouped));
    }
    ordered.into_iter().flatten().collect()
}

/// Each key's values and the rank of its first appearance.
type Groups<K, V, W> = HashMap<K, (usize, Grouped<V, W>), foldhash::fast::RandomState>;

/// The group of `key`, new and ranked last if `key` is new.
fn slot<K: Hash + Eq, V, W>(groups: &mut Groups<K, V, W>, key: K) -> &mut Grouped<V, W> {
    let rank = groups.len();
    &mut groups
        .entry(key)
        .or_insert_with(|| (rank, (Vec::new(), Vec::new())))
        .1
}

/// Every `(v, w)` pair of `key`, `vs`-major. A value is cloned for all of
/// its pairs but the last, which takes it.
fn product<K: Clone, V: Clone, W: Clone>(
    key: K,
    vs: Vec<V>,
    ws: Vec<W>,
) -> impl Iterator<Item = (K, (V, W))> {
    let (rows, columns) = (vs.len(), ws.len());
    repeat_n(key, rows)
        .zip(vs)
        .zip(repeat_n(ws, rows))
        .flat_map(move |((key, v), ws)| {
            repeat_n(key, columns)
                .zip(repeat_n(v, columns))
                .zip(ws)
                .map(|((key, v), w)| (key, (v, w)))
        })
}

/// `values` as options, or a single `None` when there are none: the side
/// of an outer join that a key may lack.
fn or_none<T>(values: Vec<T>) -> Vec<Option<T>> {
    if values.is_empty() {
        vec![None]
    } else {
        values.into_iter().map(Some).collect()
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
{
    /// Groups the values of each key in both streams, per batch: for every
    /// key present in this batch of `self` or of `other`, one
    /// `(key, (values of self, values of other))`, a side without the key
    /// giving an empty `Vec`. Like Spark DStream's `cogroup`, it sees one
    /// batch of each stream at a time and keeps nothing across batches.
    ///
    /// Both streams are shuffled by key hash to the job's shuffle partitions
    /// ([`StreamGraph::set_shuffle_partitions`]) with the rule of
    /// [`DStream::reduce_by_key`], so partition `i` holds exactly the keys
    /// `reduce_by_key` puts in partition `i`. Within a partition, keys come
    /// in the order they first appear on the left, then the keys only the
    /// right has; a key's values on each side keep their order in the
    /// batch: by partition of the stream, then position within it. The
    /// output is therefore the same on every attempt and run.
    ///
    /// `other` must derive from the same [`StreamGraph`]'s input: otherwise
    /// every batch fails with [`Error::User`] naming `cogroup`.
    ///
    /// [`StreamGraph`]: crate::StreamGraph
    /// [`StreamGraph::set_shuffle_partitions`]: crate::StreamGraph::set_shuffle_partitions
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::SystemTime;
    /// # use sluice_core::{BatchInfo, DStream, InlineExecutor, MemoryInput, StreamGraph};
    /// # let graph = StreamGraph::new();
    /// # // The `user=value` lines of `topic`, as (user, value) pairs.
    /// # let pairs = |topic: &'static str| -> DStream<(String, String)> {
    /// #     graph.input().filter(move |r| r.topic.as_ref() == topic).values_utf8().map(|line| {
    /// #         let (user, value) = line.split_once('=').unwrap_or((&line, ""));
    /// #         (user.to_owned(), value.to_owned())
    /// #     })
    /// # };
    /// let names = pairs("names"); // user -> name
    /// let clicks = pairs("clicks"); // user -> page
    /// let grouped = names
    ///     .cogroup(&clicks)
    ///     .map(|(user, (names, pages))| format!("{user} {names:?} {pages:?}"));
    /// # let seen = Arc::new(Mutex::new(Vec::new()));
    /// # let sink = Arc::clone(&seen);
    /// # grouped.foreach_batch(move |batch, _| {
    /// #     sink.lock().unwrap().extend(batch);
    /// #     Ok::<_, std::io::Error>(())
    /// # })?;
    ///
    /// let input = MemoryInput::new()
    ///     .with_partition("names", 0, ["u1=ann", "u2=bob"])
    ///     .with_partition("clicks", 0, ["u1=/home", "u3=/faq", "u1=/cart"]);
    /// # let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// # graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # let seen = seen.lock().unwrap();
    /// // The batch, in one shuffle partition:
    /// assert_eq!(
    ///     *seen,
    ///     [r#"u1 ["ann"] ["/home", "/cart"]"#, r#"u2 ["bob"] []"#, r#"u3 [] ["/faq"]"#]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    #[expect(
        clippy::type_complexity,
        reason = "the output spelled out says what the operator gives"
    )]
    pub fn cogroup<W>(&self, other: &DStream<(K, W)>) -> DStream<(K, (Vec<V>, Vec<W>))>
    where
        W: Send + 'static,
    {
        self.cogroup_as("cogroup", other)
    }

    /// `cogroup` whose stages and errors name `operator`.
    fn cogroup_as<W>(
        &self,
        operator: &'static str,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, Grouped<V, W>)>
    where
        W: Send + 'static,
    {
        self.derive_with(
            other,
            CoGroup {
                operator,
                left_id: next_stage_id(),
                right_id: next_stage_id(),
                left: Arc::clone(&self.node),
                right: Arc::clone(&other.node),
                same_graph: Arc::ptr_eq(&self.graph, &other.graph),
            },
        )
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// The inner join of this batch of `self` with this batch of `other`:
    /// `(key, (v, w))` for every value `v` of a key in `self` and every
    /// value `w` of the same key in `other` (all pairs); a key on one side
    /// only gives nothing. Like Spark DStream's `join`, it joins one batch
    /// of each stream at a time and keeps nothing across batches.
    ///
    /// Built on [`DStream::cogroup`], whose partitioning, order and
    /// same-graph rule it has; a key's pairs come `v` by `v`, each with
    /// every `w` in order. Keys and values are cloned for all their pairs
    /// but the last.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::SystemTime;
    /// # use sluice_core::{BatchInfo, DStream, InlineExecutor, MemoryInput, StreamGraph};
    /// # let graph = StreamGraph::new();
    /// # // The `user=value` lines of `topic`, as (user, value) pairs.
    /// # let pairs = |topic: &'static str| -> DStream<(String, String)> {
    /// #     graph.input().filter(move |r| r.topic.as_ref() == topic).values_utf8().map(|line| {
    /// #         let (user, value) = line.split_once('=').unwrap_or((&line, ""));
    /// #         (user.to_owned(), value.to_owned())
    /// #     })
    /// # };
    /// let names = pairs("names"); // user -> name
    /// let clicks = pairs("clicks"); // user -> page
    /// let joined = names
    ///     .join(&clicks)
    ///     .map(|(user, (name, page))| format!("{user} {name} {page}"));
    /// # let seen = Arc::new(Mutex::new(Vec::new()));
    /// # let sink = Arc::clone(&seen);
    /// # joined.foreach_batch(move |batch, _| {
    /// #     sink.lock().unwrap().extend(batch);
    /// #     Ok::<_, std::io::Error>(())
    /// # })?;
    ///
    /// let input = MemoryInput::new()
    ///     .with_partition("names", 0, ["u1=ann", "u2=bob"])
    ///     .with_partition("clicks", 0, ["u1=/home", "u3=/faq", "u1=/cart"]);
    /// # let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// # graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # let seen = seen.lock().unwrap();
    /// // The batch, in one shuffle partition:
    /// assert_eq!(*seen, ["u1 ann /home", "u1 ann /cart"]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn join<W>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, W))>
    where
        W: Clone + Send + 'static,
    {
        self.cogroup_as("join", other)
            .flat_map(|(key, (vs, ws))| product(key, vs, ws))
    }

    /// The left outer join of this batch of `self` with this batch of
    /// `other`: the pairs of [`DStream::join`] as `(key, (v, Some(w)))`,
    /// and `(key, (v, None))` for every value `v` of a key `other` lacks in
    /// this batch. Per batch, like Spark DStream's `leftOuterJoin`: a key
    /// `other` had in an earlier batch still gives `None`.
    ///
    /// Built on [`DStream::cogroup`], whose partitioning, order and
    /// same-graph rule it has.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::SystemTime;
    /// # use sluice_core::{BatchInfo, DStream, InlineExecutor, MemoryInput, StreamGraph};
    /// # let graph = StreamGraph::new();
    /// # // The `user=value` lines of `topic`, as (user, value) pairs.
    /// # let pairs = |topic: &'static str| -> DStream<(String, String)> {
    /// #     graph.input().filter(move |r| r.topic.as_ref() == topic).values_utf8().map(|line| {
    /// #         let (user, value) = line.split_once('=').unwrap_or((&line, ""));
    /// #         (user.to_owned(), value.to_owned())
    /// #     })
    /// # };
    /// let names = pairs("names"); // user -> name
    /// let clicks = pairs("clicks"); // user -> page
    /// let joined = names
    ///     .left_outer_join(&clicks)
    ///     .map(|(user, (name, page))| format!("{user} {name} {page:?}"));
    /// # let seen = Arc::new(Mutex::new(Vec::new()));
    /// # let sink = Arc::clone(&seen);
    /// # joined.foreach_batch(move |batch, _| {
    /// #     sink.lock().unwrap().extend(batch);
    /// #     Ok::<_, std::io::Error>(())
    /// # })?;
    ///
    /// let input = MemoryInput::new()
    ///     .with_partition("names", 0, ["u1=ann", "u2=bob"])
    ///     .with_partition("clicks", 0, ["u1=/home", "u3=/faq", "u1=/cart"]);
    /// # let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// # graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # let seen = seen.lock().unwrap();
    /// // The batch, in one shuffle partition:
    /// assert_eq!(
    ///     *seen,
    ///     [r#"u1 ann Some("/home")"#, r#"u1 ann Some("/cart")"#, "u2 bob None"]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn left_outer_join<W>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, Option<W>))>
    where
        W: Clone + Send + 'static,
    {
        self.cogroup_as("left_outer_join", other)
            .flat_map(|(key, (vs, ws))| product(key, vs, or_none(ws)))
    }

    /// The right outer join of this batch of `self` with this batch of
    /// `other`: the pairs of [`DStream::join`] as `(key, (Some(v), w))`,
    /// and `(key, (None, w))` for every value `w` of a key `self` lacks in
    /// this batch. Per batch, like Spark DStream's `rightOuterJoin`.
    ///
    /// Built on [`DStream::cogroup`], whose partitioning, order and
    /// same-graph rule it has.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::SystemTime;
    /// # use sluice_core::{BatchInfo, DStream, InlineExecutor, MemoryInput, StreamGraph};
    /// # let graph = StreamGraph::new();
    /// # // The `user=value` lines of `topic`, as (user, value) pairs.
    /// # let pairs = |topic: &'static str| -> DStream<(String, String)> {
    /// #     graph.input().filter(move |r| r.topic.as_ref() == topic).values_utf8().map(|line| {
    /// #         let (user, value) = line.split_once('=').unwrap_or((&line, ""));
    /// #         (user.to_owned(), value.to_owned())
    /// #     })
    /// # };
    /// let names = pairs("names"); // user -> name
    /// let clicks = pairs("clicks"); // user -> page
    /// let joined = names
    ///     .right_outer_join(&clicks)
    ///     .map(|(user, (name, page))| format!("{user} {name:?} {page}"));
    /// # let seen = Arc::new(Mutex::new(Vec::new()));
    /// # let sink = Arc::clone(&seen);
    /// # joined.foreach_batch(move |batch, _| {
    /// #     sink.lock().unwrap().extend(batch);
    /// #     Ok::<_, std::io::Error>(())
    /// # })?;
    ///
    /// let input = MemoryInput::new()
    ///     .with_partition("names", 0, ["u1=ann", "u2=bob"])
    ///     .with_partition("clicks", 0, ["u1=/home", "u3=/faq", "u1=/cart"]);
    /// # let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// # graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # let seen = seen.lock().unwrap();
    /// // The batch, in one shuffle partition:
    /// assert_eq!(
    ///     *seen,
    ///     [r#"u1 Some("ann") /home"#, r#"u1 Some("ann") /cart"#, "u3 None /faq"]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn right_outer_join<W>(&self, other: &DStream<(K, W)>) -> DStream<(K, (Option<V>, W))>
    where
        W: Clone + Send + 'static,
    {
        self.cogroup_as("right_outer_join", other)
            .flat_map(|(key, (vs, ws))| product(key, or_none(vs), ws))
    }

    /// The full outer join of this batch of `self` with this batch of
    /// `other`: the pairs of [`DStream::join`] as `(key, (Some(v),
    /// Some(w)))`, `(key, (Some(v), None))` for every value of a key only
    /// `self` has in this batch, and `(key, (None, Some(w)))` for every
    /// value of a key only `other` has. Per batch, like Spark DStream's
    /// `fullOuterJoin`.
    ///
    /// Built on [`DStream::cogroup`], whose partitioning, order and
    /// same-graph rule it has.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use std::time::SystemTime;
    /// # use sluice_core::{BatchInfo, DStream, InlineExecutor, MemoryInput, StreamGraph};
    /// # let graph = StreamGraph::new();
    /// # // The `user=value` lines of `topic`, as (user, value) pairs.
    /// # let pairs = |topic: &'static str| -> DStream<(String, String)> {
    /// #     graph.input().filter(move |r| r.topic.as_ref() == topic).values_utf8().map(|line| {
    /// #         let (user, value) = line.split_once('=').unwrap_or((&line, ""));
    /// #         (user.to_owned(), value.to_owned())
    /// #     })
    /// # };
    /// let names = pairs("names"); // user -> name
    /// let clicks = pairs("clicks"); // user -> page
    /// let joined = names
    ///     .full_outer_join(&clicks)
    ///     .map(|(user, (name, page))| format!("{user} {name:?} {page:?}"));
    /// # let seen = Arc::new(Mutex::new(Vec::new()));
    /// # let sink = Arc::clone(&seen);
    /// # joined.foreach_batch(move |batch, _| {
    /// #     sink.lock().unwrap().extend(batch);
    /// #     Ok::<_, std::io::Error>(())
    /// # })?;
    ///
    /// let input = MemoryInput::new()
    ///     .with_partition("names", 0, ["u1=ann", "u2=bob"])
    ///     .with_partition("clicks", 0, ["u1=/home", "u3=/faq", "u1=/cart"]);
    /// # let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// # graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # let seen = seen.lock().unwrap();
    /// // The batch, in one shuffle partition:
    /// assert_eq!(
    ///     *seen,
    ///     [
    ///         r#"u1 Some("ann") Some("/home")"#,
    ///         r#"u1 Some("ann") Some("/cart")"#,
    ///         r#"u2 Some("bob") None"#,
    ///         r#"u3 None Some("/faq")"#,
    ///     ]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    #[expect(
        clippy::type_complexity,
        reason = "the output spelled out says what the operator gives"
    )]
    pub fn full_outer_join<W>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, Option<W>))>
    where
        W: Clone + Send + 'static,
    {
        self.cogroup_as("full_outer_join", other)
            .flat_map(|(key, (vs, ws))| product(key, or_none(vs), or_none(ws)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_pairs_every_value_of_one_side_with_every_value_of_the_other_in_order() {
        let pairs: Vec<_> = product('k', vec![1, 2], vec!["a", "b", "c"]).collect();
        assert_eq!(
            pairs,
            [
                ('k', (1, "a")),
                ('k', (1, "b")),
                ('k', (1, "c")),
                ('k', (2, "a")),
                ('k', (2, "b")),
                ('k', (2, "c")),
            ]
        );
        assert_eq!(product('k', Vec::<u8>::new(), vec![1]).count(), 0);
        assert_eq!(product('k', vec![1], Vec::<u8>::new()).count(), 0);
    }

    /// Counts its clones, to pin that the last pair takes each value.
    #[derive(Debug)]
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Counted(Arc::clone(&self.0))
        }
    }

    #[test]
    fn product_clones_each_value_for_all_its_pairs_but_the_last() {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = || Counted(Arc::clone(&clones));
        assert_eq!(
            product(counted(), vec![counted()], vec![counted()]).count(),
            1
        );
        assert_eq!(clones.load(std::sync::atomic::Ordering::Relaxed), 0);
        // 2 × 3 pairs: the key 5 clones, each v 2, each w 1.
        assert_eq!(
            product(
                counted(),
                vec![counted(), counted()],
                vec![counted(), counted(), counted()]
            )
            .count(),
            6
        );
        assert_eq!(
            clones.load(std::sync::atomic::Ordering::Relaxed),
            5 + 2 * 2 + 3
        );
    }

    #[test]
    fn group_lists_keys_in_order_of_first_appearance_left_side_first() {
        let left = vec![vec![("b", 1), ("a", 2)], vec![("b", 3)]];
        let right = vec![vec![("c", 'x'), ("a", 'y')], vec![("c", 'z')]];
        assert_eq!(
            group(left, right),
            [
                ("b", (vec![1, 3], vec![])),
                ("a", (vec![2], vec!['y'])),
                ("c", (vec![], vec!['x', 'z'])),
            ]
        );
    }
}
