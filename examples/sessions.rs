//! User sessions from a click topic, kept in keyed state in the checkpoint.
//!
//! ```text
//! cargo run --release --example sessions                        # embedded broker + producer
//! cargo run --release --example sessions -- --brokers 127.0.0.1:9092 --topic clicks
//! cargo run --release --example sessions -- --idle-timeout-ms 5000
//! cargo run --release --example sessions -- --totals            # print committed totals, exit
//! ```
//!
//! Each record's value is a line `USER PAGE`. A user's clicks form a
//! session until the user is idle for `--idle-timeout-ms` of batch time;
//! then the session closes, is printed, and is added to the user's totals.
//! Both the open sessions (`map_with_state("sessions")`, with an idle
//! timeout) and the totals (`map_with_state("user_totals")`) are keyed
//! state committed with each batch's offsets, so a crash or a restart
//! neither loses nor repeats a click. A line that is not `USER PAGE` is
//! kept as a dead letter in the `bad_clicks` family.
//!
//! Without `--brokers` the example starts an in-process Kafka broker with a
//! producer of clicks, like the wordcount does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::{Deserialize, Serialize};
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

const APP_ID: &str = "sessions";
/// The keyed state of the users' totals.
const TOTALS: &str = "user_totals";

#[derive(Parser, Debug)]
#[command(about = "Tracks user sessions of a Kafka click topic with sluice")]
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
    #[arg(long, value_name = "NAME", default_value = "clicks")]
    topic: String,
    /// Checkpoint directory (RocksDB).
    #[arg(long, value_name = "DIR", default_value = "checkpoints/sessions")]
    checkpoint_dir: PathBuf,
    /// Batch interval in milliseconds.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        allow_negative_numbers = true
    )]
    batch_interval_ms: u64,
    /// Batch time a user must be idle for its session to close, in
    /// milliseconds (default: three batch intervals).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    idle_timeout_ms: Option<u64>,
    /// Kafka consumer group id (defaults to the app id, "sessions").
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Print every user's committed totals as
    /// `user<TAB>closed sessions<TAB>clicks in closed sessions`, sorted by
    /// user, and exit without consuming.
    #[arg(long)]
    totals: bool,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    partitions: i32,
    /// Clicks per second the embedded producer writes.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    rate: u32,
    /// Worker threads.
    #[arg(long, allow_negative_numbers = true)]
    workers: Option<usize>,
}

/// A user's open session.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Session {
    clicks: u64,
    last_page: String,
}

/// A user's closed sessions so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Totals {
    sessions: u64,
    clicks: u64,
}

fn main() {
    output::init_logging("info");
    if let Err(error) = config::parse_with_config::<Args>().and_then(run) {
        output::fail("sessions", &error);
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
    let idle = Duration::from_millis(
        args.idle_timeout_ms
            .unwrap_or(args.batch_interval_ms.saturating_mul(3)),
    );
    let stored = stored_offsets(&args.checkpoint_dir)?;
    let (brokers, embedded) = match &args.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let embedded =
                Embedded::start(&args.topic, args.partitions, args.rate, &stored, click_at)?;
            (embedded.bootstrap.clone(), Some(embedded))
        }
    };

    let mut builder = StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(args.batch_interval_ms))
        .checkpoint_dir(&args.checkpoint_dir)
        .poison_records(PoisonPolicy::dead_letter("bad_clicks"));
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

    // Open sessions: a click extends its user's session; a user idle for
    // `idle` of batch time closes it, giving (user, clicks).
    let sessions = StateSpec::function(
        |user: &String, page: Option<String>, session: &mut State<Session>| match page {
            Some(page) => {
                let mut open = session.get().cloned().unwrap_or_default();
                open.clicks += 1;
                open.last_page = page;
                session.update(open);
                None
            }
            None => session.get().map(|closed| (user.clone(), closed.clicks)),
        },
    )
    .timeout(idle);
    // Totals of closed sessions per user; no timeout: kept for good.
    let totals = StateSpec::function(
        |user: &String, clicks: Option<u64>, totals: &mut State<Totals>| {
            let clicks = clicks.unwrap_or(0);
            let mut sum = totals.get().cloned().unwrap_or_default();
            sum.sessions += 1;
            sum.clicks += clicks;
            totals.update(sum.clone());
            format!(
                "{user}: session closed after {clicks} clicks ({} sessions, {} clicks in all)",
                sum.sessions, sum.clicks
            )
        },
    );
    ctx.kafka_stream(source.build()?)?
        .values_utf8()
        .try_map(|line: String| parse_click(&line))
        .map_with_state("sessions", sessions)
        .flat_map(|closed| closed)
        .map_with_state(TOTALS, totals)
        .foreach_batch(|closed, info| {
            for line in closed {
                out!("batch {:>5}  {line}", info.id);
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

/// `USER PAGE` → `(user, page)`.
fn parse_click(line: &str) -> Result<(String, String), String> {
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(user), Some(page), None) => Ok((user.to_owned(), page.to_owned())),
        _ => Err(format!("expected `USER PAGE`, got {line:?}")),
    }
}

/// Prints the committed totals; a checkpoint that does not exist yet has
/// none.
fn print_totals(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        eprintln!("no checkpoint at {} yet", dir.display());
        return Ok(());
    }
    let checkpoint = RocksCheckpoint::open_read_only(dir, APP_ID)?;
    if !checkpoint.states()?.iter().any(|s| s.name == TOTALS) {
        return Ok(());
    }
    let totals: BTreeMap<String, Totals> = checkpoint
        .read_state::<String, Totals>(TOTALS)?
        .into_iter()
        .collect();
    let mut out = String::new();
    for (user, totals) in totals {
        out.push_str(&format!("{user}\t{}\t{}\n", totals.sessions, totals.clicks));
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

/// The click at `offset` of `partition`: a pure function of the position.
/// Each partition has three active users at a time, and moves on to three
/// others every 200 clicks, so sessions open and close.
fn click_at(partition: i32, offset: i64) -> String {
    const USERS: i64 = 12;
    const PAGES: [&str; 5] = ["home", "search", "item", "cart", "checkout"];
    let active = (offset / 200) * 3 + offset % 3 + i64::from(partition);
    let user = active.rem_euclid(USERS);
    let page = PAGES[(offset as usize / 3) % PAGES.len()];
    format!("user{user:02} {page}")
}
