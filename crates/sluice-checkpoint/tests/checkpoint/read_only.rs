//! Read-only handles, for tools that inspect a running or stopped job.

use sluice_checkpoint::{CheckpointStore, Error, RocksCheckpoint};
use sluice_core::WriteSet;
use tempfile::TempDir;

use crate::util::{commit, open, tp, APP};

#[test]
fn read_only_handle_sees_commits_while_the_writer_runs() {
    let dir = TempDir::new().unwrap();
    let mut writer = open(dir.path()).unwrap();
    writer.ensure_family("counts").unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "a", 3);
    writes.add("counts", "a", 4);
    commit(&mut writer, 0, &[(tp("t", 0), 10)], writes).unwrap();

    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.offsets().unwrap()[&tp("t", 0)], 10);
    assert_eq!(reader.counter("counts", b"a").unwrap(), Some(7));
    assert_eq!(reader.last_batch().unwrap().unwrap().id, 0);

    // The writer is unaffected by the reader.
    commit(&mut writer, 1, &[(tp("t", 0), 11)], WriteSet::new()).unwrap();
}

#[test]
fn read_only_handle_refuses_writes() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path()).unwrap());
    let mut reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    let err = reader.ensure_family("counts").unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    let err = commit(&mut reader, 0, &[(tp("t", 0), 1)], WriteSet::new()).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[test]
fn read_only_open_checks_the_app_id() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path()).unwrap());
    let err = RocksCheckpoint::open_read_only(dir.path(), "other").unwrap_err();
    assert!(matches!(err, Error::AppIdMismatch { .. }), "{err}");
}

#[test]
fn read_only_open_of_nothing_creates_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("absent");
    let err = RocksCheckpoint::open_read_only(&path, APP).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(!path.exists());
}
