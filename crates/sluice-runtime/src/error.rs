//! The error type of sluice-runtime.

use std::path::PathBuf;

/// Result alias for sluice-runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a streaming context could not start or stopped.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job is configured wrongly; nothing was read or written.
    #[error("invalid setting `{setting}`: {reason}")]
    Config {
        /// The setting at fault.
        setting: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The checkpoint store failed or refused to open.
    #[error(transparent)]
    Checkpoint(#[from] sluice_checkpoint::Error),
    /// The Kafka source failed (or stayed unreachable past the outage
    /// timeout).
    #[error(transparent)]
    Kafka(#[from] sluice_kafka::Error),
    /// Planning a batch failed: a stored offset is no longer in its
    /// partition's log (`sluice_core::Error::DataLoss` or `OffsetAhead`,
    /// decided by the source's `DataLossPolicy`), or a source other than
    /// Kafka failed (or stayed unavailable past the outage timeout).
    #[error(transparent)]
    Source(sluice_core::Error),
    /// An outside sink could not start: it could not fence an earlier
    /// writer or find whether it committed the batch to redo.
    #[error("sink {sink:?} could not start: {source}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What the sink reported.
        source: sluice_core::BoxError,
    },
    /// A batch failed on every attempt; nothing of it was committed.
    #[error("batch {id} (time {time_ms} ms) failed after {attempts} attempt(s), nothing of it was committed: {source}")]
    Batch {
        /// Id of the failed batch.
        id: u64,
        /// Batch time in ms since the Unix epoch.
        time_ms: i64,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        source: sluice_core::Error,
    },
    /// A non-graceful stop cancelled the batch in flight; it was not
    /// committed and will be read again on restart.
    #[error("stopped without committing batch {id}")]
    Aborted {
        /// The batch that was discarded.
        id: u64,
    },
    /// A stream or listener was added after `start`; it was not added. A
    /// mistake in the job's code: define everything before starting.
    #[error(
        "{what} was added after the streaming context started and is not part of the job: \
         define every stream, output and listener before start()"
    )]
    RegisteredAfterStart {
        /// What was refused: `"a Kafka stream"`, `"a listener"`, `"a
        /// drop_state"`, `"a rename_state"` or `"a migrate_state"`.
        what: &'static str,
    },
    /// Defining the job's stream graph failed (an output registered after
    /// `start()`), so `?` works on outputs in a function that returns this
    /// crate's `Result`.
    #[error(transparent)]
    Graph(#[from] sluice_core::Error),
    /// `start` was called on a context that already started.
    #[error("the streaming context was already started")]
    AlreadyStarted,
    /// `await_termination` or `stop` was called before `start`.
    #[error("the streaming context was not started")]
    NotStarted,
    /// The operating system refused a thread or a signal handler.
    #[error("could not {what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP endpoint could not listen on its address (in use, or not
    /// the machine's): a configuration mistake, nothing was read or
    /// written.
    #[error("could not bind the HTTP endpoint to {addr}: {source}")]
    HttpBind {
        /// The address from [`http`](crate::StreamingContextBuilder::http).
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The job's intake was paused (through its control API, or with
    /// `sluice pause`) and the job has no HTTP endpoint to resume it
    /// through: it would run no batch. Nothing was read or written.
    #[error(
        "the job on checkpoint {path} was paused at {since} and stays paused until resumed: \
         resume it with `sluice resume {path}` while the job is stopped, or start it with an \
         HTTP endpoint (.http(..); the wordcount's --http) and resume it through the control \
         API",
        since = utc(*since_ms)
    )]
    Paused {
        /// The checkpoint directory.
        path: PathBuf,
        /// When it was paused, ms since the Unix epoch.
        since_ms: i64,
    },
    /// The checkpoint directory is not usable.
    #[error("checkpoint directory {path}: {reason}")]
    CheckpointDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// A planning failure of the job's source: a Kafka failure stays
    /// [`Error::Kafka`], whatever the source reported it through.
    pub(crate) fn from_source(error: sluice_core::Error) -> Self {
        match error {
            sluice_core::Error::Source { source, transient } => {
                match source.downcast::<sluice_kafka::Error>() {
                    Ok(kafka) => Error::Kafka(*kafka),
                    Err(source) => Error::Source(sluice_core::Error::Source { source, transient }),
                }
            }
            other => Error::Source(other),
        }
    }
}

/// A configuration error naming `setting`.
pub(crate) fn config(setting: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        setting,
        reason: reason.into(),
    }
}

/// The message and its causes, not the fields: what a `main` returning this
/// error through `?` prints.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sluice_core::write_report(self, f)
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time, for messages.
fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(time) => format!("{time:.3}"),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}
