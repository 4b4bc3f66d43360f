//! Rate control against a broker: the first batch after a start is bounded
//! by the initial rate, no batch passes its per-partition cap, backpressure
//! sizes batches so processing settles near the interval, and the job-wide
//! max rate holds over wall-clock time when batches catch up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use sluice::checkpoint::CheckpointStore;
use sluice::kafka::KafkaSource;
use sluice::rate::{RateLimits, RateReason};
use sluice::{BatchCompleted, StreamingContext};
use tempfile::TempDir;

use crate::util::job::{self, RunningJob};
use crate::util::kafka;

const INTERVAL: Duration = Duration::from_millis(200);
/// Known cost of a record: each task sleeps this long per record it holds,
/// so two workers process about 2000 records/s whatever else the machine
/// does (sleeping only ever takes longer).
const PER_RECORD: Duration = Duration::from_millis(1);
const INITIAL_RATE: f64 = 500.0;
const MAX_RATE_PER_PARTITION: f64 = 1000.0;

/// A mock broker whose `backlog` topic holds records already, and a
/// checkpoint directory for a job reading it.
struct Backlog {
    cluster: MockCluster<'static, DefaultProducerContext>,
    dir: TempDir,
}

impl Backlog {
    /// `per_partition` records in each of `partitions` partitions.
    fn new(partitions: i32, per_partition: usize) -> Self {
        let cluster = kafka::mock_cluster();
        let bootstrap = cluster.bootstrap_servers();
        kafka::create_mock_topic(&cluster, "backlog", partitions);
        for p in 0..partitions {
            let values: Vec<String> = (0..per_partition).map(|i| format!("r-{p}-{i}")).collect();
            kafka::produce(&bootstrap, "backlog", Some(p), &values);
        }
        let dir = tempfile::tempdir().unwrap();
        Self { cluster, dir }
    }

    /// A context with `interval` and `limits`, and a source of `backlog`.
    fn job(&self, interval: Duration, limits: RateLimits) -> (StreamingContext, KafkaSource) {
        let ctx = job::context(self.dir.path())
            .batch_interval(interval)
            .rate_limits(limits)
            .build()
            .unwrap();
        let source = job::source(&self.cluster.bootstrap_servers())
            .subscribe(["backlog"])
            .build()
            .unwrap();
        (ctx, source)
    }
}

#[test]
fn backpressure_bounds_the_first_batch_respects_caps_and_settles_near_the_interval() {
    let backlog = Backlog::new(4, 2500);
    let limits = RateLimits::new()
        .backpressure(true)
        .initial_rate(INITIAL_RATE)
        .max_rate_per_partition(MAX_RATE_PER_PARTITION);
    let (ctx, source) = backlog.job(INTERVAL, limits);
    ctx.kafka_stream(source)
        .unwrap()
        .map_partitions(|records| {
            std::thread::sleep(PER_RECORD * records.len() as u32);
            records
        })
        .count()
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .unwrap();
    let mut running = RunningJob::start(ctx);
    let batches = running.wait_for("12 committed batches", |p| {
        (p.batches.len() >= 12).then(|| p.batches.clone())
    });
    running.stop();

    // The backlog (10 000 records) never drains in 12 batches, so every
    // batch is sized by the rate limit alone.
    let first = &batches[0];
    let limit = first.info.rate_limit.expect("the first batch has a limit");
    assert_eq!(limit.reason, RateReason::InitialRate, "{limit}");
    let initial_budget = (INITIAL_RATE * INTERVAL.as_secs_f64()) as u64;
    assert_eq!(first.records, initial_budget, "first batch after a start");

    let cap = (MAX_RATE_PER_PARTITION * INTERVAL.as_secs_f64()) as u64;
    for batch in &batches {
        for (range, &read) in batch.info.ranges.iter().zip(&batch.records_per_range) {
            assert!(
                range.count() <= cap && read <= cap,
                "batch {} read {read} of {range}, cap {cap}",
                batch.info.id
            );
        }
        let limit = batch.info.rate_limit.expect("every batch is rate limited");
        let budget = (limit.records_per_second * INTERVAL.as_secs_f64()).ceil() as u64;
        assert!(
            batch.records <= budget.max(4),
            "batch {} read {} records over its budget {budget} ({limit})",
            batch.info.id,
            batch.records
        );
    }

    let reasons: Vec<RateReason> = batches
        .iter()
        .map(|b| b.info.rate_limit.unwrap().reason)
        .collect();
    assert!(
        reasons[3..].iter().all(|r| *r == RateReason::Backpressure),
        "backpressure takes over once it has an estimate: {reasons:?}"
    );

    // Settled: the last batches take about one interval to process. The
    // bounds are wide because a loaded machine only slows processing down,
    // which the estimator answers with smaller batches.
    let tail = &batches[batches.len() - 5..];
    let mean = tail.iter().map(|b| b.processing).sum::<Duration>() / tail.len() as u32;
    assert!(
        mean > INTERVAL.mul_f64(0.4) && mean < INTERVAL.mul_f64(2.5),
        "mean processing of the last batches {mean:?} vs interval {INTERVAL:?}: {:?}",
        tail.iter()
            .map(|b| (b.records, b.processing))
            .collect::<Vec<_>>()
    );
}

#[test]
fn max_rate_holds_over_wall_clock_time_while_batches_catch_up_after_an_overrun() {
    const MAX_RATE: f64 = 1_000.0;
    const INTERVAL: Duration = Duration::from_millis(100);
    /// Batch 2 takes this long, so the batches due meanwhile run back to back.
    const OVERRUN: Duration = Duration::from_millis(700);
    let budget = (MAX_RATE * INTERVAL.as_secs_f64()) as u64;

    let backlog = Backlog::new(2, 5_000);
    let (ctx, source) = backlog.job(INTERVAL, RateLimits::new().max_rate(MAX_RATE));
    ctx.kafka_stream(source)
        .unwrap()
        .count()
        .foreach_batch(|_, info| {
            if info.id == 2 {
                std::thread::sleep(OVERRUN);
            }
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    // When each batch committed; a batch is planned after the one before it
    // committed, so every batch after `j` up to `k` was planned and read
    // between the commits of `j` and `k`.
    let committed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let seen = Arc::clone(&committed);
    ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
        seen.lock().unwrap().push((Instant::now(), batch.records));
    })
    .unwrap();
    let mut running = RunningJob::start(ctx);
    let batches = running.wait_for("14 committed batches", |p| {
        (p.batches.len() >= 14).then(|| p.batches.clone())
    });
    running.stop();
    let committed = committed.lock().unwrap().clone();

    // The overrun happened: several batches started late, one right after
    // the other.
    let late = batches
        .iter()
        .filter(|b| b.scheduling_delay > INTERVAL * 2)
        .count();
    assert!(late >= 3, "expected catch-up batches: {late} started late");

    // In every span between two commits, the batches read at most the rate
    // times the span plus the bucket's capacity, a budget and a quarter.
    let capacity = budget + budget / 4;
    for (j, (from, _)) in committed.iter().enumerate() {
        let mut read = 0;
        for (until, records) in &committed[j + 1..] {
            read += records;
            let span = until.duration_since(*from).as_secs_f64();
            let allowed = (MAX_RATE * span).ceil() as u64 + capacity;
            assert!(
                read <= allowed,
                "{read} records in {span:.3} s after batch {j}, max rate allows {allowed}: {committed:?}"
            );
        }
    }
    for batch in &batches {
        assert!(
            batch.records <= budget,
            "batch {} read {}",
            batch.info.id,
            batch.records
        );
        let limit = batch.info.rate_limit.expect("every batch is rate limited");
        assert_eq!(limit.reason, RateReason::MaxRate, "{limit}");
    }
}
