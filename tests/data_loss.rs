//! Offsets the log no longer holds: a planned range that retention deleted
//! (while the job was down, or between planning and reading), and a stored
//! offset past the end of a recreated topic. Every such case is the
//! data-loss decision — a clear error, or a reset recorded in the batch
//! record — never an opaque client error or a job that cannot progress.
//!
//! librdkafka's mock broker keeps 5 MiB per partition and deletes the
//! oldest message sets beyond that, so producing large records moves the
//! log start the way retention does.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;

use sluice::checkpoint::{
    BatchRecord, CheckpointStore, Commit, RangeRecord, ResetRecordKind, RocksCheckpoint,
};
use sluice::kafka::{DataLossPolicy, ResetKind};
use sluice::prelude::*;
use sluice::sink::WriteSet;
use tempfile::TempDir;

use crate::util::job::{self, RunningJob, APP_ID, COUNTS, WAIT};
use crate::util::kafka;

const TOPIC: &str = "t";

fn tp() -> TopicPartition {
    TopicPartition::new(TOPIC, 0)
}

/// Produces records of 900 KiB until the mock broker's log start of
/// partition 0 is past `past`; returns (log start, latest).
fn push_log_start_past(bootstrap: &str, past: i64) -> (i64, i64) {
    let big = vec![b'x'; 900 * 1024];
    loop {
        kafka::produce(bootstrap, TOPIC, Some(0), [&big]);
        let (_, log_start, latest) = kafka::watermarks(bootstrap, TOPIC)[0];
        if log_start > past {
            return (log_start, latest);
        }
    }
}

fn small_records(bootstrap: &str, range: std::ops::Range<usize>) {
    let values: Vec<String> = range.map(|i| format!("r{i}")).collect();
    kafka::produce(bootstrap, TOPIC, Some(0), &values);
}

/// Counts records (not values: some are 900 KiB) into [`COUNTS`].
fn count_records(ctx: StreamingContext, source: KafkaSource) -> RunningJob {
    ctx.kafka_stream(source)
        .unwrap()
        .map(|_| "records".to_owned())
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    RunningJob::start(ctx)
}

fn counted_records(dir: &Path) -> i64 {
    job::committed_counts(dir)
        .get("records")
        .copied()
        .unwrap_or(0)
}

fn source(bootstrap: &str, policy: DataLossPolicy) -> KafkaSource {
    job::source(bootstrap)
        .subscribe([TOPIC])
        .on_data_loss(policy)
        .build()
        .unwrap()
}

/// Runs a job until it committed offset 10 of partition 0, then leaves a
/// write-ahead plan `[10, 11)` for the next batch, as a job stopped before
/// that batch committed does.
fn checkpoint_with_pending_plan(bootstrap: &str) -> TempDir {
    small_records(bootstrap, 0..10);
    let dir = tempfile::tempdir().unwrap();
    let ctx = job::context(dir.path()).build().unwrap();
    let mut running = count_records(ctx, source(bootstrap, DataLossPolicy::Fail));
    running.wait_for_records(10, "the first 10 records");
    running.stop();
    small_records(bootstrap, 10..11);

    let mut store = RocksCheckpoint::builder(dir.path())
        .app_id(APP_ID)
        .open()
        .unwrap();
    assert_eq!(store.offsets().unwrap()[&tp()], 10);
    let next = store.last_batch().unwrap().unwrap().id + 1;
    let mut plan = BatchRecord::new(next, 1_700_000_000_000);
    let range = OffsetRange::new(&tp(), 10, 11);
    plan.ranges.push(RangeRecord::from_range(&range, 0));
    store.write_plan(&plan).unwrap();
    dir
}

#[test]
fn a_replayed_plan_deleted_by_retention_resets_and_records_the_skipped_offsets() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    let dir = checkpoint_with_pending_plan(&bootstrap);
    let (log_start, latest) = push_log_start_past(&bootstrap, 11);

    let ctx = job::context(dir.path()).build().unwrap();
    let mut running = count_records(ctx, source(&bootstrap, DataLossPolicy::ResetToEarliest));
    let survivors = (latest - log_start) as u64;
    running.wait_for_records(survivors, "the records that survived retention");
    let progress = running.stop();

    let first = &progress.batches[0];
    assert_eq!(
        first.info.ranges[0],
        OffsetRange::new(&tp(), log_start, latest)
    );
    assert_eq!(first.resets.len(), 1, "{:?}", first.resets);
    let reset = &first.resets[0];
    assert_eq!(
        (reset.kind, reset.stored, reset.offsets),
        (ResetKind::BelowLogStart, 10, (log_start - 10) as u64)
    );
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let record = checkpoint
        .batches()
        .unwrap()
        .into_iter()
        .find(|b| b.id == first.info.id)
        .unwrap();
    let range = &record.ranges[0];
    assert_eq!(range.skipped_offsets, (log_start - 10) as u64);
    assert_eq!(
        range.reset.map(|r| (r.kind, r.stored)),
        Some((ResetRecordKind::BelowLogStart, 10))
    );
    assert_eq!(range.records, survivors);
    assert_eq!(counted_records(dir.path()), 10 + survivors as i64);
}

#[test]
fn a_replayed_plan_deleted_by_retention_fails_with_the_data_loss_error() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    let dir = checkpoint_with_pending_plan(&bootstrap);
    let (log_start, _) = push_log_start_past(&bootstrap, 11);

    let ctx = job::context(dir.path()).build().unwrap();
    let mut running = count_records(ctx, source(&bootstrap, DataLossPolicy::Fail));
    let message = running.wait_for_error().to_string();
    for needle in [
        "data loss on t-0".to_owned(),
        "stored offset 10".to_owned(),
        format!("log start {log_start}"),
    ] {
        assert!(message.contains(&needle), "{needle:?} missing: {message}");
    }
    // Nothing of the batch was committed.
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap()[&tp()], 10);
    assert_eq!(counted_records(dir.path()), 10);
}

/// The batch's task holds its first record while retention passes the start
/// of its range, then fails once; the retried task reads the range again and
/// finds it gone. (A second output no longer reads the range again: the
/// input is read once per batch.)
#[test]
fn retention_passing_a_range_between_planning_and_reading_resets_the_batch() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    small_records(&bootstrap, 0..5);
    let dir = tempfile::tempdir().unwrap();
    let ctx = job::context(dir.path()).build().unwrap();
    let stream = ctx
        .kafka_stream(source(&bootstrap, DataLossPolicy::ResetToEarliest))
        .unwrap();

    let (reached, first_call) = mpsc::channel::<()>();
    let (release, gate) = mpsc::channel::<()>();
    let held = Mutex::new(Some((reached, gate)));
    stream
        .try_map(move |_| {
            // Only the first call waits, then fails its attempt; later ones
            // (the retry, the batch planned again) run through.
            if let Some((reached, gate)) = held.lock().unwrap().take() {
                reached.send(()).unwrap();
                gate.recv_timeout(WAIT).unwrap();
                return Err("the first attempt fails after retention passed");
            }
            Ok("records".to_owned())
        })
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    let mut running = RunningJob::start(ctx);

    first_call.recv_timeout(WAIT).unwrap();
    let (log_start, latest) = push_log_start_past(&bootstrap, 5);
    release.send(()).unwrap();
    let first = running.wait_for_first_batch();
    running.stop();

    assert_eq!(
        first.info.ranges[0],
        OffsetRange::new(&tp(), log_start, latest)
    );
    assert_eq!(first.resets.len(), 1, "{:?}", first.resets);
    assert_eq!(
        (first.resets[0].kind, first.resets[0].stored),
        (ResetKind::BelowLogStart, 0)
    );
    assert_eq!(counted_records(dir.path()), latest - log_start);
}

/// A topic deleted and recreated: the stored offset 500 is past the new
/// latest offset 300.
#[test]
fn a_reset_past_the_latest_offset_is_recorded_with_its_kind_and_count() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    small_records(&bootstrap, 0..300);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RocksCheckpoint::builder(dir.path())
            .app_id(APP_ID)
            .open()
            .unwrap();
        store
            .commit(Commit {
                record: BatchRecord::new(0, 1_700_000_000_000),
                next_offsets: vec![(tp(), 500)],
                writes: WriteSet::new(),
            })
            .unwrap();
    }

    let ctx = job::context(dir.path()).build().unwrap();
    let mut running = count_records(ctx, source(&bootstrap, DataLossPolicy::ResetToEarliest));
    running.wait_for_records(300, "the recreated topic's 300 records");
    let progress = running.stop();

    let first = &progress.batches[0];
    assert_eq!(first.info.ranges[0], OffsetRange::new(&tp(), 0, 300));
    let reset = &first.resets[0];
    assert_eq!(
        (reset.kind, reset.stored, reset.offsets),
        (ResetKind::PastLatest, 500, 200)
    );
    let record = job::open_checkpoint(dir.path(), APP_ID)
        .batches()
        .unwrap()
        .into_iter()
        .find(|b| b.id == first.info.id)
        .unwrap();
    assert_eq!(record.ranges[0].skipped_offsets, 200);
    assert_eq!(
        record.ranges[0].reset.map(|r| (r.kind, r.stored)),
        Some((ResetRecordKind::PastLatest, 500))
    );
}

/// Regression (newuser3 item 6): a recreated topic put every partition past
/// its latest offset, but the Fail error named only the first partition.
#[test]
fn the_data_loss_error_names_every_partition_past_its_latest_offset() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "r", 3);
    job::produce_numbered(&bootstrap, "r", 3, 0..20);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RocksCheckpoint::builder(dir.path())
            .app_id(APP_ID)
            .open()
            .unwrap();
        let r = |p| TopicPartition::new("r", p);
        store
            .commit(Commit {
                record: BatchRecord::new(0, 1_700_000_000_000),
                next_offsets: vec![(r(0), 500), (r(1), 10), (r(2), 700)],
                writes: WriteSet::new(),
            })
            .unwrap();
    }
    let source = job::source(&bootstrap)
        .subscribe(["r"])
        .on_data_loss(DataLossPolicy::Fail)
        .build()
        .unwrap();
    let mut running = count_records(job::context(dir.path()).build().unwrap(), source);
    let message = running.wait_for_error().to_string();
    for needle in [
        "stored offset 500 of r-0 is past its latest offset 20",
        "1 more partition(s) affected: r-2 (stored offset 700 past its latest offset 20)",
    ] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    assert!(!message.contains("r-1"), "{message}");
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.last_batch().unwrap().unwrap().id, 0);
}
