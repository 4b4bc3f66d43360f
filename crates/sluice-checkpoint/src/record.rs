//! The per-batch history record kept next to the offsets.

use serde::{Deserialize, Serialize};
use sluice_core::OffsetRange;

/// What one committed batch read and how long it took; stored as JSON in
/// the checkpoint, so it holds data only.
///
/// Unknown fields are ignored when reading and missing optional fields take
/// their defaults, so later builds can add fields within one schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchRecord {
    /// Batch id; increases with every committed batch.
    pub id: u64,
    /// Batch time in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// One entry per partition read, in task order.
    #[serde(default)]
    pub ranges: Vec<RangeRecord>,
    /// Records read across all ranges.
    #[serde(default)]
    pub records: u64,
    /// Records the batch took from its input, counting a record once per
    /// read of it: equal to `records` when the batch read each range once,
    /// however many outputs use the input; more when outputs read chunks
    /// again that did not fit in the graph's `shared_input_bytes`, or a
    /// task was retried. Counted in the computation that committed (not in
    /// earlier failed computations of the batch). `None` in records written
    /// before sluice kept it (2026-12-05), shown as `null` (unknown).
    #[serde(default)]
    pub records_fetched: Option<u64>,
    /// Wall time from the start of processing to the commit, in ms.
    #[serde(default)]
    pub processing_ms: u64,
    /// The same in µs, for rates of short batches; 0 in records written
    /// before sluice kept it (2026-12-05).
    #[serde(default)]
    pub processing_us: u64,
    /// How long the batch waited behind earlier batches, in ms.
    #[serde(default)]
    pub scheduling_delay_ms: u64,
    /// Human-readable description of the rate limit in force, if any.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Records set aside as dead letters by this batch.
    #[serde(default)]
    pub dead_letters: u64,
    /// Values that arrived behind an event-time window's watermark, per
    /// window and input partition; only non-zero counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_records: Vec<LateRecords>,
    /// Changes made to the running job through its control API (pause,
    /// resume, rate limits) since the batch before; they apply from this
    /// batch on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<ControlRecord>,
    /// The smallest Kafka timestamp (ms since the Unix epoch) of the
    /// records read; `None` when none had one, and in records written before
    /// sluice kept it (2026-12-05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp_ms: Option<i64>,
    /// The largest Kafka timestamp of the records read, as
    /// `min_timestamp_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp_ms: Option<i64>,
    /// The wall-clock end of the batch's processing, right before its
    /// commit, in ms since the Unix epoch; `None` in records written before
    /// sluice kept it (2026-12-05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at_ms: Option<i64>,
}

/// One change made to a running job through its control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ControlRecord {
    /// When the change was requested, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// What changed, e.g. `pause` or `rate max_rate=1000/s`.
    pub change: String,
}

impl ControlRecord {
    /// A change described by `change`, requested at `time_ms`.
    pub fn new(time_ms: i64, change: impl Into<String>) -> Self {
        Self {
            time_ms,
            change: change.into(),
        }
    }
}

/// How many values of one input partition arrived behind the watermark of
/// an event-time window in one batch. Under a dead-letter policy the
/// dead-letter family holds each of them, with its coordinates, event time
/// and the watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LateRecords {
    /// The window operator's name.
    pub window: String,
    /// Topic; empty when the window's input was shuffled and the records'
    /// partitions are not known.
    pub topic: String,
    /// Partition; -1 when not known.
    pub partition: i32,
    /// Late values.
    pub count: u64,
}

impl From<&sluice_core::LateCount> for LateRecords {
    fn from(late: &sluice_core::LateCount) -> Self {
        Self {
            window: late.window.clone(),
            topic: late.topic.to_string(),
            partition: late.partition,
            count: late.count,
        }
    }
}

impl BatchRecord {
    /// A record of batch `id` at `time_ms` with no ranges and zero
    /// counts and durations; fill the public fields in afterwards.
    pub fn new(id: u64, time_ms: i64) -> Self {
        Self {
            id,
            time_ms,
            ranges: Vec::new(),
            records: 0,
            records_fetched: None,
            processing_ms: 0,
            processing_us: 0,
            scheduling_delay_ms: 0,
            rate_limit: None,
            dead_letters: 0,
            late_records: Vec::new(),
            control: Vec::new(),
            min_timestamp_ms: None,
            max_timestamp_ms: None,
            processed_at_ms: None,
        }
    }

    /// The batch's largest end-to-end latency in ms: from its oldest
    /// record's Kafka timestamp to the end of its processing
    /// ([`processing_end_ms`](Self::processing_end_ms); the commit follows
    /// within milliseconds). Zero for a timestamp after that; `None` when
    /// no record had a timestamp.
    pub fn max_latency_ms(&self) -> Option<i64> {
        let end = self.processing_end_ms();
        self.min_timestamp_ms
            .map(|oldest| end.saturating_sub(oldest).max(0))
    }

    /// When the batch's processing ended, in ms since the Unix epoch:
    /// [`processed_at_ms`](Self::processed_at_ms) when kept, else batch
    /// time + scheduling delay + processing (which misses the outage
    /// before a batch redone after a restart).
    pub fn processing_end_ms(&self) -> i64 {
        self.processed_at_ms.unwrap_or_else(|| {
            self.time_ms
                .saturating_add(self.scheduling_delay_ms as i64)
                .saturating_add(self.processing_ms as i64)
        })
    }

    /// When the batch's processing (its planning included) started, in ms
    /// since the Unix epoch: [`processing_end_ms`](Self::processing_end_ms)
    /// less the processing time.
    pub fn processing_start_ms(&self) -> i64 {
        let processing_ms = if self.processing_us > 0 {
            (self.processing_us / 1000) as i64
        } else {
            self.processing_ms as i64
        };
        self.processing_end_ms().saturating_sub(processing_ms)
    }
}

/// What one batch read from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RangeRecord {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// First offset of the range (inclusive).
    pub from: i64,
    /// End of the range (exclusive).
    pub until: i64,
    /// Records actually read.
    #[serde(default)]
    pub records: u64,
    /// Offsets a data-loss reset passed over before this range: with
    /// [`ResetRecord::kind`] `below_log_start`, the offsets deleted before the
    /// job read them (`log start - stored`); with `past_latest`, how far the
    /// stored position was past the latest offset (`stored - latest`). 0 when
    /// the partition was not reset. Offsets inside the range that hold no
    /// record (compaction, transaction markers) are `until - from - records`.
    #[serde(default)]
    pub skipped_offsets: u64,
    /// The data-loss reset that moved this partition's position to `from`,
    /// if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetRecord>,
}

/// A position moved by a data-loss reset (`DataLossPolicy::ResetToEarliest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResetRecord {
    /// Why the position was reset.
    pub kind: ResetRecordKind,
    /// The position stored in the checkpoint before the reset.
    pub stored: i64,
}

impl ResetRecord {
    /// A reset of `kind` from the stored position `stored`.
    pub fn new(kind: ResetRecordKind, stored: i64) -> Self {
        Self { kind, stored }
    }
}

/// Why a position was reset, as stored in the batch history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResetRecordKind {
    /// The stored offset was below the log start (records deleted unread).
    BelowLogStart,
    /// The stored offset was past the latest offset (topic recreated or
    /// truncated).
    PastLatest,
}

impl RangeRecord {
    /// Records that `records` records were read from `range`, with no reset.
    pub fn from_range(range: &OffsetRange, records: u64) -> Self {
        Self {
            topic: range.topic.to_string(),
            partition: range.partition,
            from: range.from,
            until: range.until,
            records,
            skipped_offsets: 0,
            reset: None,
        }
    }

    /// The same record, noting that a data-loss `reset` passed over
    /// `skipped_offsets` offsets before the range.
    pub fn with_reset(mut self, reset: ResetRecord, skipped_offsets: u64) -> Self {
        self.reset = Some(reset);
        self.skipped_offsets = skipped_offsets;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::TopicPartition;

    #[test]
    fn round_trips_through_json() {
        let mut record = BatchRecord::new(7, 1_700_000_000_000);
        let range = OffsetRange::new(&TopicPartition::new("t", 3), 10, 20);
        record.ranges.push(
            RangeRecord::from_range(&range, 9)
                .with_reset(ResetRecord::new(ResetRecordKind::BelowLogStart, 4), 6),
        );
        record.records = 9;
        record.records_fetched = Some(18);
        record.rate_limit = Some("max 100/s per partition".into());
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(
            serde_json::from_slice::<BatchRecord>(&json).unwrap(),
            record
        );
    }

    #[test]
    fn reads_records_with_missing_and_unknown_fields() {
        let json = r#"{"id":3,"time_ms":5,"added_later":true,
                       "ranges":[{"topic":"t","partition":0,"from":1,"until":2}]}"#;
        let record: BatchRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.id, 3);
        assert_eq!(record.rate_limit, None);
        assert_eq!(record.records_fetched, None);
        // Unknown, not left out, when shown again (`sluice batches --json`,
        // `/api/batches`).
        let shown = serde_json::to_value(&record).unwrap();
        assert!(shown["records_fetched"].is_null(), "{shown}");
        assert!(shown.as_object().unwrap().contains_key("records_fetched"));
        assert_eq!(record.ranges[0].skipped_offsets, 0);
        assert_eq!(record.ranges[0].reset, None);
    }

    #[test]
    fn a_reset_is_stored_with_its_kind_and_count() {
        let range = OffsetRange::new(&TopicPartition::new("t", 0), 0, 300);
        let record = RangeRecord::from_range(&range, 300)
            .with_reset(ResetRecord::new(ResetRecordKind::PastLatest, 500), 200);
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            json.contains(r#""skipped_offsets":200,"reset":{"kind":"past_latest","stored":500}"#),
            "{json}"
        );
    }
}
