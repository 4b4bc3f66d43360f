//! Writes that sinks stage during a batch and the checkpoint applies
//! atomically with the batch's offsets.

/// One staged write into a named key/value family of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// Family (a RocksDB column family) the key lives in.
        family: String,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Family the key lives in.
        family: String,
        /// The key.
        key: Vec<u8>,
    },
    /// Add `delta` to the signed 64-bit counter stored at `key` (absent
    /// counts as zero).
    Add {
        /// Family the counter lives in.
        family: String,
        /// The key.
        key: Vec<u8>,
        /// Amount to add; may be negative.
        delta: i64,
    },
}

impl Write {
    /// The family this write targets.
    pub fn family(&self) -> &str {
        match self {
            Write::Put { family, .. }
            | Write::Delete { family, .. }
            | Write::Add { family, .. } => family,
        }
    }
}

/// All writes staged by a batch's output operations, applied by the
/// checkpoint store in the same atomic write as the batch's next offsets —
/// or not at all when the batch fails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSet {
    writes: Vec<Write>,
}

impl WriteSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages `key = value` in `family`.
    pub fn put(&mut self, family: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push(Write::Put {
            family: family.to_owned(),
            key: key.into(),
            value: value.into(),
        });
    }

    /// Stages the removal of `key` from `family`.
    pub fn delete(&mut self, family: &str, key: impl Into<Vec<u8>>) {
        self.writes.push(Write::Delete {
            family: family.to_owned(),
            key: key.into(),
        });
    }

    /// Stages adding `delta` to the counter at `key` in `family`.
    pub fn add(&mut self, family: &str, key: impl Into<Vec<u8>>, delta: i64) {
        self.writes.push(Write::Add {
            family: family.to_owned(),
            key: key.into(),
            delta,
        });
    }

    /// Moves every write of `other` into `self`, keeping order.
    pub fn append(&mut self, other: &mut WriteSet) {
        self.writes.append(&mut other.writes);
    }

    /// The staged writes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Write> {
        self.writes.iter()
    }

    /// Number of staged writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

impl IntoIterator for WriteSet {
    type Item = Write;
    type IntoIter = std::vec::IntoIter<Write>;
    fn into_iter(self) -> Self::IntoIter {
        self.writes.into_iter()
    }
}
