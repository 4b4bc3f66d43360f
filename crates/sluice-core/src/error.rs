//! The error type of sluice-core.

use std::fmt;
use std::time::SystemTime;

/// Boxed error from user code or another crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for sluice-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while a batch is planned or computed, or while a job's
/// outputs are registered.
///
/// Who must act, for planning: [`Error::DataLoss`] and
/// [`Error::OffsetAhead`] need an operator's decision (see
/// [`DataLossPolicy`](crate::DataLossPolicy)); a [`Error::Source`] is an
/// outside fault that may pass ([`Error::is_transient`]) or not.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record's key or value is not valid UTF-8 (a header:
    /// [`Error::DecodeHeader`]).
    #[error("{field} of record {topic}-{partition}@{offset} is not valid UTF-8: {source}")]
    Decode {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// `"key"` or `"value"`.
        field: &'static str,
        /// Where the bytes stopped being UTF-8.
        source: std::str::Utf8Error,
    },
    /// A record's header value is not valid UTF-8
    /// ([`Record::header_str`](crate::Record::header_str)).
    #[error("header '{name}' of record {topic}-{partition}@{offset} is not valid UTF-8: {source}")]
    DecodeHeader {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// The header's name.
        name: String,
        /// Where the bytes stopped being UTF-8.
        source: std::str::Utf8Error,
    },
    /// Processing one record failed (the source names what went wrong).
    #[error("record {topic}-{partition}@{offset}: {source}")]
    Record {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// What failed.
        source: Box<Error>,
    },
    /// Reading a partition's offset range failed.
    #[error("reading {range} failed: {source}")]
    Read {
        /// The range being read.
        range: crate::OffsetRange,
        /// Why the read failed.
        source: BoxError,
    },
    /// The log no longer holds a range's records: retention deleted its start
    /// after it was planned, or the log ends before it. The driver takes the
    /// data-loss decision on fresh offsets and plans the batch again.
    #[error("offsets of {range} are out of range in the log: {source}")]
    OffsetOutOfRange {
        /// The range being read.
        range: crate::OffsetRange,
        /// What the source reported.
        source: BoxError,
    },
    /// A task failed on every attempt it was given.
    #[error("task {task} of stage '{stage}' failed after {attempts} attempt(s): {source}")]
    Task {
        /// Stage the task belongs to.
        stage: String,
        /// Task index within its stage (the partition index).
        task: usize,
        /// Number of attempts made.
        attempts: u32,
        /// The error of the last attempt.
        source: Box<Error>,
    },
    /// User code in an operator or output returned an error.
    #[error("operator '{operator}' failed: {source}")]
    User {
        /// The operator whose closure failed.
        operator: &'static str,
        /// The error it returned.
        source: BoxError,
    },
    /// User code panicked inside a task.
    #[error("task panicked: {0}")]
    Panic(String),
    /// A shuffle output, or a cached stream's partition handed to its
    /// last user, was consumed by an earlier attempt of a failed task; the
    /// whole batch must be recomputed.
    #[error("the shuffle or cache output of partition {partition} was lost with a failed task; the batch must be recomputed")]
    ShuffleLost {
        /// The partition whose values are gone.
        partition: usize,
    },
    /// An output operation was registered after the job started (the graph
    /// was [sealed](crate::StreamGraph::seal)); it was not added. A mistake
    /// in the job's code: register every output before starting the job.
    #[error(
        "output {output} was registered after the job started and is not added: register \
         every output before the job starts (StreamingContext::start), which fixes the outputs \
         and creates their checkpoint families"
    )]
    RegisteredAfterStart {
        /// The output refused, such as `foreach_batch` or
        /// `save_counts("counts")`.
        output: String,
    },
    /// An outside sink failed to write, begin or commit a batch's output.
    /// Nothing of the batch is committed to the checkpoint. A task whose
    /// write failed is not retried: the batch fails.
    #[error("{sink}: {source}")]
    Sink {
        /// The sink, as `sink "name"`.
        sink: String,
        /// What the sink reported.
        source: BoxError,
    },
    /// Two outside sinks of a job have the same name, or a name is empty.
    /// A sink finds its progress by its name, so each needs its own.
    #[error("sink {name:?}: {reason}")]
    SinkName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Reading, decoding or encoding a keyed state failed.
    #[error("state '{state}' (key partition {partition}): {source}")]
    State {
        /// The name of the stateful operator.
        state: String,
        /// The key partition being read or written.
        partition: u16,
        /// What failed.
        source: BoxError,
    },
    /// A stateful operator's name is taken or not allowed, or its settings
    /// are not valid. A mistake in the job's code, reported when the job
    /// starts or runs a batch.
    #[error("stateful operator {operator}(\"{name}\"): {reason}")]
    StateName {
        /// The name given.
        name: String,
        /// The operator, such as `map_with_state`.
        operator: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A window's length or slide is not allowed, or does not fit the batch
    /// interval. A mistake in the job's code or configuration, reported
    /// when the job starts or runs a batch; nothing is written.
    #[error("window {operator}(\"{name}\"): {reason}")]
    Window {
        /// The name given to the windowed operator.
        name: String,
        /// The operator, such as `reduce_by_key_and_window`.
        operator: &'static str,
        /// What is wrong, with the values.
        reason: String,
    },
    /// The stored offset of a partition is below its log start: records were
    /// deleted (retention, compaction of the head) before the job read them.
    #[error(
        "data loss on {topic}-{partition}: stored offset {stored} is below the log start \
         {log_start}, records [{stored}, {log_start}) were deleted before they were \
         processed{} (a source with DataLossPolicy::ResetToEarliest skips them: set it with \
         KafkaSourceBuilder::on_data_loss or MemorySource::with_data_loss_policy)",
        also_affected(.others)
    )]
    DataLoss {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset stored in the checkpoint.
        stored: i64,
        /// First offset still in the log.
        log_start: i64,
        /// Every other partition whose stored offset is outside its log
        /// (below its log start or past its latest offset) in the same
        /// planning, in partition order; empty when this one is the only one.
        others: Vec<crate::OutOfLog>,
    },
    /// The stored offset of a partition is past its latest offset: the topic
    /// was probably deleted and recreated, or truncated.
    #[error(
        "stored offset {stored} of {topic}-{partition} is past its latest offset {latest}{}; \
         was the topic recreated? (a source with DataLossPolicy::ResetToEarliest restarts it \
         from its log start: set it with KafkaSourceBuilder::on_data_loss or \
         MemorySource::with_data_loss_policy)",
        also_affected(.others)
    )]
    OffsetAhead {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset stored in the checkpoint.
        stored: i64,
        /// Latest offset (for Kafka, the high watermark or the last stable
        /// offset).
        latest: i64,
        /// Every other partition whose stored offset is outside its log
        /// (past its latest offset or below its log start) in the same
        /// planning, in partition order; empty when this one is the only one.
        others: Vec<crate::OutOfLog>,
    },
    /// The job's [`Source`](crate::Source) could not discover its
    /// partitions, fetch their offsets or resolve where to start. The
    /// message is the source's own.
    #[error("{source}")]
    Source {
        /// The source's error (for Kafka, a `sluice_kafka::Error`).
        source: BoxError,
        /// Whether the fault may pass by itself (a broker down, a metadata
        /// timeout): the driver then retries with backoff, within its
        /// outage timeout.
        transient: bool,
    },
    /// The batch was cancelled (non-graceful stop).
    #[error("batch of {time:?} was cancelled")]
    Cancelled {
        /// Batch time of the cancelled batch.
        time: SystemTime,
    },
}

impl Error {
    /// Wraps an error returned by user code in `operator`.
    pub fn user(operator: &'static str, source: impl Into<BoxError>) -> Self {
        Error::User {
            operator,
            source: source.into(),
        }
    }

    /// A source's failure that may pass by itself: the driver retries it
    /// with backoff.
    pub fn transient_source(source: impl Into<BoxError>) -> Self {
        Error::Source {
            source: source.into(),
            transient: true,
        }
    }

    /// A source's failure that retrying cannot mend (a refused
    /// authorisation, a bad setting): it stops the job.
    pub fn lasting_source(source: impl Into<BoxError>) -> Self {
        Error::Source {
            source: source.into(),
            transient: false,
        }
    }

    /// True for a source's outside fault that may go away by itself (a
    /// broker down, a metadata timeout, a topic not created yet): the caller
    /// may retry with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Source {
                transient: true,
                ..
            }
        )
    }

    /// The range whose offsets the log no longer holds, if that is what
    /// failed, however deep in task and operator errors it is wrapped.
    pub fn offset_out_of_range(&self) -> Option<&crate::OffsetRange> {
        match self {
            Error::OffsetOutOfRange { range, .. } => Some(range),
            Error::Task { source, .. } | Error::Record { source, .. } => {
                source.offset_out_of_range()
            }
            Error::User { source, .. } => source
                .downcast_ref::<Error>()
                .and_then(Error::offset_out_of_range),
            _ => None,
        }
    }

    /// True when the message already names the record it is about.
    pub(crate) fn names_a_record(&self) -> bool {
        match self {
            Error::Decode { .. } | Error::DecodeHeader { .. } | Error::Record { .. } => true,
            Error::User { source, .. } => source
                .downcast_ref::<Error>()
                .is_some_and(Error::names_a_record),
            _ => false,
        }
    }
}

/// How many other partitions a data-loss message names before "and N more".
const NAMED_OTHERS: usize = 10;

/// The other partitions of a data-loss error, as a clause of its message.
fn also_affected(others: &[crate::OutOfLog]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let named: Vec<String> = others
        .iter()
        .take(NAMED_OTHERS)
        .map(ToString::to_string)
        .collect();
    let mut text = format!(
        "; {} more partition(s) affected: {}",
        others.len(),
        named.join(", ")
    );
    if others.len() > NAMED_OTHERS {
        text.push_str(&format!(" and {} more", others.len() - NAMED_OTHERS));
    }
    text
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_report(self, f)
    }
}

/// Writes `error` as a report: its message, then each underlying cause on
/// a line of its own, leaving out a cause whose text is already shown.
///
/// This is the `Debug` form of sluice's errors, so that a `main` returning
/// one through `?` prints what went wrong rather than the error's fields.
#[doc(hidden)]
pub fn write_report(error: &dyn std::error::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut shown = error.to_string();
    f.write_str(&shown)?;
    let mut heading = true;
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !shown.contains(&text) {
            if heading {
                f.write_str("\n\nCaused by:")?;
                heading = false;
            }
            write!(f, "\n    {text}")?;
            shown.push_str(&text);
        }
        cause = next.source();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Disk;

    #[derive(Debug, thiserror::Error)]
    #[error("could not write the plan")]
    struct Plan(#[source] Disk);

    #[test]
    fn debug_shows_the_message_and_each_cause_not_the_fields() {
        let error = Error::Source {
            source: Box::new(Plan(Disk)),
            transient: false,
        };
        // The first cause is the message itself, and is not repeated.
        assert_eq!(
            format!("{error:?}"),
            "could not write the plan\n\nCaused by:\n    disk on fire"
        );
    }
}
