//! Stateful operators: `update_state_by_key`, `map_with_state`, and tables
//! (`to_table`, `lookup_join`).
//!
//! Both shuffle the batch's pairs by key to the job's shuffle partitions —
//! which are also the key partitions of their state — and run one task per
//! key partition that reads the partition's state, calls the user's
//! function and stages the changes. A task returns its writes instead of
//! staging them itself, so an attempt that fails leaves nothing behind.

mod map_with_state;
mod table;
mod update;

pub use map_with_state::MapWithStateStream;
pub use table::Table;

use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// The hash map of a task's keys: foldhash, which is fast and seeded per
/// map; nothing here depends on the order or the hash.
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use super::shuffle::shuffle_by_key;
use crate::scope::BatchScope;
use crate::stream::Node;
use crate::{Error, Result};

/// Sends every pair of `parent` to its key partition — the job's shuffle
/// partitions — keeping the order of source tasks and, within a task, of
/// the pairs.
fn shuffle<K, V>(
    scope: &Arc<BatchScope>,
    parent: &Arc<dyn Node<(K, V)>>,
    operator: &'static str,
) -> Result<Vec<Vec<(K, V)>>>
where
    K: Hash + Send + 'static,
    V: Send + 'static,
{
    let inputs = shuffle_by_key(scope, parent, operator, scope.shuffle_partitions)?;
    Ok(inputs
        .into_iter()
        .map(|buckets| buckets.into_iter().flatten().collect())
        .collect())
}

/// Runs `task(partition, input)` for every key partition on the batch's
/// executor and returns the results in partition order. An attempt that
/// failed consumed its input: a retry fails with [`Error::ShuffleLost`] and
/// the batch is recomputed.
pub(crate) fn run_partitions<I, R, F>(
    scope: &Arc<BatchScope>,
    operator: &'static str,
    inputs: Vec<I>,
    task: F,
) -> Result<Vec<R>>
where
    I: Send + 'static,
    R: Send + 'static,
    F: Fn(&BatchScope, usize, I) -> Result<R> + Send + Sync + 'static,
{
    let tasks = inputs.len();
    let inputs: Arc<Vec<Mutex<Option<I>>>> =
        Arc::new(inputs.into_iter().map(|i| Mutex::new(Some(i))).collect());
    let results: Arc<Vec<Mutex<Option<R>>>> =
        Arc::new((0..tasks).map(|_| Mutex::new(None)).collect());
    let body = {
        let (scope, inputs, results) =
            (Arc::clone(scope), Arc::clone(&inputs), Arc::clone(&results));
        Arc::new(move |part: usize| {
            scope.check_cancelled()?;
            let input = inputs[part]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .ok_or(Error::ShuffleLost { partition: part })?;
            let result = task(&scope, part, input)?;
            *results[part].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            Ok(())
        })
    };
    scope.executor.run(operator, tasks, body)?;
    Ok(results
        .iter()
        .map(|slot| {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .expect("executor reported success for a task that did not finish")
        })
        .collect())
}
