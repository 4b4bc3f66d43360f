//! `update_state_by_key`: Spark's function of every key's new values and
//! previous state, called for every key that has either.

use std::hash::Hash;
use std::sync::{Arc, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{run_partitions, shuffle, KeyMap};
use crate::scope::{BatchScope, TaskContext};
use crate::state::layout::Entry;
use crate::state::partition::PartitionState;
use crate::state::{family_of, StateDescriptor};
use crate::stream::{next_stage_id, Node, PartIter};
use crate::{DStream, Result, WriteSet};

const OPERATOR: &str = "update_state_by_key";

type UpdateFn<V, S> = dyn Fn(Vec<V>, Option<S>) -> Option<S> + Send + Sync;

struct UpdateStateByKey<K, V, S> {
    id: usize,
    parent: Arc<dyn Node<(K, V)>>,
    name: Arc<str>,
    family: Arc<str>,
    update: Arc<UpdateFn<V, S>>,
}

impl<K, V, S> Node<(K, S)> for UpdateStateByKey<K, V, S>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let inputs = shuffle(scope, &self.parent, OPERATOR)?;
        let (name, family, update) = (
            Arc::clone(&self.name),
            Arc::clone(&self.family),
            Arc::clone(&self.update),
        );
        let results = run_partitions(scope, OPERATOR, inputs, move |scope, part, values| {
            let state =
                PartitionState::new(scope.state.as_ref(), &name, &family, part as u16, false);
            update_partition(state, update.as_ref(), values)
        })?;
        let mut outputs = Vec::with_capacity(results.len());
        {
            let mut writes = scope.writes.lock().unwrap_or_else(PoisonError::into_inner);
            for (output, mut staged) in results {
                outputs.push(output);
                writes.append(&mut staged);
            }
        }
        scope.add_stage(self.id, outputs);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<(K, S)>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, (K, S)>> {
        let stage = scope
            .stage::<(K, S)>(self.id)
            .expect("prepare runs before compute");
        Ok(Box::new(stage.take(part)?.into_iter()))
    }
}

/// One key partition: every stored key in key order, then the new keys in
/// the order they arrived.
fn update_partition<K, V, S>(
    mut state: PartitionState<'_>,
    update: &UpdateFn<V, S>,
    values: Vec<(K, V)>,
) -> Result<(Vec<(K, S)>, WriteSet)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    S: Serialize + DeserializeOwned,
{
    let mut new_values: KeyMap<K, Vec<V>> = KeyMap::default();
    let mut arrival: Vec<K> = Vec::new();
    for (key, value) in values {
        match new_values.get_mut(&key) {
            Some(list) => list.push(value),
            None => {
                arrival.push(key.clone());
                new_values.insert(key, vec![value]);
            }
        }
    }
    let mut outputs = Vec::new();
    for (encoded, key, entry) in state.scan::<K, S>()? {
        let values = new_values.remove(&key).unwrap_or_default();
        let old = encoded_state(&state, &entry)?;
        match update(values, Some(entry.state)) {
            Some(new) => {
                let entry = Entry {
                    state: new,
                    timeout_at: None,
                    expires_at: None,
                };
                if encoded_state(&state, &entry)? != old {
                    state.put(&encoded, entry.deadline(), &entry)?;
                }
                outputs.push((key, entry.state));
            }
            None => state.delete(&encoded, None),
        }
    }
    for key in arrival {
        let Some(values) = new_values.remove(&key) else {
            continue; // the key had state: done above
        };
        if let Some(new) = update(values, None) {
            let entry = Entry {
                state: new,
                timeout_at: None,
                expires_at: None,
            };
            let encoded = state.encode_key(&key)?;
            state.put(&encoded, None, &entry)?;
            outputs.push((key, entry.state));
        }
    }
    Ok((outputs, state.finish().0))
}

fn encoded_state<S: Serialize>(state: &PartitionState<'_>, entry: &Entry<S>) -> Result<Vec<u8>> {
    crate::state::layout::encode(entry)
        .map_err(|e| state.error(format!("a state does not encode: {e}")))
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
{
    /// Keeps a state per key in the checkpoint under `name`: every batch,
    /// `update(new values, previous state)` is called for **every** key
    /// that has a state or new values, and its result is the key's new
    /// state (`None` removes the key) — Spark's `updateStateByKey`. The
    /// stream holds every key's state after the batch.
    ///
    /// Convenient, but a batch costs as much as the whole state: every key
    /// is read and called, even with no new values. For large states use
    /// [`DStream::map_with_state`], whose cost follows the batch's input.
    ///
    /// New values are in arrival order (source partition, then offset).
    /// Keys are shuffled to the job's shuffle partitions, which are the key
    /// partitions of the state; within one, stored keys come first, in the
    /// order of their encoded bytes, then new keys in arrival order. A state
    /// whose encoding did not change is not written again. `name` follows
    /// the rules of [`DStream::map_with_state`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::SystemTime;
    /// use sluice_core::state::{read_state, MemoryState};
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|word| (word, 1u64))
    ///     .update_state_by_key("totals", |new: Vec<u64>, total: Option<u64>| {
    ///         Some(total.unwrap_or(0) + new.iter().sum::<u64>())
    ///     })
    ///     .print(10)?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// for (id, words) in [["a", "b"], ["a", "a"]].into_iter().enumerate() {
    ///     let input = MemoryInput::new().with_partition("words", 0, words);
    ///     let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes);
    /// }
    /// let mut totals: Vec<(String, u64)> = read_state(state.as_ref(), "totals")?;
    /// totals.sort();
    /// assert_eq!(totals, [("a".into(), 3), ("b".into(), 1)]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn update_state_by_key<S, F>(&self, name: &str, update: F) -> DStream<(K, S)>
    where
        S: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    {
        self.graph
            .declare_state(StateDescriptor::of::<K, S>(name, OPERATOR));
        self.derive(UpdateStateByKey {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            name: name.into(),
            family: family_of(name).into(),
            update: Arc::new(update),
        })
    }
}
