//! What dead letters cost a batch: the processing time of batches that set
//! records aside next to that of clean batches of the same job.
//!
//! Starts a `tansu` broker (memory storage) and pre-fills a 4-partition
//! topic with `SLUICE_BENCH_BATCHES` windows (default 60) of
//! `SLUICE_BENCH_WINDOW` text lines per partition (default 2000). In every
//! other window, two lines of each partition are not UTF-8, far apart: at 10
//! and at window − 10. A wordcount job with
//! `PoisonPolicy::dead_letter(..)` then reads one window per partition and
//! batch (`max_rate_per_partition`), so batches alternate between clean
//! ones and ones with 8 dead letters, and the bench compares their
//! processing times (planning, reading, operators, reading the letters
//! back; the commit is apart).
//!
//! ```text
//! cargo bench --bench dead_letters
//! ```
//!
//! Under `cargo test` (no `--bench` argument) it runs 10 windows: a check
//! that the job runs and sets aside exactly the poisoned records, not a
//! measurement.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
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
    let broker = Tansu::start_in_memory();
    let bootstrap = broker.bootstrap();
    broker.create_topic("mixed", PARTITIONS);
    let poisoned = prefill(&bootstrap, "mixed", windows, window)?;
    println!(
        "tansu (memory storage): {PARTITIONS} partitions x {windows} windows of {window} lines, \
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
    Ok(())
}

/// Produces the windows and returns how many lines are poisoned. Each
/// partition's lines are produced in order, so line `i` of a partition is
/// at offset `i`. The last line of each partition goes in a request of its
/// own: tansu 0.6's memory storage reports the high watermark as the last
/// batch's base offset + 1.
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
        if i == per_partition - 1 {
            producer.flush(Duration::from_secs(60))?;
        }
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
