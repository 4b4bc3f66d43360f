//! Keyed state: what stateful operators (`update_state_by_key`,
//! `map_with_state`) keep from one batch to the next.
//!
//! Each stateful operator has a name the job gives it, which names its
//! family in the checkpoint (`sluice_state.<name>`). A batch reads the
//! state its keys had after the previous batch through a [`StateStore`]
//! (the checkpoint's RocksDB, or [`MemoryState`]) in one bulk read per
//! task, and stages its changes as writes that the runtime commits in the
//! same atomic write as the batch's offsets: a failed batch leaves no trace
//! in the state, and a batch redone from its write-ahead plan reads the
//! same state and makes the same changes.
//!
//! Keys and values are encoded with [postcard](https://docs.rs/postcard)
//! (compact, deterministic, with a stable documented wire format), laid
//! out by key partition (see the `layout` module), and described by their
//! serde shape in a [`StateDescriptor`] so the checkpoint can refuse a
//! changed type instead of decoding garbage.

pub(crate) mod expiry;
pub(crate) mod layout;
mod migration;
pub(crate) mod partition;
mod shape;
mod spec;
mod store;

use serde::de::DeserializeOwned;

pub use crate::ops::{MapWithStateStream, Table};
pub use layout::partition_range as key_partition_range;
pub use migration::Migration;
pub use shape::shape_of;
pub use spec::{State, StateSpec};
pub use store::{MemoryState, StateStore};

use crate::{Error, Result};

/// Prefix of the checkpoint families that hold keyed state.
pub const STATE_FAMILY_PREFIX: &str = "sluice_state.";

/// The checkpoint family of the state named `name`.
pub fn family_of(name: &str) -> String {
    format!("{STATE_FAMILY_PREFIX}{name}")
}

/// A stateful operator as the checkpoint records it: its name and the
/// serde shapes of its key and state types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDescriptor {
    /// The name the job gave the operator.
    pub name: String,
    /// The operator, such as `map_with_state`.
    pub operator: &'static str,
    /// The serde shape of the key type (JSON).
    pub key_shape: String,
    /// The serde shape of the state type (JSON).
    pub state_shape: String,
    /// Settings the stored state depends on besides its types, such as a
    /// window's length and slide (`batch_time len_ms=600000
    /// slide_ms=60000`); empty for operators without any. A job that
    /// declares other parameters than the checkpoint holds must be refused.
    pub params: String,
}

impl StateDescriptor {
    pub(crate) fn of<K: DeserializeOwned, S: DeserializeOwned>(
        name: &str,
        operator: &'static str,
    ) -> Self {
        Self {
            name: name.to_owned(),
            operator,
            key_shape: shape::shape_of::<K>(),
            state_shape: shape::shape_of::<S>(),
            params: String::new(),
        }
    }

    /// The same descriptor with `params` recorded.
    pub(crate) fn with_params(mut self, params: String) -> Self {
        self.params = params;
        self
    }

    /// The checkpoint family the state lives in.
    pub fn family(&self) -> String {
        family_of(&self.name)
    }
}

/// Why `name` cannot name a state, if it cannot: it must be 1 to 200
/// ASCII letters, digits, `.`, `_` or `-`.
pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 200 {
        return Err("the name is longer than 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' may be used");
    }
    Ok(())
}

/// Every `(key, state)` of the state named `name`, read from `store`, by
/// key partition then encoded key: what a tool or a test reads back from a
/// checkpoint. `K` and `S` must be the types the operator was given.
///
/// ```
/// use sluice_core::state::{read_state, MemoryState};
///
/// let store = MemoryState::new();
/// let counts: Vec<(String, u64)> = read_state(&store, "counts")?;
/// assert!(counts.is_empty());
/// # Ok::<(), sluice_core::Error>(())
/// ```
pub fn read_state<K: DeserializeOwned, S: DeserializeOwned>(
    store: &dyn StateStore,
    name: &str,
) -> Result<Vec<(K, S)>> {
    let family = family_of(name);
    let mut out = Vec::new();
    let mut failure = None;
    let (from, until) = (vec![], vec![0xff, 0xff, 0xff]);
    store
        .scan(&family, &from, &until, &mut |key, value| {
            let Some(encoded) = layout::key_of_value(key) else {
                return true;
            };
            let partition = u16::from_be_bytes([key[0], key[1]]);
            match partition::decode_pair::<K, S>(encoded, value) {
                Ok((k, entry)) => {
                    out.push((k, entry.state));
                    true
                }
                Err(source) => {
                    failure = Some(Error::State {
                        state: name.to_owned(),
                        partition,
                        source,
                    });
                    false
                }
            }
        })
        .map_err(|source| Error::State {
            state: name.to_owned(),
            partition: 0,
            source,
        })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(out),
    }
}
