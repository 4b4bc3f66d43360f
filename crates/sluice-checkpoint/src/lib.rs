//! sluice-checkpoint: where a sluice job keeps what it has done.
//!
//! A checkpoint holds, for one application, the next Kafka offset of every
//! partition, a history of the batches committed, and the user key/value
//! families (results and operator state) that sinks write into. After each
//! successful batch the driver hands a [`Commit`] — the batch's
//! [`BatchRecord`], its next offsets and the [`WriteSet`] its outputs
//! staged — to [`CheckpointStore::commit`], which applies all of it in one
//! atomic write. A crash therefore leaves either the whole batch or none of
//! it, and the restarted job resumes from [`CheckpointStore::offsets`].
//!
//! [`RocksCheckpoint`] is the store: a RocksDB database whose column
//! families are the internal `sluice_meta`, `sluice_offsets` and
//! `sluice_batches` plus one per user family. It holds data only — offsets,
//! JSON batch records and user bytes under a schema version — so a
//! changed build of the job can resume from it. Opening refuses, with an
//! [`Error`] saying why, a checkpoint of another app, of a newer schema, a
//! damaged one, or one another process holds; a damaged checkpoint is never
//! taken for a first start.
//!
//! [`WriteSet`]: sluice_core::WriteSet
//!
//! # Example
//!
//! ```
//! # fn main() -> sluice_checkpoint::Result<()> {
//! use sluice_checkpoint::{BatchRecord, CheckpointStore, Commit, RocksCheckpoint};
//! use sluice_core::{TopicPartition, WriteSet};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = RocksCheckpoint::builder(dir.path()).app_id("wordcount").open()?;
//! store.ensure_family("counts")?;
//!
//! let mut writes = WriteSet::new();
//! writes.add("counts", "hello", 2);
//! store.commit(Commit {
//!     record: BatchRecord::new(0, 1_700_000_000_000),
//!     next_offsets: vec![(TopicPartition::new("words", 0), 42)],
//!     writes,
//! })?;
//! drop(store);
//!
//! // A restart resumes where the last commit left off.
//! let store = RocksCheckpoint::builder(dir.path()).app_id("wordcount").open()?;
//! assert_eq!(store.offsets()?[&TopicPartition::new("words", 0)], 42);
//! assert_eq!(store.counter("counts", b"hello")?, Some(2));
//! assert_eq!(store.last_batch()?.map(|b| b.id), Some(0));
//! # Ok(()) }
//! ```

mod builder;
mod dead_letter;
mod error;
mod keys;
mod memory;
mod merge;
mod record;
mod restore;
mod rocks;
mod state;
mod store;
mod validate;

// Shown to users by the facade as `sluice::checkpoint`.
pub use builder::RocksCheckpointBuilder;
pub use dead_letter::DeadLetterRecord;
pub use error::{Error, Result};
pub use memory::DEFAULT_CACHE_BYTES;
pub use record::{
    BatchRecord, ControlRecord, LateRecords, RangeRecord, ResetRecord, ResetRecordKind,
};
pub use rocks::{FamilyStats, RewindPlan, RocksCheckpoint};
pub use state::{StateChanges, StateRecord};
pub use store::{CheckpointStore, Commit};

// For sluice-runtime, which checks user family names.
pub use keys::RESERVED_PREFIX;
