//! Word count over a Kafka topic, with running totals kept exactly-once in
//! the checkpoint.
//!
//! ```text
//! cargo run --release --example wordcount                       # embedded broker + producer
//! cargo run --release --example wordcount -- --brokers 127.0.0.1:9092 --topic lines
//! cargo run --release --example wordcount -- --totals           # print committed totals, exit
//! cargo run --release --example wordcount -- --until-caught-up  # count 4000 new lines, exit
//! cargo run --release --example wordcount -- --brokers 127.0.0.1:9092 \
//!     --backpressure --initial-rate 5000 --max-rate-per-partition 2000 \
//!     --set queued.max.messages.kbytes=4096                      # rate limits, client settings
//! ```
//!
//! Without `--brokers` the example starts an in-process Kafka broker,
//! creates the topic and keeps producing a sample text into it. That broker
//! forgets its records when the process exits, so on a restart the
//! producer first writes the same records again up to the offsets stored in
//! the checkpoint: offsets stay valid and the totals continue exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;

#[macro_use]
#[path = "support/output.rs"]
mod output;
#[path = "support/config.rs"]
mod config;
#[path = "support/embedded.rs"]
mod embedded;
use embedded::Embedded;

const APP_ID: &str = "wordcount";
const FAMILY: &str = "word_counts";

/// Lines the embedded broker gets for a bounded run (`--until-caught-up`),
/// on top of those it is refilled with; 1000 a partition by default.
const BOUNDED_RUN_LINES: u64 = 4000;

/// Sample text cycled by the embedded producer.
const SAMPLE: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "a stream is a sequence of batches and a batch is a set of ranges",
    "offsets are committed with the results in one atomic write",
    "the fox and the dog count words in the stream",
    "exactly once means no record is lost and none is counted twice",
];

#[derive(Parser, Debug)]
#[command(about = "Counts words of a Kafka topic with sluice")]
struct Args {
    /// Settings from a TOML file: brokers, topic, checkpoint_dir,
    /// batch_interval_ms, group, workers, max_rate_per_partition, max_rate,
    /// backpressure, initial_rate, http, and librdkafka settings under `[kafka]`
    /// (docs/configuration.md); flags given here override it.
    #[arg(long = "config", value_name = "FILE")]
    _config: Option<PathBuf>,
    /// Kafka bootstrap servers; absent: start an embedded broker.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Topic to read (created on the embedded broker).
    #[arg(long, value_name = "NAME", default_value = "lines")]
    topic: String,
    /// Checkpoint directory (RocksDB).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/wordcount")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Kafka consumer group id (defaults to the app id, "wordcount").
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// After each batch, also commit its offsets to the consumer group
    /// (`--group`), so Kafka's lag tools see the job's progress; sluice
    /// never reads them back.
    #[arg(long)]
    mirror_offsets: bool,
    /// Where a first start begins: `earliest`, `latest`, `group` (the
    /// offsets the consumer group `--group` committed, e.g. by the job
    /// this one replaces) or `timestamp:MS` (milliseconds since the
    /// epoch). A restart always resumes from the checkpoint.
    #[arg(long, value_name = "WHERE", default_value = "earliest", value_parser = start_offsets)]
    start_from: StartOffsets,
    /// Print every word's committed total as `word<TAB>count`, sorted by
    /// word, and exit without consuming.
    #[arg(long)]
    totals: bool,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    partitions: i32,
    /// Lines per second the embedded producer writes (not with
    /// `--until-caught-up`).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    rate: u32,
    /// Worker threads.
    #[arg(long, allow_negative_numbers = true)]
    workers: Option<usize>,
    /// How many of the most frequent words to show after each batch.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    top: usize,
    /// Most records per second each partition reads.
    #[arg(long, value_name = "RECORDS", allow_negative_numbers = true)]
    max_rate_per_partition: Option<f64>,
    /// Most records per second the whole job reads.
    #[arg(long, value_name = "RECORDS", allow_negative_numbers = true)]
    max_rate: Option<f64>,
    /// Sizes batches by how fast the job processes them (PID estimator).
    #[arg(long)]
    backpressure: bool,
    /// Records per second of the first batch, and of every batch until
    /// backpressure has an estimate.
    #[arg(long, value_name = "RECORDS", allow_negative_numbers = true)]
    initial_rate: Option<f64>,
    /// A librdkafka consumer setting, e.g. `--set queued.max.messages.kbytes=4096`;
    /// repeat for several.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = setting)]
    settings: Vec<(String, String)>,
    /// Serve the web UI, JSON API, `/metrics` and control API on this
    /// address (e.g. `127.0.0.1:4040`; port 0 picks a free one). An address
    /// beyond loopback needs an access token in `$SLUICE_HTTP_TOKEN`.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// Take a checkpoint restore point every N batches, keeping the last
    /// 1000, so `sluice rewind` can go back to them.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    restore_points: Option<u64>,
    /// Read what the topic holds now, commit, and exit 0 (a bounded run:
    /// records produced after the start are left for the next run).
    /// Without `--brokers`, the embedded broker first gets 4000 new lines
    /// (after those earlier runs read), and `--rate` does not apply.
    #[arg(long)]
    until_caught_up: bool,
}

/// Parses `--set KEY=VALUE`.
fn setting(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{arg}` is not KEY=VALUE")),
    }
}

fn main() {
    // One line per batch: the example prints its own, so sluice's
    // batch line (target `sluice::batch`) is off unless RUST_LOG
    // asks for it.
    output::init_logging("info,sluice::batch=warn");
    if let Err(error) = config::parse_with_config::<Args>().and_then(run) {
        output::fail("wordcount", &error);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.totals {
        return print_totals(&args.checkpoint_dir);
    }
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    let stored = stored_offsets(&args.checkpoint_dir)?;
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let embedded = if args.until_caught_up {
                // A bounded run on a broker that starts empty (or holding
                // only what earlier runs read) would have nothing to read.
                Embedded::filled(
                    &args.topic,
                    args.partitions,
                    BOUNDED_RUN_LINES,
                    &stored,
                    line_at,
                )?
            } else {
                Embedded::start(&args.topic, args.partitions, args.rate, &stored, line_at)?
            };
            (embedded.bootstrap.clone(), Some(embedded))
        }
    };
    let counted = count_words(&args, brokers);
    // The job's consumers are gone with its context: the broker goes last,
    // or they would log connection errors on the way out.
    drop(embedded);
    counted
}

/// Parses `--start-from`.
fn start_offsets(arg: &str) -> Result<StartOffsets, String> {
    match arg.split_once(':') {
        None if arg == "earliest" => Ok(StartOffsets::Earliest),
        None if arg == "latest" => Ok(StartOffsets::Latest),
        None if arg == "group" => Ok(StartOffsets::GroupCommitted),
        Some(("timestamp", ms)) => ms
            .parse()
            .map(StartOffsets::Timestamp)
            .map_err(|_| format!("`{ms}` is not a timestamp in milliseconds")),
        _ => Err(format!(
            "`{arg}` is not earliest, latest, group or timestamp:MS"
        )),
    }
}

/// Runs the job on `brokers` until it is stopped or, with
/// `--until-caught-up`, has read what they held at its start.
fn count_words(args: &Args, brokers: String) -> anyhow::Result<()> {
    // The source first: a bad Kafka setting is refused before the
    // context's build() opens (on a first start, creates) the checkpoint.
    let mut source = KafkaSource::builder()
        .brokers(brokers)
        .subscribe([args.topic.as_str()]);
    if let Some(group) = &args.group {
        source = source.group_id(group);
    }
    source = source
        .mirror_offsets_to_group(args.mirror_offsets)
        .start_from(args.start_from.clone());
    if args.brokers.is_none() {
        // The embedded broker holds every fetch for `fetch.wait.max.ms`
        // even when records arrive meanwhile (a real broker answers at
        // once), so a batch would wait up to 500 ms for records it knows
        // exist. Ask it to answer sooner.
        source = source.set("fetch.wait.max.ms", "10");
    }
    for (key, value) in &args.settings {
        source = source.set(key, value);
    }
    let source = source.build()?;

    let mut builder = StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .checkpoint_dir(&args.checkpoint_dir);
    if let Some(every) = args.restore_points {
        builder = builder.checkpoint_restore_points(every, 1000);
    }
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    if let Some(addr) = &args.http {
        builder = builder.http(addr);
    }
    let mut limits = RateLimits::new().backpressure(args.backpressure);
    limits.max_rate_per_partition = args.max_rate_per_partition;
    limits.max_rate = args.max_rate;
    limits.initial_rate = args.initial_rate;
    let ctx = builder.rate_limits(limits).build()?;
    ctx.kafka_stream(source)?
        .values_utf8()
        .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        .save_counts(FAMILY)?;

    let top = args.top;
    ctx.add_listener(
        move |batch: &BatchCompleted, checkpoint: &dyn CheckpointStore| match checkpoint
            .counters(FAMILY)
        {
            Ok(mut totals) => {
                totals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let leaders: Vec<String> = totals
                    .iter()
                    .take(top)
                    .map(|(word, n)| format!("{}={n}", String::from_utf8_lossy(word)))
                    .collect();
                out!(
                    "batch {:>5}  {:>6} records  {:>6.1} ms  top totals: {}",
                    batch.info.id,
                    batch.records,
                    (batch.processing + batch.commit).as_secs_f64() * 1e3,
                    leaders.join(" ")
                );
            }
            Err(error) => eprintln!("could not read totals: {error}"),
        },
    )?;

    if args.until_caught_up {
        ctx.run_until_caught_up()?;
    } else {
        ctx.start()?;
        if let Some(addr) = ctx.http_addr() {
            eprintln!("web UI at http://{addr}/ (JSON under /api, Prometheus at /metrics)");
        }
        ctx.await_termination()?;
    }
    Ok(())
}

/// Prints the committed totals; a checkpoint that does not exist yet has
/// none.
fn print_totals(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        eprintln!("no checkpoint at {} yet", dir.display());
        return Ok(());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)?;
    if !checkpoint.families().any(|f| f == FAMILY) {
        return Ok(());
    }
    let mut out = String::new();
    for (word, count) in checkpoint.counters(FAMILY)? {
        out.push_str(&String::from_utf8_lossy(&word));
        out.push('\t');
        out.push_str(&count.to_string());
        out.push('\n');
    }
    output::print_text(&out);
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

/// The line at `offset` of `partition`: a pure function of the position,
/// so a refilled broker holds the same records as before.
fn line_at(partition: i32, offset: i64) -> String {
    SAMPLE[(offset as usize + partition as usize) % SAMPLE.len()].to_owned()
}
