//! `cogroup` and the joins: per batch, against a nested-loop join of the
//! same values, partitioned like `reduce_by_key`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_core::{DStream, Error, MemoryInput, StreamGraph, MAX_SHUFFLE_PARTITIONS};

use super::{collect, executors, only_batch, run, sorted, Seen};

type Pairs = Vec<(u8, u8)>;
/// A key with its values on each side.
type CoGrouped = (u8, (Vec<u8>, Vec<u8>));
/// A row of a full outer join.
type FullOuter = (u8, (Option<u8>, Option<u8>));

/// Topic `l` with a partition per element of `left`, then topic `r` with a
/// partition per element of `right`; a record's value is `[key, value]`.
fn two_sided_input(left: &[Pairs], right: &[Pairs]) -> MemoryInput {
    let sides = [("l", left), ("r", right)];
    sides
        .into_iter()
        .flat_map(|(topic, partitions)| partitions.iter().enumerate().map(move |p| (topic, p)))
        .fold(MemoryInput::new(), |input, (topic, (p, pairs))| {
            input.with_partition(topic, p as i32, pairs.iter().map(|&(k, v)| vec![k, v]))
        })
}

/// The `(key, value)` pairs of `topic`.
fn side(graph: &Arc<StreamGraph>, topic: &'static str) -> DStream<(u8, u8)> {
    graph
        .input()
        .filter(move |r| r.topic.as_ref() == topic)
        .map(|r| {
            let bytes = r.value.expect("test records have values");
            (bytes[0], bytes[1])
        })
}

/// The keys of each partition of the only batch `seen` holds.
fn keys_by_partition<T: Clone>(seen: &Seen<(u8, T)>) -> Vec<Vec<u8>> {
    only_batch(seen)
        .into_iter()
        .map(|part| part.into_iter().map(|(key, _)| key).collect())
        .collect()
}

/// What each join kind gives, by nested loops over the batch's pairs in
/// input order.
struct NestedLoops {
    cogroup: Vec<CoGrouped>,
    inner: Vec<(u8, (u8, u8))>,
    left_outer: Vec<(u8, (u8, Option<u8>))>,
    right_outer: Vec<(u8, (Option<u8>, u8))>,
    full_outer: Vec<FullOuter>,
}

impl NestedLoops {
    fn new(left: &[(u8, u8)], right: &[(u8, u8)]) -> Self {
        let matches = |key: u8, side: &[(u8, u8)]| -> Vec<u8> {
            side.iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect()
        };
        let mut keys: Vec<u8> = left.iter().chain(right).map(|(k, _)| *k).collect();
        keys.sort();
        keys.dedup();
        let cogroup = keys
            .iter()
            .map(|&k| (k, (matches(k, left), matches(k, right))))
            .collect();
        let mut inner = Vec::new();
        let mut left_outer = Vec::new();
        let mut right_outer = Vec::new();
        let mut full_outer = Vec::new();
        for &(k, v) in left {
            for &(k2, w) in right {
                if k == k2 {
                    inner.push((k, (v, w)));
                    left_outer.push((k, (v, Some(w))));
                    right_outer.push((k, (Some(v), w)));
                    full_outer.push((k, (Some(v), Some(w))));
                }
            }
            if matches(k, right).is_empty() {
                left_outer.push((k, (v, None)));
                full_outer.push((k, (Some(v), None)));
            }
        }
        for &(k, w) in right {
            if matches(k, left).is_empty() {
                right_outer.push((k, (None, w)));
                full_outer.push((k, (None, Some(w))));
            }
        }
        Self {
            cogroup,
            inner: sorted(inner),
            left_outer: sorted(left_outer),
            right_outer: sorted(right_outer),
            full_outer: sorted(full_outer),
        }
    }
}

fn keyed_partitions() -> impl Strategy<Value = Vec<Pairs>> {
    prop::collection::vec(prop::collection::vec((0u8..8, any::<u8>()), 0..12), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A key's values in `cogroup` keep their order in the batch (source
    /// partition, then offset), so they are compared as lists, not sets.
    #[test]
    fn cogroup_and_every_join_equal_a_nested_loop_join_of_the_batch(
        left in keyed_partitions(),
        right in keyed_partitions(),
        shuffle_partitions in 1usize..9,
    ) {
        let expected = NestedLoops::new(&left.concat(), &right.concat());
        for executor in executors() {
            let graph = StreamGraph::new();
            graph.set_shuffle_partitions(NonZeroUsize::new(shuffle_partitions).unwrap());
            let (l, r) = (side(&graph, "l"), side(&graph, "r"));
            let cogroup = collect(&l.cogroup(&r));
            let inner = collect(&l.join(&r));
            let left_outer = collect(&l.left_outer_join(&r));
            let right_outer = collect(&l.right_outer_join(&r));
            let full_outer = collect(&l.full_outer_join(&r));
            run(&graph, two_sided_input(&left, &right), &executor).unwrap();

            let cogroup = only_batch(&cogroup);
            prop_assert_eq!(cogroup.len(), shuffle_partitions);
            prop_assert_eq!(sorted(cogroup.concat()), expected.cogroup.clone());
            prop_assert_eq!(sorted(only_batch(&inner).concat()), expected.inner.clone());
            prop_assert_eq!(
                sorted(only_batch(&left_outer).concat()),
                expected.left_outer.clone()
            );
            prop_assert_eq!(
                sorted(only_batch(&right_outer).concat()),
                expected.right_outer.clone()
            );
            prop_assert_eq!(
                sorted(only_batch(&full_outer).concat()),
                expected.full_outer.clone()
            );
        }
    }
}

#[test]
fn a_joined_key_lands_in_the_partition_reduce_by_key_gives_it() {
    let left: Vec<Pairs> = vec![(0..40).map(|k| (k, 1)).collect(), vec![(7, 2)]];
    let right: Vec<Pairs> = vec![(20..60).map(|k| (k, 3)).collect()];
    for shuffle_partitions in [1, 3, 7, 16] {
        for executor in executors() {
            let graph = StreamGraph::new();
            graph.set_shuffle_partitions(NonZeroUsize::new(shuffle_partitions).unwrap());
            let (l, r) = (side(&graph, "l"), side(&graph, "r"));
            let reduced = collect(&l.union(&r).reduce_by_key(|a, _| a));
            let cogroup = collect(&l.cogroup(&r));
            let full_outer = collect(&l.full_outer_join(&r));
            run(&graph, two_sided_input(&left, &right), &executor).unwrap();

            let mut partition_of = HashMap::new();
            for (index, keys) in keys_by_partition(&reduced).into_iter().enumerate() {
                for key in keys {
                    partition_of.insert(key, index);
                }
            }
            assert_eq!(partition_of.len(), 60);
            for joined in [keys_by_partition(&cogroup), keys_by_partition(&full_outer)] {
                assert_eq!(joined.len(), shuffle_partitions);
                for (index, keys) in joined.into_iter().enumerate() {
                    for key in keys {
                        assert_eq!(partition_of[&key], index, "key {key}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_partition_lists_keys_by_first_appearance_left_first_and_each_keys_values_in_batch_order() {
    // Source partitions in order l0, l1, r0; one shuffle partition, so
    // every key meets in it.
    let left: Vec<Pairs> = vec![vec![(5, 1), (2, 2), (5, 3)], vec![(2, 4), (5, 5)]];
    let right: Vec<Pairs> = vec![vec![(9, 6), (2, 7), (9, 8)]];
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.set_shuffle_partitions(NonZeroUsize::MIN);
        let (l, r) = (side(&graph, "l"), side(&graph, "r"));
        let cogroup = collect(&l.cogroup(&r));
        let inner = collect(&l.join(&r));
        run(&graph, two_sided_input(&left, &right), &executor).unwrap();
        assert_eq!(
            only_batch(&cogroup),
            [vec![
                (5, (vec![1, 3, 5], vec![])),
                (2, (vec![2, 4], vec![7])),
                (9, (vec![], vec![6, 8])),
            ]]
        );
        assert_eq!(only_batch(&inner), [vec![(2, (2, 7)), (2, (4, 7))]]);
    }
}

#[test]
fn a_join_pairs_only_the_values_of_one_batch() {
    let graph = StreamGraph::new();
    let (l, r) = (side(&graph, "l"), side(&graph, "r"));
    let joined = collect(&l.full_outer_join(&r));
    let executor = &executors()[0];
    run(&graph, two_sided_input(&[vec![(1, 10)]], &[]), executor).unwrap();
    run(&graph, two_sided_input(&[], &[vec![(1, 20)]]), executor).unwrap();
    let batches: Vec<_> = joined
        .lock()
        .unwrap()
        .iter()
        .map(|batch| batch.iter().copied().collect::<Vec<_>>())
        .collect();
    assert_eq!(
        batches,
        [vec![(1, (Some(10), None))], vec![(1, (None, Some(20)))]]
    );
}

#[test]
fn a_shuffled_stream_joined_with_itself_pairs_every_two_values_of_a_key() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let sums = side(&graph, "l").reduce_by_key(|a, b| a.wrapping_add(b));
        let joined = collect(&sums.join(&sums));
        let left: Vec<Pairs> = vec![vec![(1, 1), (2, 2)], vec![(1, 3)]];
        run(&graph, two_sided_input(&left, &[]), &executor).unwrap();
        assert_eq!(
            sorted(only_batch(&joined).concat()),
            [(1, (4, 4)), (2, (2, 2))]
        );
    }
}

#[test]
fn joining_streams_of_two_graphs_fails_every_batch_naming_the_operator() {
    type Join = fn(&DStream<(u8, u8)>, &DStream<(u8, u8)>) -> Result<(), Error>;
    let joins: [(&str, Join); 5] = [
        ("cogroup", |l, r| l.cogroup(r).print(1)),
        ("join", |l, r| l.join(r).print(1)),
        ("left_outer_join", |l, r| l.left_outer_join(r).print(1)),
        ("right_outer_join", |l, r| l.right_outer_join(r).print(1)),
        ("full_outer_join", |l, r| l.full_outer_join(r).print(1)),
    ];
    for (name, join) in joins {
        for executor in executors() {
            let (graph, other) = (StreamGraph::new(), StreamGraph::new());
            join(&side(&graph, "l"), &side(&other, "r")).unwrap();
            let input = || two_sided_input(&[vec![(1, 1)]], &[vec![(1, 2)]]);
            for _batch in 0..2 {
                match run(&graph, input(), &executor) {
                    Err(Error::User { operator, source }) => {
                        assert_eq!(operator, name);
                        assert!(source.to_string().contains("different StreamGraphs"));
                    }
                    other => panic!("{name}: expected a user error, got {other:?}"),
                }
            }
        }
    }
}

/// `union` of streams of two graphs panicked when the union was built.
#[test]
fn a_union_of_streams_of_two_graphs_fails_every_batch_naming_union() {
    for executor in executors() {
        let (graph, other) = (StreamGraph::new(), StreamGraph::new());
        side(&graph, "l")
            .union(&side(&other, "r"))
            .print(1)
            .unwrap();
        let input = || two_sided_input(&[vec![(1, 1)]], &[vec![(1, 2)]]);
        for _batch in 0..2 {
            match run(&graph, input(), &executor) {
                Err(Error::User { operator, source }) => {
                    assert_eq!(operator, "union");
                    assert!(source.to_string().contains("different StreamGraphs"));
                }
                other => panic!("expected a user error, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_join_over_more_shuffle_partitions_than_allowed_fails_the_batch_naming_it() {
    let graph = StreamGraph::new();
    graph.set_shuffle_partitions(NonZeroUsize::new(MAX_SHUFFLE_PARTITIONS + 1).unwrap());
    let (l, r) = (side(&graph, "l"), side(&graph, "r"));
    l.left_outer_join(&r).print(1).unwrap();
    let err = run(
        &graph,
        two_sided_input(&[vec![(1, 1)]], &[]),
        &executors()[0],
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("left_outer_join") && message.contains("reduce partitions"),
        "{message}"
    );
}
