//! Faults around a running job: a crash loop of SIGKILLs, a changed build
//! resuming an old checkpoint, a broker outage, and a second process on a
//! checkpoint that is in use. Totals must stay exact through all of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::prelude::*;
use sluice::sink::LatestValueSink;

use crate::util::job::{
    self, first_ranges, offsets, produce_numbered, RunningJob, APP_ID, COUNTS, WAIT,
};
use crate::util::kafka;
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, LinesTopic, Wordcount};

/// Lines committed according to `checkpoint`'s stored offsets (every
/// partition starts at 0 on a fresh broker).
fn committed_lines(checkpoint: &Path) -> Option<(u64, i64)> {
    wordcount::committed(checkpoint).map(|(id, offsets)| (id, offsets.values().sum()))
}

/// Prints the seed again when the test fails, whichever assertion fired
/// (the shared helpers do not know it).
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "crash loop failed with seed {0}; rerun with SLUICE_CRASH_SEED={0}",
                self.0
            );
        }
    }
}

/// How a crash-loop run is killed, after its first commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillAt {
    /// After a random delay (0–300 ms): anywhere in a batch.
    RandomDelay,
    /// As soon as the next commit is seen in the checkpoint.
    RightAfterCommit,
    /// A few ms after the next commit: in the next batch's planning/read.
    JustAfterCommit,
}

#[test]
fn crash_loop_of_twenty_sigkills_loses_and_duplicates_nothing() {
    const LINES: usize = 6000;
    const PREFILLED: usize = 1500;
    /// Produced only after the last kill.
    const HELD_BACK: usize = 1000;
    const KILLS: usize = 20;
    /// Short batches, so that commits are frequent and kills land on them.
    const BATCH_INTERVAL_MS: u64 = 30;
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|e| panic!("SLUICE_CRASH_SEED={s}: {e}"))
        })
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64
        });
    eprintln!("crash loop seed: {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    let _report = SeedOnFailure(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    wordcount::binary();

    let input = LinesTopic::start(LINES, PREFILLED, HELD_BACK, 50, Duration::from_millis(100));
    let (bootstrap, lines) = (&input.bootstrap, &input.lines);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("wordcount.log");
    let describe = || format!("seed {seed}: {}", wordcount::describe(&dir));

    // (how, last id seen before the kill, last id committed after it)
    let mut kills: Vec<(KillAt, u64, u64)> = Vec::new();
    for run in 0..KILLS {
        let before = wordcount::committed(&dir).map(|(id, _)| id);
        let mut child =
            Wordcount::start_with_interval(bootstrap, "lines", &dir, &log, BATCH_INTERVAL_MS);
        let first = job::poll(
            &format!("a batch committed by run {run} (seed {seed})"),
            WAIT,
            || {
                child.assert_running();
                let (id, _) = wordcount::committed(&dir)?;
                (Some(id) > before).then_some(id)
            },
            describe,
        );
        let how = match rng.random_range(0..3) {
            0 => KillAt::RandomDelay,
            1 => KillAt::RightAfterCommit,
            _ => KillAt::JustAfterCommit,
        };
        let seen = match how {
            KillAt::RandomDelay => {
                thread::sleep(Duration::from_millis(rng.random_range(0..300)));
                first
            }
            KillAt::RightAfterCommit | KillAt::JustAfterCommit => {
                // A tight loop: the kill should follow the commit within
                // a small part of a batch interval.
                let deadline = Instant::now() + WAIT;
                let next = loop {
                    if let Some((id, _)) = wordcount::committed(&dir) {
                        if id > first {
                            break id;
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "seed {seed}: run {run} committed nothing after batch {first} \
                         within {WAIT:?}"
                    );
                    child.assert_running();
                };
                if how == KillAt::JustAfterCommit {
                    let ms = rng.random_range(1..BATCH_INTERVAL_MS);
                    thread::sleep(Duration::from_millis(ms));
                }
                next
            }
        };
        child.kill();
        let after = wordcount::committed(&dir).map_or(0, |(id, _)| id);
        assert!(
            after >= seen,
            "seed {seed}: run {run}: the checkpoint went back from batch {seen} to {after}"
        );
        kills.push((how, seen, after));
    }
    let mut by_kind: BTreeMap<KillAt, usize> = BTreeMap::new();
    for (how, _, _) in &kills {
        *by_kind.entry(*how).or_default() += 1;
    }
    let raced = kills.iter().filter(|(_, seen, after)| after > seen).count();
    eprintln!(
        "seed {seed}: {} SIGKILLs {by_kind:?}; {raced} landed after a commit the test had \
         not seen yet; kill loop took {:?}",
        kills.len(),
        started.elapsed()
    );
    let (_, progress_at_last_kill) = committed_lines(&dir).expect("kills after commits");
    assert!(
        progress_at_last_kill < LINES as i64,
        "seed {seed}: every line was committed before the last kill, so no kill hit a \
         batch with records to come"
    );

    let mut child =
        Wordcount::start_with_interval(bootstrap, "lines", &dir, &log, BATCH_INTERVAL_MS);
    input.producer.finish();
    job::poll(
        &format!("all {LINES} lines committed (seed {seed})"),
        WAIT,
        || {
            child.assert_running();
            let (_, n) = committed_lines(&dir)?;
            (n == LINES as i64).then_some(())
        },
        describe,
    );
    let status = child.terminate(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "seed {seed}: wordcount after SIGTERM: {status}"
    );

    let checkpoint = job::open_checkpoint(&dir, wordcount::APP_ID);
    let batches = checkpoint.batches().unwrap();
    assert_eq!(
        batches.first().map(|b| b.id),
        Some(0),
        "seed {seed}: batch history does not start at batch 0"
    );
    // Every offset read exactly once across 21 runs: no gap, no overlap.
    let ends = job::assert_ranges_chain(&batches, &offsets("lines", 3, 0));
    assert_eq!(
        ends,
        checkpoint.offsets().unwrap(),
        "seed {seed}: stored offsets differ from where the batch history ends"
    );
    let read: u64 = batches.iter().map(|b| b.records).sum();
    assert_eq!(
        read, LINES as u64,
        "seed {seed}: records read by committed batches"
    );
    let counted = job::family_counts(&checkpoint, wordcount::FAMILY);
    let expected = job::word_counts(lines);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(w, n)| counted.get(*w) != Some(*n))
        .map(|(w, n)| format!("{w}: {:?} instead of {n}", counted.get(w)))
        .chain(
            counted
                .keys()
                .filter(|w| !expected.contains_key(*w))
                .map(|w| format!("{w}: never produced")),
        )
        .collect();
    assert!(
        wrong.is_empty(),
        "seed {seed}: totals differ after {KILLS} SIGKILLs: {wrong:?}"
    );
    eprintln!(
        "seed {seed}: {} batches, exact totals, {:?} in all",
        batches.len(),
        started.elapsed()
    );
}

#[test]
fn job_resumes_from_stored_offsets_after_its_code_changed() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "orders", 2);
    let old = produce_numbered(&bootstrap, "orders", 2, 0..60);
    let dir = tempfile::tempdir().unwrap();
    let source = || {
        job::source(&bootstrap)
            .subscribe(["orders"])
            .build()
            .unwrap()
    };

    // v1: count the values.
    let mut v1 = job::count_values(job::context(dir.path()).build().unwrap(), source());
    v1.wait_for_records(120, "the 120 records v1 reads");
    let v1_last = v1.stop().batches.last().expect("v1 committed").info.id;
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap(), offsets("orders", 2, 60));
    drop(checkpoint);
    let new = produce_numbered(&bootstrap, "orders", 2, 60..100);

    // v2: another graph on the same checkpoint. A filter and a map in a new
    // order feed a new family, the old family is fed through an extra map,
    // and a new output keeps the latest value per partition.
    let ctx = job::context(dir.path()).build().unwrap();
    let values = ctx.kafka_stream(source()).unwrap().values_utf8();
    values
        .filter(|v| !v.ends_with('5'))
        .map(|v| v.to_uppercase())
        .count_by_value()
        .save_counts("upper_counts")
        .unwrap();
    values
        .map(|v| v.trim().to_owned())
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    values
        .key_by(|v| v.rsplit_once('-').expect("numbered value").0.to_owned())
        .checkpoint_sink(LatestValueSink::new("latest_per_partition"))
        .unwrap();
    let mut v2 = RunningJob::start(ctx);
    v2.wait_for("v2 to reach offset 100 on both partitions", |p| {
        let ends: BTreeMap<_, _> = p
            .batches
            .iter()
            .flat_map(|b| &b.info.ranges)
            .map(|r| (r.topic_partition(), r.until))
            .collect();
        (ends == offsets("orders", 2, 100)).then_some(())
    });
    let progress = v2.stop();

    let first = progress.batches.first().expect("v2 committed");
    assert_eq!(
        first.info.id,
        v1_last + 1,
        "v2 did not continue v1's batch ids"
    );
    for (tp, (from, _)) in first_ranges(&progress.batches) {
        assert_eq!(from, 60, "v2 read {tp} from {from}, not v1's stored 60");
    }

    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let expected_upper = job::counts_of(
        new.iter()
            .filter(|v| !v.ends_with('5'))
            .map(|v| v.to_uppercase()),
    );
    assert_eq!(
        job::family_counts(&checkpoint, "upper_counts"),
        expected_upper,
        "v2's new family holds other records than those after v1's offsets"
    );
    assert_eq!(
        job::counts_in(&checkpoint),
        job::counts_of(old.iter().chain(&new)),
        "the family both versions write does not count every record once"
    );
    let latest: BTreeMap<String, String> = checkpoint
        .scan("latest_per_partition")
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(
        latest,
        BTreeMap::from([
            ("orders-0".to_owned(), "orders-0-99".to_owned()),
            ("orders-1".to_owned(), "orders-1-99".to_owned()),
        ])
    );
    let ends = job::assert_ranges_chain(&checkpoint.batches().unwrap(), &offsets("orders", 2, 0));
    assert_eq!(ends, offsets("orders", 2, 100));
    assert_eq!(checkpoint.offsets().unwrap(), ends);
}

#[test]
fn broker_outage_is_ridden_out_and_totals_stay_exact() {
    const OUTAGE: Duration = Duration::from_secs(3);
    let data = tempfile::tempdir().unwrap();
    let mut broker = Tansu::start_on_disk(data.path());
    broker.create_topic("events", 2);
    let bootstrap = broker.bootstrap();
    let values: Vec<String> = (0..500).map(|i| format!("event-{i}")).collect();
    kafka::produce(&bootstrap, "events", None, &values[..300]);
    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["events"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path())
        .batch_interval(Duration::from_millis(50))
        .kafka_outage_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut running = job::count_values(ctx, source);
    running.wait_for_records(300, "the 300 records produced before the outage");
    let before = running.batches().len();

    broker.stop();
    let down = Instant::now();
    // The outage lasts OUTAGE; the job must neither stop nor commit
    // records that were never produced meanwhile.
    while down.elapsed() < OUTAGE {
        running.wait_for("the job to keep running during the outage", |_| Some(()));
        thread::sleep(Duration::from_millis(100));
    }
    let during: Vec<BatchCompleted> = running.batches()[before..].to_vec();
    let read_during: u64 = during.iter().map(|b| b.records).sum();
    assert_eq!(
        read_during,
        0,
        "batches committed records while the broker was down: {:?}",
        during.iter().map(|b| &b.info.ranges).collect::<Vec<_>>()
    );
    eprintln!(
        "{} batches committed (empty) during the {OUTAGE:?} outage",
        during.len()
    );

    broker.restart();
    kafka::produce(&bootstrap, "events", None, &values[300..]);
    running.wait_for_records(500, "all 500 records after the broker came back");
    running.stop();

    assert_eq!(
        job::committed_counts(dir.path()),
        job::counts_of(&values),
        "totals after the outage"
    );
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let ends = job::assert_ranges_chain(&checkpoint.batches().unwrap(), &offsets("events", 2, 0));
    assert_eq!(ends.values().sum::<i64>(), 500);
    assert_eq!(checkpoint.offsets().unwrap(), ends);
}

#[test]
fn second_process_on_same_checkpoint_is_refused() {
    const LINES: usize = 2000;
    wordcount::binary();
    let broker = Tansu::start();
    broker.create_topic("lines", 2);
    let bootstrap = broker.bootstrap();
    let lines: Vec<String> = (0..LINES).map(job::line).collect();
    kafka::produce(&bootstrap, "lines", None, &lines[..LINES / 2]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let describe = || format!("{:?}", committed_lines(&dir));

    let mut first = Wordcount::start_with_interval(
        &bootstrap,
        "lines",
        &dir,
        &tmp.path().join("first.log"),
        50,
    );
    job::poll(
        "a batch committed by the first process",
        WAIT,
        || {
            first.assert_running();
            wordcount::committed(&dir)
        },
        describe,
    );

    let second_log = tmp.path().join("second.log");
    let second = Wordcount::start_with_interval(&bootstrap, "lines", &dir, &second_log, 50);
    let status = second.wait_for_exit(Duration::from_secs(60));
    let said = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        !status.success(),
        "the second process on {} exited with {status}:\n{said}",
        dir.display()
    );
    assert!(
        said.contains(&dir.display().to_string()) && said.contains("another sluice process"),
        "the second process should name the checkpoint directory and the other process:\n{said}"
    );

    first.assert_running();
    kafka::produce(&bootstrap, "lines", None, &lines[LINES / 2..]);
    job::poll(
        &format!("all {LINES} lines committed by the first process"),
        WAIT,
        || {
            first.assert_running();
            let (_, n) = committed_lines(&dir)?;
            (n == LINES as i64).then_some(())
        },
        describe,
    );
    let status = first.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "the first process after SIGTERM");

    let checkpoint = job::open_checkpoint(&dir, wordcount::APP_ID);
    let ends = job::assert_ranges_chain(&checkpoint.batches().unwrap(), &offsets("lines", 2, 0));
    assert_eq!(ends.values().sum::<i64>(), LINES as i64);
    assert_eq!(
        job::family_counts(&checkpoint, wordcount::FAMILY),
        job::word_counts(&lines)
    );
}
