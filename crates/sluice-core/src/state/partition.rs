//! One key partition of a state, as a reduce task of a stateful operator
//! sees it: bulk reads of committed entries, and staged changes that keep
//! the values and the expiry index in step.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::layout::{self, Entry};
use super::StateStore;
use crate::{BoxError, Error, Result, WriteSet};

/// Decodes a value key's encoded key and its entry.
pub(crate) fn decode_pair<K: DeserializeOwned, S: DeserializeOwned>(
    key: &[u8],
    value: &[u8],
) -> std::result::Result<(K, Entry<S>), BoxError> {
    let k = layout::decode(key).map_err(|e| format!("a key does not decode: {e}"))?;
    let entry = layout::decode(value).map_err(|e| format!("a state does not decode: {e}"))?;
    Ok((k, entry))
}

/// Changed values of a key partition: value key → new entry bytes, `None`
/// when removed.
pub(crate) type ValueChanges = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Committed entries of a key partition: encoded key, key and entry.
pub(crate) type Entries<K, S> = Vec<(Vec<u8>, K, Entry<S>)>;

/// Reads and changes the state of key partition `partition`.
pub(crate) struct PartitionState<'a> {
    store: &'a dyn StateStore,
    name: &'a str,
    family: &'a str,
    partition: u16,
    writes: WriteSet,
    /// Changed values, kept when the operator's state snapshots are asked
    /// for.
    changes: Option<ValueChanges>,
}

impl<'a> PartitionState<'a> {
    pub(crate) fn new(
        store: &'a dyn StateStore,
        name: &'a str,
        family: &'a str,
        partition: u16,
        keep_changes: bool,
    ) -> Self {
        Self {
            store,
            name,
            family,
            partition,
            writes: WriteSet::new(),
            changes: keep_changes.then(BTreeMap::new),
        }
    }

    /// The key partition.
    pub(crate) fn partition(&self) -> u16 {
        self.partition
    }

    /// An error about this partition's state.
    pub(crate) fn error(&self, source: impl Into<BoxError>) -> Error {
        Error::State {
            state: self.name.to_owned(),
            partition: self.partition,
            source: source.into(),
        }
    }

    pub(crate) fn encode_key<K: Serialize>(&self, key: &K) -> Result<Vec<u8>> {
        layout::encode(key).map_err(|e| self.error(format!("a key does not encode: {e}")))
    }

    /// The committed entries of `keys` (encoded), in order, and whether the
    /// partition was seeded with the operator's initial state: one bulk
    /// read.
    pub(crate) fn load<S: DeserializeOwned>(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<(Vec<Option<Entry<S>>>, bool)> {
        let mut value_keys: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| layout::value_key(self.partition, k))
            .collect();
        value_keys.push(layout::seeded_key(self.partition));
        let mut found = self
            .store
            .get_many(self.family, &value_keys)
            .map_err(|e| self.error(e))?;
        let seeded = found.pop().flatten().is_some();
        let entries = found
            .into_iter()
            .map(|value| {
                value
                    .map(|v| {
                        layout::decode(&v)
                            .map_err(|e| self.error(format!("a state does not decode: {e}")))
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok((entries, seeded))
    }

    pub(crate) fn mark_seeded(&mut self) {
        self.writes
            .put(self.family, layout::seeded_key(self.partition), Vec::new());
    }

    /// Every committed entry of the partition, in encoded-key order.
    pub(crate) fn scan<K: DeserializeOwned, S: DeserializeOwned>(&self) -> Result<Entries<K, S>> {
        self.scan_with(|encoded, value| {
            let (k, entry) = decode_pair(encoded, value)?;
            Ok((encoded.to_vec(), k, entry))
        })
    }

    /// Every committed entry of the partition with its key left encoded,
    /// in encoded-key order: for operators that decode only some of the
    /// keys (see [`PartitionState::decode_key`]).
    pub(crate) fn scan_encoded<S: DeserializeOwned>(&self) -> Result<Vec<(Vec<u8>, Entry<S>)>> {
        self.scan_with(|encoded, value| {
            let entry =
                layout::decode(value).map_err(|e| format!("a state does not decode: {e}"))?;
            Ok((encoded.to_vec(), entry))
        })
    }

    /// The key an encoded key of this state stands for.
    pub(crate) fn decode_key<K: DeserializeOwned>(&self, encoded: &[u8]) -> Result<K> {
        layout::decode(encoded).map_err(|e| self.error(format!("a key does not decode: {e}")))
    }

    /// `decode` of every value key and value of the partition, in key order.
    fn scan_with<T>(
        &self,
        decode: impl Fn(&[u8], &[u8]) -> std::result::Result<T, BoxError>,
    ) -> Result<Vec<T>> {
        let (from, until) = layout::values_of(self.partition);
        let mut out = Vec::new();
        let mut failure = None;
        self.store
            .scan(self.family, &from, &until, &mut |key, value| {
                let Some(encoded) = layout::key_of_value(key) else {
                    return true;
                };
                match decode(encoded, value) {
                    Ok(item) => {
                        out.push(item);
                        true
                    }
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            })
            .map_err(|e| self.error(e))?;
        match failure {
            Some(e) => Err(self.error(e)),
            None => Ok(out),
        }
    }

    /// Encoded keys whose expiry index entry is due at `now`, with the
    /// deadline the index holds.
    pub(crate) fn due(&self, now: i64) -> Result<Vec<(i64, Vec<u8>)>> {
        let (from, until) = layout::expired_until(self.partition, now);
        let mut due = Vec::new();
        self.store
            .scan(self.family, &from, &until, &mut |key, _| {
                if let Some((deadline, encoded)) = layout::decode_expiry_key(key) {
                    due.push((deadline, encoded.to_vec()));
                }
                true
            })
            .map_err(|e| self.error(e))?;
        Ok(due)
    }

    /// Drops an index entry that no longer matches its key's entry.
    pub(crate) fn drop_index(&mut self, key: &[u8], deadline: i64) {
        self.writes.delete(
            self.family,
            layout::expiry_key(self.partition, deadline, key),
        );
    }

    /// Stages `entry` for `key`, whose committed entry (if any) has the
    /// index deadline `old_deadline`.
    pub(crate) fn put<S: Serialize>(
        &mut self,
        key: &[u8],
        old_deadline: Option<i64>,
        entry: &Entry<S>,
    ) -> Result<()> {
        let bytes = layout::encode(entry)
            .map_err(|e| self.error(format!("a state does not encode: {e}")))?;
        if let Some(deadline) = old_deadline.filter(|d| Some(*d) != entry.deadline()) {
            self.drop_index(key, deadline);
        }
        if let Some(deadline) = entry.deadline().filter(|d| Some(*d) != old_deadline) {
            self.writes.put(
                self.family,
                layout::expiry_key(self.partition, deadline, key),
                Vec::new(),
            );
        }
        let value_key = layout::value_key(self.partition, key);
        if let Some(changes) = &mut self.changes {
            changes.insert(value_key.clone(), Some(bytes.clone()));
        }
        self.writes.put(self.family, value_key, bytes);
        Ok(())
    }

    /// Stages the removal of `key`, whose committed entry has the index
    /// deadline `old_deadline`.
    pub(crate) fn delete(&mut self, key: &[u8], old_deadline: Option<i64>) {
        if let Some(deadline) = old_deadline {
            self.drop_index(key, deadline);
        }
        let value_key = layout::value_key(self.partition, key);
        if let Some(changes) = &mut self.changes {
            changes.insert(value_key.clone(), None);
        }
        self.writes.delete(self.family, value_key);
    }

    /// The staged writes, and the changed values if they were kept.
    pub(crate) fn finish(self) -> (WriteSet, Option<ValueChanges>) {
        (self.writes, self.changes)
    }
}

/// Decodes the state of every key of a partition after a batch: the
/// committed entries with `changes` laid over them.
pub(crate) fn snapshot<K: DeserializeOwned, S: DeserializeOwned>(
    store: &dyn StateStore,
    name: &str,
    family: &str,
    partition: u16,
    changes: &ValueChanges,
) -> Result<Vec<(K, S)>> {
    let error = |source: BoxError| Error::State {
        state: name.to_owned(),
        partition,
        source,
    };
    let (from, until) = layout::values_of(partition);
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    store
        .scan(family, &from, &until, &mut |key, value| {
            merged.insert(key.to_vec(), value.to_vec());
            true
        })
        .map_err(error)?;
    for (key, value) in changes {
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    merged
        .iter()
        .filter_map(|(key, value)| Some((layout::key_of_value(key)?, value)))
        .map(|(key, value)| {
            decode_pair::<K, S>(key, value)
                .map(|(k, entry)| (k, entry.state))
                .map_err(error)
        })
        .collect()
}
