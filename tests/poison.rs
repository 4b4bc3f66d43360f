//! The poison-record policy: records an operator rejects are set aside as
//! dead letters, committed with their batch, and everything else counts
//! exactly once.

use std::collections::BTreeMap;

use sluice::prelude::*;

use crate::util::job::{self, RunningJob, APP_ID, COUNTS};
use crate::util::kafka;

const DEAD: &str = "dead_letters";

/// Bytes that are not UTF-8, so `values_utf8` rejects them.
fn poison(i: usize) -> Vec<u8> {
    vec![0xff, 0xfe, i as u8]
}

/// Starts a word count of `mixed` that sets rejected records aside into
/// [`DEAD`].
fn start(dir: &std::path::Path, bootstrap: &str) -> RunningJob {
    start_on(dir, bootstrap, "mixed", RateLimits::new())
}

/// Like [`start`], reading `topic` within `limits`.
fn start_on(dir: &std::path::Path, bootstrap: &str, topic: &str, limits: RateLimits) -> RunningJob {
    let ctx = job::context(dir)
        .poison_records(PoisonPolicy::dead_letter(DEAD))
        .rate_limits(limits)
        .build()
        .unwrap();
    let source = job::source(bootstrap).subscribe([topic]).build().unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        .save_counts(COUNTS)
        .unwrap();
    RunningJob::start(ctx)
}

#[test]
fn dead_letters_hold_the_rejected_records_and_the_rest_counts_exactly_once() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "mixed", 2);
    // Every seventh record of each partition is not UTF-8.
    let mut good = Vec::new();
    let mut bad: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for partition in 0..2 {
        let values: Vec<Vec<u8>> = (0..60)
            .map(|i| {
                if i % 7 == 3 {
                    bad.insert((partition, i as i64), poison(i));
                    poison(i)
                } else {
                    let line = job::line(i + 100 * partition as usize);
                    good.push(line.clone());
                    line.into_bytes()
                }
            })
            .collect();
        kafka::produce(&bootstrap, "mixed", Some(partition), &values);
    }
    let dir = tempfile::tempdir().unwrap();

    let mut running = start(dir.path(), &bootstrap);
    running.wait_for_records(120, "all 120 records, the rejected ones included");
    let progress = running.stop();
    let counted: u64 = progress.batches.iter().map(|b| b.dead_letters).sum();
    assert_eq!(
        counted,
        bad.len() as u64,
        "dead letters reported by the batches"
    );

    let check = || {
        let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
        assert_eq!(job::counts_in(&checkpoint), job::word_counts(&good));
        let letters = checkpoint.dead_letters(DEAD).unwrap();
        let found: BTreeMap<(i32, i64), Vec<u8>> = letters
            .iter()
            .map(|l| {
                assert_eq!(l.topic, "mixed");
                assert_eq!(l.operator, "values_utf8");
                assert!(l.error.contains("not valid UTF-8"), "{}", l.error);
                assert_eq!(l.unread, None);
                ((l.partition, l.offset), l.value().unwrap().unwrap())
            })
            .collect();
        assert_eq!(found, bad);
        let recorded: u64 = checkpoint
            .batches()
            .unwrap()
            .iter()
            .map(|b| b.dead_letters)
            .sum();
        assert_eq!(
            recorded,
            bad.len() as u64,
            "dead letters in the batch records"
        );
    };
    check();

    // A restart reads nothing again: no letter twice, no count twice.
    let mut running = start(dir.path(), &bootstrap);
    running.wait_for_first_batch();
    running.stop();
    check();
}

#[test]
fn a_dead_letter_family_with_a_reserved_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for family in ["", "sluice_letters"] {
        let err = job::context(dir.path())
            .poison_records(PoisonPolicy::dead_letter(family))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("poison_records") && err.contains(&format!("'{family}'")),
            "{err}"
        );
    }
}

/// Bytes of records by partition and offset.
type BytesAt = BTreeMap<(i32, i64), Vec<u8>>;

/// The letters committed in `dir`, by partition and offset, with the bytes
/// read back; fails on a letter stored without its bytes.
fn letters_in(dir: &std::path::Path) -> BytesAt {
    job::open_checkpoint(dir, APP_ID)
        .dead_letters(DEAD)
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l.unread, None, "{}-{}@{}", l.topic, l.partition, l.offset);
            ((l.partition, l.offset), l.value().unwrap().unwrap())
        })
        .collect()
}

/// A topic of one partition holding `count` lines, of which those at
/// `bad` offsets are not UTF-8. Returns the good lines and the bad bytes.
fn produce_with_poison(
    bootstrap: &str,
    topic: &str,
    count: usize,
    bad: &[usize],
) -> (Vec<String>, BytesAt) {
    let mut good = Vec::new();
    let mut rejected = BTreeMap::new();
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            if bad.contains(&i) {
                rejected.insert((0, i as i64), poison(i));
                poison(i)
            } else {
                let line = job::line(i);
                good.push(line.clone());
                line.into_bytes()
            }
        })
        .collect();
    kafka::produce(bootstrap, topic, Some(0), &values);
    (good, rejected)
}

#[test]
fn dead_letters_far_apart_in_a_large_partition_are_read_back_alone_with_their_exact_bytes() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "large", 1);
    let (good, bad) = produce_with_poison(&bootstrap, "large", 60_000, &[0, 50_000]);
    let dir = tempfile::tempdir().unwrap();

    let mut running = start_on(dir.path(), &bootstrap, "large", RateLimits::new());
    running.wait_for_records(60_000, "all 60 000 records");
    let read_back = running.reader().records_read_back();
    running.stop();

    assert_eq!(letters_in(dir.path()), bad);
    assert_eq!(
        job::counts_in(&job::open_checkpoint(dir.path(), APP_ID)),
        job::word_counts(&good)
    );
    assert_eq!(
        read_back, 2,
        "reading the letters back read the two rejected records, not the 50 000 between"
    );
}

/// Regression: dead letters used to be read back on the driver through the
/// partition's cached consumer. That moved the consumer back, so the next
/// batch had to reposition it and fetch again what it had prefetched.
#[test]
fn a_batch_with_dead_letters_leaves_the_next_batch_reading_on_without_a_seek() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "paced", 1);
    let (good, bad) = produce_with_poison(&bootstrap, "paced", 3_000, &[10, 900, 2_500]);
    let dir = tempfile::tempdir().unwrap();

    // A thousand records a batch: three batches, the first and the last with
    // dead letters.
    let per_batch = 1_000.0 / job::BATCH_INTERVAL.as_secs_f64();
    let limits = RateLimits::new().max_rate_per_partition(per_batch);
    let mut running = start_on(dir.path(), &bootstrap, "paced", limits);
    running.wait_for_records(3_000, "all 3 000 records");
    let reader = running.reader();
    let (positions, read_back) = (reader.positions(), reader.records_read_back());
    let progress = running.stop();

    let with_records: Vec<u64> = progress
        .batches
        .iter()
        .map(|b| b.records)
        .filter(|&r| r > 0)
        .collect();
    assert!(
        with_records.len() >= 3,
        "records per batch: {with_records:?}"
    );
    assert_eq!(
        positions, 1,
        "the partition's consumer was positioned once, then every batch read on where the \
         one before ended"
    );
    assert_eq!(read_back, 3);
    assert_eq!(letters_in(dir.path()), bad);
    assert_eq!(
        job::counts_in(&job::open_checkpoint(dir.path(), APP_ID)),
        job::word_counts(&good)
    );
}
