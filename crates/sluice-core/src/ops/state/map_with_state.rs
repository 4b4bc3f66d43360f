//! `map_with_state`: a function per new value and per timed-out key, with
//! the key's state — Spark's `mapWithState`, with the state in the
//! checkpoint and timeouts found through an index by expiry time.

use std::collections::HashSet;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{run_partitions, shuffle, KeyMap};
use crate::ops::keyed::{partitioner, reduce_partition};
use crate::scope::{BatchScope, TaskContext};
use crate::state::expiry::{deadline, due, Due};
use crate::state::layout::{self, Entry};
use crate::state::partition::{snapshot, PartitionState, ValueChanges};
use crate::state::{family_of, State, StateDescriptor, StateSpec};
use crate::stream::{next_stage_id, Node, PartIter};
use crate::{DStream, Result, WriteSet};

const OPERATOR: &str = "map_with_state";

/// Changed values per key partition (value key → entry bytes, `None` when
/// removed), kept for the state snapshots.
type Changes = Vec<ValueChanges>;

struct MapWithState<K, V, S, U> {
    id: usize,
    parent: Arc<dyn Node<(K, V)>>,
    name: Arc<str>,
    family: Arc<str>,
    spec: StateSpec<K, V, S, U>,
    /// Set once the state snapshots are asked for.
    keep_changes: AtomicBool,
}

impl<K, V, S, U> Node<U> for MapWithState<K, V, S, U>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    U: Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let inputs = shuffle(scope, &self.parent, OPERATOR)?;
        let partitions = inputs.len();
        let keep = self.keep_changes.load(Ordering::Relaxed);
        let (name, family, spec) = (
            Arc::clone(&self.name),
            Arc::clone(&self.family),
            self.spec.clone(),
        );
        let results = run_partitions(scope, OPERATOR, inputs, move |scope, part, values| {
            let state =
                PartitionState::new(scope.state.as_ref(), &name, &family, part as u16, keep);
            map_partition(scope, state, &spec, partitions, values)
        })?;
        let mut outputs = Vec::with_capacity(results.len());
        let mut changes = Vec::with_capacity(results.len());
        {
            let mut writes = scope.writes.lock().unwrap_or_else(PoisonError::into_inner);
            for (output, mut staged, changed) in results {
                outputs.push(output);
                writes.append(&mut staged);
                changes.push(changed.unwrap_or_default());
            }
        }
        if keep {
            scope.keep::<Changes>(self.id, changes);
        }
        scope.add_stage(self.id, outputs);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<U>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, U>> {
        let stage = scope
            .stage::<U>(self.id)
            .expect("prepare runs before compute");
        Ok(Box::new(stage.take(part)?.into_iter()))
    }
}

/// A key met in this batch: its state as the function sees it, and what
/// the checkpoint holds for it.
struct Slot<S> {
    key: Vec<u8>,
    state: State<S>,
    /// Index deadline of the committed entry; meaningful when `stored`.
    old_deadline: Option<i64>,
    old_expires_at: Option<i64>,
    stored: bool,
    /// Loaded from the initial state this batch: written even unchanged.
    seeded: bool,
}

/// One key partition of one batch: values in arrival order first, then the
/// keys whose timeout expired.
fn map_partition<K, V, S, U>(
    scope: &BatchScope,
    mut state: PartitionState<'_>,
    spec: &StateSpec<K, V, S, U>,
    partitions: usize,
    values: Vec<(K, V)>,
) -> Result<(Vec<U>, WriteSet, Option<ValueChanges>)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    S: Clone + Serialize + DeserializeOwned,
{
    let now = scope.info.time_ms();
    let mut index: KeyMap<K, usize> = KeyMap::default();
    let mut keys: Vec<(Vec<u8>, K)> = Vec::new();
    for (key, _) in &values {
        if !index.contains_key(key) {
            index.insert(key.clone(), 0);
            keys.push((state.encode_key(key)?, key.clone()));
        }
    }
    // In the order of their bytes, the keys are one sorted multi-get, and
    // their writes reach the memtable in key order, where each insert
    // starts from the previous one's place instead of the top.
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let encoded: Vec<Vec<u8>> = keys
        .into_iter()
        .enumerate()
        .map(|(i, (bytes, key))| {
            *index.get_mut(&key).expect("every key is indexed") = i;
            bytes
        })
        .collect();
    let (entries, seeded) = state.load::<S>(&encoded)?;
    let mut slots: Vec<Slot<S>> = encoded
        .into_iter()
        .zip(entries)
        .map(|(key, entry)| {
            let stored = entry.is_some();
            let (old_deadline, old_expires_at) = entry
                .as_ref()
                .map_or((None, None), |e| (e.deadline(), e.expires_at));
            // A state past its TTL is gone, whatever the function would say.
            let value = entry
                .filter(|e| due(e, now) != Due::Expired)
                .map(|e| e.state);
            Slot {
                key,
                state: State::new(value, false),
                old_deadline,
                old_expires_at,
                stored,
                seeded: false,
            }
        })
        .collect();

    if !seeded {
        state.mark_seeded();
        let hasher = partitioner();
        let part = usize::from(state.partition());
        let initial = spec
            .initial
            .iter()
            .filter(|(k, _)| reduce_partition(&hasher, k, partitions) == part);
        for (key, value) in initial {
            match index.get(key) {
                Some(&i) => {
                    slots[i].state = State::new(Some(value.clone()), false);
                    slots[i].seeded = true;
                }
                None => {
                    let entry = fresh_entry(value.clone(), now, spec);
                    let key = state.encode_key(key)?;
                    state.put(&key, None, &entry)?;
                }
            }
        }
    }

    let mut outputs = Vec::with_capacity(values.len());
    for (key, value) in values {
        let i = index[&key];
        outputs.push((spec.function)(&key, Some(value), &mut slots[i].state));
    }

    // Keys with no value this batch whose timeout or TTL passed: found
    // before the slots are consumed. Usually none are due, so the set of
    // this batch's keys is only built when some are.
    let mut due_keys = state.due(now)?;
    if !due_keys.is_empty() {
        let fresh: HashSet<&[u8]> = slots.iter().map(|s| s.key.as_slice()).collect();
        due_keys.retain(|(_, key)| !fresh.contains(key.as_slice()));
    }
    for slot in slots {
        let changed = slot.state.changed();
        match slot.state.into_value() {
            None if slot.stored => state.delete(&slot.key, slot.old_deadline),
            None => {}
            Some(value) if changed || slot.seeded || !slot.stored || spec.timeout.is_some() => {
                // New data restarts the timeout; only a write restarts the TTL.
                let expires_at = if changed || slot.seeded || !slot.stored {
                    deadline(now, spec.ttl)
                } else {
                    slot.old_expires_at
                };
                let entry = Entry {
                    state: value,
                    timeout_at: deadline(now, spec.timeout),
                    expires_at,
                };
                let old = slot.stored.then_some(slot.old_deadline).flatten();
                state.put(&slot.key, old, &entry)?;
            }
            Some(_) => {}
        }
    }

    let encoded: Vec<Vec<u8>> = due_keys.iter().map(|(_, k)| k.clone()).collect();
    let (entries, _) = state.load::<S>(&encoded)?;
    for ((indexed, key), entry) in due_keys.into_iter().zip(entries) {
        let Some(entry) = entry.filter(|e| e.deadline() == Some(indexed)) else {
            // The key changed or went since this index entry was written.
            state.drop_index(&key, indexed);
            continue;
        };
        match due(&entry, now) {
            Due::Live => {}
            Due::Expired => state.delete(&key, Some(indexed)),
            Due::TimingOut => {
                let k: K = layout::decode(&key)
                    .map_err(|e| state.error(format!("a key does not decode: {e}")))?;
                let mut timing_out = State::new(Some(entry.state), true);
                outputs.push((spec.function)(&k, None, &mut timing_out));
                if timing_out.updated_while_timing_out() {
                    return Err(state.error(
                        "the function updated the state of a key that is timing out; a timing-out \
                         key's state is removed after the call (check State::is_timing_out)",
                    ));
                }
                state.delete(&key, Some(indexed));
            }
        }
    }
    let (writes, changes) = state.finish();
    Ok((outputs, writes, changes))
}

fn fresh_entry<K, V, S, U>(value: S, now: i64, spec: &StateSpec<K, V, S, U>) -> Entry<S> {
    Entry {
        state: value,
        timeout_at: deadline(now, spec.timeout),
        expires_at: deadline(now, spec.ttl),
    }
}

/// Every `(key, state)` of a `map_with_state` after each batch.
struct Snapshots<K, V, S, U> {
    source: Arc<MapWithState<K, V, S, U>>,
}

impl<K, V, S, U> Node<(K, S)> for Snapshots<K, V, S, U>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    U: Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        if scope.kept::<Changes>(self.source.id).is_none() {
            self.source.prepare(scope)?;
        }
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope
            .kept::<Changes>(self.source.id)
            .map_or(0, |changes| changes.len())
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, (K, S)>> {
        let changes = scope
            .kept::<Changes>(self.source.id)
            .expect("prepare runs before compute");
        let states = snapshot::<K, S>(
            scope.state.as_ref(),
            &self.source.name,
            &self.source.family,
            part as u16,
            &changes[part],
        )?;
        Ok(Box::new(states.into_iter()))
    }
}

/// The stream of a `map_with_state`: what the function returned (it
/// dereferences to that [`DStream`]), and the state itself through
/// [`MapWithStateStream::state_snapshots`].
pub struct MapWithStateStream<K, S, U> {
    mapped: DStream<U>,
    snapshots: DStream<(K, S)>,
    keep_changes: Arc<dyn Fn() + Send + Sync>,
}

impl<K: Send + 'static, S: Send + 'static, U: Send + 'static> MapWithStateStream<K, S, U> {
    /// Every `(key, state)` the operator holds after each batch, this
    /// batch's changes included, by key partition (partition `i` of the
    /// stream is key partition `i`) — Spark's `stateSnapshots()`. It reads
    /// the whole state every batch: meant for small states and for
    /// debugging.
    pub fn state_snapshots(&self) -> DStream<(K, S)> {
        (self.keep_changes)();
        self.snapshots.clone()
    }

    /// The mapped stream.
    pub fn into_stream(self) -> DStream<U> {
        self.mapped
    }
}

impl<K, S, U> Deref for MapWithStateStream<K, S, U> {
    type Target = DStream<U>;
    fn deref(&self) -> &DStream<U> {
        &self.mapped
    }
}

impl<K, S, U> std::fmt::Debug for MapWithStateStream<K, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapWithStateStream").finish_non_exhaustive()
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
{
    /// Keeps a state per key in the checkpoint under `name`, and maps every
    /// value with it: `spec`'s function is called with the key, the value
    /// and a [`State`] handle for each value of the batch, in the order of
    /// the values, and once more with no value for each key whose timeout
    /// expired (see [`StateSpec::timeout`]) — Spark's `mapWithState`. Keys
    /// without new values and not timing out cost nothing: the cost of a
    /// batch grows with its input, not with the state.
    ///
    /// The state's changes are committed with the batch's offsets. Values
    /// are shuffled by key to the job's shuffle partitions, which are also
    /// the key partitions of the state; partition `i` of the stream holds
    /// first the results of its keys' values, then those of its timed-out
    /// keys. `name` (ASCII letters, digits, `.`, `_`, `-`) must be unique
    /// in the job and stay the same across versions of it, and the spec's
    /// timeout and TTL, when given, at least 1 ms; the job fails to start
    /// or run otherwise (see [`StreamGraph::check_states`]).
    ///
    /// [`StreamGraph::check_states`]: crate::StreamGraph::check_states
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::{Duration, SystemTime};
    /// use sluice_core::state::{MemoryState, State, StateSpec};
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let out = seen.clone();
    /// graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|user| (user, ()))
    ///     .map_with_state(
    ///         "visits",
    ///         StateSpec::function(|user: &String, _visit: Option<()>, state: &mut State<u32>| {
    ///             let visits = state.get().copied().unwrap_or(0) + 1;
    ///             state.update(visits);
    ///             format!("{user} #{visits}")
    ///         }),
    ///     )
    ///     .foreach_batch(move |batch, _| {
    ///         out.lock().unwrap().extend(batch);
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// for (id, users) in [["ann", "bob"], ["ann", "ann"]].into_iter().enumerate() {
    ///     let input = MemoryInput::new().with_partition("visits", 0, users);
    ///     let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes); // what the checkpoint commits
    /// }
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort();
    /// assert_eq!(seen, ["ann #1", "ann #2", "ann #3", "bob #1"]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn map_with_state<S, U>(
        &self,
        name: &str,
        spec: StateSpec<K, V, S, U>,
    ) -> MapWithStateStream<K, S, U>
    where
        S: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
        U: Send + 'static,
    {
        self.graph
            .declare_state(StateDescriptor::of::<K, S>(name, OPERATOR));
        if let Some(reason) = spec.invalid_setting() {
            // Never run: the graph refuses to start or run a batch.
            self.graph.refuse_state(name, OPERATOR, reason);
        }
        let node = Arc::new(MapWithState {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            name: name.into(),
            family: family_of(name).into(),
            spec,
            keep_changes: AtomicBool::new(false),
        });
        let snapshots = self.derive(Snapshots {
            source: Arc::clone(&node),
        });
        let keep = Arc::clone(&node);
        MapWithStateStream {
            mapped: DStream::new(&self.graph, node, self.lineage.clone()),
            snapshots,
            keep_changes: Arc::new(move || keep.keep_changes.store(true, Ordering::Relaxed)),
        }
    }
}
