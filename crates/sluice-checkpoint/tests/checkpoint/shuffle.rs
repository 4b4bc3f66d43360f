//! The job's shuffle partition count: recorded once, kept across reopens.

use std::num::NonZeroUsize;

use sluice_checkpoint::{CheckpointStore, Error, RocksCheckpoint};
use tempfile::TempDir;

use crate::util::{open, raw_db, APP};

fn n(count: usize) -> NonZeroUsize {
    NonZeroUsize::new(count).unwrap()
}

#[test]
fn shuffle_partitions_are_recorded_once_and_survive_reopening() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    assert_eq!(
        store.shuffle_partitions().unwrap(),
        None,
        "a new checkpoint"
    );
    store.record_shuffle_partitions(n(3)).unwrap();
    store.record_shuffle_partitions(n(3)).unwrap();
    assert_eq!(store.shuffle_partitions().unwrap(), Some(n(3)));
    drop(store);

    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(reader.shuffle_partitions().unwrap(), Some(n(3)));
    drop(reader);

    let mut store = open(dir.path()).unwrap();
    match store.record_shuffle_partitions(n(8)).unwrap_err() {
        Error::ShufflePartitionsFixed {
            stored, requested, ..
        } => assert_eq!((stored, requested), (3, 8)),
        other => panic!("expected the recorded count to stay, got {other:?}"),
    }
    assert_eq!(store.shuffle_partitions().unwrap(), Some(n(3)));
}

#[test]
fn a_read_only_handle_cannot_record_shuffle_partitions() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path()).unwrap());
    let mut reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    let err = reader.record_shuffle_partitions(n(2)).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
}

#[test]
fn a_damaged_shuffle_partition_count_is_refused_at_open() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path()).unwrap());
    {
        let db = raw_db(dir.path());
        let meta = db.cf_handle("sluice_meta").unwrap();
        db.put_cf(meta, "shuffle_partitions", "zero").unwrap();
    }
    match open(dir.path()) {
        Err(Error::Corrupt { detail, .. }) => {
            assert!(detail.contains("shuffle partition"), "{detail}")
        }
        other => panic!("expected a corrupt checkpoint error, got {other:?}"),
    }
}
