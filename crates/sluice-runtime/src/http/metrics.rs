//! The job's Prometheus metrics. The driver updates them after each batch
//! (atomic counters, short-lived locks); `/metrics` only encodes them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use sluice_checkpoint::FamilyStats;
use sluice_core::state::STATE_FAMILY_PREFIX;
use sluice_core::PartitionOffsets;

use crate::listener::BatchCompleted;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WindowLabels {
    window: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RecordLabels {
    /// `oldest` or `newest`: whose latency.
    record: &'static str,
}

/// Every metric of one job, registered once.
pub(crate) struct Metrics {
    registry: Registry,
    batches_committed: Counter,
    batches_failed: Counter,
    records_read: Counter,
    records_fetched: Counter,
    dead_letters: Counter,
    late_records: Family<WindowLabels, Counter>,
    processing: Histogram,
    planning: Histogram,
    scheduling_delay: Histogram,
    commit: Histogram,
    latency: Histogram,
    last_latency: Family<RecordLabels, Gauge<f64, AtomicU64>>,
    last_commit: Gauge<f64, AtomicU64>,
    lag: Family<PartitionLabels, Gauge>,
    rate_limit: Family<ReasonLabels, Gauge<f64, AtomicU64>>,
    paused: Gauge,
    state_keys: Family<StateLabels, Gauge>,
    state_bytes: Family<StateLabels, Gauge>,
    sink_commit: Family<SinkLabels, Histogram, fn() -> Histogram>,
    sink_aborts: Family<SinkLabels, Counter>,
}

/// 1 ms to about 65 s, doubling.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// 1 ms to about 4.7 h, doubling: a job catching up reads records hours old.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

impl Metrics {
    pub(crate) fn new(app_id: &str) -> Self {
        let mut registry = Registry::default();
        let batches_committed = Counter::default();
        let batches_failed = Counter::default();
        let records_read = Counter::default();
        let records_fetched = Counter::default();
        let dead_letters = Counter::default();
        let late_records = Family::<WindowLabels, Counter>::default();
        let processing = seconds_buckets();
        let planning = seconds_buckets();
        let scheduling_delay = seconds_buckets();
        let commit = seconds_buckets();
        let latency = latency_buckets();
        let last_latency = Family::<RecordLabels, Gauge<f64, AtomicU64>>::default();
        let last_commit = Gauge::<f64, AtomicU64>::default();
        let lag = Family::<PartitionLabels, Gauge>::default();
        let rate_limit = Family::<ReasonLabels, Gauge<f64, AtomicU64>>::default();
        let paused = Gauge::default();
        let state_keys = Family::<StateLabels, Gauge>::default();
        let state_bytes = Family::<StateLabels, Gauge>::default();
        let sink_commit: Family<SinkLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_buckets);
        let sink_aborts = Family::<SinkLabels, Counter>::default();
        registry.register(
            "sluice_job",
            "The job this process runs",
            Info::new(vec![("app_id".to_owned(), app_id.to_owned())]),
        );
        registry.register(
            "sluice_batches_committed",
            "Batches computed and committed to the checkpoint",
            batches_committed.clone(),
        );
        registry.register(
            "sluice_batches_failed",
            "Batch attempts that failed; nothing of them was committed",
            batches_failed.clone(),
        );
        registry.register(
            "sluice_records_read",
            "Kafka records read by committed batches",
            records_read.clone(),
        );
        registry.register(
            "sluice_records_fetched",
            "Kafka records committed batches took from the broker, once per read, in the \
             computation that committed: above sluice_records_read when outputs read part of a \
             batch again or a task was retried",
            records_fetched.clone(),
        );
        registry.register(
            "sluice_dead_letters",
            "Records set aside as dead letters by committed batches",
            dead_letters.clone(),
        );
        registry.register(
            "sluice_late_records",
            "Values behind an event-time window's watermark, per window",
            late_records.clone(),
        );
        registry.register_with_unit(
            "sluice_batch_processing",
            "Time from the start of a batch to the end of its outputs",
            Unit::Seconds,
            processing.clone(),
        );
        registry.register_with_unit(
            "sluice_batch_planning",
            "The part of a batch's processing spent planning its offset ranges against the broker",
            Unit::Seconds,
            planning.clone(),
        );
        registry.register_with_unit(
            "sluice_batch_scheduling_delay",
            "How late a batch started after its scheduled time",
            Unit::Seconds,
            scheduling_delay.clone(),
        );
        registry.register_with_unit(
            "sluice_checkpoint_commit",
            "Time the atomic checkpoint commit of a batch took",
            Unit::Seconds,
            commit.clone(),
        );
        registry.register_with_unit(
            "sluice_batch_end_to_end_latency",
            "Per committed batch, the time from the Kafka timestamp of its oldest record to its checkpoint commit: the largest end-to-end latency of the batch's records",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register_with_unit(
            "sluice_last_batch_end_to_end_latency",
            "The end-to-end latency of the oldest and of the newest record of the last committed batch; absent after a batch without timestamped records",
            Unit::Seconds,
            last_latency.clone(),
        );
        registry.register_with_unit(
            "sluice_last_commit_timestamp",
            "When the last batch was committed, in seconds since the Unix epoch: time() minus it is how long the job has not committed",
            Unit::Seconds,
            last_commit.clone(),
        );
        registry.register(
            "sluice_partition_lag_records",
            "Records between a partition's latest offset (as of the last planning) and the job's next position",
            lag.clone(),
        );
        registry.register(
            "sluice_rate_limit_records_per_second",
            "The tightest rate limit of the last batch, by what set it; absent when unlimited",
            rate_limit.clone(),
        );
        registry.register(
            "sluice_paused",
            "1 while intake is paused through the control API",
            paused.clone(),
        );
        registry.register(
            "sluice_state_keys",
            "Keys of a stateful operator's state, as RocksDB estimates them after the last commit",
            state_keys.clone(),
        );
        registry.register_with_unit(
            "sluice_state",
            "Size of a stateful operator's state after the last commit: table files on disk plus memtables",
            Unit::Bytes,
            state_bytes.clone(),
        );
        registry.register_with_unit(
            "sluice_sink_commit",
            "Time an outside sink's commit of a batch took (a Kafka sink: its deliveries and transaction commit), per sink",
            Unit::Seconds,
            sink_commit.clone(),
        );
        registry.register(
            "sluice_sink_aborts",
            "Batch attempts whose output an outside sink aborted (the batch failed before its checkpoint commit), per sink",
            sink_aborts.clone(),
        );
        Self {
            registry,
            batches_committed,
            batches_failed,
            records_read,
            records_fetched,
            dead_letters,
            late_records,
            processing,
            planning,
            scheduling_delay,
            commit,
            latency,
            last_latency,
            last_commit,
            lag,
            rate_limit,
            paused,
            state_keys,
            state_bytes,
            sink_commit,
            sink_aborts,
        }
    }

    pub(crate) fn sink_committed(&self, sink: &str, took: std::time::Duration) {
        self.sink_commit
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn sink_aborted(&self, sink: &str) {
        self.sink_aborts
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc();
    }

    pub(crate) fn batch_failed(&self) {
        self.batches_failed.inc();
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }

    pub(crate) fn batch_committed(&self, batch: &BatchCompleted) {
        self.batches_committed.inc();
        self.records_read.inc_by(batch.records);
        self.records_fetched.inc_by(batch.records_fetched);
        self.dead_letters.inc_by(batch.dead_letters);
        for late in &batch.late_records {
            self.late_records
                .get_or_create(&WindowLabels {
                    window: late.window.clone(),
                })
                .inc_by(late.count);
        }
        self.processing.observe(batch.processing.as_secs_f64());
        self.planning.observe(batch.planning.as_secs_f64());
        self.scheduling_delay
            .observe(batch.scheduling_delay.as_secs_f64());
        self.commit.observe(batch.commit.as_secs_f64());
        // The gauges follow the last batch: a batch without timestamped
        // records (an idle job) clears them, so a caught-up backlog does
        // not leave its age behind.
        self.last_latency.clear();
        if let (Some(oldest), Some(newest)) = (batch.max_latency(), batch.min_latency()) {
            self.latency.observe(oldest.as_secs_f64());
            for (record, latency) in [("oldest", oldest), ("newest", newest)] {
                self.last_latency
                    .get_or_create(&RecordLabels { record })
                    .set(latency.as_secs_f64());
            }
        }
        let committed = batch
            .committed_at
            .duration_since(std::time::SystemTime::UNIX_EPOCH);
        self.last_commit
            .set(committed.map_or(0.0, |since| since.as_secs_f64()));
        self.rate_limit.clear();
        if let Some(limit) = batch.info.rate_limit {
            self.rate_limit
                .get_or_create(&ReasonLabels {
                    reason: reason_label(limit.reason),
                })
                .set(limit.records_per_second);
        }
    }

    /// Lags from the offsets of the last planning and the positions after
    /// the last commit.
    pub(crate) fn set_lags(&self, lags: &[(PartitionOffsets, i64)]) {
        for (offsets, position) in lags {
            self.lag
                .get_or_create(&PartitionLabels {
                    topic: offsets.tp.topic.to_string(),
                    partition: offsets.tp.partition.to_string(),
                })
                .set((offsets.latest - position).max(0));
        }
    }

    /// The size of each stateful operator's state, from its family's
    /// estimates.
    pub(crate) fn set_states(&self, families: &[FamilyStats]) {
        for family in families {
            let Some(state) = family.name.strip_prefix(STATE_FAMILY_PREFIX) else {
                continue;
            };
            let labels = StateLabels {
                state: state.to_owned(),
            };
            self.state_keys
                .get_or_create(&labels)
                .set(i64::try_from(family.estimated_keys).unwrap_or(i64::MAX));
            let bytes = family.sst_bytes.saturating_add(family.memtable_bytes);
            self.state_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format (OpenMetrics).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `max_rate_per_partition`, `max_rate`, `backpressure`, `initial_rate`.
pub(crate) fn reason_label(reason: sluice_core::RateReason) -> String {
    use sluice_core::RateReason;
    match reason {
        RateReason::MaxRatePerPartition => "max_rate_per_partition",
        RateReason::MaxRate => "max_rate",
        RateReason::Backpressure => "backpressure",
        RateReason::InitialRate => "initial_rate",
        _ => "other",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use sluice_core::BatchInfo;

    use super::*;

    fn batch(id: u64, timestamps: Option<(i64, i64)>, committed_ms: u64) -> BatchCompleted {
        BatchCompleted {
            info: BatchInfo::new(id, SystemTime::UNIX_EPOCH, Vec::new()),
            records_per_range: Vec::new(),
            records: u64::from(timestamps.is_some()),
            records_fetched: u64::from(timestamps.is_some()),
            processing: Duration::ZERO,
            planning: Duration::ZERO,
            scheduling_delay: Duration::ZERO,
            commit: Duration::ZERO,
            new_partitions: Vec::new(),
            resets: Vec::new(),
            dead_letters: 0,
            late_records: Vec::new(),
            min_timestamp: timestamps.map(|(min, _)| min),
            max_timestamp: timestamps.map(|(_, max)| max),
            committed_at: SystemTime::UNIX_EPOCH + Duration::from_millis(committed_ms),
        }
    }

    fn sample(metrics: &Metrics, name: &str) -> Option<f64> {
        metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_last_batch_latency_gauges_follow_the_last_batch_and_clear_when_it_had_no_timestamps() {
        let metrics = Metrics::new("job");
        let oldest = "sluice_last_batch_end_to_end_latency_seconds{record=\"oldest\"}";
        let newest = "sluice_last_batch_end_to_end_latency_seconds{record=\"newest\"}";
        // Records stamped 3600 s and 1 s before a commit at 10 000 s.
        metrics.batch_committed(&batch(0, Some((6_400_000, 9_999_000)), 10_000_000));
        assert_eq!(sample(&metrics, oldest), Some(3_600.0));
        assert_eq!(sample(&metrics, newest), Some(1.0));
        assert_eq!(
            sample(&metrics, "sluice_last_commit_timestamp_seconds"),
            Some(10_000.0)
        );
        // An idle batch: no age left behind; the commit time moves on.
        metrics.batch_committed(&batch(1, None, 10_001_000));
        assert_eq!(sample(&metrics, oldest), None);
        assert_eq!(sample(&metrics, newest), None);
        assert_eq!(
            sample(&metrics, "sluice_last_commit_timestamp_seconds"),
            Some(10_001.0)
        );
        assert_eq!(
            sample(&metrics, "sluice_batch_end_to_end_latency_seconds_count"),
            Some(1.0),
            "observed for the batch with timestamps only"
        );
    }
}
