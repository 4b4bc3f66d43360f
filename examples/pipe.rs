//! Copies a Kafka topic to another, exactly-once: drops records with an
//! empty value and writes every other record unchanged (key and value) to
//! the output topic, adding the headers `sluice.topic`, `sluice.partition`
//! and `sluice.offset` of the input record it came from.
//!
//! ```text
//! cargo run --release --example pipe                       # embedded broker + producer
//! cargo run --release --example pipe -- --brokers 127.0.0.1:9092 \
//!     --topic lines --output-topic lines-out               # topics must exist
//! cargo run --release --example pipe -- --at-least-once    # no transactions
//! cargo run --release --example pipe -- --brokers 127.0.0.1:9092 \
//!     --topic lines --output-topic lines-out --check-output  # exactly once?
//! ```
//!
//! Each batch's output is one Kafka transaction, committed just before the
//! checkpoint; read the output with `isolation.level=read_committed` to see
//! every record once, whatever crashes happened (docs/guarantees.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sluice::checkpoint::RocksCheckpoint;
use sluice::kafka::Delivery;
use sluice::prelude::*;

#[macro_use]
#[path = "support/output.rs"]
mod output;
#[path = "support/config.rs"]
mod config;
#[path = "support/embedded.rs"]
mod embedded;
#[path = "support/pipe_check.rs"]
mod pipe_check;
use embedded::Embedded;

const APP_ID: &str = "pipe";

#[derive(Parser, Debug)]
#[command(about = "Copies a Kafka topic to another, exactly-once, with sluice")]
struct Args {
    /// Settings from a TOML file: brokers, topic, checkpoint_dir,
    /// batch_interval_ms, group, workers, and librdkafka settings under
    /// `[kafka]` (docs/configuration.md); flags given here override it.
    #[arg(long = "config", value_name = "FILE")]
    _config: Option<PathBuf>,
    /// Kafka bootstrap servers; absent: start an embedded broker.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Topic to read (created on the embedded broker).
    #[arg(long, value_name = "NAME", default_value = "lines")]
    topic: String,
    /// Topic to write (created on the embedded broker; must exist on others).
    #[arg(long, value_name = "NAME", default_value = "lines-out")]
    output_topic: String,
    /// Checkpoint directory (RocksDB).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/pipe")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Kafka consumer group id of the source (defaults to the app id, "pipe").
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Worker threads.
    #[arg(long, allow_negative_numbers = true)]
    workers: Option<usize>,
    /// Write with an idempotent producer flushed before each checkpoint
    /// commit instead of a transaction per batch: faster, but a batch
    /// redone after a crash is written again.
    #[arg(long)]
    at_least_once: bool,
    /// Partitions of the embedded topics.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    partitions: i32,
    /// Lines per second the embedded producer writes.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    rate: u32,
    /// Check the output instead of running: read it (`read_committed`)
    /// and the input up to the checkpoint's offsets, print what was
    /// written twice or never, and exit 0 only if every input record with
    /// a value was written exactly once. Needs `--brokers`.
    #[arg(long)]
    check_output: bool,
    /// A librdkafka setting for the source and the sink, e.g.
    /// `--set security.protocol=SSL`; repeat for several.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = setting)]
    settings: Vec<(String, String)>,
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
    output::init_logging("info,sluice::batch=warn");
    if let Err(error) = config::parse_with_config::<Args>().and_then(run) {
        output::fail("pipe", &error);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
    let stored = stored_offsets(&args.checkpoint_dir)?;
    if args.check_output {
        return check_output(&args, &stored);
    }
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let embedded =
                Embedded::start(&args.topic, args.partitions, args.rate, &stored, line_at)?;
            embedded.create_topic(&args.output_topic, args.partitions)?;
            (embedded.bootstrap.clone(), Some(embedded))
        }
    };

    let mut source = KafkaSource::builder()
        .brokers(&brokers)
        .subscribe([args.topic.as_str()])
        // Only what upstream transactions committed.
        .set("isolation.level", "read_committed");
    if let Some(group) = &args.group {
        source = source.group_id(group);
    }
    if args.brokers.is_none() {
        // The embedded broker holds fetches for `fetch.wait.max.ms`.
        source = source.set("fetch.wait.max.ms", "10");
    }
    let delivery = if args.at_least_once {
        Delivery::AtLeastOnce
    } else {
        Delivery::ExactlyOnce
    };
    let mut sink = KafkaSink::builder("out", &args.output_topic)
        .brokers(&brokers)
        .delivery(delivery);
    for (key, value) in &args.settings {
        source = source.set(key, value);
        sink = sink.set(key, value);
    }
    // The source and sink first: a bad setting is refused before the
    // context's build() opens (on a first start, creates) the checkpoint.
    let (source, sink) = (source.build()?, sink.build()?);

    let mut builder = StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .checkpoint_dir(&args.checkpoint_dir);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    let ctx = builder.build()?;

    ctx.kafka_stream(source)?
        .filter(|record: &Record| record.value.as_deref().is_some_and(|v| !v.is_empty()))
        .map(|record: Record| {
            let (topic, partition, offset) =
                (record.topic.clone(), record.partition, record.offset);
            KafkaRecord::from(record)
                .header("sluice.topic", topic.as_bytes())
                .header("sluice.partition", partition.to_string())
                .header("sluice.offset", offset.to_string())
        })
        .sink(sink)?;

    let output = args.output_topic.clone();
    ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
        out!(
            "batch {:>5}  {:>6} records read  {:>6.1} ms  committed to {output} and the checkpoint",
            batch.info.id,
            batch.records,
            (batch.processing + batch.commit).as_secs_f64() * 1e3,
        );
    })?;
    ctx.start()?;
    let stopped = ctx.await_termination();
    // The job's consumers go with its context, before the embedded broker:
    // the other way round they log connection errors on the way out.
    drop(ctx);
    drop(embedded);
    Ok(stopped?)
}

/// `--check-output`: prints the comparison and fails unless exact.
fn check_output(args: &Args, stored: &BTreeMap<TopicPartition, i64>) -> anyhow::Result<()> {
    let Some(brokers) = &args.brokers else {
        anyhow::bail!(
            "--check-output needs --brokers: the embedded broker forgot the output when the \
             job that wrote it exited"
        );
    };
    anyhow::ensure!(
        args.checkpoint_dir.exists(),
        "no checkpoint at {}: --check-output compares the output with the offsets a job \
         committed there",
        args.checkpoint_dir.display()
    );
    let committed: BTreeMap<i32, i64> = stored
        .iter()
        .filter(|(tp, _)| *tp.topic == *args.topic)
        .map(|(tp, &next)| (tp.partition, next))
        .collect();
    let report = pipe_check::check(
        brokers,
        &args.topic,
        &args.output_topic,
        &committed,
        |value| value.is_some_and(|v| !v.is_empty()),
    )?;
    out!(
        "{} input records with a value below the checkpoint's offsets; {} output records",
        report.expected,
        report.written
    );
    out!(
        "written twice or more: {}; never written: {}; written ahead of the checkpoint: {}",
        report.duplicates.len(),
        report.missing.len(),
        report.ahead
    );
    for ((partition, offset), times) in report.duplicates.iter().take(10) {
        out!(
            "  {}-{partition}@{offset} written {times} times",
            args.topic
        );
    }
    for (partition, offset) in report.missing.iter().take(10) {
        out!("  {}-{partition}@{offset} never written", args.topic);
    }
    anyhow::ensure!(
        report.ahead == 0,
        "{} output records come from input past the checkpoint's offsets: run the job until \
         it commits a batch and check again (a job stopped between its sink's commit and its \
         checkpoint's leaves one batch ahead); many more mean another checkpoint or topic",
        report.ahead
    );
    anyhow::ensure!(
        report.exact(),
        "the output is not exactly once (read with isolation.level=read_committed)"
    );
    out!("exactly once");
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

/// The line at `offset` of `partition`; every fifth is empty, for the
/// filter to drop.
fn line_at(partition: i32, offset: i64) -> String {
    if offset % 5 == 4 {
        String::new()
    } else {
        format!("line {offset} of partition {partition}")
    }
}
