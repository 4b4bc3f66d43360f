//! The hash shuffle of a keyed stream without a map-side combine, shared
//! by the operators that need every value of a key in one task (joins,
//! keyed state).

use std::hash::Hash;
use std::sync::Arc;

use super::keyed::{partitioner, reduce_partition, MAX_SHUFFLE_PARTITIONS};
use crate::scope::BatchScope;
use crate::stream::{run_stage, Node};
use crate::{Error, Result};

/// The values one reduce partition receives: a bucket from each map task
/// that had values for it, in map-task order.
pub(crate) type ReduceInput<K, V> = Vec<Vec<(K, V)>>;

/// Runs `parent`'s tasks as the map stage `operator` and moves every pair
/// to reduce partition `XXH3(key) % reducers` — the rule of
/// `reduce_by_key`, so a key lands in the same partition index whichever
/// of these operators shuffles it. Zero reducers count as one; more than
/// [`MAX_SHUFFLE_PARTITIONS`] fails with a user error naming `operator`.
///
/// Returns one [`ReduceInput`] per reduce partition: the non-empty buckets
/// of the map tasks in task order, each keeping its task's order. The
/// values of a key therefore arrive in a fixed order — map task, then
/// position within the task — on every attempt and run.
pub(crate) fn shuffle_by_key<K, V>(
    scope: &Arc<BatchScope>,
    parent: &Arc<dyn Node<(K, V)>>,
    operator: &'static str,
    reducers: usize,
) -> Result<Vec<ReduceInput<K, V>>>
where
    K: Hash + Send + 'static,
    V: Send + 'static,
{
    let reducers = reducers.max(1);
    if reducers > MAX_SHUFFLE_PARTITIONS {
        return Err(Error::user(
            operator,
            format!(
                "{reducers} reduce partitions is more than the {MAX_SHUFFLE_PARTITIONS} a \
                 shuffle may have"
            ),
        ));
    }
    let map_outputs = run_stage(scope, parent, operator, move |_, values| {
        let hasher = partitioner();
        let mut buckets: Vec<Vec<(K, V)>> = (0..reducers).map(|_| Vec::new()).collect();
        for (key, value) in values {
            let bucket = reduce_partition(&hasher, &key, reducers);
            buckets[bucket].push((key, value));
        }
        buckets
    })?;
    let mut inputs: Vec<ReduceInput<K, V>> = (0..reducers).map(|_| Vec::new()).collect();
    for buckets in map_outputs {
        for (r, bucket) in buckets.into_iter().enumerate() {
            if !bucket.is_empty() {
                inputs[r].push(bucket);
            }
        }
    }
    Ok(inputs)
}
