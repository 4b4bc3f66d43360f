//! Words per event-time tumbling window, with late records kept for audit.
//!
//! ```text
//! cargo run --release --example window_counts                   # embedded broker + producer
//! cargo run --release --example window_counts -- --brokers 127.0.0.1:9092 --topic lines
//! cargo run --release --example window_counts -- --window-ms 5000 --allowed-lateness-ms 1000
//! cargo run --release --example window_counts -- --totals       # print committed windows, exit
//! ```
//!
//! Each record's value is a line of words; its event time is the Kafka
//! record timestamp. Words are counted per tumbling window of
//! `--window-ms` of event time. The watermark trails the greatest event
//! time seen (the least over the partitions) by `--allowed-lateness-ms`; a
//! window is closed, printed and committed once the watermark reaches its
//! end, and never again. A record whose window had already closed when it
//! arrived is late: it is counted in the batch record (`late_records`) and
//! kept, with its coordinates, as a dead letter in the `late_words` family,
//! in the same atomic commit as the batch.
//!
//! The committed result is the counter family `window_counts`, keyed
//! `window start ms<TAB>word`. A closed window is emitted once (append
//! mode), so a window written twice would show as doubled counts.
//!
//! Without `--brokers` the example starts an in-process Kafka broker whose
//! producer sets the timestamps: record `o` of a partition happens at
//! `2023-11-14T22:13:20Z + o × 100 ms`, up to 1.5 s early, and every 25th
//! record is late on purpose, `3 × window + lateness` behind. Lines and
//! timestamps are a pure function of the position, so a restart (which
//! refills the broker up to the stored offsets) continues exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
use embedded::{Embedded, RecordAt};

const APP_ID: &str = "window_counts";
/// The window operator, which names its state in the checkpoint.
const WINDOW: &str = "word_windows";
/// Closed windows' counts, keyed `start<TAB>word`.
const COUNTS: &str = "window_counts";
/// Late records (and records without a timestamp).
const LATE: &str = "late_words";

#[derive(Parser, Debug)]
#[command(about = "Counts words per event-time window of a Kafka topic with sluice")]
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
    #[arg(long, value_name = "DIR", default_value = "checkpoints/window_counts")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Kafka consumer group id (defaults to the app id, "window_counts").
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Length of the tumbling windows, in ms of event time. Changing it
    /// under the same checkpoint is refused.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        allow_negative_numbers = true
    )]
    window_ms: u64,
    /// How far the watermark trails the greatest event time seen, in ms.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2_000,
        allow_negative_numbers = true
    )]
    allowed_lateness_ms: u64,
    /// Print every closed window's committed counts as
    /// `window start ms<TAB>word<TAB>count`, sorted, then `late<TAB>N`
    /// with the number of late records, and exit without consuming.
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
        output::fail("window_counts", &error);
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
    anyhow::ensure!(args.window_ms > 0, "--window-ms must be at least 1");
    let stored = stored_offsets(&args.checkpoint_dir)?;
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let late_by = 3 * args.window_ms + args.allowed_lateness_ms;
            let record_at: RecordAt = Arc::new(move |p, offset| record_at(p, offset, late_by));
            let embedded = Embedded::start_timestamped(
                &args.topic,
                args.partitions,
                args.rate,
                &stored,
                record_at,
            )?;
            (embedded.bootstrap.clone(), Some(embedded))
        }
    };

    let mut builder = StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .checkpoint_dir(&args.checkpoint_dir)
        .poison_records(PoisonPolicy::dead_letter(LATE));
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

    // The window counts lines, and the closed windows are split into
    // words: one record is then one windowed value, so the late count in
    // the batch record and the dead letters count the same records.
    let closed = ctx
        .kafka_stream(source.build()?)?
        .values_utf8()
        .map(|line| (line, ()))
        .event_time_window(
            WINDOW,
            EventTimeSpec::count(Window::tumbling(Duration::from_millis(args.window_ms)))
                .allowed_lateness(Duration::from_millis(args.allowed_lateness_ms)),
        );
    closed
        .flat_map(|w: Windowed<String, u64>| {
            let count = w.value as i64;
            w.key
                .split_ascii_whitespace()
                .map(|word| (format!("{}\t{word}", w.start), count))
                .collect::<Vec<_>>()
        })
        .save_counts(COUNTS)?;
    closed.foreach_batch(|windows, info| {
        // (start, end) → word → count, for the log.
        let mut words: BTreeMap<(i64, i64), BTreeMap<String, u64>> = BTreeMap::new();
        for w in windows {
            let window = words.entry((w.start, w.end)).or_default();
            for word in w.key.split_ascii_whitespace() {
                *window.entry(word.to_owned()).or_default() += w.value;
            }
        }
        for ((start, end), counts) in words {
            let total: u64 = counts.values().sum();
            let mut top: Vec<(&String, &u64)> = counts.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let top: Vec<String> = top
                .iter()
                .take(5)
                .map(|(w, n)| format!("{w}={n}"))
                .collect();
            out!(
                "batch {:>5}  window [{start}, {end}) closed: {total} words, {} distinct, top {}",
                info.id,
                counts.len(),
                top.join(" ")
            );
        }
        Ok::<_, std::io::Error>(())
    })?;

    ctx.start()?;
    let stopped = ctx.await_termination();
    // The job's consumers go with its context, before the embedded broker:
    // the other way round they log connection errors on the way out.
    drop(ctx);
    drop(embedded);
    Ok(stopped?)
}

/// Prints the closed windows' committed counts and the late count; a
/// checkpoint that does not exist yet has none.
fn print_totals(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        eprintln!("no checkpoint at {} yet", dir.display());
        out!("late\t0");
        return Ok(());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)?;
    let mut counts: Vec<(i64, String, i64)> = Vec::new();
    if checkpoint.families().any(|f| f == COUNTS) {
        for (key, count) in checkpoint.counters(COUNTS)? {
            let key = String::from_utf8(key).context("a window key is not UTF-8")?;
            let (start, word) = key
                .split_once('\t')
                .with_context(|| format!("a window key is not start<TAB>word: {key:?}"))?;
            let start = start
                .parse()
                .with_context(|| format!("a window key's start is not a number: {key:?}"))?;
            counts.push((start, word.to_owned(), count));
        }
    }
    counts.sort();
    let mut out = String::new();
    for (start, word, count) in counts {
        out.push_str(&format!("{start}\t{word}\t{count}\n"));
    }
    out.push_str(&format!("late\t{}\n", late_records(&checkpoint)?));
    output::print_text(&out);
    Ok(())
}

/// The late records: the batch records' audited counts, checked against
/// the dead letters. When the batch history no longer reaches back to the
/// first batch (it keeps the last 10,000), the dead letters alone.
fn late_records(checkpoint: &RocksCheckpoint) -> anyhow::Result<u64> {
    let batches = checkpoint.batches()?;
    let counted: u64 = batches
        .iter()
        .flat_map(|b| &b.late_records)
        .filter(|late| late.window == WINDOW)
        .map(|late| late.count)
        .sum();
    let prefix = format!("late record in event_time_window({WINDOW:?})");
    let kept = if checkpoint.families().any(|f| f == LATE) {
        checkpoint
            .dead_letters(LATE)?
            .iter()
            .filter(|d| d.error.starts_with(&prefix))
            .count() as u64
    } else {
        0
    };
    let complete = batches.first().is_none_or(|b| b.id == 0);
    if !complete {
        eprintln!(
            "the batch history starts at batch {}: the late count is the dead letters'",
            batches[0].id
        );
        return Ok(kept);
    }
    anyhow::ensure!(
        counted == kept,
        "the batch records count {counted} late records but {LATE} holds {kept}"
    );
    Ok(counted)
}

fn stored_offsets(dir: &Path) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    if !dir.exists() {
        return Ok(BTreeMap::new());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)
        .with_context(|| format!("reading stored offsets from {}", dir.display()))?;
    Ok(checkpoint.offsets()?)
}

/// Event time of offset 0 of every embedded partition (2023-11-14T22:13:20Z).
const BASE_MS: i64 = 1_700_000_000_000;

/// The embedded record at `offset` of `partition`: a line of one to three
/// words and its timestamp, a pure function of the position. Every 25th is
/// `late_by` ms behind its neighbours.
fn record_at(partition: i32, offset: i64, late_by: u64) -> (String, Option<i64>) {
    const WORDS: [&str; 12] = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "stream", "batch",
        "window", "late",
    ];
    let n = offset * 7 + i64::from(partition) * 3;
    let words = 1 + (n % 3) as usize;
    let line: Vec<&str> = (0..words)
        .map(|k| WORDS[((n / 3 + k as i64 * 5) % WORDS.len() as i64) as usize])
        .collect();
    let on_time = BASE_MS + offset * 100 - (n % 16) * 100;
    let time = if offset % 25 == 24 {
        on_time - late_by as i64
    } else {
        on_time
    };
    (line.join(" "), Some(time))
}
