//! The `clicks` example's job (`examples/clicks.rs`, the README's "Write a
//! job"), run in-process against the mock broker: exact counts per page
//! across a stop and a restart, malformed lines in the dead-letter family,
//! and batches within the rate limits.

use std::collections::BTreeMap;

use sluice::prelude::*;

use crate::util::job::{self, RunningJob, BATCH_INTERVAL};
use crate::util::kafka;

// The example's `main`, broker and printing are not used here.
#[allow(dead_code)]
#[path = "../examples/clicks.rs"]
mod example;

const TOPIC: &str = "clicks";
const PARTITIONS: i32 = 2;
const PER_PARTITION: usize = 60;

/// Line `i` of a partition: a click, except every eighth (not UTF-8) and
/// every eleventh (no user).
fn line(partition: i32, i: usize) -> Vec<u8> {
    if i % 8 == 5 {
        vec![0xc3, 0x28, i as u8]
    } else if i % 11 == 7 {
        format!("/page-{}", i % 3).into_bytes()
    } else {
        format!(
            "/page-{},user-{partition}-{i}",
            (i + partition as usize) % 4
        )
        .into_bytes()
    }
}

/// Starts the example's job with 100 ms batches, 100 records/s per
/// partition and a job-wide initial rate of 50 records/s.
fn start(dir: &std::path::Path, bootstrap: &str) -> RunningJob {
    let limits = RateLimits::new()
        .max_rate_per_partition(100.0)
        .initial_rate(50.0);
    let ctx = example::context(dir, BATCH_INTERVAL, limits)
        .workers(2)
        .stop_on_signals(false)
        .build()
        .unwrap();
    let source = job::source(bootstrap)
        .subscribe([TOPIC])
        .set("fetch.wait.max.ms", "10")
        .build()
        .unwrap();
    example::count_clicks(&ctx, source).unwrap();
    RunningJob::start(ctx)
}

#[test]
fn clicks_example_counts_pages_exactly_and_sets_malformed_lines_aside() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, PARTITIONS);
    let mut pages: BTreeMap<String, i64> = BTreeMap::new();
    let mut malformed: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let lines: Vec<Vec<u8>> = (0..PER_PARTITION).map(|i| line(partition, i)).collect();
        for (offset, bytes) in lines.iter().enumerate() {
            let at = (partition, offset as i64);
            match std::str::from_utf8(bytes).map(|s| example::page_of(s.to_owned())) {
                Err(_) => {
                    malformed.insert(at, "values_utf8");
                }
                Ok(Err(_)) => {
                    malformed.insert(at, "try_map");
                }
                Ok(Ok(page)) => *pages.entry(page).or_default() += 1,
            }
        }
        kafka::produce(&bootstrap, TOPIC, Some(partition), &lines);
    }
    assert!(malformed.values().any(|op| *op == "values_utf8"));
    assert!(malformed.values().any(|op| *op == "try_map"));
    let total = PARTITIONS as u64 * PER_PARTITION as u64;
    let dir = tempfile::tempdir().unwrap();

    let mut running = start(dir.path(), &bootstrap);
    running.wait_for_records(total, "every line, the malformed ones included");
    let progress = running.stop();

    // Rate limits: 50/s × 100 ms for the first batch in all, 100/s × 100 ms
    // per partition for every batch.
    let first: u64 = progress.batches[0].records;
    assert!(first <= 5, "the first batch read {first} records");
    for batch in &progress.batches {
        for (range, &records) in batch.info.ranges.iter().zip(&batch.records_per_range) {
            assert!(
                records <= 10,
                "batch {}: {range} read {records}",
                batch.info.id
            );
        }
    }
    let letters: u64 = progress.batches.iter().map(|b| b.dead_letters).sum();
    assert_eq!(letters, malformed.len() as u64, "dead letters reported");

    let check = || {
        let checkpoint = job::open_checkpoint(dir.path(), example::APP_ID);
        assert_eq!(job::family_counts(&checkpoint, example::COUNTS), pages);
        let found: BTreeMap<(i32, i64), String> = checkpoint
            .dead_letters(example::DEAD_LETTERS)
            .unwrap()
            .into_iter()
            .map(|letter| {
                assert_eq!(letter.topic, TOPIC);
                let at = (letter.partition, letter.offset);
                let value = letter.value().unwrap().unwrap();
                assert_eq!(value, line(at.0, at.1 as usize), "the bytes of {at:?}");
                (at, letter.operator)
            })
            .collect();
        let expected: BTreeMap<(i32, i64), String> = malformed
            .iter()
            .map(|(&at, &operator)| (at, operator.to_owned()))
            .collect();
        assert_eq!(found, expected);
    };
    check();

    // A restart reads on from the stored offsets: nothing is counted twice.
    let mut running = start(dir.path(), &bootstrap);
    let batch = running.wait_for_first_batch();
    assert_eq!(batch.records, 0, "the restart read records again");
    running.stop();
    check();
}
