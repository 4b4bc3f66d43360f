//! The Kafka sink (`KafkaSink`) against a bare rdkafka producer, and what
//! a transaction per batch costs.
//!
//! Starts a broker — by default librdkafka's in-process mock cluster, the
//! only broker at hand that accepts transactions (tansu 0.6 has no
//! `EndTxn`) — and pre-fills a 4-partition topic with
//! `SLUICE_BENCH_RECORDS` records (a 12-byte key and an 88-byte value, 100
//! bytes each). The default, 150,000, is about what the mock holds: it
//! keeps about 5 MB per partition and drops older records, which the bench
//! checks for. Then, interleaved and `SLUICE_BENCH_REPEATS` times each
//! (default 7, median reported), each run writing to a fresh 4-partition
//! topic:
//!
//! - `bare producer` (the baseline): one idempotent `ThreadedProducer` with
//!   the sink's client settings (librdkafka's defaults plus
//!   `enable.idempotence=true`), created and warmed up (one record to
//!   another topic, flushed) before the clock starts, sends the same
//!   records, generated beforehand in memory, and waits until every one is
//!   delivered (`flush(0)` every 0.5 ms: rdkafka 0.39's `flush(timeout)`
//!   returns only at 100 ms steps);
//! - `bare copy`: a `BaseConsumer` draining the input topic and that
//!   producer writing each record on, then waiting for the deliveries (a
//!   hand-written at-least-once pipe, for context);
//! - `sluice read only`: `kafka_stream(..).count().foreach_batch(..)` (what
//!   the jobs below spend reading);
//! - `sluice exactly-once`: `kafka_stream(..).map(KafkaRecord::from)
//!   .sink(KafkaSink..)`, `Delivery::ExactlyOnce`, goal >= 0.7x the bare
//!   producer;
//! - `sluice at-least-once`: the same with `Delivery::AtLeastOnce`, goal
//!   >= 0.9x.
//!
//! The sluice jobs run with `run_until_caught_up`, a 100 ms batch interval,
//! 2 workers and `checkpoint_sync(false)`, and are timed from the call
//! until a listener sees every record committed (the job's and the sink's
//! start included), and also over their batches alone (each batch's
//! processing and checkpoint commit, summed). By default nothing limits
//! a batch, so the pre-filled topic is read in one batch;
//! `SLUICE_BENCH_MAX_RATE_PER_PARTITION` (records/s) splits it into batches
//! of that rate times 100 ms per partition. After each run the output
//! topic is read back (`read_committed`, untimed) and must hold exactly N
//! records.
//!
//! Then the cost of a batch's transaction: a bounded drain of a small
//! topic at `SLUICE_BENCH_TXN_RATE` records/s (default 1000, split over the
//! 4 partitions by `max_rate_per_partition`), `SLUICE_BENCH_TXN_BATCHES`
//! batches (default 50) at a 100 ms and at a 1 s interval, exactly-once
//! and at-least-once. The sink is wrapped in a timer of its `begin`,
//! `write` and `commit` calls (the driver makes them, one batch at a time);
//! the listener adds the batch's `processing` and checkpoint `commit`.
//!
//! `SLUICE_BENCH_ONLY=bare,copy,read,exactly,atleast,txn` runs a subset.
//! `SLUICE_BENCH_PRODUCER_SET="linger.ms=1 compression.type=lz4"` adds
//! producer settings to the bare producer and the sink alike.
//! `SLUICE_BENCH_BROKER=tansu` runs on a tansu broker (memory storage;
//! `$TANSU_BIN`, `tansu` on `PATH` or `~/.cargo/bin/tansu`) instead, without
//! the exactly-once cases. `SLUICE_BENCH_MOCK_RTT_MS` delays every answer
//! of the mock broker by that many ms.
//!
//! ```text
//! cargo bench --bench kafka_sink
//! ```
//!
//! Under `cargo test` (no `--bench` argument) the defaults shrink to 20,000
//! records, one repeat and 4 batches per transaction case: a check that
//! every job runs and writes every record once, not a measurement.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice::kafka::Delivery;
use sluice::prelude::*;
use sluice::sink::{OutsideSink, Sink, SinkStart};
use sluice::stream::{BatchInfo, BoxError};
use tempfile::TempDir;

// The integration tests' broker launcher; the bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/util/tansu.rs"]
mod tansu;
use tansu::Tansu;

const PARTITIONS: i32 = 4;
/// Where the bare producer writes its warm-up record.
const WARMUP_TOPIC: &str = "warmup";
const KEY_BYTES: usize = 12;
const VALUE_BYTES: usize = 88;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
const WORKERS: usize = 2;
/// How long one measured run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Batches of a transaction case dropped from its statistics: the first
/// ones warm the producer's connections.
const WARMUP_BATCHES: usize = 2;

/// Client settings of every consumer in the bench (bare and sluice alike),
/// as in `benches/kafka_throughput.rs`.
const CONSUMER_SETTINGS: [(&str, &str); 5] = [
    ("fetch.wait.max.ms", "10"),
    ("fetch.min.bytes", "1"),
    ("max.partition.fetch.bytes", "4194304"),
    ("queued.min.messages", "200000"),
    ("queued.max.messages.kbytes", "262144"),
];

/// What `KafkaSink` sets on its producer besides `bootstrap.servers`,
/// `client.id` and (exactly-once) `transactional.id` and
/// `transaction.timeout.ms`; the bare producer gets the same, so both run
/// on librdkafka's defaults otherwise (`linger.ms=5`,
/// `batch.num.messages=10000`, `batch.size=1000000`, …).
const SINK_SETTINGS: [(&str, &str); 1] = [("enable.idempotence", "true")];

fn main() -> Result<()> {
    // Off unless asked for: `SLUICE_BENCH_LOG=sluice=debug` shows where a
    // run spends its time.
    if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo bench` passes `--bench`; `cargo test` runs this binary without
    // it, as a quick check that every measured job still works.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let (records, repeats, txn_batches) = if measuring {
        (150_000, 7, 50)
    } else {
        (20_000, 1, 4)
    };
    let records = env_u64("SLUICE_BENCH_RECORDS", records)?;
    let repeats = env_u64("SLUICE_BENCH_REPEATS", repeats)?.max(1) as usize;
    let txn_batches = env_u64("SLUICE_BENCH_TXN_BATCHES", txn_batches)?.max(1) as usize;
    let txn_rate = env_u64("SLUICE_BENCH_TXN_RATE", 1000)?;
    let rtt_ms = env_u64("SLUICE_BENCH_MOCK_RTT_MS", 0)?;
    let max_rate = std::env::var("SLUICE_BENCH_MAX_RATE_PER_PARTITION")
        .ok()
        .map(|v| v.parse::<f64>())
        .transpose()
        .context("SLUICE_BENCH_MAX_RATE_PER_PARTITION must be a number")?;
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let producer_settings = settings_from_env("SLUICE_BENCH_PRODUCER_SET")?;
    let broker_kind = std::env::var("SLUICE_BENCH_BROKER").unwrap_or_else(|_| "mock".into());
    ensure!(
        records >= PARTITIONS as u64,
        "SLUICE_BENCH_RECORDS must be at least {PARTITIONS}"
    );
    ensure!(
        txn_rate >= PARTITIONS as u64,
        "SLUICE_BENCH_TXN_RATE must be at least {PARTITIONS}"
    );

    if !measuring {
        println!("quick check under `cargo test`: the figures below are not measurements");
    }
    let broker = Broker::start(&broker_kind, rtt_ms)?;
    let transactions = broker.transactions();
    let runs = |what: &str| {
        let wanted = only
            .as_deref()
            .is_none_or(|list| list.split(',').any(|w| w.trim() == what));
        wanted && (transactions || what != "exactly")
    };
    println!("{}", broker.describe());
    if !transactions && runs("txn") {
        println!("(no transactions on this broker: the exactly-once cases are skipped)");
    }

    let throughput = ["bare", "copy", "read", "exactly", "atleast"]
        .into_iter()
        .any(&runs);
    let data = if throughput {
        Records::generate(records)
    } else {
        Records::generate(0)
    };
    if throughput {
        broker.create_topic("in", PARTITIONS)?;
        broker.create_topic(WARMUP_TOPIC, 1)?;
        let started = Instant::now();
        prefill(&broker.bootstrap, "in", &data)?;
        let elapsed = started.elapsed();
        println!(
            "pre-filled 'in' ({PARTITIONS} partitions) with {records} records of {} bytes \
             ({KEY_BYTES}-byte key, {VALUE_BYTES}-byte value) in {:.2} s ({:.0} records/s)",
            KEY_BYTES + VALUE_BYTES,
            elapsed.as_secs_f64(),
            records as f64 / elapsed.as_secs_f64()
        );
    }

    let bench = Bench {
        broker: &broker,
        records,
        max_rate,
        producer_settings,
    };
    let cases: Vec<Case> = [
        Case::Bare,
        Case::Copy,
        Case::ReadOnly,
        Case::Sink(Delivery::ExactlyOnce),
        Case::Sink(Delivery::AtLeastOnce),
    ]
    .into_iter()
    .filter(|c| runs(c.key()))
    .collect();
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut sink_runs: BTreeMap<&str, Vec<SinkRun>> = BTreeMap::new();
    for run in 0..repeats {
        for case in &cases {
            let plain = |took| SinkRun {
                took,
                ..SinkRun::default()
            };
            let outcome = match case {
                Case::Bare => plain(bench.bare_producer(&data, run)?),
                Case::Copy => plain(bench.bare_copy(run)?),
                Case::ReadOnly => bench.read_only(run)?,
                Case::Sink(delivery) => bench.sink(*delivery, run)?,
            };
            let (took, batches) = (outcome.took, &outcome.batches);
            eprintln!(
                "run {run}: {} {:.3} s{}",
                case.name(),
                took.as_secs_f64(),
                if batches.is_empty() {
                    String::new()
                } else {
                    format!(" ({} batches)", batches.len())
                }
            );
            times.entry(case.key()).or_default().push(took);
            sink_runs.entry(case.key()).or_default().push(outcome);
        }
    }

    if !cases.is_empty() {
        println!();
        println!(
            "sluice: batch interval {BATCH_INTERVAL:?}, {WORKERS} workers, checkpoint_sync(false), {}",
            match max_rate {
                Some(rate) => format!("max {rate} records/s per partition"),
                None => "no rate limit".to_owned(),
            }
        );
        println!(
            "producer settings (bare and sink): librdkafka defaults + {}",
            SINK_SETTINGS
                .iter()
                .map(|(k, v)| (*k, *v))
                .chain(
                    bench
                        .producer_settings
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                )
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!();
        println!(
            "records/s over the whole run (sluice: from run_until_caught_up to the last \
             commit) and over the batches alone (sluice: their processing and checkpoint \
             commits summed, without the job's start); medians of {repeats}"
        );
        println!(
            "{:<24} {:>10} {:>8} {:>10}   {:>10} {:>8}   runs (s)",
            "measure", "whole run", "vs bare", "goal", "batches", "vs bare"
        );
        let rate_of = |key: &str, f: fn(&SinkRun) -> Duration| {
            sink_runs
                .get(key)
                .and_then(|runs| median_rate(&runs.iter().map(f).collect::<Vec<_>>(), records))
        };
        let baseline = rate_of("bare", |r| r.took);
        for case in &cases {
            let rate = rate_of(case.key(), |r| r.took).unwrap_or(0.0);
            let busy = rate_of(case.key(), SinkRun::busy).unwrap_or(0.0);
            let ratio = baseline.map(|b| rate / b);
            let versus = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
            let goal = match case {
                Case::Sink(Delivery::ExactlyOnce) => Some(0.7),
                Case::Sink(Delivery::AtLeastOnce) => Some(0.9),
                _ => None,
            };
            println!(
                "{:<24} {rate:>10.0} {:>8} {:>10}   {busy:>10.0} {:>8}   {}",
                case.name(),
                versus(ratio),
                goal.map_or_else(String::new, |g: f64| match ratio {
                    Some(r) if r >= g => format!(">={g} ok"),
                    Some(_) => format!(">={g} MISS"),
                    None => format!(">={g}"),
                }),
                versus(baseline.map(|b| busy / b)),
                sink_runs[case.key()]
                    .iter()
                    .map(|r| format!("{:.3}", r.took.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        // Where a sink run's time went, in its median run.
        for case in &cases {
            let Case::Sink(_) = case else { continue };
            let runs = &sink_runs[case.key()];
            let mut order: Vec<usize> = (0..runs.len()).collect();
            order.sort_by_key(|&i| runs[i].took);
            let run = &runs[order[order.len() / 2]];
            let sum = |f: fn(&SinkTimes) -> Duration| {
                run.batches.iter().map(f).sum::<Duration>().as_secs_f64() * 1e3
            };
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let batches = sum(|t| t.processing) + sum(|t| t.checkpoint);
            println!(
                "  {}, median run: {:.1} ms = sink start (recover) {:.1} ms + {} batch(es) \
                 {batches:.1} ms + the rest (job start, planning, waits) {:.1} ms",
                case.name(),
                ms(run.took),
                ms(run.recover),
                run.batches.len(),
                ms(run.took) - ms(run.recover) - batches,
            );
            println!(
                "    batches: processing {:.1} ms (of which sink begin {:.1}, write {:.1}, \
                 commit {:.1}), checkpoint commit {:.1} ms",
                sum(|t| t.processing),
                sum(|t| t.begin),
                sum(|t| t.write),
                sum(|t| t.commit),
                sum(|t| t.checkpoint),
            );
        }
    }

    if runs("txn") {
        println!();
        println!(
            "per-batch cost: a bounded drain at {txn_rate} records/s ({:.0} per partition, \
             max_rate_per_partition), {txn_batches} batches per case, the first \
             {WARMUP_BATCHES} dropped; times in ms",
            txn_rate as f64 / f64::from(PARTITIONS)
        );
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>8}",
            "measure", "mean", "p50", "p99", "max"
        );
        let mut processing_p50 = BTreeMap::new();
        for interval in [Duration::from_millis(100), Duration::from_secs(1)] {
            for delivery in [Delivery::ExactlyOnce, Delivery::AtLeastOnce] {
                if delivery == Delivery::ExactlyOnce && !transactions {
                    continue;
                }
                let batches = bench.per_batch(delivery, interval, txn_rate, txn_batches)?;
                let kept = &batches[WARMUP_BATCHES.min(batches.len() - 1)..];
                let label = format!("{interval:?}, {}", delivery_name(delivery));
                let per_batch = kept.iter().map(|t| t.records).sum::<u64>() / kept.len() as u64;
                println!("{label}: {per_batch} records per batch");
                print_stats("  sink begin", kept.iter().map(|t| t.begin));
                print_stats(
                    "  sink write (records to the producer)",
                    kept.iter().map(|t| t.write),
                );
                print_stats(
                    match delivery {
                        Delivery::ExactlyOnce => "  sink commit (offsets + commit_transaction)",
                        Delivery::AtLeastOnce => "  sink commit (flush)",
                    },
                    kept.iter().map(|t| t.commit),
                );
                let p50 = print_stats(
                    "  batch processing (incl. the sink)",
                    kept.iter().map(|t| t.processing),
                );
                print_stats("  checkpoint commit", kept.iter().map(|t| t.checkpoint));
                processing_p50.insert((interval, delivery == Delivery::ExactlyOnce), p50);
            }
        }
        for interval in [Duration::from_millis(100), Duration::from_secs(1)] {
            if let (Some(eo), Some(alo)) = (
                processing_p50.get(&(interval, true)),
                processing_p50.get(&(interval, false)),
            ) {
                println!(
                    "{interval:?}: batch processing p50, exactly-once minus at-least-once: {:.3} ms",
                    eo - alo
                );
            }
        }
    }
    Ok(())
}

/// The measured writers of the throughput table.
#[derive(Clone, Copy)]
enum Case {
    Bare,
    Copy,
    ReadOnly,
    Sink(Delivery),
}

impl Case {
    fn key(&self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Copy => "copy",
            Case::ReadOnly => "read",
            Case::Sink(Delivery::ExactlyOnce) => "exactly",
            Case::Sink(Delivery::AtLeastOnce) => "atleast",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Case::Bare => "bare producer",
            Case::Copy => "bare copy",
            Case::ReadOnly => "sluice read only",
            Case::Sink(Delivery::ExactlyOnce) => "sluice exactly-once",
            Case::Sink(Delivery::AtLeastOnce) => "sluice at-least-once",
        }
    }
}

fn delivery_name(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::ExactlyOnce => "exactly-once",
        Delivery::AtLeastOnce => "at-least-once",
    }
}

/// The broker the bench runs on. Dropping it stops the broker.
struct Broker {
    bootstrap: String,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    tansu: Option<Tansu>,
    rtt_ms: u64,
}

impl Broker {
    fn start(kind: &str, rtt_ms: u64) -> Result<Self> {
        match kind {
            "mock" => {
                let cluster = MockCluster::new(1).context("starting the mock cluster")?;
                if rtt_ms > 0 {
                    cluster.broker_round_trip_time(1, Duration::from_millis(rtt_ms))?;
                }
                Ok(Self {
                    bootstrap: cluster.bootstrap_servers(),
                    mock: Some(cluster),
                    tansu: None,
                    rtt_ms,
                })
            }
            "tansu" => {
                let broker = Tansu::start_in_memory();
                Ok(Self {
                    bootstrap: broker.bootstrap(),
                    mock: None,
                    tansu: Some(broker),
                    rtt_ms: 0,
                })
            }
            other => bail!("SLUICE_BENCH_BROKER={other}: expected mock or tansu"),
        }
    }

    /// Whether transactional producers work here.
    fn transactions(&self) -> bool {
        self.mock.is_some()
    }

    fn describe(&self) -> String {
        if self.mock.is_some() {
            format!(
                "librdkafka's mock cluster (1 broker, in-process, round-trip delay {} ms) on {}",
                self.rtt_ms, self.bootstrap
            )
        } else {
            format!("tansu (memory storage) on {}", self.bootstrap)
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        if let Some(cluster) = &self.mock {
            cluster
                .create_topic(name, partitions, 1)
                .with_context(|| format!("creating {name} on the mock cluster"))?;
        }
        if let Some(broker) = &self.tansu {
            broker.create_topic(name, partitions);
        }
        Ok(())
    }
}

/// The records of the input topic, generated the same way for the prefill
/// and the bare producer: a 12-byte key and an 88-byte value of letters.
struct Records {
    keys: Vec<[u8; KEY_BYTES]>,
    values: Vec<[u8; VALUE_BYTES]>,
    /// One record timestamp for all (the sink writes its input's).
    timestamp: i64,
}

impl Records {
    fn generate(records: u64) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut keys = Vec::with_capacity(records as usize);
        let mut values = Vec::with_capacity(records as usize);
        for i in 0..records {
            let mut key = [0u8; KEY_BYTES];
            key.copy_from_slice(format!("key-{:08}", i % 100_000_000).as_bytes());
            keys.push(key);
            let mut value = [0u8; VALUE_BYTES];
            for byte in &mut value {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = b'a' + (state % 26) as u8;
            }
            values.push(value);
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            keys,
            values,
            timestamp,
        }
    }

    fn len(&self) -> u64 {
        self.keys.len() as u64
    }
}

struct Bench<'a> {
    broker: &'a Broker,
    records: u64,
    max_rate: Option<f64>,
    /// `SLUICE_BENCH_PRODUCER_SET`: more settings for the bare producer and
    /// the sink alike.
    producer_settings: Vec<(String, String)>,
}

impl Bench<'_> {
    /// The baseline: the records, generated beforehand, sent by one
    /// idempotent producer with the sink's settings, then flushed. Timed
    /// from creating the producer until the flush returns.
    fn bare_producer(&self, data: &Records, run: usize) -> Result<Duration> {
        let topic = format!("out-bare-{run}");
        self.broker.create_topic(&topic, PARTITIONS)?;
        let producer = self.warm_producer()?;
        let started = Instant::now();
        for i in 0..data.keys.len() {
            let record = BaseRecord::<[u8], [u8]>::to(&topic)
                .key(&data.keys[i][..])
                .payload(&data.values[i][..])
                .timestamp(data.timestamp);
            send(&producer, record)?;
        }
        drain(&producer)?;
        let elapsed = started.elapsed();
        producer.context().check()?;
        self.check_output(&topic)?;
        Ok(elapsed)
    }

    /// A producer configured as `KafkaSink` configures its own in
    /// at-least-once mode, connected and holding its producer id: it wrote
    /// one record to the topic `warmup` and flushed. (A fresh idempotent
    /// producer sent to at once waits about 0.5 s for its producer id, which
    /// is not what the baseline is meant to measure.)
    fn warm_producer(&self) -> Result<ThreadedProducer<Deliveries>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.broker.bootstrap)
            .set("client.id", "bench-bare");
        for (key, value) in SINK_SETTINGS {
            config.set(key, value);
        }
        for (key, value) in &self.producer_settings {
            config.set(key, value);
        }
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .context("creating the bare producer")?;
        send(
            &producer,
            BaseRecord::<[u8], [u8]>::to(WARMUP_TOPIC).payload(&b"warm-up"[..]),
        )?;
        drain(&producer)?;
        producer.context().check()?;
        Ok(producer)
    }

    /// A hand-written pipe: one consumer of every input partition, each
    /// record sent on as it arrives by the same producer as the baseline,
    /// then a flush.
    fn bare_copy(&self, run: usize) -> Result<Duration> {
        let topic = format!("out-copy-{run}");
        self.broker.create_topic(&topic, PARTITIONS)?;
        let producer = self.warm_producer()?;
        let started = Instant::now();
        let consumer: BaseConsumer = consumer_config(&self.broker.bootstrap)
            .set("group.id", format!("bench-copy-{run}"))
            .create()
            .context("creating the bare consumer")?;
        let mut tpl = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            tpl.add_partition_offset("in", partition, Offset::Offset(0))?;
        }
        consumer.assign(&tpl)?;
        let deadline = started + RUN_TIMEOUT;
        let mut seen = 0;
        while seen < self.records {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(msg)) => {
                    seen += 1;
                    let mut record = BaseRecord::<[u8], [u8]>::to(&topic);
                    if let Some(key) = msg.key() {
                        record = record.key(key);
                    }
                    if let Some(value) = msg.payload() {
                        record = record.payload(value);
                    }
                    if let Some(ts) = msg.timestamp().to_millis() {
                        record = record.timestamp(ts);
                    }
                    send(&producer, record)?;
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(e).context("bare copy"),
            }
            ensure!(
                Instant::now() < deadline,
                "bare copy saw {seen} of {} records in {RUN_TIMEOUT:?}",
                self.records
            );
        }
        drain(&producer)?;
        let elapsed = started.elapsed();
        producer.context().check()?;
        self.check_output(&topic)?;
        Ok(elapsed)
    }

    fn context(
        &self,
        app_id: &str,
        interval: Duration,
        rate: Option<f64>,
    ) -> Result<(StreamingContext, TempDir)> {
        let dir = TempDir::new()?;
        let mut limits = RateLimits::new();
        if let Some(rate) = rate {
            limits = limits.max_rate_per_partition(rate);
        }
        let ctx = StreamingContext::builder()
            .app_id(app_id)
            .batch_interval(interval)
            .checkpoint_dir(dir.path())
            .checkpoint_sync(false)
            .stop_on_signals(false)
            .workers(WORKERS)
            .rate_limits(limits)
            .build()?;
        Ok((ctx, dir))
    }

    fn source(&self, topic: &str) -> Result<KafkaSource> {
        let mut builder = KafkaSource::builder()
            .brokers(&self.broker.bootstrap)
            .subscribe([topic]);
        for (key, value) in CONSUMER_SETTINGS {
            builder = builder.set(key, value);
        }
        Ok(builder.build()?)
    }

    fn kafka_sink(&self, topic: &str, delivery: Delivery) -> Result<KafkaSink> {
        let mut builder = KafkaSink::builder("out", topic)
            .brokers(&self.broker.bootstrap)
            .delivery(delivery);
        for (key, value) in &self.producer_settings {
            builder = builder.set(key, value);
        }
        Ok(builder.build()?)
    }

    /// The sluice reading side alone: the records counted, nothing
    /// written.
    fn read_only(&self, run: usize) -> Result<SinkRun> {
        let (ctx, _dir) =
            self.context(&format!("bench-read-{run}"), BATCH_INTERVAL, self.max_rate)?;
        let counted = Arc::new(AtomicI64::new(0));
        let total = Arc::clone(&counted);
        ctx.kafka_stream(self.source("in")?)?
            .count()
            .foreach_batch(move |batch, _| {
                total.fetch_add(batch.iter().sum::<i64>(), Ordering::Relaxed);
                Ok::<_, std::io::Error>(())
            })?;
        let (took, batches) = self.run_bounded(&ctx, self.records)?;
        let got = counted.load(Ordering::Relaxed);
        ensure!(
            got == self.records as i64,
            "sluice read only counted {got}, expected {}",
            self.records
        );
        Ok(SinkRun {
            took,
            recover: Duration::ZERO,
            batches: batches
                .iter()
                .map(|c| SinkTimes {
                    records: c.records,
                    processing: c.processing,
                    checkpoint: c.checkpoint,
                    ..SinkTimes::default()
                })
                .collect(),
        })
    }

    /// The pass-through into the sink: from `run_until_caught_up` until a
    /// listener sees every record committed. Also returns where the sink's
    /// time went.
    fn sink(&self, delivery: Delivery, run: usize) -> Result<SinkRun> {
        let name = Case::Sink(delivery).key();
        let topic = format!("out-{name}-{run}");
        self.broker.create_topic(&topic, PARTITIONS)?;
        let (ctx, _dir) = self.context(
            &format!("bench-{name}-{run}"),
            BATCH_INTERVAL,
            self.max_rate,
        )?;
        let (sink, times) = Timed::new(self.kafka_sink(&topic, delivery)?);
        ctx.kafka_stream(self.source("in")?)?
            .map(KafkaRecord::from)
            .sink(sink)?;
        let (took, batches) = self.run_bounded(&ctx, self.records)?;
        self.check_output(&topic)?;
        Ok(SinkRun {
            took,
            recover: times.recover(),
            batches: times.join(&batches),
        })
    }

    /// Per-batch times of the sink on a bounded drain of `batches` batches
    /// of `rate` × `interval` records.
    fn per_batch(
        &self,
        delivery: Delivery,
        interval: Duration,
        rate: u64,
        batches: usize,
    ) -> Result<Vec<SinkTimes>> {
        let name = format!("{}-{}ms", Case::Sink(delivery).key(), interval.as_millis());
        let input = format!("steady-{name}");
        let topic = format!("out-steady-{name}");
        self.broker.create_topic(&input, PARTITIONS)?;
        self.broker.create_topic(&topic, PARTITIONS)?;
        let per_partition = rate as f64 / f64::from(PARTITIONS);
        // max_rate_per_partition reads this many per partition and batch.
        let per_batch = (per_partition * interval.as_secs_f64()).round().max(1.0) as u64;
        let records = per_batch * PARTITIONS as u64 * batches as u64;
        prefill(&self.broker.bootstrap, &input, &Records::generate(records))?;

        let (ctx, _dir) = self.context(
            &format!("bench-steady-{name}"),
            interval,
            Some(per_partition),
        )?;
        let (sink, times) = Timed::new(self.kafka_sink(&topic, delivery)?);
        ctx.kafka_stream(self.source(&input)?)?
            .map(KafkaRecord::from)
            .sink(sink)?;
        let (_, completed) = self.run_bounded(&ctx, records)?;
        ensure!(
            completed.len() >= batches,
            "{name}: {} batches, expected at least {batches}",
            completed.len()
        );
        Ok(times.join(&completed))
    }

    /// Runs `ctx` with `run_until_caught_up`, timed until a listener sees
    /// `records` records committed; returns that time and every batch's
    /// `(id, records, processing, checkpoint commit)`.
    fn run_bounded(
        &self,
        ctx: &StreamingContext,
        records: u64,
    ) -> Result<(Duration, Vec<Completed>)> {
        let (done, finished) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::clone(&seen);
        let mut committed = 0u64;
        ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
            batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Completed {
                    id: batch.info.id,
                    records: batch.records,
                    processing: batch.processing,
                    checkpoint: batch.commit,
                });
            let before = committed;
            committed += batch.records;
            if before < records && committed >= records {
                let _ = done.send((Instant::now(), committed));
            }
        })?;
        let started = Instant::now();
        let outcome = ctx.run_until_caught_up();
        outcome?;
        let (at, committed) = finished.try_recv().map_err(|_| {
            anyhow::anyhow!("the run stopped before {records} records were committed")
        })?;
        ensure!(
            committed == records,
            "committed {committed} records, expected {records}"
        );
        let batches = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
        Ok((at - started, batches))
    }

    /// Reads `topic` back (`read_committed`, untimed): it must hold exactly
    /// the N records.
    fn check_output(&self, topic: &str) -> Result<()> {
        let consumer: BaseConsumer = consumer_config(&self.broker.bootstrap)
            .set("group.id", "bench-check")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + RUN_TIMEOUT;
        let (mut seen, mut bytes) = (0u64, 0usize);
        // Until every record arrived, then a little longer for any extra.
        let mut quiet_until = None;
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(msg)) => {
                    seen += 1;
                    bytes += msg.payload().map_or(0, <[u8]>::len);
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic} back")),
            }
            if seen >= self.records && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + Duration::from_millis(300));
            }
            if quiet_until.is_some_and(|q| Instant::now() >= q) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{topic} holds {seen} of {} records after {RUN_TIMEOUT:?}",
                self.records
            );
        }
        ensure!(
            seen == self.records,
            "{topic} holds {seen} committed records, expected {} (the mock cluster drops \
             the oldest records past about 5 MB per partition)",
            self.records
        );
        ensure!(
            bytes == self.records as usize * VALUE_BYTES,
            "{topic} holds {bytes} bytes of values, expected {}",
            self.records as usize * VALUE_BYTES
        );
        black_box(bytes);
        Ok(())
    }
}

/// One measured run.
#[derive(Default)]
struct SinkRun {
    /// The whole run: for sluice, from `run_until_caught_up` until the
    /// last batch committed.
    took: Duration,
    /// The sink's start (`recover`).
    recover: Duration,
    /// A sluice job's batches; none for the bare cases.
    batches: Vec<SinkTimes>,
}

impl SinkRun {
    /// The time spent in batches (processing and checkpoint commit, summed;
    /// not the job's start nor the waits between batches); the whole run
    /// for the bare cases.
    fn busy(&self) -> Duration {
        if self.batches.is_empty() {
            return self.took;
        }
        self.batches
            .iter()
            .map(|b| b.processing + b.checkpoint)
            .sum()
    }
}

/// One batch as the listener saw it.
struct Completed {
    id: u64,
    records: u64,
    processing: Duration,
    checkpoint: Duration,
}

/// Where one batch's time went.
#[derive(Debug, Clone, Copy, Default)]
struct SinkTimes {
    records: u64,
    /// `OutsideSink::begin` (exactly-once: `begin_transaction`).
    begin: Duration,
    /// `Sink::write`: the batch's records handed to the producer, summed
    /// over its partitions. The partitions' writes run on the worker
    /// threads, overlapping each other and the reading of other
    /// partitions, so the sum can exceed the batch's own time.
    write: Duration,
    /// `OutsideSink::commit`: exactly-once, the progress offsets and
    /// `commit_transaction` (which flushes); at-least-once, a flush.
    commit: Duration,
    /// `BatchCompleted::processing`: from the batch's start to the end of
    /// its outputs, the sink's begin, write and commit included.
    processing: Duration,
    /// `BatchCompleted::commit`: the checkpoint commit, after the sink's.
    checkpoint: Duration,
}

/// A sink that times the calls the driver makes on the sink it wraps.
struct Timed<S> {
    inner: S,
    times: Arc<Mutex<TimedCalls>>,
}

/// What a [`Timed`] sink measured.
#[derive(Default)]
struct TimedCalls {
    /// `OutsideSink::recover`: creating the producer (and, exactly-once,
    /// `init_transactions` and the progress lookup), before the first
    /// batch.
    recover: Duration,
    /// Per batch id.
    batches: BTreeMap<u64, SinkTimes>,
}

/// The times a [`Timed`] sink took.
struct TimesHandle(Arc<Mutex<TimedCalls>>);

impl TimesHandle {
    fn recover(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recover
    }

    /// The sink's times of the `completed` batches, with the listener's.
    fn join(&self, completed: &[Completed]) -> Vec<SinkTimes> {
        let calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let times = &calls.batches;
        completed
            .iter()
            .map(|c| SinkTimes {
                records: c.records,
                processing: c.processing,
                checkpoint: c.checkpoint,
                ..times.get(&c.id).copied().unwrap_or_default()
            })
            .collect()
    }
}

impl<S> Timed<S> {
    fn new(inner: S) -> (Self, TimesHandle) {
        let times = Arc::new(Mutex::new(TimedCalls::default()));
        let handle = TimesHandle(Arc::clone(&times));
        (Self { inner, times }, handle)
    }

    fn record(
        &self,
        batch: &BatchInfo,
        started: Instant,
        what: fn(&mut SinkTimes) -> &mut Duration,
    ) {
        let took = started.elapsed();
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        // A retried batch keeps its last attempt's times.
        *what(times.batches.entry(batch.id).or_default()) = took;
    }

    /// Starts `batch`'s sum of write times again (its `begin`).
    fn clear_writes(&self, batch: &BatchInfo) {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        times.batches.entry(batch.id).or_default().write = Duration::ZERO;
    }

    /// Adds a partition's write time to `batch`'s.
    fn add_write(&self, batch: &BatchInfo, started: Instant) {
        let took = started.elapsed();
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        times.batches.entry(batch.id).or_default().write += took;
    }
}

impl<S: OutsideSink> OutsideSink for Timed<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn recover(&self, start: &SinkStart<'_>) -> Result<bool, BoxError> {
        let started = Instant::now();
        let result = self.inner.recover(start);
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recover = started.elapsed();
        result
    }

    fn begin(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        let started = Instant::now();
        let result = self.inner.begin(batch);
        self.record(batch, started, |t| &mut t.begin);
        self.clear_writes(batch);
        result
    }

    fn commit(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        let started = Instant::now();
        let result = self.inner.commit(batch);
        self.record(batch, started, |t| &mut t.commit);
        result
    }

    fn abort(&self, batch: &BatchInfo) {
        self.inner.abort(batch);
    }
}

impl<T, S: Sink<T>> Sink<T> for Timed<S> {
    fn write(&self, values: Vec<T>, partition: usize, info: &BatchInfo) -> Result<(), BoxError> {
        let started = Instant::now();
        let result = self.inner.write(values, partition, info);
        self.add_write(info, started);
        result
    }
}

/// Counts failed deliveries, as the sink's own context does.
#[derive(Default)]
struct Deliveries {
    failed: AtomicI64,
}

impl Deliveries {
    fn check(&self) -> Result<()> {
        let failed = self.failed.load(Ordering::SeqCst);
        ensure!(failed == 0, "{failed} records were not delivered");
        Ok(())
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits until every record sent was delivered, checking every 0.5 ms.
/// (rdkafka 0.39's `flush` waits in steps of 100 ms: it polls the
/// producer's queue for 100 ms at a time until the records are out.)
fn drain<C: ProducerContext>(producer: &ThreadedProducer<C>) -> Result<()> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_micros(500));
            }
            Err(e) => return Err(e).context("flushing the producer"),
        }
    }
}

/// Sends `record`, waiting while the producer's queue is full (as the sink
/// does).
fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
}

/// Produces `data` round-robin over the partitions. The last record of
/// each partition goes in a batch of its own: tansu 0.6's memory storage
/// reports the high watermark as the last batch's base offset + 1, which
/// is then the true end of the partition (harmless on the mock).
fn prefill(bootstrap: &str, topic: &str, data: &Records) -> Result<()> {
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "1")
        .create_with_context(Deliveries::default())
        .context("creating the prefill producer")?;
    let records = data.len();
    let bulk = records - PARTITIONS as u64;
    for i in 0..records {
        if i == bulk {
            producer.flush(RUN_TIMEOUT)?;
        }
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition((i % PARTITIONS as u64) as i32)
            .key(&data.keys[i as usize][..])
            .payload(&data.values[i as usize][..])
            .timestamp(data.timestamp);
        send(&producer, record)?;
        if i >= bulk {
            producer.flush(RUN_TIMEOUT)?;
        }
    }
    producer.flush(RUN_TIMEOUT)?;
    producer.context().check()?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        ensure!(
            low == 0,
            "the broker dropped the first {low} records of {topic}/{partition} (the mock \
             cluster keeps about 5 MB per partition: lower SLUICE_BENCH_RECORDS)"
        );
        total += high - low;
    }
    ensure!(
        total == records as i64,
        "the broker reports {total} records in '{topic}', not {records}"
    );
    Ok(())
}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (key, value) in CONSUMER_SETTINGS {
        config.set(key, value);
    }
    config
}

/// Prints mean, p50, p99 and max of `samples` in ms; returns the p50.
fn print_stats(name: &str, samples: impl Iterator<Item = Duration>) -> f64 {
    let mut ms: Vec<f64> = samples.map(|d| d.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return 0.0;
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{name:<44} {mean:>8.3} {:>8.3} {:>8.3} {:>8.3}",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
    at(0.5)
}

/// Records per second of the median run.
fn median_rate(times: &[Duration], records: u64) -> Option<f64> {
    let mut times = times.to_vec();
    times.sort();
    let median = times.get(times.len() / 2)?;
    Some(records as f64 / median.as_secs_f64())
}

/// `KEY=VALUE KEY=VALUE` (separated by spaces) from the variable `name`.
fn settings_from_env(name: &str) -> Result<Vec<(String, String)>> {
    let Ok(list) = std::env::var(name) else {
        return Ok(Vec::new());
    };
    list.split_whitespace()
        .map(|setting| match setting.split_once('=') {
            Some((key, value)) => Ok((key.trim().to_owned(), value.trim().to_owned())),
            None => bail!("{name}: {setting:?} is not KEY=VALUE"),
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={value} is not a count")),
        Err(_) => Ok(default),
    }
}
