//! The plan of the batch about to run: kept until that batch commits; and
//! the pause mark, kept until a resume.

use sluice_checkpoint::{BatchRecord, CheckpointStore, Error, RangeRecord, RocksCheckpoint};
use sluice_core::{OffsetRange, WriteSet};
use tempfile::TempDir;

use crate::util::{commit, open, tp, APP};

fn plan(id: u64, from: i64, until: i64) -> BatchRecord {
    let mut plan = BatchRecord::new(id, 1_000 * id as i64);
    let range = OffsetRange::new(&tp("t", 0), from, until);
    plan.ranges.push(RangeRecord::from_range(&range, 0));
    plan
}

#[test]
fn a_plan_survives_reopening_until_its_batch_commits() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    assert_eq!(store.pending_plan().unwrap(), None);

    store.write_plan(&plan(0, 0, 10)).unwrap();
    drop(store);
    let mut store = open(dir.path()).unwrap();
    assert_eq!(store.pending_plan().unwrap(), Some(plan(0, 0, 10)));

    commit(&mut store, 0, &[(tp("t", 0), 10)], WriteSet::new()).unwrap();
    assert_eq!(store.pending_plan().unwrap(), None, "its batch committed");

    store.write_plan(&plan(1, 10, 25)).unwrap();
    drop(store);
    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(reader.pending_plan().unwrap(), Some(plan(1, 10, 25)));
}

#[test]
fn a_plan_for_a_committed_batch_id_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    commit(&mut store, 3, &[(tp("t", 0), 10)], WriteSet::new()).unwrap();
    let err = store.write_plan(&plan(3, 10, 12)).unwrap_err();
    assert!(
        matches!(err, Error::BatchIdNotIncreasing { id: 3, last: 3 }),
        "{err}"
    );
    assert_eq!(store.pending_plan().unwrap(), None);
}

/// A pause is kept until a resume, across reopening, and read-only opens
/// see it.
#[test]
fn a_pause_survives_reopening_until_a_resume() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    assert_eq!(store.paused_since().unwrap(), None);
    store.set_paused(Some(1_764_900_000_123)).unwrap();
    drop(store);
    let mut store = open(dir.path()).unwrap();
    assert_eq!(store.paused_since().unwrap(), Some(1_764_900_000_123));
    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(reader.paused_since().unwrap(), Some(1_764_900_000_123));
    drop(reader);
    store.set_paused(None).unwrap();
    drop(store);
    assert_eq!(open(dir.path()).unwrap().paused_since().unwrap(), None);
}
