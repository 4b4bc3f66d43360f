//! What the driver publishes after each batch for the HTTP endpoint: a
//! snapshot the handlers read, the metrics, and the control requests the
//! driver takes between batches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_checkpoint::{BatchRecord, FamilyStats};
use sluice_core::{PartitionOffsets, RateLimits, TopicPartition};

use super::control::{now_ms, Control};
use super::metrics::Metrics;
use crate::listener::BatchCompleted;

/// Batches the endpoint keeps (Spark's `spark.streaming.ui.retainedBatches`
/// default); older ones are in the checkpoint's batch history.
pub(crate) const RETAINED_BATCHES: usize = 1000;

/// Shared by the driver (writes) and the HTTP handlers (read).
pub(crate) struct Monitor {
    pub(crate) metrics: Metrics,
    pub(crate) control: Control,
    /// A stopped job's checkpoint opened by `sluice ui`: nothing to control.
    pub(crate) history: bool,
    snapshot: Mutex<Snapshot>,
    started: Instant,
}

/// Status of the job as the endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "error")]
pub(crate) enum Status {
    Starting,
    Running,
    Paused,
    Stopped,
    Failed(String),
    /// Read from a checkpoint (`sluice ui`): whether a job runs on it is
    /// not known.
    Checkpoint,
}

impl Status {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Failed(_) => "failed",
            Status::Checkpoint => "checkpoint",
        }
    }
}

/// The job as of its last committed batch.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) app_id: String,
    pub(crate) started_ms: i64,
    pub(crate) batch_interval: Duration,
    pub(crate) status: Status,
    /// Backpressure's latest estimate, records per second.
    pub(crate) estimate: Option<f64>,
    pub(crate) batches_committed: u64,
    /// `None` when not known: a checkpoint whose history no longer holds
    /// its first batches.
    pub(crate) records_read: Option<u64>,
    /// Oldest first.
    pub(crate) batches: VecDeque<BatchView>,
    /// When the processing of the last batch published started, ms since
    /// the Unix epoch.
    pub(crate) last_start_ms: Option<i64>,
    pub(crate) partitions: Vec<PartitionView>,
    pub(crate) token_required: bool,
}

/// One committed batch: its record as stored, with precise durations.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchView {
    #[serde(flatten)]
    pub(crate) record: BatchRecord,
    pub(crate) processing_seconds: f64,
    pub(crate) scheduling_delay_seconds: f64,
    /// Scheduling delay plus processing.
    pub(crate) total_delay_seconds: f64,
    /// `None` when not known (a checkpoint's history does not keep it).
    pub(crate) commit_seconds: Option<f64>,
    /// Records read per second since the previous batch started, as
    /// Structured Streaming's input rows per second: how fast records were
    /// taken in. `None` for the first batch of a run (or of a history).
    pub(crate) input_rate: Option<f64>,
    /// Records read per second of processing: how fast the batch went
    /// through them.
    pub(crate) processing_rate: f64,
    pub(crate) committed_ms: i64,
    /// From the oldest record's Kafka timestamp to the commit; `None` when
    /// no record had a timestamp.
    pub(crate) max_latency_seconds: Option<f64>,
}

/// A partition of the job's input, as of the last planning and commit.
///
/// The broker's figures (`log_start`, `latest`, `lag`) are `None` when no
/// broker was asked: a stopped job's checkpoint served by `sluice ui`. They
/// are then unknown, not zero, and serialize as `null`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionView {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) log_start: Option<i64>,
    pub(crate) latest: Option<i64>,
    /// The job's next offset (where the next batch starts).
    pub(crate) position: i64,
    /// `latest - position`.
    pub(crate) lag: Option<i64>,
}

impl Monitor {
    pub(crate) fn new(
        app_id: &str,
        batch_interval: Duration,
        limits: RateLimits,
        token_required: bool,
    ) -> Self {
        Self {
            metrics: Metrics::new(app_id),
            control: Control::new(limits),
            history: false,
            snapshot: Mutex::new(Snapshot {
                app_id: app_id.to_owned(),
                started_ms: now_ms(),
                batch_interval,
                status: Status::Starting,
                estimate: None,
                batches_committed: 0,
                records_read: Some(0),
                batches: VecDeque::new(),
                last_start_ms: None,
                partitions: Vec::new(),
                token_required,
            }),
            started: Instant::now(),
        }
    }

    /// A stopped job as its checkpoint records it: its last batches (up to
    /// [`RETAINED_BATCHES`], oldest first) and its committed next offsets.
    /// The batch interval is the shortest gap between batch times; the
    /// partitions' log start, latest offset and lag are not known without a
    /// broker, so they are `None` (shown as unknown), never made up from the
    /// committed position.
    pub(crate) fn from_history(
        app_id: &str,
        records: Vec<BatchRecord>,
        positions: &BTreeMap<TopicPartition, i64>,
    ) -> Self {
        let interval = records
            .windows(2)
            .map(|pair| pair[1].time_ms - pair[0].time_ms)
            .filter(|gap| *gap > 0)
            .min()
            .map_or(Duration::ZERO, |ms| Duration::from_millis(ms as u64));
        let mut monitor = Self::new(app_id, interval, RateLimits::new(), false);
        monitor.history = true;
        let skip = records.len().saturating_sub(RETAINED_BATCHES);
        monitor.write(|s| {
            s.status = Status::Checkpoint;
            // Batch ids count the committed batches from 0; the history
            // may have dropped the oldest records, and their counts.
            s.batches_committed = records.last().map_or(0, |r| r.id + 1);
            s.records_read = (records.first().is_none_or(|r| r.id == 0))
                .then(|| records.iter().map(|r| r.records).sum());
            let mut previous_start = None;
            s.batches = records
                .into_iter()
                .skip(skip)
                .map(|record| {
                    let start = record.processing_start_ms();
                    let input_rate = input_rate(record.records, previous_start, start);
                    previous_start = Some(start);
                    // Whole milliseconds in records written before the
                    // µs were kept: a rate from those is too high.
                    let processing = if record.processing_us > 0 {
                        record.processing_us as f64 / 1e6
                    } else {
                        record.processing_ms as f64 / 1e3
                    };
                    let delay = record.scheduling_delay_ms as f64 / 1e3;
                    BatchView {
                        processing_seconds: processing,
                        scheduling_delay_seconds: delay,
                        total_delay_seconds: processing + delay,
                        // Not in the batch record.
                        commit_seconds: None,
                        input_rate,
                        processing_rate: rate(record.records, processing),
                        committed_ms: record.processing_end_ms(),
                        // The batch record does not keep the commit's time:
                        // to the end of processing.
                        max_latency_seconds: record.max_latency_ms().map(|ms| ms as f64 / 1e3),
                        record,
                    }
                })
                .collect();
            s.partitions = positions
                .iter()
                .map(|(tp, &position)| PartitionView {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    log_start: None,
                    latest: None,
                    position,
                    lag: None,
                })
                .collect();
        });
        monitor
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy for one request; the lock is held only while copying.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn write(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.metrics.set_paused(status == Status::Paused);
        self.write(|s| s.status = status);
    }

    /// Publishes the partitions' offsets fetched between batches (while
    /// paused), with the positions of the last commit.
    pub(crate) fn offsets_fetched(&self, lags: &[(PartitionOffsets, i64)]) {
        self.metrics.set_lags(lags);
        let partitions = partition_views(lags);
        self.write(|s| s.partitions = partitions);
    }

    /// Publishes a committed batch: `record` as committed, `lags` the
    /// partitions' offsets of the last planning with the positions after
    /// the commit, `states` the checkpoint's family sizes after it.
    pub(crate) fn batch_committed(
        &self,
        batch: &BatchCompleted,
        record: BatchRecord,
        lags: &[(PartitionOffsets, i64)],
        estimate: Option<f64>,
        states: &[FamilyStats],
    ) {
        self.metrics.batch_committed(batch);
        self.metrics.set_lags(lags);
        self.metrics.set_states(states);
        let processing = batch.processing.as_secs_f64();
        let start_ms = record.processing_start_ms();
        let view = BatchView {
            processing_seconds: processing,
            scheduling_delay_seconds: batch.scheduling_delay.as_secs_f64(),
            total_delay_seconds: (batch.scheduling_delay + batch.processing).as_secs_f64(),
            commit_seconds: Some(batch.commit.as_secs_f64()),
            input_rate: input_rate(batch.records, self.read(|s| s.last_start_ms), start_ms),
            processing_rate: rate(batch.records, processing),
            committed_ms: now_ms(),
            max_latency_seconds: batch.max_latency().map(|latency| latency.as_secs_f64()),
            record,
        };
        let partitions = partition_views(lags);
        self.write(|s| {
            if s.status == Status::Starting {
                s.status = Status::Running;
            }
            s.batches_committed += 1;
            s.records_read = Some(s.records_read.unwrap_or(0) + batch.records);
            s.estimate = estimate;
            if s.batches.len() == RETAINED_BATCHES {
                s.batches.pop_front();
            }
            s.batches.push_back(view);
            s.last_start_ms = Some(start_ms);
            s.partitions = partitions;
        });
    }
}

/// `records` per second from the start of the previous batch's processing
/// to `start_ms`; `None` without a previous batch or time between them.
fn input_rate(records: u64, previous_start_ms: Option<i64>, start_ms: i64) -> Option<f64> {
    let gap_ms = start_ms - previous_start_ms?;
    (gap_ms > 0).then(|| records as f64 / (gap_ms as f64 / 1e3))
}

/// `records` per second of `seconds`; 0 for no time.
fn rate(records: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        records as f64 / seconds
    } else {
        0.0
    }
}

fn partition_views(lags: &[(PartitionOffsets, i64)]) -> Vec<PartitionView> {
    lags.iter()
        .map(|(offsets, position)| PartitionView {
            topic: offsets.tp.topic.to_string(),
            partition: offsets.tp.partition,
            log_start: Some(offsets.log_start),
            latest: Some(offsets.latest),
            position: *position,
            lag: Some((offsets.latest - position).max(0)),
        })
        .collect()
}
