//! Tables: a keyed stream's latest value per key, kept in the checkpoint,
//! and the lookups that enrich another stream from it — Kafka Streams'
//! KTable and stream–table join, reading only the keys a batch looks up.

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
use crate::{DStream, Error, Result, StreamGraph};

const TABLE: &str = "to_table";

/// This batch's last update of each key, per key partition (`None`: a
/// tombstone).
type Updates<K, V> = Vec<KeyMap<K, Option<V>>>;

/// Applies a batch's updates to the table: once per batch, whatever the
/// number of lookups.
struct TableUpdates<K, V> {
    id: usize,
    parent: Arc<dyn Node<(K, Option<V>)>>,
    name: Arc<str>,
    family: Arc<str>,
}

impl<K, V> TableUpdates<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// This batch's updates, staging their writes the first time they are
    /// asked for in the batch.
    fn updates(&self, scope: &Arc<BatchScope>) -> Result<Arc<Updates<K, V>>> {
        if let Some(updates) = scope.kept::<Updates<K, V>>(self.id) {
            return Ok(updates);
        }
        let inputs = shuffle(scope, &self.parent, TABLE)?;
        let (name, family) = (Arc::clone(&self.name), Arc::clone(&self.family));
        let results = run_partitions(scope, TABLE, inputs, move |scope, part, values| {
            let mut state =
                PartitionState::new(scope.state.as_ref(), &name, &family, part as u16, false);
            let mut latest: KeyMap<K, Option<V>> = KeyMap::default();
            for (key, value) in values {
                latest.insert(key, value);
            }
            for (key, value) in &latest {
                let encoded = state.encode_key(key)?;
                match value {
                    Some(value) => {
                        let entry = Entry {
                            state: value,
                            timeout_at: None,
                            expires_at: None,
                        };
                        state.put(&encoded, None, &entry)?;
                    }
                    None => state.delete(&encoded, None),
                }
            }
            Ok((latest, state.finish().0))
        })?;
        let mut updates = Vec::with_capacity(results.len());
        {
            let mut writes = scope.writes.lock().unwrap_or_else(PoisonError::into_inner);
            for (latest, mut staged) in results {
                updates.push(latest);
                writes.append(&mut staged);
            }
        }
        scope.keep::<Updates<K, V>>(self.id, updates);
        Ok(scope
            .kept::<Updates<K, V>>(self.id)
            .expect("the updates were just kept"))
    }
}

/// A table: the latest value of each key of a keyed stream, kept in the
/// checkpoint under the table's name and updated every batch. Made with
/// [`DStream::to_table`]; read with [`DStream::lookup_join`] and
/// [`DStream::lookup_left_join`].
pub struct Table<K, V> {
    graph: Arc<StreamGraph>,
    updates: Arc<TableUpdates<K, V>>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self {
            graph: Arc::clone(&self.graph),
            updates: Arc::clone(&self.updates),
        }
    }
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.updates.name)
            .finish_non_exhaustive()
    }
}

/// A stream enriched from a table.
struct Lookup<K, W, V> {
    id: usize,
    parent: Arc<dyn Node<(K, W)>>,
    table: Arc<TableUpdates<K, V>>,
    /// Keep values whose key the table does not hold.
    keep_missing: bool,
    /// False when the table belongs to another graph: its updates would
    /// read this graph's input.
    same_graph: bool,
}

impl<K, W, V> Node<(K, (W, Option<V>))> for Lookup<K, W, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    W: Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        if !self.same_graph {
            return Err(Error::user(
                "lookup_join",
                "the stream and the table belong to different StreamGraphs; derive both from \
                 the input of the graph that runs the job",
            ));
        }
        let updates = self.table.updates(scope)?;
        let inputs = shuffle(scope, &self.parent, "lookup_join")?;
        let (table, keep_missing) = (Arc::clone(&self.table), self.keep_missing);
        let outputs = run_partitions(scope, "lookup_join", inputs, move |scope, part, values| {
            let state = PartitionState::new(
                scope.state.as_ref(),
                &table.name,
                &table.family,
                part as u16,
                false,
            );
            let updated = &updates[part];
            // One bulk read of the keys this batch did not update.
            let mut stored: KeyMap<K, Option<V>> = KeyMap::default();
            let mut missing: Vec<K> = Vec::new();
            for (key, _) in &values {
                if !updated.contains_key(key) && !stored.contains_key(key) {
                    stored.insert(key.clone(), None);
                    missing.push(key.clone());
                }
            }
            let encoded = missing
                .iter()
                .map(|k| state.encode_key(k))
                .collect::<Result<Vec<_>>>()?;
            let (entries, _) = state.load::<V>(&encoded)?;
            for (key, entry) in missing.into_iter().zip(entries) {
                stored.insert(key, entry.map(|e| e.state));
            }
            Ok(values
                .into_iter()
                .filter_map(|(key, value)| {
                    let found = updated
                        .get(&key)
                        .or_else(|| stored.get(&key))
                        .cloned()
                        .flatten();
                    (keep_missing || found.is_some()).then_some((key, (value, found)))
                })
                .collect::<Vec<_>>())
        })?;
        scope.add_stage(self.id, outputs);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<(K, (W, Option<V>))>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, (K, (W, Option<V>))>> {
        let stage = scope
            .stage::<(K, (W, Option<V>))>(self.id)
            .expect("prepare runs before compute");
        Ok(Box::new(stage.take(part)?.into_iter()))
    }
}

impl<K, V> DStream<(K, Option<V>)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A table of the latest value of each key, kept in the checkpoint
    /// under `name`: every batch, each key's last `Some(value)` in arrival
    /// order replaces its value, and a `None` (a tombstone) deletes the key
    /// — Kafka Streams' KTable. The table is updated in the batches that
    /// run a lookup on it ([`DStream::lookup_join`]); its updates commit
    /// with the batch. `name` follows the rules of
    /// [`DStream::map_with_state`].
    pub fn to_table(&self, name: &str) -> Table<K, V> {
        self.graph
            .declare_state(StateDescriptor::of::<K, V>(name, TABLE));
        Table {
            graph: Arc::clone(&self.graph),
            updates: Arc::new(TableUpdates {
                id: next_stage_id(),
                parent: Arc::clone(&self.node),
                name: name.into(),
                family: family_of(name).into(),
            }),
        }
    }
}

impl<K, W> DStream<(K, W)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    W: Send + 'static,
{
    /// Each value with the table's value for its key; values whose key the
    /// table does not hold are dropped (a stream–table inner join).
    ///
    /// A lookup sees the table **after** the same batch's updates: the
    /// table applies this batch's last update of each key first, then the
    /// batch's lookups read it. Only the keys a batch looks up are read
    /// (one bulk read per key partition), never the whole table. Values
    /// are shuffled by key to the job's shuffle partitions, which are the
    /// table's key partitions. Both streams must belong to the same job.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::SystemTime;
    /// use sluice_core::state::MemoryState;
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// let lines = graph.input().values_utf8();
    /// // "user=NAME" lines update the table of names; "click ID" lines look up.
    /// let names = lines
    ///     .flat_map(|l| l.strip_prefix("user=").map(|n| ("u1".to_owned(), Some(n.to_owned()))))
    ///     .to_table("names");
    /// let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let out = seen.clone();
    /// lines
    ///     .flat_map(|l| l.strip_prefix("click ").map(|id| (id.to_owned(), ())))
    ///     .lookup_left_join(&names)
    ///     .foreach_batch(move |batch, _| {
    ///         out.lock().unwrap().extend(batch.into_iter().map(|(id, ((), name))| (id, name)));
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// for (id, lines) in [["click u1", "user=ann"], ["click u1", "click u2"]].into_iter().enumerate() {
    ///     let input = MemoryInput::new().with_partition("t", 0, lines);
    ///     let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes);
    /// }
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort();
    /// // The first click sees "ann": the table applies its batch's update first.
    /// assert_eq!(seen, [
    ///     ("u1".into(), Some("ann".into())),
    ///     ("u1".into(), Some("ann".into())),
    ///     ("u2".into(), None),
    /// ]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn lookup_join<V>(&self, table: &Table<K, V>) -> DStream<(K, (W, V))>
    where
        V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.lookup(table, false)
            .flat_map(|(key, (value, found))| found.map(|found| (key, (value, found))))
    }

    /// Each value with the table's value for its key, or `None` when the
    /// table does not hold the key (a stream–table left join). Otherwise as
    /// [`DStream::lookup_join`].
    pub fn lookup_left_join<V>(&self, table: &Table<K, V>) -> DStream<(K, (W, Option<V>))>
    where
        V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.lookup(table, true)
    }

    fn lookup<V>(&self, table: &Table<K, V>, keep_missing: bool) -> DStream<(K, (W, Option<V>))>
    where
        V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.derive(Lookup {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            table: Arc::clone(&table.updates),
            keep_missing,
            same_graph: Arc::ptr_eq(&self.graph, &table.graph),
        })
    }
}
