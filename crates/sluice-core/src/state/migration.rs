//! Converting a stored state to a new type when a job's state type changed.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::layout::{self, Entry};
use super::shape::shape_of;
use crate::BoxError;

type Convert = dyn Fn(&[u8]) -> Result<Vec<u8>, BoxError> + Send + Sync;

/// How to turn each stored state of an old type into the new type a job
/// declares: given to the runtime's `migrate_state`, applied once at start
/// when the checkpoint holds the old type. Timeouts and TTLs of the keys
/// are kept.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sluice_core::state::Migration;
///
/// #[derive(Serialize, Deserialize)]
/// struct Visits { count: u64, last_page: String }
///
/// // The state used to be a bare count.
/// let migration = Migration::new(|count: u64| Visits { count, last_page: String::new() });
/// assert_ne!(migration.from_shape(), migration.to_shape());
/// ```
#[derive(Clone)]
pub struct Migration {
    from_shape: String,
    to_shape: String,
    convert: Arc<Convert>,
}

impl Migration {
    /// A migration from `Old` states to `New` ones through `f`.
    pub fn new<Old, New, F>(f: F) -> Self
    where
        Old: DeserializeOwned,
        New: Serialize + DeserializeOwned,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        Self {
            from_shape: shape_of::<Old>(),
            to_shape: shape_of::<New>(),
            convert: Arc::new(move |bytes| {
                let old: Entry<Old> = layout::decode(bytes)?;
                layout::encode(&Entry {
                    state: f(old.state),
                    timeout_at: old.timeout_at,
                    expires_at: old.expires_at,
                })
            }),
        }
    }

    /// The serde shape of the old state type.
    pub fn from_shape(&self) -> &str {
        &self.from_shape
    }

    /// The serde shape of the new state type.
    pub fn to_shape(&self) -> &str {
        &self.to_shape
    }

    /// The new value of a stored key/value of the state's family: `None`
    /// for keys that hold no state (the expiry index, markers), which stay
    /// as they are.
    pub fn convert(&self, key: &[u8], value: &[u8]) -> Option<Result<Vec<u8>, BoxError>> {
        layout::key_of_value(key).map(|_| (self.convert)(value))
    }
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("from_shape", &self.from_shape)
            .field("to_shape", &self.to_shape)
            .finish_non_exhaustive()
    }
}
