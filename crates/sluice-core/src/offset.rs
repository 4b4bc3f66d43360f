//! Kafka coordinates: partitions and the offset ranges a batch reads.

use std::fmt;
use std::sync::Arc;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// Names a partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The half-open range of offsets `[from, until)` one batch reads from one
/// partition — what Spark calls an `OffsetRange`.
///
/// `until` is the next offset to read after this batch, so consecutive
/// batches of a partition chain `until` into the next `from`. Offsets inside
/// the range may be missing (compaction, transaction markers); a range
/// always ends at `until` regardless.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetRange {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// First offset of the range (inclusive).
    pub from: i64,
    /// End of the range (exclusive): the next offset to read.
    pub until: i64,
}

impl OffsetRange {
    /// A range of `tp` from `from` (inclusive) to `until` (exclusive).
    pub fn new(tp: &TopicPartition, from: i64, until: i64) -> Self {
        Self {
            topic: tp.topic.clone(),
            partition: tp.partition,
            from,
            until,
        }
    }

    /// The partition this range reads.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// Number of offsets covered (an upper bound on the records read).
    pub fn count(&self) -> u64 {
        (self.until - self.from).max(0) as u64
    }

    /// True when the range covers no offset.
    pub fn is_empty(&self) -> bool {
        self.until <= self.from
    }
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} [{}, {})",
            self.topic, self.partition, self.from, self.until
        )
    }
}
