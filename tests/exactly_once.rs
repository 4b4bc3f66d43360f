//! Exactly-once totals through task failures, batch failures, graceful
//! restarts and SIGKILL: every record is counted once, whatever happens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::prelude::*;
use sluice::Error as RuntimeError;

use crate::util::job::{self, APP_ID, WAIT};
use crate::util::kafka;
use crate::util::wordcount::{self, LinesTopic, Wordcount};

const POISON: &str = "poison";

/// Counts record values through a `try_map` that fails on [`POISON`] the
/// first `failures` times it sees it; `seen` counts how often it did.
fn poisoned_job(
    ctx: StreamingContext,
    source: KafkaSource,
    seen: &Arc<AtomicU32>,
    failures: u32,
) -> job::RunningJob {
    let seen = Arc::clone(seen);
    job::count_with(ctx, source, move |values| {
        values.try_map(move |value| {
            if value == POISON && seen.fetch_add(1, Ordering::SeqCst) < failures {
                return Err(format!("refusing the {POISON} record"));
            }
            Ok(value)
        })
    })
}

/// Produces `values` to `partition` of `topic` and returns them.
fn produce(bootstrap: &str, topic: &str, partition: i32, values: Vec<String>) -> Vec<String> {
    kafka::produce(bootstrap, topic, Some(partition), &values);
    values
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn task_failing_on_poison_record_is_retried_without_double_counting() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "payments", 2);
    // Records before the poison in its partition are read by every failed
    // attempt; they must still count once.
    let mut p0 = numbered("p0", 0..40);
    p0.push(POISON.to_owned());
    p0.extend(numbered("p0", 40..80));
    let p0 = produce(&bootstrap, "payments", 0, p0);
    let p1 = produce(&bootstrap, "payments", 1, numbered("p1", 0..80));
    let dir = tempfile::tempdir().unwrap();

    let seen = Arc::new(AtomicU32::new(0));
    let source = job::source(&bootstrap)
        .subscribe(["payments"])
        .build()
        .unwrap();
    let ctx = job::context(dir.path()).task_attempts(4).build().unwrap();
    let mut running = poisoned_job(ctx, source, &seen, 2);
    running.wait_for_records(161, "all 161 records, the poison one included");
    running.stop();

    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the poison record should fail twice and pass on the third attempt"
    );
    assert_eq!(
        job::committed_counts(dir.path()),
        job::counts_of(p0.iter().chain(&p1))
    );
}

#[test]
fn batch_failing_every_task_attempt_stops_the_job_and_commits_nothing_of_it() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "payments", 2);
    let mut p0 = produce(&bootstrap, "payments", 0, numbered("p0", 0..30));
    let mut p1 = produce(&bootstrap, "payments", 1, numbered("p1", 0..30));
    let dir = tempfile::tempdir().unwrap();
    let source = || {
        job::source(&bootstrap)
            .subscribe(["payments"])
            .build()
            .unwrap()
    };

    let seen = Arc::new(AtomicU32::new(0));
    let ctx = job::context(dir.path()).task_attempts(2).build().unwrap();
    let mut running = poisoned_job(ctx, source(), &seen, 2);
    running.wait_for_records(60, "the 60 records before the poison");
    let mut late = numbered("late-p0", 0..10);
    late.push(POISON.to_owned());
    late.extend(numbered("late-p0", 10..20));
    p0.extend(produce(&bootstrap, "payments", 0, late));
    p1.extend(produce(
        &bootstrap,
        "payments",
        1,
        numbered("late-p1", 0..20),
    ));

    let error = running.wait_for_error();
    let message = error.to_string();
    let RuntimeError::Batch { id: failed, .. } = error else {
        panic!("expected a batch error, got: {message}");
    };
    assert!(
        message.contains(&format!("batch {failed} ")) && message.contains(POISON),
        "the error should name the batch and the failure: {message}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2, "task attempts made");

    // Offsets, batch history and counts all stop at the batch before.
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let last = checkpoint.last_batch().unwrap().expect("earlier batches");
    assert_eq!(last.id + 1, failed, "the failed batch left a batch record");
    let stored = checkpoint.offsets().unwrap();
    let ends = job::assert_ranges_chain(&checkpoint.batches().unwrap(), &zeros("payments", 2));
    assert_eq!(
        stored, ends,
        "stored offsets differ from the last batch's ranges"
    );
    let (s0, s1) = (
        stored[&TopicPartition::new("payments", 0)] as usize,
        stored[&TopicPartition::new("payments", 1)] as usize,
    );
    let poison_offset = p0.iter().position(|v| v == POISON).unwrap();
    assert!(
        s0 <= poison_offset,
        "the offset of the poison record ({poison_offset}) was committed: {stored:?}"
    );
    assert_eq!(
        job::counts_in(&checkpoint),
        job::counts_of(p0[..s0].iter().chain(&p1[..s1])),
        "the committed counts do not match the committed offsets"
    );
    drop(checkpoint);

    // The batch is read again on restart and now passes (the poison fails
    // only twice): every record counts once.
    let ctx = job::context(dir.path()).task_attempts(2).build().unwrap();
    let mut restarted = poisoned_job(ctx, source(), &seen, 2);
    let resumed = restarted.wait_for_first_batch();
    assert_eq!(
        resumed.info.id, failed,
        "the restart did not redo the failed batch id"
    );
    let remaining = (p0.len() - s0 + p1.len() - s1) as u64;
    restarted.wait_for_records(remaining, "the records of the failed batch and after");
    restarted.stop();
    assert_eq!(
        job::committed_counts(dir.path()),
        job::counts_of(p0.iter().chain(&p1))
    );
}

fn zeros(topic: &str, partitions: i32) -> BTreeMap<TopicPartition, i64> {
    (0..partitions)
        .map(|p| (TopicPartition::new(topic, p), 0))
        .collect()
}

#[test]
fn graceful_stop_and_restart_gives_exact_totals() {
    const LINES: usize = 5000;
    const PREFILLED: usize = 1500;
    /// Produced during the last run only.
    const HELD_BACK: usize = 1000;
    let input = LinesTopic::start(LINES, PREFILLED, HELD_BACK, 250, Duration::from_millis(150));
    let (bootstrap, lines) = (&input.bootstrap, &input.lines);
    let dir = tempfile::tempdir().unwrap();
    let source = || job::source(bootstrap).subscribe(["lines"]).build().unwrap();
    let run = || job::count_words(job::context(dir.path()).build().unwrap(), source());

    // Two graceful stops at different points, the producer still going.
    let mut read = 0;
    for (stop_after, what) in [(1000, "a first 1000 lines"), (200, "200 more lines")] {
        let mut running = run();
        running.wait_for(what, |p| (p.records >= stop_after).then_some(()));
        read += running.stop().records;
    }
    assert!(read <= (LINES - HELD_BACK) as u64);

    let mut last = run();
    input.producer.finish();
    last.wait_for_records(LINES as u64 - read, "the rest of the 5000 lines");
    last.stop();

    assert_eq!(job::committed_counts(dir.path()), job::word_counts(lines));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let stored = checkpoint.offsets().unwrap();
    assert_eq!(stored.values().sum::<i64>(), LINES as i64);
    let ends = job::assert_ranges_chain(&checkpoint.batches().unwrap(), &zeros("lines", 3));
    assert_eq!(ends, stored);
}

#[test]
fn sigkill_mid_run_and_restart_gives_exact_totals() {
    const LINES: usize = 10_000;
    const PREFILLED: usize = 2500;
    /// The last lines are produced only after the last kill, so every kill
    /// happens with records still to come.
    const HELD_BACK: usize = 1000;
    /// Committed lines at which the 1st, 2nd and 3rd SIGKILL happen.
    const KILL_AT: [i64; 3] = [1000, 4500, 7000];
    // Missing or stale: fail before anything starts.
    wordcount::binary();

    let input = LinesTopic::start(LINES, PREFILLED, HELD_BACK, 200, Duration::from_millis(100));
    let (bootstrap, lines) = (&input.bootstrap, &input.lines);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("wordcount.log");
    let committed_lines = |offsets: &BTreeMap<TopicPartition, i64>| offsets.values().sum::<i64>();
    let describe = || wordcount::describe(&dir);

    let mut killed_at = Vec::new();
    for threshold in KILL_AT {
        let before = wordcount::committed(&dir).map(|(id, _)| id);
        let mut child = Wordcount::start(bootstrap, "lines", &dir, &log);
        let progress = job::poll(
            &format!("{threshold} committed lines, with a batch committed by this run"),
            WAIT,
            || {
                child.assert_running();
                let (id, offsets) = wordcount::committed(&dir)?;
                let n = committed_lines(&offsets);
                (Some(id) > before && n >= threshold).then_some(n)
            },
            describe,
        );
        child.kill();
        killed_at.push(progress);
    }
    eprintln!("SIGKILLed wordcount at {killed_at:?} committed lines");
    assert!(
        killed_at.windows(2).all(|w| w[0] < w[1]),
        "the kills did not happen at increasing progress: {killed_at:?}"
    );
    assert!(
        killed_at.iter().all(|&n| n < LINES as i64),
        "a kill came after everything was committed: {killed_at:?}"
    );

    let expected = job::word_counts(lines);
    let expected_words: i64 = expected.values().sum();
    let mut child = Wordcount::start(bootstrap, "lines", &dir, &log);
    input.producer.finish();
    job::poll(
        &format!("all {LINES} lines committed"),
        WAIT,
        || {
            child.assert_running();
            let (_, offsets) = wordcount::committed(&dir)?;
            (committed_lines(&offsets) == LINES as i64).then_some(())
        },
        describe,
    );
    let checkpoint = job::open_checkpoint(&dir, wordcount::APP_ID);
    let counted: i64 = job::family_counts(&checkpoint, wordcount::FAMILY)
        .values()
        .sum();
    // No range was read twice or skipped across the crashes.
    let batches = checkpoint.batches().unwrap();
    assert_eq!(batches.first().map(|b| b.id), Some(0));
    let ends = job::assert_ranges_chain(&batches, &zeros("lines", 3));
    assert_eq!(ends, checkpoint.offsets().unwrap());
    drop(checkpoint);
    assert_eq!(counted, expected_words, "words counted for {LINES} lines");
    let status = child.terminate(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "wordcount after SIGTERM: {status}");

    let printed = wordcount::totals(&dir);
    let printed: Vec<&str> = printed.lines().collect();
    let expected: Vec<String> = expected.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    for (i, (got, want)) in printed.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "line {} of wordcount --totals", i + 1);
    }
    assert_eq!(printed.len(), expected.len(), "lines of wordcount --totals");
}

/// The id and ranges of every batch with records an output saw.
type SeenBatches = Arc<std::sync::Mutex<Vec<(u64, Vec<OffsetRange>)>>>;

/// A value count whose first output notes each non-empty batch and, if
/// `hold` is given, waits on it before the batch can commit.
fn noting_job(
    dir: &std::path::Path,
    bootstrap: &str,
    seen: &SeenBatches,
    hold: Option<std::sync::mpsc::Receiver<()>>,
) -> job::RunningJob {
    let ctx = job::context(dir).build().unwrap();
    let source = job::source(bootstrap)
        .subscribe(["orders"])
        .build()
        .unwrap();
    let values = ctx.kafka_stream(source).unwrap().values_utf8();
    let (seen, hold) = (Arc::clone(seen), std::sync::Mutex::new(hold));
    values
        .foreach_batch(move |batch, info: &BatchInfo| {
            if batch.iter().next().is_some() {
                seen.lock().unwrap().push((info.id, info.ranges.clone()));
                if let Some(hold) = &*hold.lock().unwrap() {
                    // Released, or the test dropped the sender.
                    let _ = hold.recv();
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    values.count_by_value().save_counts(job::COUNTS).unwrap();
    job::RunningJob::start(ctx)
}

#[test]
fn a_batch_stopped_before_its_commit_is_redone_with_the_same_id_and_ranges() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "orders", 2);
    let mut all = produce(&bootstrap, "orders", 0, numbered("a", 0..30));
    all.extend(produce(&bootstrap, "orders", 1, numbered("b", 0..30)));
    let dir = tempfile::tempdir().unwrap();

    // The first run is held inside its first batch, which is then
    // cancelled: planned, computed, never committed.
    let seen: SeenBatches = Arc::default();
    let (release, hold) = std::sync::mpsc::channel();
    let running = noting_job(dir.path(), &bootstrap, &seen, Some(hold));
    let planned = job::poll(
        "the first batch to reach its output",
        WAIT,
        || seen.lock().unwrap().first().cloned(),
        || "no batch yet".to_owned(),
    );
    // More records arrive: planning again would make longer ranges.
    all.extend(produce(&bootstrap, "orders", 0, numbered("a", 30..50)));
    all.extend(produce(&bootstrap, "orders", 1, numbered("b", 30..50)));
    let err = running.cancel(|| drop(release));
    assert!(
        matches!(err, RuntimeError::Aborted { id } if id == planned.0),
        "{err}"
    );
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.last_batch().unwrap(), None, "nothing committed");
    drop(checkpoint);

    // The restart redoes that batch exactly, then reads on.
    let seen: SeenBatches = Arc::default();
    let mut running = noting_job(dir.path(), &bootstrap, &seen, None);
    running.wait_for_records(100, "all 100 records");
    running.stop();
    let batches = seen.lock().unwrap().clone();
    assert_eq!(
        batches[0], planned,
        "the redone batch: same id, same ranges"
    );
    assert!(batches.len() > 1, "the new records come in a later batch");
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&all));
}
