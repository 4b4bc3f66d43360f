//! What dead letters cost a batch: the processing time of batches that set
//! records aside next to that of clean batches of the same job.
//!
//! Starts a `tansu` broker (or nisshi with `SLUICE_TEST_BROKER=nisshi`;
//! sqlite storage: tansu's memory storage answers a
//! fetch that starts inside a record batch with the end of the partition,
//! so lookups would find nothing) and pre-fills a 4-partition topic with
//! `SLUICE_BENCH_BATCHES` windows (default 60) of `SLUICE_BENCH_WINDOW`
//! text lines per partition (default 2000). In every other window, two
//! lines of each partition are not UTF-8, far apart: at 10 and at
//! window − 10. A wordcount job with
//! `PoisonPolicy::dead_letter(..)` then reads one window per partition and
//! batch (`max_rate_per_partition`), so batches alternate between clean
//! ones and ones with 8 dead letters, and the bench compares their
//! processing times (planning, reading, operators, reading the letters
//! back; the commit is apart).
//!
//! ```text
//! cargo bench --bench dead_letters
//! SLUICE_BENCH_BROKER=mock cargo bench --bench dead_letters
//! ```
//!
//! `SLUICE_BENCH_BROKER=mock` runs against librdkafka's in-process mock
//! cluster instead, whose seeks are cheap. The bench also times bare seeks
//! (assign at an offset, wait for that record) on the broker, since a batch
//! with dead letters pays one per run read back.
//!
//! Under `cargo test` (no `--bench` argument) it runs 10 windows: a check
//! that the job runs and sets aside exactly the poisoned records, not a
//! measurement.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;
use tempfile::TempDir;

// The integration tests' broker launcher; the bench uses part of it.
#[allow(dead_code)]
#[path = "../tests/util/tansu.rs"]
mod tansu;
use tansu::Tansu;

const PARTITIONS: i32 = 4;
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
const WORKERS: usize = 2;
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Offset of the first poisoned line in a window, and of the second one
/// from the window's end.
const POISON_AT: u64 = 10;

fn main() -> Result<()> {
    // Off unless asked for: `SLUICE_BENCH_LOG=sluice=debug` shows where a
    // batch spends its time.
    if let Ok(filter) = std::env::var("SLUICE_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let windows = env_u64("SLUICE_BENCH_BATCHES", if measuring { 60 } else { 10 })?;
    let window = env_u64("SLUICE_BENCH_WINDOW", 2000)?;
    ensure!(
        window > 2 * POISON_AT && windows >= 2,
        "SLUICE_BENCH_WINDOW must exceed {} and SLUICE_BENCH_BATCHES be at least 2",
        2 * POISON_AT
    );
    if !measuring {
        println!("quick check under `cargo test`: the figures below are not measurements");
    }
    // Kept until the end: dropping either stops its broker.
    let (_tansu, _mock, bootstrap, name) = match std::env::var("SLUICE_BENCH_BROKER").as_deref() {
        Ok("mock") => {
            let cluster = MockCluster::new(1)?;
            cluster.create_topic("mixed", PARTITIONS, 1)?;
            let bootstrap = cluster.bootstrap_servers();
            let name = "librdkafka's mock cluster".to_owned();
            (None, Some(cluster), bootstrap, name)
        }
        Ok("tansu") | Err(_) => {
            let broker = Tansu::start();
            broker.create_topic("mixed", PARTITIONS);
            let bootstrap = broker.bootstrap();
            let name = format!("{} (sqlite storage)", broker.kind().name());
            (Some(broker), None, bootstrap, name)
        }
        Ok(other) => anyhow::bail!("SLUICE_BENCH_BROKER={other}: expected tansu or mock"),
    };
    let poisoned = prefill(&bootstrap, "mixed", windows, window)?;
    println!(
        "{name}: {PARTITIONS} partitions x {windows} windows of {window} lines, \
         {poisoned} of them not UTF-8"
    );

    let dir = TempDir::new()?;
    let ctx = StreamingContext::builder()
        .app_id("bench-dead-letters")
        .batch_interval(BATCH_INTERVAL)
        .checkpoint_dir(dir.path())
        .checkpoint_sync(false)
        .stop_on_signals(false)
        .workers(WORKERS)
        .poison_records(PoisonPolicy::dead_letter("dead"))
        .rate_limits(
            RateLimits::new().max_rate_per_partition(window as f64 / BATCH_INTERVAL.as_secs_f64()),
        )
        .build()?;
    let source = KafkaSource::builder()
        .brokers(&bootstrap)
        .subscribe(["mixed"])
        .build()?;
    ctx.kafka_stream(source)?
        .values_utf8()
        .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        .save_counts("words")?;

    let total = windows * window * PARTITIONS as u64;
    let (done, finished) = mpsc::channel();
    let mut seen = Vec::new();
    let mut committed = 0;
    ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
        if batch.records > 0 {
            seen.push((batch.records, batch.dead_letters, batch.processing));
        }
        committed += batch.records;
        if committed == total {
            let _ = done.send(std::mem::take(&mut seen));
        }
    })?;
    ctx.start()?;
    let outcome = finished.recv_timeout(RUN_TIMEOUT);
    ctx.stop(true)?;
    let seen = outcome.map_err(|_| anyhow::anyhow!("{total} records took over {RUN_TIMEOUT:?}"))?;
    let letters: u64 = seen.iter().map(|s| s.1).sum();
    ensure!(
        letters == poisoned,
        "{letters} dead letters, expected {poisoned}"
    );
    let stored =
        RocksCheckpoint::open_read_only(dir.path(), "bench-dead-letters")?.dead_letters("dead")?;
    let unread: Vec<_> = stored.iter().filter_map(|l| l.unread.as_deref()).collect();
    ensure!(
        stored.len() as u64 == poisoned && unread.is_empty(),
        "{} letters stored, {} of them without their bytes: {:?}",
        stored.len(),
        unread.len(),
        unread.first()
    );

    // The first batch connects and creates the consumers.
    let (dirty, clean): (Vec<_>, Vec<_>) = seen[1..].iter().partition(|s| s.1 > 0);
    let ms = |batches: &[&(u64, u64, Duration)]| {
        let mut ms: Vec<f64> = batches.iter().map(|s| s.2.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let (clean, dirty) = (ms(&clean), ms(&dirty));
    ensure!(
        !clean.is_empty() && !dirty.is_empty(),
        "batches did not alternate: {} clean, {} with letters",
        clean.len(),
        dirty.len()
    );
    let at = |ms: &[f64], q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    println!(
        "batch interval {BATCH_INTERVAL:?}, {WORKERS} workers, checkpoint_sync(false), \
         ~{} records per batch",
        window * PARTITIONS as u64
    );
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>8}",
        "processing, ms", "batches", "p50", "p90", "max"
    );
    for (name, ms) in [
        ("clean batches", &clean),
        ("batches with 8 letters", &dirty),
    ] {
        println!(
            "{name:<26} {:>8} {:>8.2} {:>8.2} {:>8.2}",
            ms.len(),
            at(ms, 0.5),
            at(ms, 0.9),
            ms[ms.len() - 1]
        );
    }
    println!(
        "p50 with letters / p50 clean: {:.2}x",
        at(&dirty, 0.5) / at(&clean, 0.5)
    );

    // What one seek costs on this broker: a bare consumer assigned at an
    // offset, until that record arrives. A batch with letters pays two per
    // partition, two partitions at a time.
    let mut seeks = seek_times(&bootstrap, "mixed", windows * window)?;
    seeks.sort_by(f64::total_cmp);
    println!(
        "{:<26} {:>8} {:>8.2} {:>8.2} {:>8.2}",
        "bare seek + first record",
        seeks.len(),
        at(&seeks, 0.5),
        at(&seeks, 0.9),
        seeks[seeks.len() - 1]
    );
    Ok(())
}

/// Milliseconds from assigning a consumer at an offset to receiving that
/// record, for offsets spread over partition 0, on one consumer with the
/// lookups' fetch wait.
fn seek_times(bootstrap: &str, topic: &str, records: u64) -> Result<Vec<f64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-seek")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut times = Vec::new();
    for i in 0..20 {
        let offset = (records * (2 * i + 1) / 40) as i64;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(offset))?;
        let started = Instant::now();
        consumer.assign(&tpl)?;
        loop {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(msg)) if msg.offset() == offset => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("seeking"),
                None => anyhow::bail!("no record at {topic}-0@{offset} within 10 s"),
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// Produces the windows and returns how many lines are poisoned. Each
/// partition's lines are produced in order, so line `i` of a partition is
/// at offset `i`.
fn prefill(bootstrap: &str, topic: &str, windows: u64, window: u64) -> Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("max.in.flight.requests.per.connection", "1")
        .set("acks", "1")
        .create()
        .context("creating the producer")?;
    let per_partition = windows * window;
    let mut poisoned = 0;
    for i in 0..per_partition {
        let (w, at) = (i / window, i % window);
        let poison = w % 2 == 1 && (at == POISON_AT || at == window - POISON_AT);
        let payload = if poison {
            vec![0xff, 0xfe, (i % 251) as u8]
        } else {
            format!("line {w} word{at} word{} end", i % 97).into_bytes()
        };
        for partition in 0..PARTITIONS {
            poisoned += u64::from(poison);
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload);
            producer
                .send(record)
                .map_err(|(e, _)| e)
                .context("producing")?;
        }
        if i % 50_000 == 0 {
            producer.flush(Duration::from_secs(60))?;
        }
    }
    producer.flush(Duration::from_secs(60))?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        ensure!(
            high - low == per_partition as i64,
            "the broker reports {} records in {topic}-{partition}, not {per_partition}",
            high - low
        );
    }
    Ok(poisoned)
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
