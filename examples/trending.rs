//! Trending words: counts over the last `--window-ms` of batches, every
//! `--slide-ms`, as DStream's `reduceByKeyAndWindow` with an inverse
//! function computes them.
//!
//! ```text
//! cargo run --release --example trending                        # embedded broker + producer
//! cargo run --release --example trending -- --brokers 127.0.0.1:9092 --topic lines
//! cargo run --release --example trending -- --window-ms 30000 --slide-ms 5000
//! cargo run --release --example trending -- --totals            # print committed windows, exit
//! ```
//!
//! Each record's value is a line of words. The window holds the batches of
//! the last `--window-ms` (batch time, not event time); every `--slide-ms`
//! the batch that ends a slide emits the window's count of every word in
//! it, and the example prints the top words. Both are multiples of the
//! batch interval. The window is kept incrementally: each slide adds the
//! batches that entered and subtracts those that left (the inverse
//! function), and words whose count went back to zero are dropped.
//!
//! Every emitted window is also committed, in the same atomic commit as
//! its batch, to the counter family `trending`, keyed
//! `batch time ms<TAB>word`: a window emitted twice would show as doubled
//! counts. `--totals` prints them. The window's panes live in the
//! operator's state in the checkpoint, so a restart or a crash in the
//! middle of a window continues it exactly.
//!
//! Without `--brokers` the example starts an in-process Kafka broker and
//! keeps producing lines into it, like the wordcount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;
use sluice::window::InverseReduce;

#[macro_use]
#[path = "support/output.rs"]
mod output;
#[path = "support/config.rs"]
mod config;
#[path = "support/embedded.rs"]
mod embedded;
use embedded::Embedded;

const APP_ID: &str = "trending";
/// The window operator, which names its state in the checkpoint.
const WINDOW: &str = "trending_words";
/// Every emitted window's counts, keyed `batch time ms<TAB>word`.
const COUNTS: &str = "trending";
/// Words printed per window.
const TOP: usize = 5;

#[derive(Parser, Debug)]
#[command(about = "Counts words over a sliding window of batches of a Kafka topic with sluice")]
struct Args {
    /// Settings from a TOML file: brokers, topic, checkpoint_dir,
    /// batch_interval_ms, group and workers (docs/configuration.md); flags
    /// given here override it.
    #[arg(long = "config", value_name = "FILE")]
    _config: Option<PathBuf>,
    /// Kafka bootstrap servers; absent: start an embedded broker.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Topic to read (created on the embedded broker).
    #[arg(long, value_name = "NAME", default_value = "lines")]
    topic: String,
    /// Checkpoint directory (RocksDB).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/trending")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Kafka consumer group id (defaults to the app id, "trending").
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Window length in ms of batch time, a multiple of the batch
    /// interval. Changing it under the same checkpoint is refused.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        allow_negative_numbers = true
    )]
    window_ms: u64,
    /// Slide in ms of batch time, a multiple of the batch interval.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000,
        allow_negative_numbers = true
    )]
    slide_ms: u64,
    /// Print every emitted window's committed counts as
    /// `batch time ms<TAB>word<TAB>count`, sorted, and exit without
    /// consuming.
    #[arg(long)]
    totals: bool,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    partitions: i32,
    /// Lines per second the embedded producer writes.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    rate: u32,
    /// Worker threads.
    #[arg(long, allow_negative_numbers = true)]
    workers: Option<usize>,
}

fn main() {
    output::init_logging("info");
    if let Err(error) = config::parse_with_config::<Args>().and_then(run) {
        output::fail("trending", &error);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.totals {
        return print_totals(&args.checkpoint_dir);
    }
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    anyhow::ensure!(
        args.batch_interval_ms > 0,
        "--batch-interval-ms must be at least 1"
    );
    let stored = stored_offsets(&args.checkpoint_dir)?;
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let embedded =
                Embedded::start(&args.topic, args.partitions, args.rate, &stored, line_at)?;
            (embedded.bootstrap.clone(), Some(embedded))
        }
    };

    let mut builder = StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .checkpoint_dir(&args.checkpoint_dir);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    let ctx = builder.build()?;
    let mut source = KafkaSource::builder()
        .brokers(brokers)
        .subscribe([args.topic.as_str()]);
    if let Some(group) = &args.group {
        source = source.group_id(group);
    }
    if args.brokers.is_none() {
        // See the wordcount: the embedded broker holds fetches otherwise.
        source = source.set("fetch.wait.max.ms", "10");
    }

    // A window length or slide that is not a multiple of the batch interval
    // is refused when the job starts, naming the operator.
    let sum = InverseReduce::new(|a: i64, b| a + b, |a, b| a - b)
        .filter(|_word: &String, count| *count != 0);
    let windows = ctx
        .kafka_stream(source.build()?)?
        .values_utf8()
        .flat_map(|line| {
            line.split_ascii_whitespace()
                .map(|word| (word.to_owned(), 1i64))
                .collect::<Vec<_>>()
        })
        .reduce_by_key_and_window_inv(
            WINDOW,
            sum,
            Duration::from_millis(args.window_ms),
            Duration::from_millis(args.slide_ms),
        );
    windows
        .transform(|batch, info| {
            let time = info.time_ms();
            let keyed = batch.into_partitions().into_iter().map(|partition| {
                partition
                    .into_iter()
                    .map(|(word, count)| (format!("{time}\t{word}"), count))
                    .collect()
            });
            Batch::new(keyed.collect())
        })
        .save_counts(COUNTS)?;
    windows.foreach_batch(|window, info| {
        let mut words: Vec<(String, i64)> = window.into_iter().collect();
        if words.is_empty() {
            return Ok::<_, std::io::Error>(());
        }
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let total: i64 = words.iter().map(|(_, n)| n).sum();
        let top: Vec<String> = words
            .iter()
            .take(TOP)
            .map(|(w, n)| format!("{w}={n}"))
            .collect();
        out!(
            "batch {:>5}  window: {total} words, {} distinct, top {}",
            info.id,
            words.len(),
            top.join(" ")
        );
        Ok(())
    })?;

    ctx.start()?;
    let stopped = ctx.await_termination();
    // The job's consumers go with its context, before the embedded broker:
    // the other way round they log connection errors on the way out.
    drop(ctx);
    drop(embedded);
    Ok(stopped?)
}

/// Prints every emitted window's committed counts; a checkpoint that does
/// not exist yet has none.
fn print_totals(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        eprintln!("no checkpoint at {} yet", dir.display());
        return Ok(());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)?;
    let mut counts: Vec<(i64, String, i64)> = Vec::new();
    if checkpoint.families().any(|f| f == COUNTS) {
        for (key, count) in checkpoint.counters(COUNTS)? {
            let key = String::from_utf8(key).context("a window key is not UTF-8")?;
            let (time, word) = key
                .split_once('\t')
                .with_context(|| format!("a window key is not time<TAB>word: {key:?}"))?;
            let time = time
                .parse()
                .with_context(|| format!("a window key's time is not a number: {key:?}"))?;
            counts.push((time, word.to_owned(), count));
        }
    }
    counts.sort();
    let mut out = String::new();
    for (time, word, count) in counts {
        out.push_str(&format!("{time}\t{word}\t{count}\n"));
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

/// The embedded record at `offset` of `partition`: one to four words of a
/// small vocabulary, a pure function of the position, so a restart that
/// refills the embedded broker continues exactly.
fn line_at(partition: i32, offset: i64) -> String {
    const WORDS: [&str; 10] = [
        "kafka", "sluice", "window", "batch", "stream", "offset", "state", "slide", "trend", "word",
    ];
    let n = offset * 7 + i64::from(partition) * 3;
    let words = 1 + (n % 4) as usize;
    (0..words)
        .map(|k| WORDS[((n / 4 + k as i64 * 3) % WORDS.len() as i64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}
