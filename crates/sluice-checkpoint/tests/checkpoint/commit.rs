//! Committing batches: atomicity, counters, validation, retention.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice_checkpoint::{
    BatchRecord, CheckpointStore, Commit, Error, RangeRecord, RocksCheckpoint,
};
use sluice_core::{OffsetRange, WriteSet};
use tempfile::TempDir;

use crate::util::{commit, open, tp, APP};

#[test]
fn commit_then_reopen_sees_offsets_records_and_counters() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    store.ensure_family("latest").unwrap();

    let range = OffsetRange::new(&tp("words", 1), 0, 7);
    let mut record = BatchRecord::new(4, 1_700_000_000_000);
    record.ranges.push(RangeRecord::from_range(&range, 6));
    record.records = 6;
    record.processing_ms = 12;
    let mut writes = WriteSet::new();
    writes.add("counts", "hello", 5);
    writes.put("latest", "k", "v");
    store
        .commit(Commit {
            record: record.clone(),
            next_offsets: vec![(tp("words", 0), 3), (tp("words", 1), 7)],
            writes,
        })
        .unwrap();
    drop(store);

    let store = open(dir.path()).unwrap();
    let expected = BTreeMap::from([(tp("words", 0), 3), (tp("words", 1), 7)]);
    assert_eq!(store.offsets().unwrap(), expected);
    assert_eq!(store.last_batch().unwrap(), Some(record.clone()));
    assert_eq!(store.batches().unwrap(), vec![record]);
    assert_eq!(store.counter("counts", b"hello").unwrap(), Some(5));
    assert_eq!(store.counter("counts", b"absent").unwrap(), None);
    assert_eq!(
        store.scan("latest").unwrap(),
        vec![(b"k".to_vec(), b"v".to_vec())]
    );
    assert_eq!(store.families().collect::<Vec<_>>(), ["counts", "latest"]);
}

#[test]
fn first_start_has_no_offsets_and_no_batches() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.offsets().unwrap().is_empty());
    assert_eq!(store.last_batch().unwrap(), None);
    assert!(store.batches().unwrap().is_empty());
}

#[test]
fn partitions_left_out_of_a_commit_keep_their_offsets() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    commit(
        &mut store,
        0,
        &[(tp("t", 0), 5), (tp("t", 1), 9)],
        WriteSet::new(),
    )
    .unwrap();
    commit(&mut store, 1, &[(tp("t", 0), 8)], WriteSet::new()).unwrap();
    let offsets = store.offsets().unwrap();
    assert_eq!(offsets[&tp("t", 0)], 8);
    assert_eq!(offsets[&tp("t", 1)], 9);
}

#[test]
fn add_merges_within_one_commit_and_across_commits() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "a", 2);
    writes.add("counts", "a", 3);
    writes.add("counts", "b", -1);
    commit(&mut store, 0, &[], writes).unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "a", 10);
    commit(&mut store, 1, &[], writes).unwrap();
    drop(store);

    let mut store = open(dir.path()).unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "b", -4);
    commit(&mut store, 2, &[], writes).unwrap();
    assert_eq!(
        store.counters("counts").unwrap(),
        vec![(b"a".to_vec(), 15), (b"b".to_vec(), -5)]
    );
}

#[test]
fn put_of_a_counter_value_resets_it_and_delete_removes_it() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "a", 7);
    writes.put("counts", "a", 100i64.to_le_bytes());
    writes.add("counts", "a", 1);
    writes.add("counts", "gone", 1);
    commit(&mut store, 0, &[], writes).unwrap();
    let mut writes = WriteSet::new();
    writes.delete("counts", "gone");
    commit(&mut store, 1, &[], writes).unwrap();
    assert_eq!(
        store.counters("counts").unwrap(),
        vec![(b"a".to_vec(), 101)]
    );
}

#[test]
fn reading_text_as_a_counter_is_an_error() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("state").unwrap();
    let mut writes = WriteSet::new();
    writes.put("state", "k", "text");
    commit(&mut store, 0, &[], writes).unwrap();
    let err = store.counter("state", b"k").unwrap_err();
    assert!(matches!(err, Error::NotACounter { len: 4, .. }), "{err}");
    assert!(store.counters("state").is_err());
}

/// newuser2 report, item 8a: reading a missing family gave the writer's
/// hint "create it with ensure_family before writing".
#[test]
fn reading_a_family_the_checkpoint_does_not_hold_names_the_families_it_holds() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    store.ensure_family("latest").unwrap();
    drop(store);

    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    let errors = [
        reader.counters("nope").unwrap_err(),
        reader.counter("nope", b"k").unwrap_err(),
        reader.scan("nope").unwrap_err(),
        reader.dead_letters("nope").unwrap_err(),
    ];
    for err in errors {
        assert!(
            matches!(&err, Error::NoSuchFamily { family, held, .. }
                if family == "nope" && *held == ["counts", "latest"]),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(r#"it holds ["counts", "latest"]"#)
                && message.contains("once a job with the output that writes it has started")
                && !message.contains("ensure_family"),
            "{message}"
        );
    }
}

#[test]
fn write_to_unknown_family_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    store.ensure_family("counts").unwrap();
    let mut writes = WriteSet::new();
    writes.add("counts", "a", 1);
    commit(&mut store, 0, &[(tp("t", 0), 10)], writes).unwrap();

    let mut writes = WriteSet::new();
    writes.add("counts", "a", 1);
    writes.put("nope", "k", "v");
    let err = commit(&mut store, 1, &[(tp("t", 0), 20)], writes).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownFamily { family, .. } if family == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("'nope'"), "{err}");
    drop(store);

    let store = open(dir.path()).unwrap();
    assert_eq!(store.offsets().unwrap()[&tp("t", 0)], 10);
    assert_eq!(store.counter("counts", b"a").unwrap(), Some(1));
    assert_eq!(store.last_batch().unwrap().unwrap().id, 0);
}

#[test]
fn reserved_families_cannot_be_created_or_written() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    let err = store.ensure_family("sluice_mine").unwrap_err();
    assert!(err.to_string().contains("sluice_mine"), "{err}");
    assert!(matches!(err, Error::ReservedFamily { .. }));

    let mut writes = WriteSet::new();
    writes.put("sluice_offsets", "x", "y");
    let err = commit(&mut store, 0, &[], writes).unwrap_err();
    assert!(matches!(err, Error::ReservedFamily { .. }), "{err}");
    assert!(store.batches().unwrap().is_empty());
}

#[test]
fn batch_ids_must_increase_across_restarts() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    commit(&mut store, 5, &[(tp("t", 0), 1)], WriteSet::new()).unwrap();
    let err = commit(&mut store, 5, &[(tp("t", 0), 2)], WriteSet::new()).unwrap_err();
    assert!(matches!(
        err,
        Error::BatchIdNotIncreasing { id: 5, last: 5 }
    ));
    assert!(err.to_string().starts_with("bug:"), "{err}");
    drop(store);

    let mut store = open(dir.path()).unwrap();
    let err = commit(&mut store, 3, &[(tp("t", 0), 2)], WriteSet::new()).unwrap_err();
    assert!(matches!(
        err,
        Error::BatchIdNotIncreasing { id: 3, last: 5 }
    ));
    assert_eq!(store.offsets().unwrap()[&tp("t", 0)], 1);
    commit(&mut store, 6, &[(tp("t", 0), 2)], WriteSet::new()).unwrap();
}

#[test]
fn negative_offsets_are_rejected() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    let err = commit(&mut store, 0, &[(tp("t", 0), -1)], WriteSet::new()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOffset { offset: -1, .. }),
        "{err}"
    );
    assert!(store.offsets().unwrap().is_empty());
    assert_eq!(store.last_batch().unwrap(), None);
}

/// The checkpoint in `dir`, keeping the last `batches` batch records.
fn open_retaining(dir: &std::path::Path, batches: usize) -> RocksCheckpoint {
    RocksCheckpoint::builder(dir)
        .app_id(APP)
        .retain_batches(batches)
        .open()
        .unwrap()
}

#[test]
fn retention_deletes_old_batch_records() {
    let dir = TempDir::new().unwrap();
    let mut store = open_retaining(dir.path(), 3);
    for id in 0..5 {
        commit(&mut store, id, &[], WriteSet::new()).unwrap();
    }
    let ids = |s: &RocksCheckpoint| {
        s.batches()
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&store), [2, 3, 4]);
    drop(store);

    // A smaller retention on restart trims the history at the next commit.
    let mut store = open_retaining(dir.path(), 2);
    assert_eq!(ids(&store), [2, 3, 4]);
    commit(&mut store, 5, &[], WriteSet::new()).unwrap();
    assert_eq!(ids(&store), [4, 5]);
    assert_eq!(store.last_batch().unwrap().unwrap().id, 5);
}

#[test]
fn retention_counts_batch_ids_not_records() {
    let dir = TempDir::new().unwrap();
    let mut store = open_retaining(dir.path(), 3);
    for id in [0, 1, 2, 10] {
        commit(&mut store, id, &[], WriteSet::new()).unwrap();
    }
    let ids: Vec<_> = store.batches().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, [10]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Counters equal the sum of every delta committed, whatever the order,
    /// commit boundaries and restarts.
    #[test]
    fn counters_equal_the_sum_of_deltas(
        batches in prop::collection::vec(
            (prop::collection::vec((0u8..6, any::<i32>()), 0..20), any::<bool>()),
            1..12,
        )
    ) {
        let dir = TempDir::new().unwrap();
        let open = || RocksCheckpoint::builder(dir.path()).app_id(APP).sync(false).open().unwrap();
        let mut store = open();
        store.ensure_family("counts").unwrap();
        let mut expected = BTreeMap::<Vec<u8>, i64>::new();
        for (id, (deltas, restart)) in batches.iter().enumerate() {
            let mut writes = WriteSet::new();
            for &(key, delta) in deltas {
                writes.add("counts", vec![key], i64::from(delta));
                *expected.entry(vec![key]).or_default() += i64::from(delta);
            }
            commit(&mut store, id as u64, &[], writes).unwrap();
            if *restart {
                drop(store);
                store = open();
            }
        }
        let expected: Vec<_> = expected.into_iter().collect();
        prop_assert_eq!(store.counters("counts").unwrap(), expected);
    }
}
