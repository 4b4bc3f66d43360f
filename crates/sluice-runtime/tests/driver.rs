//! The driver on in-memory input: it plans every batch through the job's
//! `Source`, commits to a RocksDB checkpoint, reads on from the stored
//! offsets after a restart, picks up partitions added while it runs, and
//! counts every record exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_checkpoint::CheckpointStore;
use sluice_core::{
    DataLossPolicy, MemorySource, OffsetReset, RateLimits, ResetKind, TopicPartition,
};
use sluice_runtime::Error;

use crate::util::{
    checkpoint, committed_counts, committed_offsets, context, counts_of, first_ranges, values,
    CountingJob,
};

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("words", partition)
}

#[test]
fn a_restart_reads_on_from_the_stored_offsets_and_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let mut all = values("a", 0..30);
    source.append("words", 0, all.clone());

    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone()).start();
    job.wait_for_records(30);
    let first_run = job.stop();
    assert_eq!(committed_offsets(dir.path()), BTreeMap::from([(tp(0), 30)]));
    assert_eq!(committed_counts(dir.path()), counts_of(&all));

    // While the job is down: more records, and a partition new to the
    // checkpoint whose log starts at 4.
    let more = values("a", 30..50);
    source.append("words", 0, more.clone());
    all.extend(more);
    let late = values("b", 0..10);
    source.append("words", 1, late.clone());
    source.delete_before("words", 1, 4);
    all.extend(late[4..].iter().cloned());

    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone()).start();
    job.wait_for_records(20 + 6);
    let second_run = job.stop();
    let first = first_ranges(&second_run);
    assert_eq!(first[&tp(0)].0, 30, "resumes at the stored offset");
    assert_eq!(
        first[&tp(1)].0,
        4,
        "a new partition starts at its log start"
    );
    assert_eq!(
        second_run[0].info.id,
        first_run.last().unwrap().info.id + 1,
        "batch ids go on from the last committed one"
    );
    assert_eq!(
        committed_offsets(dir.path()),
        BTreeMap::from([(tp(0), 50), (tp(1), 10)])
    );
    assert_eq!(committed_counts(dir.path()), counts_of(&all));
}

#[test]
fn a_partition_added_while_running_is_read_from_its_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let mut all = values("a", 0..20);
    source.append("words", 0, all.clone());
    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone()).start();
    job.wait_for_records(20);

    let added = values("b", 0..15);
    source.append("words", 1, added.clone());
    let more = values("a", 20..25);
    source.append("words", 0, more.clone());
    all.extend(added.into_iter().chain(more));
    job.wait_for_records(40);
    let batches = job.stop();

    let joined: Vec<_> = batches
        .iter()
        .filter(|b| b.new_partitions.contains(&tp(1)))
        .collect();
    assert_eq!(joined.len(), 1, "one batch finds the new partition");
    assert_eq!(
        first_ranges(&batches)[&tp(1)].0,
        0,
        "read from its first offset"
    );
    assert!(
        batches
            .iter()
            .all(|b| b.info.ranges.iter().any(|r| r.topic_partition() == tp(0))),
        "every batch has a range of every partition, empty or not"
    );
    assert_eq!(
        committed_offsets(dir.path()),
        BTreeMap::from([(tp(0), 25), (tp(1), 15)])
    );
    assert_eq!(committed_counts(dir.path()), counts_of(&all));
}

#[test]
fn transient_source_failures_are_retried_until_the_source_answers() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let mut all = values("a", 0..10);
    source.append("words", 0, all.clone());
    source.fail_next_partitions(3);
    let ctx = context(dir.path())
        .kafka_outage_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let job = CountingJob::new(ctx, source.clone()).start();
    job.wait_for_records(10);

    source.fail_next_partitions(2);
    let more = values("a", 10..18);
    source.append("words", 0, more.clone());
    all.extend(more);
    job.wait_for_records(18);
    job.stop();
    assert_eq!(committed_counts(dir.path()), counts_of(&all));
}

#[test]
fn a_source_unavailable_past_the_outage_timeout_stops_the_job_with_its_error() {
    const OUTAGE_TIMEOUT: Duration = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    source.append("words", 0, values("a", 0..10));
    source.fail_next_partitions(u32::MAX);
    let ctx = context(dir.path())
        .kafka_outage_timeout(OUTAGE_TIMEOUT)
        .build()
        .unwrap();

    let started = Instant::now();
    let job = CountingJob::new(ctx, source).start();
    let error = job.context().await_termination().unwrap_err();
    assert!(
        started.elapsed() >= OUTAGE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&error, Error::Source(source) if source.is_transient()),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("fail_next_partitions"),
        "{error}"
    );
    assert!(job.batches().is_empty());
    assert!(committed_offsets(dir.path()).is_empty());
}

#[test]
fn a_stored_offset_deleted_from_the_log_stops_the_job_or_is_reset_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let read = values("a", 0..10);
    source.append("words", 0, read.clone());
    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone()).start();
    job.wait_for_records(10);
    job.stop();

    // Retention passes the stored position while the job is down.
    let later = values("a", 10..20);
    source.append("words", 0, later.clone());
    source.delete_before("words", 0, 15);

    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone()).start();
    let error = job.context().await_termination().unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Source(sluice_core::Error::DataLoss {
                stored: 10,
                log_start: 15,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(committed_offsets(dir.path()), BTreeMap::from([(tp(0), 10)]));

    let resetting = source.with_data_loss_policy(DataLossPolicy::ResetToEarliest);
    let job = CountingJob::new(context(dir.path()).build().unwrap(), resetting).start();
    job.wait_for_records(5);
    let batches = job.stop();
    assert_eq!(
        batches[0].resets,
        [OffsetReset::new(tp(0), ResetKind::BelowLogStart, 10, 15, 5)]
    );
    assert_eq!(committed_offsets(dir.path()), BTreeMap::from([(tp(0), 20)]));
    let counted = read.iter().chain(&later[5..]);
    assert_eq!(committed_counts(dir.path()), counts_of(counted));
}

#[test]
fn rate_caps_bound_every_range_the_source_plans() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let all = values("a", 0..60);
    source.append("words", 0, all.clone());
    // 20 ms batches at 500 records/s: 10 records per batch at most.
    let ctx = context(dir.path())
        .rate_limits(RateLimits::new().max_rate_per_partition(500.0))
        .build()
        .unwrap();
    let job = CountingJob::new(ctx, source).start();
    job.wait_for_records(60);
    let batches = job.stop();
    assert!(batches.len() >= 6, "{} batches", batches.len());
    for batch in &batches {
        assert!(batch.info.ranges[0].count() <= 10, "{:?}", batch.info);
    }
    assert_eq!(committed_counts(dir.path()), counts_of(&all));
}

/// Regression: a bounded run that found nothing after the stored offsets
/// still committed an empty batch (Spark's AvailableNow runs none).
#[test]
fn a_bounded_run_with_nothing_new_runs_no_batch() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    source.append("words", 0, values("a", 0..5));
    let batches = |dir: &std::path::Path| checkpoint(dir).batches().unwrap().len();
    let run = || {
        let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone());
        job.context().run_until_caught_up().unwrap();
    };
    run();
    assert_eq!(batches(dir.path()), 1);
    run();
    assert_eq!(
        batches(dir.path()),
        1,
        "a run with nothing new committed a batch"
    );
    source.append("words", 0, values("a", 5..7));
    run();
    assert_eq!(batches(dir.path()), 2);
    assert_eq!(committed_offsets(dir.path()), BTreeMap::from([(tp(0), 7)]));
}

#[test]
fn a_bounded_run_reads_what_the_source_held_when_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let source = MemorySource::new();
    let mut all = values("a", 0..25);
    source.append("words", 0, all.clone());
    let other = values("b", 0..5);
    source.append("words", 1, other.clone());
    all.extend(other);

    let job = CountingJob::new(context(dir.path()).build().unwrap(), source.clone());
    job.context().run_until_caught_up().unwrap();
    assert_eq!(
        committed_offsets(dir.path()),
        BTreeMap::from([(tp(0), 25), (tp(1), 5)])
    );
    assert_eq!(committed_counts(dir.path()), counts_of(&all));

    let more = values("a", 25..30);
    source.append("words", 0, more.clone());
    all.extend(more);
    let job = CountingJob::new(context(dir.path()).build().unwrap(), source);
    job.context().run_until_caught_up().unwrap();
    assert_eq!(
        committed_offsets(dir.path()),
        BTreeMap::from([(tp(0), 30), (tp(1), 5)])
    );
    assert_eq!(committed_counts(dir.path()), counts_of(&all));
}
