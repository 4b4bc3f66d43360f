//! Helpers shared by the checkpoint tests.

use std::path::Path;

use sluice_checkpoint::{BatchRecord, CheckpointStore, Commit, Result, RocksCheckpoint};
use sluice_core::{TopicPartition, WriteSet};

pub(crate) const APP: &str = "wordcount";

pub(crate) fn open(dir: &Path) -> Result<RocksCheckpoint> {
    RocksCheckpoint::builder(dir).app_id(APP).open()
}

pub(crate) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// Commits batch `id` with `offsets` and `writes`.
pub(crate) fn commit(
    store: &mut impl CheckpointStore,
    id: u64,
    offsets: &[(TopicPartition, i64)],
    writes: WriteSet,
) -> Result<()> {
    store.commit(Commit {
        record: BatchRecord::new(id, 1_000 * id as i64),
        next_offsets: offsets.to_vec(),
        writes,
    })
}

/// Opens the database behind a checkpoint with plain RocksDB, as a tool or
/// an accident outside sluice would. Only safe on checkpoints without
/// counters: it has no merge operator.
pub(crate) fn raw_db(dir: &Path) -> rocksdb::DB {
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, families).unwrap()
}
