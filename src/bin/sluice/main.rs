//! `sluice`: inspect and repair a sluice checkpoint directory, with no
//! broker and no running job (except `lag`, which asks the broker).
//!
//! Read commands open the checkpoint read-only, so they work while a job
//! runs; commands that change it open it for writing, which takes the
//! checkpoint's lock and so fails while a job holds it. Every change is one
//! atomic RocksDB write.
//!
//! Exit codes: 0 success; 1 the command failed (no checkpoint, damaged
//! checkpoint, unknown state or family, a partition the checkpoint holds no
//! position for, no restore point, broker unreachable); 2 bad command line
//! (clap's own, and bad values such as a malformed
//! `TOPIC:PARTITION=OFFSET`); 3 a running job holds the checkpoint, so
//! nothing was changed.
//!
//! ```text
//! sluice checkpoint info checkpoints/wordcount
//! sluice batches checkpoints/wordcount --since 2024-05-01T10:00:00Z --json
//! sluice rewind checkpoints/wordcount --to-batch 1200 --dry-run
//! ```

/// Prints a line to stdout; a closed pipe (`sluice batches DIR | head`)
/// ends the program quietly instead of panicking as `println!` would.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::emit(format_args!($($arg)*))
    };
}

mod batches;
mod counts;
mod dead_letters;
mod decode;
mod info;
mod lag;
mod offsets;
mod open;
mod pause;
mod rewind;
mod state;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect and repair sluice checkpoints.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Inspect and repair sluice checkpoints: batches, offsets, state, dead letters, restore points, and a read-only web UI",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoint-wide commands.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// The batch history, oldest first.
    Batches {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Only batches at or after TIME: RFC 3339 (2024-05-01T10:00:00Z) or
        /// milliseconds since the Unix epoch.
        #[arg(long, value_name = "TIME", value_parser = batches::parse_time)]
        since: Option<i64>,
        /// One JSON object per line, as stored.
        #[arg(long)]
        json: bool,
        /// Leaves out the batches that read no record, recorded no control
        /// change and reset no partition (an idle job commits one per batch
        /// interval).
        #[arg(long)]
        skip_empty: bool,
    },
    /// The running totals of a family a job keeps with `save_counts`,
    /// largest first, as `key<TAB>count`.
    Counts {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The family (the name given to `save_counts`).
        family: String,
        /// Only the N largest.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        /// One JSON object per key: `key` (or `key_hex` when not text) and
        /// `count`.
        #[arg(long)]
        json: bool,
    },
    /// Keeps a stopped job paused: it starts paused and runs no batch until
    /// resumed (`sluice resume`, or its control API).
    Pause {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// Clears a pause, so the job reads at its next start.
    Resume {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// Changes the stored next offsets (`checkpoint info` shows them).
    Offsets {
        #[command(subcommand)]
        command: OffsetsCommand,
    },
    /// Rewinds offsets, results and state to right after batch N, from its
    /// restore point.
    Rewind {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The batch to go back to.
        #[arg(long, value_name = "N")]
        to_batch: u64,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keyed state of a stateful operator.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// The dead letters a job set aside.
    DeadLetters {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The dead-letter family; found by its contents when not given.
        #[arg(long, value_name = "NAME")]
        family: Option<String>,
        /// Write them to FILE as JSON lines instead of printing a summary.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Serves the web UI and JSON API of a stopped job from its checkpoint's
    /// batch history, read-only, until interrupted.
    Ui {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Where to listen, HOST:PORT (port 0: a free one).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4040")]
        listen: String,
    },
    /// Committed offsets against the broker's latest, per partition.
    Lag {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
        #[arg(long, value_name = "HOST:PORT")]
        brokers: String,
        /// librdkafka client settings (TLS, SASL), passed through.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = lag::setting)]
        settings: Vec<(String, String)>,
        /// One JSON object per partition.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CheckpointCommand {
    /// App id, schema, last batch, offsets, families, states, restore points.
    Info {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The same as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OffsetsCommand {
    /// Sets next offsets, all in one atomic write.
    Set {
        /// The checkpoint directory.
        dir: PathBuf,
        /// New next offsets.
        #[arg(value_name = "TOPIC:PARTITION=OFFSET", required = true, value_parser = offsets::parse_assignment)]
        offsets: Vec<(String, i32, i64)>,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also accept partitions the checkpoint holds no position for (a
        /// partition the job has not read yet); without it they are
        /// refused, as a mistyped topic or partition would be.
        #[arg(long)]
        new_partition: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Every key and state of the state NAME.
    Dump {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The state's name (see `sluice checkpoint info`).
        name: String,
        /// One JSON object per key.
        #[arg(long)]
        json: bool,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The command failed (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// A bad value on the command line (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// The checkpoint is held by a running job (exit 3).
    pub(crate) fn locked(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            message: message.into(),
        }
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.code == 3
    }
}

impl From<sluice::checkpoint::Error> for Failure {
    fn from(error: sluice::checkpoint::Error) -> Self {
        match error {
            sluice::checkpoint::Error::Locked { path, .. } => Self {
                code: 3,
                message: format!(
                    "checkpoint {} is held by a running job (or another sluice process): stop \
                     the job first; nothing was changed",
                    path.display()
                ),
            },
            sluice::checkpoint::Error::NotACheckpoint { path, .. } => Self::failed(format!(
                "{} is not a sluice checkpoint (it holds files, but no checkpoint database); \
                 point the command at a job's checkpoint directory",
                path.display()
            )),
            other => Self::failed(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Self::failed(error.to_string())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("sluice: error: cannot write the output: {error}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Checkpoint {
            command: CheckpointCommand::Info { dir, json },
        } => info::run(&dir, json),
        Command::Batches {
            dir,
            since,
            json,
            skip_empty,
        } => batches::run(&dir, since, json, skip_empty),
        Command::Pause { dir } => pause::pause(&dir),
        Command::Resume { dir } => pause::resume(&dir),
        Command::Counts {
            dir,
            family,
            top,
            json,
        } => counts::run(&dir, &family, top, json),
        Command::Offsets {
            command:
                OffsetsCommand::Set {
                    dir,
                    offsets,
                    dry_run,
                    new_partition,
                },
        } => offsets::set(&dir, &offsets, dry_run, new_partition),
        Command::Rewind {
            dir,
            to_batch,
            dry_run,
        } => rewind::run(&dir, to_batch, dry_run),
        Command::State {
            command: StateCommand::Dump { dir, name, json },
        } => state::dump(&dir, &name, json),
        Command::DeadLetters {
            dir,
            family,
            export,
        } => dead_letters::run(&dir, family.as_deref(), export.as_deref()),
        Command::Lag {
            dir,
            brokers,
            settings,
            json,
        } => lag::run(&dir, &brokers, &settings, json),
        Command::Ui { dir, listen } => ui::run(&dir, &listen),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sluice: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
