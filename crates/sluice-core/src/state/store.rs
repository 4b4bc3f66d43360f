//! Where keyed state is read from: the [`StateStore`] trait, implemented on
//! RocksDB by the checkpoint and in memory by [`MemoryState`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{PoisonError, RwLock};

use crate::{BoxError, Write, WriteSet};

/// Read access to the state committed by earlier batches.
///
/// A batch reads state through this trait and stages its changes as
/// [`Write`]s; the runtime commits them with the batch's offsets, so a
/// batch always reads what the batches before it committed and never its
/// own changes. Families and keys are those the writes name.
///
/// Reads are called from the worker threads of a batch at the same time.
pub trait StateStore: Send + Sync {
    /// The values of `keys` in `family`, in the order asked (`None` for an
    /// absent key or family): one bulk read per task, not one per record.
    /// Keys asked in ascending byte order may be read faster.
    fn get_many(&self, family: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BoxError>;

    /// Hands every key/value of `family` in `[from, until)` to `each`, in
    /// key order, until `each` returns false. An absent family holds
    /// nothing.
    fn scan(
        &self,
        family: &str,
        from: &[u8],
        until: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BoxError>;
}

/// Every family's keys and values, by family name.
type Families = HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Keyed state kept in memory, for running a [`StreamGraph`] without a
/// checkpoint (tests, examples, benchmarks): apply each batch's writes
/// with [`MemoryState::apply`] to commit them.
///
/// [`StreamGraph`]: crate::StreamGraph
#[derive(Debug, Default)]
pub struct MemoryState {
    families: RwLock<Families>,
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `writes`, as the checkpoint does after a batch succeeded.
    /// A counter [`Write::Add`] keeps a little-endian `i64`, as the
    /// checkpoint's counters do.
    pub fn apply(&self, writes: &WriteSet) {
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for write in writes.iter() {
            let family = families.entry(write.family().to_owned()).or_default();
            match write {
                Write::Put { key, value, .. } => {
                    family.insert(key.clone(), value.clone());
                }
                Write::Delete { key, .. } => {
                    family.remove(key);
                }
                Write::Add { key, delta, .. } => {
                    let old = family
                        .get(key)
                        .and_then(|v| Some(i64::from_le_bytes(v.as_slice().try_into().ok()?)))
                        .unwrap_or(0);
                    family.insert(key.clone(), old.wrapping_add(*delta).to_le_bytes().to_vec());
                }
            }
        }
    }

    /// Number of keys in `family`.
    pub fn len(&self, family: &str) -> usize {
        self.families
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(family)
            .map_or(0, BTreeMap::len)
    }
}

impl StateStore for MemoryState {
    fn get_many(&self, family: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BoxError> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let family = families.get(family);
        Ok(keys
            .iter()
            .map(|key| family.and_then(|f| f.get(key).cloned()))
            .collect())
    }

    fn scan(
        &self,
        family: &str,
        from: &[u8],
        until: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BoxError> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let Some(family) = families.get(family) else {
            return Ok(());
        };
        if from >= until {
            return Ok(());
        }
        let range = (Bound::Included(from), Bound::Excluded(until));
        for (key, value) in family.range::<[u8], _>(range) {
            if !each(key, value) {
                break;
            }
        }
        Ok(())
    }
}
