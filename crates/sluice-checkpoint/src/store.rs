//! The `CheckpointStore` trait: what the driver needs from a checkpoint.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use sluice_core::state::{StateDescriptor, StateStore};
use sluice_core::{TopicPartition, WriteSet};

use crate::{BatchRecord, DeadLetterRecord, FamilyStats, Result, StateChanges, StateRecord};

/// Everything one successful batch commits, applied atomically: all of it
/// or none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// History record of the batch; its id must exceed the last committed
    /// one.
    pub record: BatchRecord,
    /// The next offset to read of every partition the batch advanced.
    /// Partitions not listed keep their stored offset.
    pub next_offsets: Vec<(TopicPartition, i64)>,
    /// Results and state staged by the batch's outputs.
    pub writes: WriteSet,
}

/// Durable storage of offsets, batch history and user key/value families,
/// updated by atomic commits.
///
/// A store has one writer; its handles are moved between threads, not
/// shared.
pub trait CheckpointStore: Send {
    /// The stored next offset of every partition; empty on first start.
    fn offsets(&self) -> Result<BTreeMap<TopicPartition, i64>>;

    /// The most recently committed batch, if any.
    fn last_batch(&self) -> Result<Option<BatchRecord>>;

    /// The retained batch history, oldest first.
    fn batches(&self) -> Result<Vec<BatchRecord>>;

    /// Creates the user family `name` if it does not exist yet.
    ///
    /// Names starting with `sluice_` are reserved and rejected.
    fn ensure_family(&mut self, name: &str) -> Result<()>;

    /// Records the plan of the next batch — its id, time and ranges, in a
    /// [`BatchRecord`] whose counts are still zero — before the batch runs.
    /// A batch that does not commit (a crash, a cancelled stop) is then
    /// redone after a restart with exactly these ranges, so its id and
    /// ranges, and with them its idempotency keys, never change.
    ///
    /// The id must exceed the last committed one. Written with the same
    /// durability as commits.
    fn write_plan(&mut self, plan: &BatchRecord) -> Result<()>;

    /// The plan written by [`write_plan`](Self::write_plan) for a batch
    /// that has not committed yet; `None` once that batch committed.
    fn pending_plan(&self) -> Result<Option<BatchRecord>>;

    /// The number of reduce partitions the job's shuffles use, as
    /// [`record_shuffle_partitions`](Self::record_shuffle_partitions)
    /// recorded it at the job's first start; `None` before.
    ///
    /// Which records a shuffle puts in reduce partition `i`, and so what an
    /// idempotency key names, depends on this number. Keeping it in the
    /// checkpoint keeps it fixed whatever the worker count of later runs,
    /// as Spark keeps `spark.sql.shuffle.partitions` in its checkpoint.
    fn shuffle_partitions(&self) -> Result<Option<NonZeroUsize>>;

    /// Records the job's shuffle partition count, durably (synced whatever
    /// the sync setting), before any batch uses it.
    ///
    /// The count never changes once recorded: recording the same count
    /// again does nothing, and another count fails with
    /// [`Error::ShufflePartitionsFixed`](crate::Error::ShufflePartitionsFixed).
    fn record_shuffle_partitions(&mut self, partitions: NonZeroUsize) -> Result<()>;

    /// When the job's intake was paused (ms since the Unix epoch), if it
    /// is: a pause lasts, across restarts, until a resume.
    fn paused_since(&self) -> Result<Option<i64>>;

    /// Records a pause (`Some(since_ms)`) or a resume (`None`), durably
    /// (synced whatever the sync setting).
    fn set_paused(&mut self, since_ms: Option<i64>) -> Result<()>;

    /// The stateful operators the checkpoint holds state for, by name.
    fn states(&self) -> Result<Vec<StateRecord>>;

    /// Opens the states of a starting job that declares the stateful
    /// operators `declared` and the renames and drops in `changes`: new
    /// states are registered, renamed ones moved (their data copied to the
    /// new name's family), dropped ones deleted. Every state the checkpoint
    /// holds must be declared with the same key and state types, renamed
    /// or dropped; otherwise this fails with
    /// [`Error::State`](crate::Error::State), naming the state and what to
    /// do, before anything is changed.
    fn open_states(&mut self, declared: &[StateDescriptor], changes: &StateChanges) -> Result<()>;

    /// Where a batch reads the committed state from: shared by its worker
    /// threads, it sees each commit once it is done.
    fn state_store(&self) -> Arc<dyn StateStore>;

    /// Applies `commit` in one atomic write.
    ///
    /// Validation happens before anything is written: the batch id must
    /// exceed the last committed one and every write must target an
    /// existing user family. On error nothing of the commit is stored.
    fn commit(&mut self, commit: Commit) -> Result<()>;

    /// The counter at `key` of `family`; `None` when the key is absent.
    ///
    /// This and the other reads of a family fail with
    /// [`Error::NoSuchFamily`](crate::Error::NoSuchFamily), naming the
    /// families the checkpoint holds, when it has no `family`.
    fn counter(&self, family: &str, key: &[u8]) -> Result<Option<i64>>;

    /// Every counter of `family`, sorted by key. Keys are the bytes the
    /// sink was given (a `String` key's UTF-8, for instance): turn them back
    /// with `String::from_utf8` or `String::from_utf8_lossy`.
    fn counters(&self, family: &str) -> Result<Vec<(Vec<u8>, i64)>>;

    /// Every raw key/value pair of `family`, sorted by key.
    fn scan(&self, family: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The dead letters kept in `family` (see the runtime's poison policy),
    /// by topic, partition and offset.
    fn dead_letters(&self, family: &str) -> Result<Vec<DeadLetterRecord>> {
        self.scan(family)?
            .iter()
            .map(|(_, json)| DeadLetterRecord::from_json(json))
            .collect()
    }

    /// Estimated size of every family (keys, bytes on disk and in
    /// memtables), for metrics; a store that cannot tell returns none.
    fn family_stats(&self) -> Result<Vec<FamilyStats>> {
        Ok(Vec::new())
    }
}
