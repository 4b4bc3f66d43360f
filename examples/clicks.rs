//! Clicks per page, counted exactly-once: the job the README's "Write a
//! job" section builds, whole and runnable.
//!
//! A click is a line `page,user`, such as `/pricing,alice`. The job counts
//! clicks per page into the checkpoint family `clicks_per_page`; a line
//! that is not UTF-8 or not `page,user` becomes a dead letter in the family
//! `dead_letters`, committed with its batch; a listener prints every
//! batch's offset ranges with the records read from each; rate limits
//! bound how much a batch reads.
//!
//! ```text
//! cargo run --release --example clicks                    # embedded broker + producer
//! cargo run --release --example clicks -- --brokers 127.0.0.1:9092 --topic clicks
//! cargo run --release --example clicks -- --brokers 127.0.0.1:9092 --rate 100   # and write clicks
//! cargo run --release --example clicks -- --totals        # committed counts and dead letters
//! ```
//!
//! Without `--brokers` the example starts an in-process Kafka broker and
//! keeps writing clicks into it, one line in ten malformed. That broker
//! forgets its records when the process exits, so on a restart the
//! producer first writes the same records again up to the offsets stored
//! in the checkpoint: offsets stay valid and the counts continue exactly.
//! With `--brokers`, `--rate` writes such clicks into the topic too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;
use sluice::StreamingContextBuilder;

#[macro_use]
#[path = "support/output.rs"]
mod output;

/// Names the job and its checkpoint.
pub(crate) const APP_ID: &str = "clicks";
/// Checkpoint family of the per-page counts.
pub(crate) const COUNTS: &str = "clicks_per_page";
/// Checkpoint family of the malformed lines.
pub(crate) const DEAD_LETTERS: &str = "dead_letters";

#[derive(Parser, Debug)]
#[command(about = "Counts clicks per page of a Kafka topic with sluice")]
struct Args {
    /// Kafka bootstrap servers; absent: start an embedded broker.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Topic of `page,user` lines (created on the embedded broker).
    #[arg(long, value_name = "NAME", default_value = "clicks")]
    topic: String,
    /// Checkpoint directory (RocksDB).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/clicks")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Most records per second each partition reads.
    #[arg(
        long,
        value_name = "RECORDS",
        default_value_t = 500.0,
        allow_negative_numbers = true
    )]
    max_rate_per_partition: f64,
    /// Records per second of the first batch after a start, for the whole
    /// job (split over the partitions).
    #[arg(
        long,
        value_name = "RECORDS",
        default_value_t = 200.0,
        allow_negative_numbers = true
    )]
    initial_rate: f64,
    /// Print the committed counts (`page<TAB>clicks`, most clicked first)
    /// and the dead letters, and exit without consuming.
    #[arg(long)]
    totals: bool,
    /// Partitions of the embedded topic, and those `--rate` writes to.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    partitions: i32,
    /// Click lines per second the example writes into the topic: 100 by
    /// default on the embedded broker, none by default with `--brokers`.
    #[arg(long, value_name = "LINES", allow_negative_numbers = true)]
    rate: Option<u32>,
}

fn main() {
    // sluice logs through `tracing`; without a subscriber its batch lines
    // and warnings go nowhere. RUST_LOG=debug shows more.
    output::init_logging("info");
    if let Err(error) = run(Args::parse()) {
        output::fail("clicks", &error);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.totals {
        return print_totals(&args.checkpoint_dir);
    }
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let cluster = MockCluster::new(1).context("starting the embedded broker")?;
            cluster
                .create_topic(&args.topic, args.partitions, 1)
                .context("creating the embedded topic")?;
            tracing::info!(bootstrap = %cluster.bootstrap_servers(), "embedded broker started");
            (cluster.bootstrap_servers(), Some(cluster))
        }
    };
    // Declared after the broker, so it stops first.
    let clicker = match (args.brokers.is_none(), args.rate) {
        // The embedded broker starts empty: write again what earlier runs read.
        (true, rate) => {
            let stored = stored_offsets(&args.checkpoint_dir)?;
            let rate = rate.unwrap_or(100);
            Some(Clicker::start(
                &brokers,
                &args.topic,
                args.partitions,
                rate,
                &stored,
            )?)
        }
        (false, Some(rate)) => Some(Clicker::start(
            &brokers,
            &args.topic,
            args.partitions,
            rate,
            &BTreeMap::new(),
        )?),
        (false, None) => None,
    };

    let limits = RateLimits::new()
        .max_rate_per_partition(args.max_rate_per_partition)
        .initial_rate(args.initial_rate);
    let interval = Duration::from_millis(args.batch_interval_ms);
    // The source first: a bad setting is refused before the context's
    // build() opens (on a first start, creates) the checkpoint.
    let mut source = KafkaSource::builder()
        .brokers(brokers)
        .subscribe([args.topic.as_str()]);
    if args.brokers.is_none() {
        // The embedded broker holds every fetch for `fetch.wait.max.ms`
        // (500 ms) even when records are there; a real broker answers at once.
        source = source.set("fetch.wait.max.ms", "10");
    }
    let source = source.build()?;
    let ctx = context(&args.checkpoint_dir, interval, limits).build()?;
    count_clicks(&ctx, source)?;

    ctx.start()?;
    // Returns after Ctrl-C (SIGINT) or SIGTERM, once the batch in flight
    // has committed.
    let stopped = ctx.await_termination();
    // The job's consumers go with its context, then the clicks, then the
    // broker: in another order they log connection errors on the way out.
    drop(ctx);
    drop(clicker);
    drop(embedded);
    Ok(stopped?)
}

/// The job's settings: its name, batches, checkpoint, rate limits, and
/// malformed lines set aside into [`DEAD_LETTERS`] instead of failing the
/// batch.
pub(crate) fn context(
    checkpoint_dir: &Path,
    batch_interval: Duration,
    limits: RateLimits,
) -> StreamingContextBuilder {
    StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(batch_interval)
        .checkpoint_dir(checkpoint_dir)
        .rate_limits(limits)
        .poison_records(PoisonPolicy::dead_letter(DEAD_LETTERS))
}

/// The job: clicks per page into [`COUNTS`], and a listener that prints
/// every committed batch.
pub(crate) fn count_clicks(ctx: &StreamingContext, source: KafkaSource) -> sluice::Result<()> {
    ctx.kafka_stream(source)?
        .values_utf8() // not UTF-8: a dead letter of `values_utf8`
        .try_map(page_of) // not `page,user`: a dead letter of `try_map`
        .count_by_value()
        .save_counts(COUNTS)?;
    ctx.add_listener(print_batch)
}

/// The page of a click line `page,user`.
pub(crate) fn page_of(line: String) -> Result<String, String> {
    match line.split_once(',') {
        Some((page, user)) if !page.trim().is_empty() && !user.trim().is_empty() => {
            Ok(page.trim().to_owned())
        }
        _ => Err(format!("not a click `page,user`: {line:?}")),
    }
}

/// Prints a committed batch: its ranges with the records read from each,
/// and the three most clicked pages so far.
fn print_batch(batch: &BatchCompleted, checkpoint: &dyn CheckpointStore) {
    let limit = batch
        .info
        .rate_limit
        .map_or_else(|| "none".to_owned(), |limit| limit.to_string());
    out!(
        "batch {}: {} records, {} dead letters, rate limit {limit}",
        batch.info.id,
        batch.records,
        batch.dead_letters
    );
    for (range, records) in batch.info.ranges.iter().zip(&batch.records_per_range) {
        out!("  {range}: {records} records");
    }
    // Keys are bytes: the family stores whatever the counted values were.
    match checkpoint.counters(COUNTS) {
        Ok(mut counts) => {
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let top: Vec<String> = counts
                .iter()
                .take(3)
                .map(|(page, n)| format!("{}={n}", String::from_utf8_lossy(page)))
                .collect();
            out!("  top pages: {}", top.join(" "));
        }
        Err(error) => eprintln!("could not read the counts: {error}"),
    }
}

/// Prints the committed counts and dead letters; a checkpoint that does
/// not exist yet has none.
fn print_totals(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        eprintln!("no checkpoint at {} yet", dir.display());
        return Ok(());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)?;
    let has = |family: &str| checkpoint.families().any(|f| f == family);
    if has(COUNTS) {
        let mut counts = checkpoint.counters(COUNTS)?;
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (page, clicks) in counts {
            out!("{}\t{clicks}", String::from_utf8_lossy(&page));
        }
    }
    if has(DEAD_LETTERS) {
        for letter in checkpoint.dead_letters(DEAD_LETTERS)? {
            // The record's bytes, read back from Kafka before the commit.
            let value = match (letter.value()?, &letter.unread) {
                (Some(value), _) => format!("{:?}", String::from_utf8_lossy(&value)),
                (None, Some(why)) => format!("(not read back: {why})"),
                (None, None) => "(null value)".to_owned(),
            };
            out!(
                "dead letter {}-{}@{} ({}): {} {value}",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.operator,
                letter.error,
            );
        }
    }
    Ok(())
}

fn stored_offsets(dir: &Path) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    if !dir.exists() {
        return Ok(BTreeMap::new());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)
        .with_context(|| format!("reading stored offsets from {}", dir.display()))?;
    Ok(checkpoint.offsets()?)
}

/// Pages and users the embedded producer clicks.
const PAGES: &[&str] = &["/", "/pricing", "/docs", "/blog", "/signup"];
const USERS: &[&str] = &["alice", "bob", "carol", "dave"];

/// The line at `offset` of `partition`: a pure function of the position,
/// so a refilled broker holds the same records as before. One line in ten
/// is malformed: not UTF-8, or without a user.
fn line_at(partition: i32, offset: i64) -> Vec<u8> {
    let i = offset as usize + 7 * partition as usize;
    match i % 20 {
        9 => vec![0xff, 0xfe, b'/'],
        19 => PAGES[i % PAGES.len()].as_bytes().to_vec(),
        _ => format!("{},{}", PAGES[i * 3 % PAGES.len()], USERS[i % USERS.len()]).into_bytes(),
    }
}

/// A thread writing click lines into the topic.
struct Clicker {
    stop: Arc<AtomicBool>,
    producer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Clicker {
    /// Stops the producer, before the embedded broker goes, so it does not
    /// log connection errors on the way out.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

impl Clicker {
    /// Writes `rate` lines per second over `partitions` partitions of
    /// `topic`, after the lines up to the `stored` offsets.
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        rate: u32,
        stored: &BTreeMap<TopicPartition, i64>,
    ) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<_> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "100")
            .set("enable.idempotence", "true")
            .create()
            .context("creating the embedded producer")?;

        // Rewrite what earlier runs consumed, so stored offsets exist again.
        let mut next: Vec<i64> = vec![0; partitions as usize];
        for (p, next_offset) in next.iter_mut().enumerate() {
            let end = stored
                .get(&TopicPartition::new(topic, p as i32))
                .copied()
                .unwrap_or(0);
            while *next_offset < end {
                send(&producer, topic, p as i32, *next_offset)?;
                *next_offset += 1;
            }
        }
        producer.flush(Duration::from_secs(60))?;

        tracing::info!(topic, partitions, rate, "writing clicks");
        let topic = topic.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let producer = std::thread::spawn(move || {
            produce_until(&producer, &topic, rate.max(1), next, &stopped)
        });
        Ok(Self {
            stop,
            producer: Some(producer),
        })
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    let line = line_at(partition, offset);
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(&line);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

fn produce_until(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    rate: u32,
    mut next: Vec<i64>,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let p = (sent % next.len() as u64) as usize;
            if let Err(error) = send(producer, topic, p as i32, next[p]) {
                tracing::error!(%error, "embedded producer stopped");
                return;
            }
            next[p] += 1;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
