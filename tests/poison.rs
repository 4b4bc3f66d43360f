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

/// Starts a word count that sets rejected records aside into [`DEAD`].
fn start(dir: &std::path::Path, bootstrap: &str) -> RunningJob {
    let ctx = job::context(dir)
        .poison_records(PoisonPolicy::dead_letter(DEAD))
        .build()
        .unwrap();
    let source = job::source(bootstrap).subscribe(["mixed"]).build().unwrap();
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
