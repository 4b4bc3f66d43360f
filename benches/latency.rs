//! End-to-end latency against a real broker: from a record's Kafka
//! timestamp (CreateTime, set by the producer when it sends the record) to
//! the checkpoint commit of the sluice batch that read it.
//!
//! Starts a `tansu` broker (memory storage) on a free loopback port, then:
//!
//! 1. **Saturation.** The bench's main thread sends 62-byte records
//!    round-robin to a 4-partition topic as fast as the client takes them
//!    for `SLUICE_BENCH_LATENCY_MAX_SECS` seconds (default 10), while the
//!    job runs on it at a 100 ms interval on its own threads. The job falls
//!    behind, and the records its batches get through per second of batch
//!    time (over those committed in the last two thirds of the run) are
//!    the maximum it sustains on this machine with a producer and the
//!    broker sharing the cores. That is a lower bound: a slower producer
//!    leaves the job more CPU. `SLUICE_BENCH_LATENCY_RATE` (records/s)
//!    skips this step and takes the given rate as the maximum.
//! 2. **Steady load**, for each batch interval of
//!    `SLUICE_BENCH_LATENCY_INTERVALS_MS` (default `100,1000`): on a fresh
//!    topic and checkpoint, the producer sends at
//!    `SLUICE_BENCH_LATENCY_LOAD` (default 0.5) times that maximum, paced by
//!    deadline (record `n` is due `n / rate` seconds after the start), for
//!    `SLUICE_BENCH_LATENCY_SECS` seconds (default 20 at 100 ms, 30 at
//!    1 s). Records sent in the first `SLUICE_BENCH_LATENCY_WARMUP_SECS`
//!    (default: 2 s or 3 intervals, the longer) are not measured, nor those
//!    of a cool-down of 2 intervals + 0.5 s at the same rate that follows.
//!
//! The job is a pass-through that keeps each record's timestamp:
//! `kafka_stream(..).map(|r| r.timestamp).foreach_batch(..)`, 2 workers,
//! `checkpoint_sync(true)` (the default), sluice's default client settings
//! but for `fetch.wait.max.ms=10` (see [`SOURCE_SETTINGS`]). Its
//! `foreach_batch` hands each batch's timestamps to the bench under the
//! batch id; a batch listener, called right after the commit,
//! takes them with the wall-clock time of the commit. A record's latency
//! is that time minus its timestamp (both wall-clock; the timestamp has
//! millisecond resolution, so a latency reads up to 1 ms long).
//!
//! Before reporting, the bench checks that every record sent was committed
//! exactly once: the committed batches' ranges follow one another from
//! offset 0 in every partition and end at the count sent to it, each batch
//! handed over as many timestamps as its ranges hold records (and its
//! `BatchCompleted::min_timestamp`/`max_timestamp` are theirs), and the
//! broker holds what was sent.
//!
//! It prints p50, p99 and max of the latency per interval, and p99 over the
//! interval (the goal of issue 14 is p99 ≤ 1.5 intervals), split into the
//! wait before the batch that read a record started and the time of that
//! batch (processing and commit), and the share of the time the job was
//! busy with batches.
//!
//! `SLUICE_BENCH_LATENCY_SET=key=value,...` passes more client settings to
//! the job's source (for instance `fetch.wait.max.ms=500`). The broker
//! binary is found as for `kafka_throughput` (`$TANSU_BIN`, `PATH` or
//! `~/.cargo/bin/tansu`; `SLUICE_TEST_BROKER=nisshi` runs nisshi).
//!
//! ```text
//! cargo bench --bench latency
//! ```
//!
//! Under `cargo test` (no `--bench` argument) every phase lasts a few
//! seconds: a check that the bench runs and counts right, not a
//! measurement.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice::prelude::*;
use tempfile::TempDir;

// The integration tests' broker launcher; the bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/util/tansu.rs"]
mod tansu;
use tansu::Tansu;

const PARTITIONS: i32 = 4;
const WORKERS: usize = 2;
/// The value of every record: as long as a line of `kafka_throughput`.
const VALUE: &[u8; 62] = b"sluice end-to-end latency bench: one record of sixty-two bytes";
/// Batch interval of the saturation run.
const SATURATION_INTERVAL: Duration = Duration::from_millis(100);
/// How long the job may take to commit the last records once the
/// producer stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Client settings of the job's source, on top of sluice's defaults.
/// tansu 0.6 answers every fetch only after `fetch.wait.max.ms` (half of
/// it from 500 ms on), data or not: `tansu-storage` `service/fetch.rs`
/// sleeps after its first read whatever it found. With librdkafka's
/// default of 500 ms, every fetch takes 250 ms and batches wait for
/// records already on the broker; Kafka answers as soon as
/// `fetch.min.bytes` (1) arrived. 10 ms, as in `kafka_throughput`.
const SOURCE_SETTINGS: [(&str, &str); 1] = [("fetch.wait.max.ms", "10")];
/// The issue's goal: p99 latency at most this many batch intervals.
const GOAL_INTERVALS: f64 = 1.5;

fn main() -> Result<()> {
    if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let intervals: Vec<Duration> = std::env::var("SLUICE_BENCH_LATENCY_INTERVALS_MS")
        .unwrap_or_else(|_| "100,1000".to_owned())
        .split(',')
        .map(|ms| {
            ms.trim()
                .parse()
                .map(Duration::from_millis)
                .with_context(|| format!("SLUICE_BENCH_LATENCY_INTERVALS_MS: {ms:?}"))
        })
        .collect::<Result<_>>()?;
    let secs = env_f64("SLUICE_BENCH_LATENCY_SECS")?;
    let warmup = env_f64("SLUICE_BENCH_LATENCY_WARMUP_SECS")?;
    let load = env_f64("SLUICE_BENCH_LATENCY_LOAD")?.unwrap_or(0.5);
    let max_secs =
        env_f64("SLUICE_BENCH_LATENCY_MAX_SECS")?.unwrap_or(if measuring { 10.0 } else { 4.0 });
    let mut settings: Vec<(String, String)> = SOURCE_SETTINGS
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let more: Vec<(String, String)> = std::env::var("SLUICE_BENCH_LATENCY_SET")
        .unwrap_or_default()
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
            None => bail!("SLUICE_BENCH_LATENCY_SET: {kv:?} is not key=value"),
        })
        .collect::<Result<_>>()?;
    settings.extend(more);
    ensure!(
        load > 0.0 && load <= 1.0,
        "SLUICE_BENCH_LATENCY_LOAD must be in (0, 1]"
    );

    if !measuring {
        println!("quick check under `cargo test`: the figures below are not measurements");
    }
    println!("load average at the start: {}", load_average());
    let broker = Tansu::start_in_memory();
    let bench = Bench {
        bootstrap: broker.bootstrap(),
        settings,
    };
    println!(
        "{} (memory storage) on {}",
        broker.kind().name(),
        bench.bootstrap
    );

    let max_rate = match env_f64("SLUICE_BENCH_LATENCY_RATE")? {
        Some(rate) => {
            println!("maximum taken from SLUICE_BENCH_LATENCY_RATE: {rate:.0} records/s");
            rate
        }
        None => {
            broker.create_topic("saturation", PARTITIONS);
            bench.saturation("saturation", Duration::from_secs_f64(max_secs))?
        }
    };
    let rate = load * max_rate;

    let mut reports = Vec::new();
    for (n, &interval) in intervals.iter().enumerate() {
        let secs = secs.unwrap_or(match (measuring, interval >= Duration::from_secs(1)) {
            (false, _) => 3.0,
            (true, false) => 20.0,
            (true, true) => 30.0,
        });
        let warmup = warmup.map_or_else(
            || {
                if measuring {
                    (interval * 3).max(Duration::from_secs(2))
                } else {
                    Duration::from_secs(1)
                }
            },
            Duration::from_secs_f64,
        );
        let topic = format!("steady-{n}");
        broker.create_topic(&topic, PARTITIONS);
        let report = bench.steady(
            &topic,
            interval,
            rate,
            warmup,
            Duration::from_secs_f64(secs),
        )?;
        report.print();
        reports.push(report);
    }

    println!();
    println!(
        "end-to-end latency at {:.0} records/s ({:.0} % of {max_rate:.0}), ms; \
         goal p99 <= {GOAL_INTERVALS} intervals",
        rate,
        load * 100.0
    );
    println!(
        "{:>9} {:>9} {:>6} {:>9} {:>9} {:>9} {:>14}   goal",
        "interval", "records", "busy", "p50", "p99", "max", "p99/interval"
    );
    for report in &reports {
        let ratio = report.latency.p99 / ms(report.interval);
        println!(
            "{:>9} {:>9} {:>5.0}% {:>9.1} {:>9.1} {:>9.1} {:>14.2}   {}",
            format!("{:?}", report.interval),
            report.measured,
            report.busy * 100.0,
            report.latency.p50,
            report.latency.p99,
            report.latency.max,
            ratio,
            if ratio <= GOAL_INTERVALS {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!("load average at the end: {}", load_average());
    Ok(())
}

struct Bench {
    bootstrap: String,
    /// Client settings added to the job's source.
    settings: Vec<(String, String)>,
}

impl Bench {
    /// How many records a second the job gets through while a producer
    /// sends as fast as it can: the records of its batches over the time
    /// they took (processing and commit). When the job falls behind, its
    /// batches run back to back and this is its commit rate; when it keeps
    /// up, it is what it would reach with more input.
    fn saturation(&self, topic: &str, duration: Duration) -> Result<f64> {
        let job = Job::start(self, topic, SATURATION_INTERVAL)?;
        let produced = produce(&self.bootstrap, topic, None, duration)?;
        job.stop()?;
        let batches = job.batches();
        // The batches committed after the first third of the time (the
        // start, the first reads and the producer's ramp are left out) and
        // before the producer stopped.
        let from = produced.started_us + duration.as_micros() as i64 / 3;
        let window: Vec<&CommittedBatch> = batches
            .iter()
            .filter(|b| b.at_us >= from && b.at_us <= produced.ended_us && b.records > 0)
            .collect();
        ensure!(
            !window.is_empty(),
            "no batch committed in the last two thirds of the saturation run"
        );
        let records: u64 = window.iter().map(|b| b.records).sum();
        let busy: Duration = window.iter().map(|b| b.processing + b.commit).sum();
        let rate = records as f64 / busy.as_secs_f64();
        let committed: u64 = batches
            .iter()
            .filter(|b| b.at_us <= produced.ended_us)
            .map(|b| b.records)
            .sum();
        let backlog = produced.paced.saturating_sub(committed);
        println!(
            "saturation ({duration:?}, {SATURATION_INTERVAL:?} interval): the producer sent {:.0} records/s; \
             the job read and committed {rate:.0} records/s of batch time over its last {} batches \
             (p50 {:.0} records, {:.0} ms); {backlog} records sent but not committed when the producer stopped",
            produced.sent_rate(),
            window.len(),
            Quantiles::of(window.iter().map(|b| b.records as f64).collect()).p50,
            Quantiles::of(window.iter().map(|b| ms(b.processing + b.commit)).collect()).p50,
        );
        Ok(rate)
    }

    /// Runs the job at `interval` while the producer sends `rate`
    /// records/s, then lets it commit the rest, checks the counts and
    /// reports the latency of the records sent during `measured`, after
    /// `warmup`. The producer goes on at the same rate for a while after
    /// `measured`, so that the last measured records do not wait for the
    /// end of the run (see [`produce`]).
    fn steady(
        &self,
        topic: &str,
        interval: Duration,
        rate: f64,
        warmup: Duration,
        measured: Duration,
    ) -> Result<Report> {
        let load_before = load_average();
        let job = Job::start(self, topic, interval)?;
        let cooldown = interval * 2 + Duration::from_millis(500);
        let produced = produce(
            &self.bootstrap,
            topic,
            Some(rate),
            warmup + measured + cooldown,
        )?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while job.records() < produced.total() {
            ensure!(
                Instant::now() < deadline,
                "the job committed {} of {} records",
                job.records(),
                produced.total()
            );
            thread::sleep(Duration::from_millis(10));
        }
        job.stop()?;
        let load_after = load_average();
        let committed = job.committed.lock().unwrap_or_else(PoisonError::into_inner);
        check(&self.bootstrap, topic, &produced, &committed)?;

        let from_ms = (produced.started_us + warmup.as_micros() as i64) / 1000;
        let to_ms = from_ms + measured.as_millis() as i64;
        let mut latency = Vec::new();
        let mut waited = Vec::new();
        let mut in_batch = Vec::new();
        let mut batches = Vec::new();
        // Records sent before the start of the batch ahead of the one that
        // read them: that batch's planning did not see them yet. By how
        // much, ms.
        let mut missed = Vec::new();
        // Time spent in batches that ran inside the measured period.
        let mut busy_ms = 0.0;
        let mut previous_start_ms = f64::NEG_INFINITY;
        for batch in &committed.batches {
            let at_ms = batch.at_us as f64 / 1e3;
            let started_ms = at_ms - ms(batch.processing + batch.commit);
            if started_ms >= from_ms as f64 && at_ms <= to_ms as f64 {
                busy_ms += at_ms - started_ms;
            }
            let mut any = false;
            for &ts in batch.timestamps.iter().flatten() {
                if ts < from_ms || ts >= to_ms {
                    continue;
                }
                let ts = ts as f64;
                latency.push(at_ms - ts);
                waited.push(started_ms - ts);
                if ts < previous_start_ms {
                    missed.push(previous_start_ms - ts);
                }
                any = true;
            }
            previous_start_ms = started_ms;
            if any {
                in_batch.push(at_ms - started_ms);
                batches.push(batch);
            }
        }
        ensure!(
            !latency.is_empty(),
            "no record was sent after the warm-up of {warmup:?}"
        );
        let measured = latency.len();
        let missed_share = missed.len() as f64 / measured as f64;
        Ok(Report {
            interval,
            rate: produced.sent_rate(),
            behind: produced.behind,
            measured,
            batches: batches.len(),
            latency: Quantiles::of(latency),
            waited: Quantiles::of(waited),
            in_batch: Quantiles::of(in_batch),
            processing: Quantiles::of(batches.iter().map(|b| ms(b.processing)).collect()),
            planning: Quantiles::of(batches.iter().map(|b| ms(b.planning)).collect()),
            commit: Quantiles::of(batches.iter().map(|b| ms(b.commit)).collect()),
            delay: Quantiles::of(batches.iter().map(|b| ms(b.scheduling_delay)).collect()),
            records: Quantiles::of(batches.iter().map(|b| b.records as f64).collect()),
            busy: busy_ms / (to_ms - from_ms) as f64,
            missed_share,
            missed: Quantiles::of(missed),
            load: (load_before, load_after),
        })
    }
}

/// The running job and what its listener saw.
struct Job {
    ctx: StreamingContext,
    committed: Arc<Mutex<Committed>>,
    _dir: TempDir,
}

/// What the listener keeps, batch after batch.
#[derive(Default)]
struct Committed {
    batches: Vec<CommittedBatch>,
    records: u64,
    /// Per partition, where the next batch's range must start.
    next: BTreeMap<i32, i64>,
    /// Broken expectations, reported after the run.
    errors: Vec<String>,
}

struct CommittedBatch {
    /// Wall-clock time of the commit, µs since the epoch.
    at_us: i64,
    records: u64,
    /// The batch's record timestamps (ms since the epoch), per partition.
    timestamps: Vec<Vec<i64>>,
    processing: Duration,
    planning: Duration,
    commit: Duration,
    scheduling_delay: Duration,
}

impl Job {
    fn start(bench: &Bench, topic: &str, interval: Duration) -> Result<Self> {
        let dir = TempDir::new()?;
        let ctx = StreamingContext::builder()
            .app_id(format!("bench-latency-{topic}"))
            .batch_interval(interval)
            .checkpoint_dir(dir.path())
            .stop_on_signals(false)
            .workers(WORKERS)
            .build()?;
        let mut source = KafkaSource::builder()
            .brokers(&bench.bootstrap)
            .subscribe([topic]);
        for (key, value) in &bench.settings {
            source = source.set(key, value);
        }
        // The batch's timestamps, from its output to its commit. A batch
        // computed again after a failure replaces what it left.
        let handed: Arc<Mutex<HashMap<u64, Vec<Vec<i64>>>>> = Arc::default();
        let outputs = Arc::clone(&handed);
        ctx.kafka_stream(source.build()?)?
            .map(|record: Record| record.timestamp.unwrap_or(-1))
            .foreach_batch(move |batch: Batch<i64>, info: &BatchInfo| {
                outputs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(info.id, batch.into_partitions());
                Ok::<_, std::io::Error>(())
            })?;
        let committed = Arc::new(Mutex::new(Committed::default()));
        let seen = Arc::clone(&committed);
        ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
            // Called right after the commit: this is the commit's time.
            let at_us = now_us();
            let timestamps = handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&batch.info.id)
                .unwrap_or_default();
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let id = batch.info.id;
            let handed_over: usize = timestamps.iter().map(Vec::len).sum();
            if handed_over as u64 != batch.records {
                let error = format!(
                    "batch {id}: {} records read, {handed_over} timestamps handed to the output",
                    batch.records
                );
                seen.errors.push(error);
            }
            // The engine's own figures for the batch agree with the
            // timestamps its output saw.
            let flat = || timestamps.iter().flatten().copied();
            if (batch.min_timestamp, batch.max_timestamp) != (flat().min(), flat().max()) {
                let error = format!(
                    "batch {id}: reported timestamps {:?} to {:?}, the output saw {:?} to {:?}",
                    batch.min_timestamp,
                    batch.max_timestamp,
                    flat().min(),
                    flat().max()
                );
                seen.errors.push(error);
            }
            for (range, &read) in batch.info.ranges.iter().zip(&batch.records_per_range) {
                let next = seen.next.entry(range.partition).or_insert(0);
                let error = if range.from != *next {
                    Some(format!(
                        "batch {id}: partition {} read from {}, the last batch ended at {next}",
                        range.partition, range.from
                    ))
                } else if read != (range.until - range.from) as u64 {
                    Some(format!(
                        "batch {id}: partition {} read {read} records in [{}, {})",
                        range.partition, range.from, range.until
                    ))
                } else {
                    None
                };
                *next = range.until;
                seen.errors.extend(error);
            }
            seen.records += batch.records;
            seen.batches.push(CommittedBatch {
                at_us,
                records: batch.records,
                timestamps,
                processing: batch.processing,
                planning: batch.planning,
                commit: batch.commit,
                scheduling_delay: batch.scheduling_delay,
            });
        })?;
        ctx.start()?;
        Ok(Self {
            ctx,
            committed,
            _dir: dir,
        })
    }

    fn records(&self) -> u64 {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
    }

    fn batches(&self) -> Vec<CommittedBatch> {
        std::mem::take(
            &mut self
                .committed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .batches,
        )
    }

    fn stop(&self) -> Result<()> {
        self.ctx.stop(true)?;
        Ok(())
    }
}

/// Every record sent was committed once: the ranges of the committed
/// batches cover each partition from 0 to what was sent to it, without a
/// gap or an overlap, and the broker holds what was sent.
fn check(bootstrap: &str, topic: &str, produced: &Produced, committed: &Committed) -> Result<()> {
    if let Some(error) = committed.errors.first() {
        bail!(
            "{} broken expectations, the first: {error}",
            committed.errors.len()
        );
    }
    let handed: usize = committed
        .batches
        .iter()
        .flat_map(|b| &b.timestamps)
        .map(Vec::len)
        .sum();
    ensure!(
        committed.records == produced.total() && handed as u64 == produced.total(),
        "{} records sent, {} committed, {handed} timestamps handed over",
        produced.total(),
        committed.records
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for (partition, &sent) in produced.sent.iter().enumerate() {
        let partition = partition as i32;
        let end = committed.next.get(&partition).copied().unwrap_or(0);
        // Right after a batch of one record (the end marker), tansu's
        // memory storage reports the true end.
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        ensure!(
            end == sent as i64 && high - low == sent as i64,
            "partition {partition}: {sent} records sent, the broker holds {}, committed up to {end}",
            high - low
        );
    }
    Ok(())
}

/// What a producer run sent.
struct Produced {
    /// Records per partition, end markers included.
    sent: Vec<u64>,
    /// Wall-clock start and end of the paced sending, µs since the epoch.
    started_us: i64,
    ended_us: i64,
    /// Records sent before the end markers.
    paced: u64,
    /// How far the sending fell behind its schedule at worst.
    behind: Duration,
}

impl Produced {
    fn total(&self) -> u64 {
        self.sent.iter().sum()
    }

    fn sent_rate(&self) -> f64 {
        self.paced as f64 / ((self.ended_us - self.started_us) as f64 / 1e6)
    }
}

/// Sends records round-robin over the partitions for `duration`: at
/// `rate` records/s, record `n` due `n / rate` s after the start, or
/// as fast as the client takes them. Each record's timestamp is the
/// wall-clock time of its send. Then one end marker per partition, each
/// in a produce request of its own: tansu's memory storage places the
/// high watermark after the first record of the last request, so the
/// rest of that request is read only once another arrives.
fn produce(
    bootstrap: &str,
    topic: &str,
    rate: Option<f64>,
    duration: Duration,
) -> Result<Produced> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let mut sent = vec![0u64; PARTITIONS as usize];
    let mut n = 0u64;
    let mut behind = Duration::ZERO;
    let started_us = now_us();
    let start = Instant::now();
    let end = start + duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = match rate {
            Some(rate) => {
                let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
                if due > n + 1 {
                    let scheduled = start + Duration::from_secs_f64(n as f64 / rate);
                    behind = behind.max(now - scheduled);
                }
                due
            }
            None => n + 1000,
        };
        while n < due {
            let partition = (n % PARTITIONS as u64) as i32;
            send(&producer, topic, partition, now_us() / 1000)?;
            sent[partition as usize] += 1;
            n += 1;
        }
        if let Some(rate) = rate {
            let next = start + Duration::from_secs_f64(n as f64 / rate);
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    let ended_us = now_us();
    producer.flush(Duration::from_secs(60))?;
    for partition in 0..PARTITIONS {
        send(&producer, topic, partition, now_us() / 1000)?;
        sent[partition as usize] += 1;
        producer.flush(Duration::from_secs(10))?;
    }
    Ok(Produced {
        sent,
        started_us,
        ended_us,
        paced: n,
        behind,
    })
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    timestamp_ms: i64,
) -> Result<()> {
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(&VALUE[..])
        .timestamp(timestamp_ms);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
}

/// The latency of one batch interval, and what it is made of.
struct Report {
    interval: Duration,
    /// Records/s the producer sent.
    rate: f64,
    behind: Duration,
    /// Records measured (sent after the warm-up).
    measured: usize,
    /// Batches that held measured records.
    batches: usize,
    /// Sent to committed, ms.
    latency: Quantiles,
    /// Sent to the start of the batch that read it, ms.
    waited: Quantiles,
    /// Start of the batch to its commit, ms, per batch.
    in_batch: Quantiles,
    processing: Quantiles,
    planning: Quantiles,
    commit: Quantiles,
    delay: Quantiles,
    records: Quantiles,
    /// Share of the measured time the job spent in batches.
    busy: f64,
    /// Share of the records a batch started after they were sent did not
    /// read, and by how much they were sent before its start, ms.
    missed_share: f64,
    missed: Quantiles,
    load: (String, String),
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "batch interval {:?}: {:.0} records/s sent (at worst {:.1} ms behind schedule), \
             {} records measured in {} batches; load average {} before, {} after",
            self.interval,
            self.rate,
            ms(self.behind),
            self.measured,
            self.batches,
            self.load.0,
            self.load.1
        );
        println!(
            "  {:<44} {:>9} {:>9} {:>9} {:>9}",
            "ms", "p50", "p90", "p99", "max"
        );
        for (name, q) in [
            ("record sent -> batch committed", &self.latency),
            ("  record sent -> its batch started", &self.waited),
            ("  batch started -> committed (per batch)", &self.in_batch),
            ("batch processing", &self.processing),
            ("  of which planning", &self.planning),
            ("checkpoint commit", &self.commit),
            ("scheduling delay", &self.delay),
            ("sent before a batch that missed it, by", &self.missed),
        ] {
            println!(
                "  {name:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                q.p50, q.p90, q.p99, q.max
            );
        }
        println!(
            "  {:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            "records per batch",
            self.records.p50,
            self.records.p90,
            self.records.p99,
            self.records.max
        );
        println!(
            "  {:.2} % of the records were sent before the start of a batch that did not read them",
            self.missed_share * 100.0
        );
        println!(
            "  busy with batches {:.0} % of the time; p99 / interval = {:.2} (goal <= {GOAL_INTERVALS})",
            self.busy * 100.0,
            self.latency.p99 / ms(self.interval)
        );
    }
}

struct Quantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            values
                .get(((values.len() as f64 * q) as usize).min(values.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn env_f64(name: &str) -> Result<Option<f64>> {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .trim()
                .replace('_', "")
                .parse::<f64>()
                .with_context(|| format!("{name}={value} is not a number"))
        })
        .transpose()
}
