//! Restore points and what is built on them: rewinding a checkpoint, and
//! setting offsets by hand.

use std::time::Instant;

use sluice_checkpoint::{CheckpointStore, Error, RocksCheckpoint};
use sluice_core::WriteSet;

use crate::util::{commit, open, tp, APP};

fn with_points(dir: &std::path::Path, every: u64, keep: usize) -> RocksCheckpoint {
    RocksCheckpoint::builder(dir)
        .app_id(APP)
        .restore_points(every, keep)
        .open()
        .unwrap()
}

/// Commits batch `id`: word `w<id>` counted once, `total` incremented, and
/// the offset of `t-0` at `10 * (id + 1)`.
fn batch(store: &mut RocksCheckpoint, id: u64) {
    let mut writes = WriteSet::new();
    writes.add("counts", format!("w{id}"), 1);
    writes.add("counts", "total", 1);
    commit(store, id, &[(tp("t", 0), 10 * (id as i64 + 1))], writes).unwrap();
}

#[test]
fn restore_points_follow_every_and_keep() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = with_points(dir.path(), 3, 2);
    store.ensure_family("counts").unwrap();
    for id in 0..10 {
        batch(&mut store, id);
    }
    assert_eq!(store.restore_points().unwrap(), [6, 9]);
    // Off by default: none taken.
    drop(store);
    let other = tempfile::tempdir().unwrap();
    let mut store = open(other.path()).unwrap();
    store.ensure_family("counts").unwrap();
    batch(&mut store, 0);
    assert!(store.restore_points().unwrap().is_empty());
}

#[test]
fn keeping_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = RocksCheckpoint::builder(dir.path())
        .app_id(APP)
        .restore_points(5, 0)
        .open()
        .unwrap_err();
    assert!(error.to_string().contains("keep at least 1"), "{error}");
}

#[test]
fn a_rewind_brings_offsets_results_and_history_back_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = with_points(dir.path(), 2, 10);
    store.ensure_family("counts").unwrap();
    for id in 0..7 {
        batch(&mut store, id);
    }
    let plan = store.rewind_plan(4).unwrap();
    assert_eq!(plan.last_batch, Some(6));
    assert_eq!(plan.offsets_before[&tp("t", 0)], 70);
    assert_eq!(plan.offsets_after[&tp("t", 0)], 50);
    assert_eq!(plan.batches_removed, [5, 6]);
    assert_eq!(plan.restore_points_removed, [6]);
    // The plan changed nothing.
    assert_eq!(store.counter("counts", b"total").unwrap(), Some(7));

    // A pause (the operator's) is kept; the restore point had none.
    store.set_paused(Some(1_764_900_000_000)).unwrap();
    store.rewind_to(4).unwrap();
    assert_eq!(store.paused_since().unwrap(), Some(1_764_900_000_000));
    store.set_paused(None).unwrap();
    assert_eq!(store.offsets().unwrap()[&tp("t", 0)], 50);
    assert_eq!(store.counter("counts", b"total").unwrap(), Some(5));
    assert_eq!(store.counter("counts", b"w5").unwrap(), None);
    assert_eq!(store.last_batch().unwrap().map(|b| b.id), Some(4));
    assert_eq!(store.batches().unwrap().len(), 5);
    assert_eq!(store.restore_points().unwrap(), [0, 2, 4]);
    // The job goes on from there: batch 5 again, with counters merging on
    // the restored values.
    batch(&mut store, 5);
    assert_eq!(store.counter("counts", b"total").unwrap(), Some(6));
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.counter("counts", b"total").unwrap(), Some(6));
}

#[test]
fn a_rewind_without_a_restore_point_lists_those_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = with_points(dir.path(), 2, 10);
    store.ensure_family("counts").unwrap();
    for id in 0..5 {
        batch(&mut store, id);
    }
    match store.rewind_to(3) {
        Err(Error::NoRestorePoint {
            batch, available, ..
        }) => {
            assert_eq!(batch, 3);
            assert_eq!(available, [0, 2, 4]);
        }
        other => panic!("expected NoRestorePoint, got {other:?}"),
    }
    let message = store.rewind_to(3).unwrap_err().to_string();
    assert!(message.contains("batches 0, 2, 4"), "{message}");
    assert_eq!(store.last_batch().unwrap().map(|b| b.id), Some(4));
}

#[test]
fn read_only_handles_plan_but_do_not_rewind_or_set_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = with_points(dir.path(), 1, 10);
    store.ensure_family("counts").unwrap();
    batch(&mut store, 0);
    batch(&mut store, 1);
    let mut reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(reader.rewind_plan(0).unwrap().batches_removed, [1]);
    assert!(matches!(reader.rewind_to(0), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        reader.set_offsets(&[(tp("t", 0), 0)]),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(RocksCheckpoint::app_id_at(dir.path()).unwrap(), APP);
}

#[test]
fn offsets_set_by_hand_are_one_write_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    batch(&mut store, 0);
    store
        .set_offsets(&[(tp("t", 0), 3), (tp("t", 1), 9)])
        .unwrap();
    let offsets = store.offsets().unwrap();
    assert_eq!((offsets[&tp("t", 0)], offsets[&tp("t", 1)]), (3, 9));
    // One bad offset and nothing is written.
    assert!(store
        .set_offsets(&[(tp("t", 0), 4), (tp("t", 1), -1)])
        .is_err());
    assert_eq!(store.offsets().unwrap()[&tp("t", 0)], 3);
}

/// The cost of one restore point with `keys` keys of state committed;
/// run with `cargo test -p sluice-checkpoint --test checkpoint --release
/// restore_point_cost -- --ignored --nocapture` (figures in
/// docs/benchmarks.md).
#[test]
#[ignore = "a measurement, not a check"]
fn restore_point_cost() {
    for keys in [10_000u64, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        // Taken by hand below, so off here.
        let mut store = open(dir.path()).unwrap();
        store.ensure_family("state").unwrap();
        let mut id = 0;
        for chunk in (0..keys).collect::<Vec<_>>().chunks(50_000) {
            let mut writes = WriteSet::new();
            for k in chunk {
                writes.put("state", format!("key{k:010}"), vec![7u8; 64]);
            }
            commit(&mut store, id, &[(tp("t", 0), id as i64)], writes).unwrap();
            id += 1;
        }
        drop(store);
        let mut store = with_points(dir.path(), 1, 3);
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut writes = WriteSet::new();
            for k in 0..1000u64 {
                writes.put(
                    "state",
                    format!("key{:010}", (k * 7919 + id) % keys),
                    vec![9u8; 64],
                );
            }
            let started = Instant::now();
            commit(&mut store, id, &[(tp("t", 0), id as i64)], writes).unwrap();
            times.push(started.elapsed());
            id += 1;
        }
        // The same commits without restore points, for the difference.
        drop(store);
        let mut store = open(dir.path()).unwrap();
        let mut plain = Vec::new();
        for _ in 0..5 {
            let mut writes = WriteSet::new();
            for k in 0..1000u64 {
                writes.put(
                    "state",
                    format!("key{:010}", (k * 7919 + id) % keys),
                    vec![9u8; 64],
                );
            }
            let started = Instant::now();
            commit(&mut store, id, &[(tp("t", 0), id as i64)], writes).unwrap();
            plain.push(started.elapsed());
            id += 1;
        }
        let median = |v: &mut Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        println!(
            "{keys} keys: commit of 1000 writes + restore point {:?} (median of 5), without {:?}",
            median(&mut times),
            median(&mut plain)
        );
    }
}
