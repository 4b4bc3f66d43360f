//! `run_until_caught_up`: a bounded run reads what the topics held when it
//! started, in as many batches as the rate limits allow, commits, and
//! returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sluice::prelude::*;
use tempfile::TempDir;

use crate::util::job::{self, produce_numbered, APP_ID};
use crate::util::kafka;

const TOPIC: &str = "bounded";

/// Counts the batches a job commits.
fn batch_counter(ctx: &StreamingContext) -> Arc<AtomicU64> {
    let batches = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&batches);
    ctx.add_listener(move |_: &BatchCompleted, _: &dyn CheckpointStore| {
        counter.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    batches
}

#[test]
fn run_until_caught_up_reads_what_the_topic_held_at_its_start_then_returns() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 2);
    let first = produce_numbered(&bootstrap, TOPIC, 2, 0..300);
    let dir = TempDir::new().unwrap();

    // A rate limit makes the run take several batches; the first batch
    // produces more records, which this run must leave for the next one.
    let ctx = job::context(dir.path())
        .rate_limits(RateLimits::new().max_rate_per_partition(1000.0))
        .build()
        .unwrap();
    let stream = ctx
        .kafka_stream(job::source(&bootstrap).subscribe([TOPIC]).build().unwrap())
        .unwrap();
    let produced_more = Arc::new(AtomicBool::new(false));
    let more = Arc::clone(&produced_more);
    let producer = bootstrap.clone();
    stream
        .foreach_batch(move |_, _| {
            if !more.swap(true, Ordering::SeqCst) {
                produce_numbered(&producer, TOPIC, 2, 300..350);
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    stream
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    let batches = batch_counter(&ctx);
    ctx.run_until_caught_up().unwrap();

    assert!(produced_more.load(Ordering::SeqCst));
    assert!(
        batches.load(Ordering::Relaxed) > 1,
        "the rate limit spreads the run over several batches"
    );
    let counts = job::committed_counts(dir.path());
    assert_eq!(counts, job::counts_of(&first));
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    assert_eq!(checkpoint.offsets().unwrap(), job::offsets(TOPIC, 2, 300));
    drop(checkpoint);

    // The next run reads what came since, and nothing twice.
    let ctx = job::context(dir.path()).build().unwrap();
    ctx.kafka_stream(job::source(&bootstrap).subscribe([TOPIC]).build().unwrap())
        .unwrap()
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    ctx.run_until_caught_up().unwrap();
    let all: Vec<String> = first
        .iter()
        .cloned()
        .chain((0..2).flat_map(|p| (300..350).map(move |i| format!("{TOPIC}-{p}-{i}"))))
        .collect();
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&all));
}

#[test]
fn run_until_caught_up_on_an_empty_topic_returns_after_one_batch() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    let dir = TempDir::new().unwrap();
    let ctx = job::context(dir.path()).build().unwrap();
    ctx.kafka_stream(job::source(&bootstrap).subscribe([TOPIC]).build().unwrap())
        .unwrap()
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    let batches = batch_counter(&ctx);
    ctx.run_until_caught_up().unwrap();
    assert_eq!(batches.load(Ordering::Relaxed), 1);
    assert!(job::committed_counts(dir.path()).is_empty());
}

/// Bounded runs one right after the other, as a scheduler or a quick
/// restart makes them, all within one batch interval: each run's batch
/// comes after the last one in the checkpoint, on the interval's grid, so a
/// batch time (and a batch-time window) is never seen twice.
#[test]
fn runs_restarted_within_one_interval_never_repeat_a_batch_time() {
    let interval = std::time::Duration::from_millis(1500);
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 1);
    let dir = TempDir::new().unwrap();
    for run in 0..3 {
        produce_numbered(&bootstrap, TOPIC, 1, run * 10..run * 10 + 10);
        let ctx = job::context(dir.path())
            .batch_interval(interval)
            .build()
            .unwrap();
        ctx.kafka_stream(job::source(&bootstrap).subscribe([TOPIC]).build().unwrap())
            .unwrap()
            .values_utf8()
            .count_by_value()
            .save_counts(job::COUNTS)
            .unwrap();
        ctx.run_until_caught_up().unwrap();
    }
    let checkpoint = job::open_checkpoint(dir.path(), APP_ID);
    let times: Vec<i64> = checkpoint
        .batches()
        .unwrap()
        .iter()
        .map(|b| b.time_ms)
        .collect();
    assert_eq!(times.len(), 3, "one batch per run: {times:?}");
    for pair in times.windows(2) {
        assert!(
            pair[0] < pair[1],
            "batch times repeat or go back: {times:?}"
        );
    }
    let step = interval.as_millis() as i64;
    assert!(
        times.iter().all(|t| t % step == 0),
        "on the interval's grid: {times:?}"
    );
}

/// Records of each batch and records fetched from Kafka for them, summed
/// over the batches.
fn fetch_counter(ctx: &StreamingContext) -> Arc<[AtomicU64; 2]> {
    let sums = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let counter = Arc::clone(&sums);
    ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
        counter[0].fetch_add(batch.records, Ordering::Relaxed);
        counter[1].fetch_add(batch.records_fetched, Ordering::Relaxed);
    })
    .unwrap();
    sums
}

/// Runs a job with two outputs on one input over 10 000 records in each of
/// two partitions (three chunks of up to 4096 records per partition, one
/// batch), keeping up to `shared_bytes` of the batch for the second output.
/// Both outputs must count every record once; returns the records fetched
/// from Kafka.
fn fetched_by_two_outputs(shared_bytes: usize) -> u64 {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, TOPIC, 2);
    let lines = produce_numbered(&bootstrap, TOPIC, 2, 0..10_000);
    let dir = TempDir::new().unwrap();
    let ctx = job::context(dir.path())
        .shared_input_bytes(shared_bytes)
        .build()
        .unwrap();
    let stream = ctx
        .kafka_stream(job::source(&bootstrap).subscribe([TOPIC]).build().unwrap())
        .unwrap();
    stream
        .values_utf8()
        .count_by_value()
        .save_counts(job::COUNTS)
        .unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let second = Arc::clone(&seen);
    stream
        .count()
        .foreach_batch(move |counts, _| {
            let records: i64 = counts.iter().sum();
            second.fetch_add(records as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let batches = batch_counter(&ctx);
    let fetches = fetch_counter(&ctx);
    ctx.run_until_caught_up().unwrap();
    assert_eq!(batches.load(Ordering::Relaxed), 1, "one batch reads it all");
    assert_eq!(seen.load(Ordering::Relaxed), 20_000);
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&lines));
    assert_eq!(fetches[0].load(Ordering::Relaxed), 20_000);
    fetches[1].load(Ordering::Relaxed)
}

/// Two outputs on one input, with room to keep only part of a batch for
/// the second: the chunks beyond it are read from Kafka again, and both
/// outputs still count every record of the batch once.
#[test]
fn a_second_output_reads_what_did_not_fit_in_the_shared_input_bytes_again_and_counts_all() {
    // A full chunk counts about 0.5 MiB: room for two of the six.
    let fetched = fetched_by_two_outputs(1 << 20);
    // The first output fetched every record; the second fetched again the
    // chunks that were not kept, at least two full ones, not all six.
    assert!(
        (20_000 + 2 * 4096..40_000).contains(&fetched),
        "fetched {fetched} records for 20 000 read"
    );
}

/// With room for the whole batch, the second output fetches nothing: the
/// batch reports each record fetched once.
#[test]
fn two_outputs_on_one_input_fetch_each_record_from_kafka_once() {
    assert_eq!(fetched_by_two_outputs(64 << 20), 20_000);
}
