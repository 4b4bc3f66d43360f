//! What one batch is: its identity ([`BatchInfo`]) and its data ([`Batch`]).

use std::time::{Duration, SystemTime};

use crate::{OffsetRange, RateLimit};

/// Identity and provenance of one batch, handed to output operations —
/// Spark's batch time plus `HasOffsetRanges`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// Monotonically increasing batch id; survives restarts (it continues
    /// from the last committed batch).
    pub id: u64,
    /// Batch time: the scheduled tick this batch belongs to.
    pub time: SystemTime,
    /// One range per partition read by this batch, in task order.
    pub ranges: Vec<OffsetRange>,
    /// The tightest rate limit in force when this batch was planned, and
    /// why; `None` when none was (no limit configured, or backpressure
    /// alone before its first estimate). It is the limit the ranges were
    /// sized under, whether or not it shortened any of them: an empty
    /// batch, or one that read every partition's whole lag, reports it too.
    pub rate_limit: Option<RateLimit>,
}

impl BatchInfo {
    /// Describes batch `id` scheduled at `time` reading `ranges`.
    pub fn new(id: u64, time: SystemTime, ranges: Vec<OffsetRange>) -> Self {
        Self {
            id,
            time,
            ranges,
            rate_limit: None,
        }
    }

    /// The same batch, bounded by `limit`.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Batch time in milliseconds since the Unix epoch.
    pub fn time_ms(&self) -> i64 {
        self.time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64
    }

    /// Offsets covered by all ranges: an upper bound on the records read
    /// (compacted topics and transaction markers leave gaps).
    pub fn offsets_planned(&self) -> u64 {
        self.ranges.iter().map(OffsetRange::count).sum()
    }

    /// A key that identifies the output of `partition` in this batch across
    /// retries and restarts, for idempotent writes to outside systems.
    pub fn idempotency_key(&self, partition: usize) -> String {
        format!("{}-{}", self.id, partition)
    }
}

/// The data of one batch: records split into partitions.
///
/// Partition `i` of a stream read straight from Kafka holds the records of
/// `BatchInfo::ranges[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    partitions: Vec<Vec<T>>,
}

impl<T> Batch<T> {
    /// A batch made of `partitions`.
    pub fn new(partitions: Vec<Vec<T>>) -> Self {
        Self { partitions }
    }

    /// Number of elements across all partitions.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }

    /// True when no partition holds an element.
    pub fn is_empty(&self) -> bool {
        self.partitions.iter().all(Vec::is_empty)
    }

    /// The partitions, in order.
    pub fn partitions(&self) -> &[Vec<T>] {
        &self.partitions
    }

    /// Takes the partitions out of the batch.
    pub fn into_partitions(self) -> Vec<Vec<T>> {
        self.partitions
    }

    /// All elements, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.partitions.iter().flatten()
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.partitions.into_iter().flatten()
    }
}
