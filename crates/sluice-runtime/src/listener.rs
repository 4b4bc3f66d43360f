//! What the driver reports after every committed batch.

use std::time::{Duration, SystemTime};

use sluice_checkpoint::CheckpointStore;
use sluice_core::{BatchInfo, LateCount, OffsetReset, TopicPartition};

/// A batch that was computed and committed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatchCompleted {
    /// Id, time and offset ranges of the batch.
    pub info: BatchInfo,
    /// Records read, per range (same order as `info.ranges`).
    pub records_per_range: Vec<u64>,
    /// Records read in all.
    pub records: u64,
    /// Records taken from Kafka, counting a record once per read of it:
    /// `records` when each range was read once, however many output
    /// operations use the input; more when an output read part of a range
    /// again (chunks beyond the context's `shared_input_bytes`, a retried
    /// task). Counted in the computation of the batch that committed: a
    /// batch computed again after a failure counts its last computation
    /// only. Records read back for dead letters are not counted.
    pub records_fetched: u64,
    /// Time from the start of the batch to the end of its outputs.
    pub processing: Duration,
    /// The part of `processing` spent before the batch is computed:
    /// discovering partitions, fetching their offsets from the broker,
    /// planning the ranges and writing the plan ahead of the batch. Close to zero for a
    /// batch redone after a restart with its stored plan.
    pub planning: Duration,
    /// How late the batch started after its scheduled time.
    pub scheduling_delay: Duration,
    /// Time the atomic checkpoint commit took.
    pub commit: Duration,
    /// Partitions read for the first time in this batch.
    pub new_partitions: Vec<TopicPartition>,
    /// Partitions whose stored position a data-loss reset moved to the log
    /// start (only under `DataLossPolicy::ResetToEarliest`): why, from
    /// where, and how many offsets it passed over. The batch record keeps
    /// the same in its ranges.
    pub resets: Vec<OffsetReset>,
    /// Records set aside as dead letters (see `poison_records`), committed
    /// with the batch.
    pub dead_letters: u64,
    /// Values behind an event-time window's watermark, per window and input
    /// partition (non-zero counts only); also in the batch record.
    pub late_records: Vec<LateCount>,
    /// The smallest Kafka timestamp (ms since the Unix epoch) of the records
    /// read; `None` when none had one. A record's timestamp is its
    /// producer's (CreateTime) or its broker's (LogAppendTime), as the
    /// topic's `message.timestamp.type` says.
    pub min_timestamp: Option<i64>,
    /// The largest Kafka timestamp of the records read, as `min_timestamp`.
    pub max_timestamp: Option<i64>,
    /// The wall-clock time right after the checkpoint commit: when the
    /// batch's results became durable.
    pub committed_at: SystemTime,
}

impl BatchCompleted {
    /// The largest end-to-end latency among the batch's records: from the
    /// oldest record's Kafka timestamp ([`min_timestamp`](Self::min_timestamp))
    /// to the commit. Zero when that timestamp is after the commit (a
    /// producer's clock ahead of this machine's); `None` when no record had
    /// a timestamp.
    pub fn max_latency(&self) -> Option<Duration> {
        self.min_timestamp.map(|t| self.age_at_commit(t))
    }

    /// The smallest end-to-end latency among the batch's records: from the
    /// newest record's Kafka timestamp to the commit, as
    /// [`max_latency`](Self::max_latency).
    pub fn min_latency(&self) -> Option<Duration> {
        self.max_timestamp.map(|t| self.age_at_commit(t))
    }

    fn age_at_commit(&self, timestamp_ms: i64) -> Duration {
        let committed_ms = self
            .committed_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        Duration::from_millis(u64::try_from(committed_ms.saturating_sub(timestamp_ms)).unwrap_or(0))
    }
}

/// Called on the driver after each committed batch, with read access to
/// the checkpoint (for instance to report running totals). Keep it quick:
/// the next batch waits for it.
pub trait BatchListener: Send {
    /// One committed batch.
    fn on_batch_completed(&mut self, batch: &BatchCompleted, checkpoint: &dyn CheckpointStore);
}

impl<F> BatchListener for F
where
    F: FnMut(&BatchCompleted, &dyn CheckpointStore) + Send,
{
    fn on_batch_completed(&mut self, batch: &BatchCompleted, checkpoint: &dyn CheckpointStore) {
        self(batch, checkpoint)
    }
}
