//! The error type of sluice-checkpoint.

use std::path::PathBuf;

/// Result alias for sluice-checkpoint.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong opening, reading or committing a checkpoint.
///
/// Each variant says who must act: configuration mistakes and damaged
/// checkpoints need an operator, [`Error::Rocks`] and [`Error::Io`] may be
/// transient faults of the machine, and [`Error::BatchIdNotIncreasing`] is a
/// bug in the caller.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store was configured wrongly; nothing was opened or written.
    #[error("invalid checkpoint configuration for {path}: {reason}")]
    Config {
        /// Checkpoint directory as configured.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The directory holds files but is not a checkpoint; refusing to write
    /// into it.
    #[error("{path} is not empty and is not a sluice checkpoint; point the job at an empty or new directory")]
    NotACheckpoint {
        /// The directory.
        path: PathBuf,
    },
    /// A read-only open found no checkpoint at the path.
    #[error("no checkpoint at {path}")]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The checkpoint belongs to another application.
    #[error("checkpoint {path} belongs to app '{stored}', not '{requested}'; use the right directory or app id")]
    AppIdMismatch {
        /// The directory.
        path: PathBuf,
        /// App id stored in the checkpoint.
        stored: String,
        /// App id this job was configured with.
        requested: String,
    },
    /// The checkpoint was written by a newer sluice with a schema this build
    /// cannot read.
    #[error("checkpoint {path} has schema version {found}, this build supports up to {supported}; upgrade sluice")]
    NewerSchema {
        /// The directory.
        path: PathBuf,
        /// Schema version found on disk.
        found: u32,
        /// Newest schema version this build understands.
        supported: u32,
    },
    /// The checkpoint is damaged. It is never treated as a first start,
    /// because that would re-read or skip data.
    #[error("checkpoint {path} is corrupt: {detail}; restore it from a backup or delete it to start over")]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What was found damaged, with RocksDB's report when it found it.
        detail: String,
    },
    /// Another handle holds the checkpoint's lock.
    #[error("checkpoint {path} is locked: another sluice process (or another handle in this process) is using this checkpoint directory")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// RocksDB's report of the held lock.
        source: rocksdb::Error,
    },
    /// A write was attempted through a read-only handle.
    #[error("cannot {operation} through a read-only handle of checkpoint {path}")]
    ReadOnly {
        /// The directory.
        path: PathBuf,
        /// The refused operation.
        operation: &'static str,
    },
    /// A family name is reserved for sluice's own records.
    #[error("family name '{family}' is reserved: names starting with 'sluice_' belong to sluice")]
    ReservedFamily {
        /// The rejected name.
        family: String,
    },
    /// A family name is not usable (empty).
    #[error("family name '{family}' is invalid: {reason}")]
    InvalidFamily {
        /// The rejected name.
        family: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A write names a family that does not exist.
    #[error("family '{family}' does not exist in checkpoint {path}; create it with ensure_family before writing")]
    UnknownFamily {
        /// The directory.
        path: PathBuf,
        /// The missing family.
        family: String,
    },
    /// A read (counters, a scan, dead letters) names a family the
    /// checkpoint does not hold: a misspelt name, or an output whose job
    /// has not started on this checkpoint yet.
    #[error(
        "family '{family}' is not in checkpoint {path}; it holds {held:?}; a family exists \
         once a job with the output that writes it has started"
    )]
    NoSuchFamily {
        /// The directory.
        path: PathBuf,
        /// The family asked for.
        family: String,
        /// The user families the checkpoint holds, sorted.
        held: Vec<String>,
    },
    /// The job's stateful operators do not match the states the checkpoint
    /// holds (a state no operator declares, a changed key or state type, a
    /// rename or drop that does not fit), or a state asked for is not
    /// there. A decision for whoever changed the job; the checkpoint is
    /// left as it was.
    #[error("checkpoint {path}: state '{state}' {reason}")]
    State {
        /// The directory.
        path: PathBuf,
        /// The state's name.
        state: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A commit carried a batch id not above the last committed one. This is
    /// a bug in the caller: ids must increase across commits and restarts.
    #[error("bug: batch {id} committed after batch {last}; batch ids must increase")]
    BatchIdNotIncreasing {
        /// The rejected batch id.
        id: u64,
        /// The last committed batch id.
        last: u64,
    },
    /// A shuffle partition count was recorded over another one. This is a
    /// bug in the caller: the count is fixed at the job's first start.
    #[error("bug: checkpoint {path} keeps {stored} shuffle partitions; recording {requested} would change which records every later batch puts under each idempotency key")]
    ShufflePartitionsFixed {
        /// The directory.
        path: PathBuf,
        /// The recorded count.
        stored: usize,
        /// The count the caller tried to record.
        requested: usize,
    },
    /// A commit carried an offset that cannot be stored (a bug in the caller).
    #[error("bug: cannot store next offset {offset} of {topic}-{partition}: {reason}")]
    InvalidOffset {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// The rejected offset.
        offset: i64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A key read as a counter holds a value that is not an 8-byte counter.
    #[error("key {key:?} of family '{family}' holds {len} bytes, not an 8-byte counter")]
    NotACounter {
        /// Family of the key.
        family: String,
        /// The key, lossily decoded as UTF-8.
        key: String,
        /// Length of the stored value.
        len: usize,
    },
    /// A stored dead letter could not be read back.
    #[error("dead letter cannot be read: {reason}")]
    BadDeadLetter {
        /// What is wrong with it.
        reason: String,
    },
    /// RocksDB failed; usually an I/O fault of the machine (disk full,
    /// permissions).
    #[error("RocksDB failed to {operation} checkpoint {path}: {source}")]
    Rocks {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A rewind asked for a batch that has no restore point.
    #[error("checkpoint {path} has no restore point for batch {batch}; {}", describe_points(.available))]
    NoRestorePoint {
        /// The directory.
        path: PathBuf,
        /// The batch asked for.
        batch: u64,
        /// The batches that have one, ascending.
        available: Vec<u64>,
    },
    /// A restore point cannot be used: damaged, or of another app.
    #[error("restore point {path} cannot be used: {reason}")]
    BadRestorePoint {
        /// The restore point's directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file-system operation on the checkpoint directory failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn describe_points(available: &[u64]) -> String {
    if available.is_empty() {
        return "it has none (a job takes them when built with \
                StreamingContext::builder().checkpoint_restore_points(every, keep), or \
                RocksCheckpointBuilder::restore_points(every, keep) for a checkpoint opened \
                directly)"
            .to_owned();
    }
    let ids: Vec<String> = available.iter().map(u64::to_string).collect();
    format!("restore points exist for batches {}", ids.join(", "))
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// The message and its causes, not the fields: what a `main` returning this
/// error through `?` prints.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sluice_core::write_report(self, f)
    }
}
