//! Where a job's batches come from: the [`Source`] the driver plans every
//! batch through, the pure range planner ([`plan_ranges`], `plan.rs`) and
//! an in-memory source ([`MemorySource`], `memory.rs`).
//!
//! A source tells the driver which partitions there are and what their logs
//! hold; the driver decides what each batch reads (stored positions, rate
//! caps, the data-loss policy), stores that plan, and has the source's
//! [`InputReader`] read it on the worker pool. Offsets belong to the engine:
//! they are kept in the checkpoint with the batch's results, never in the
//! source.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{BatchInfo, InputReader, Result, TopicPartition};

mod memory;
mod plan;

pub use memory::MemorySource;
pub use plan::{
    plan_ranges, DataLossPolicy, OffsetReset, OutOfLog, PartitionOffsets, Plan, ResetKind,
};

/// The driver's side of a job's input: the partitions to read and what their
/// logs hold, where a new job starts, how a batch's ranges are planned, and
/// the reader the tasks read those ranges with. The Kafka input
/// (`sluice_kafka::KafkaInput`) and [`MemorySource`] implement it.
///
/// The driver owns the source on its own thread and calls it one batch at a
/// time:
///
/// 1. when the job starts, [`reader`](Source::reader), once;
/// 2. to plan each batch, [`partitions`](Source::partitions); on the job's
///    first planning (no batch ever committed),
///    [`start_positions`](Source::start_positions); then
///    [`plan`](Source::plan) with the stored positions. A batch redone from
///    its write-ahead plan after a restart is not planned again, unless a
///    read finds one of its ranges gone from the log
///    ([`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange)): then it
///    is planned again like a new batch, so the data-loss decision is taken
///    on fresh offsets;
/// 3. after the batch's checkpoint commit, [`committed`](Source::committed).
///
/// An error of step 2 for which [`Error::is_transient`](crate::Error::is_transient)
/// holds is retried with backoff (from 100 ms, doubling up to 5 s) until the
/// job's outage timeout has passed; any other error stops the job before
/// anything of the batch is stored.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::SystemTime;
/// use sluice_core::{BatchInfo, MemorySource, Source};
///
/// let mut source = MemorySource::new();
/// source.append("events", 0, ["a", "b", "c"]);
/// let offsets = source.partitions()?;
/// let positions = source.start_positions(&offsets)?;
/// let plan = source.plan(&positions, &offsets, None)?;
/// let records = source.reader().read(&plan.ranges[0])?;
/// assert_eq!(records.len(), 3);
/// // Once the batch is committed, its positions are stored.
/// source.committed(&BatchInfo::new(0, SystemTime::now(), plan.ranges.clone()));
/// assert_eq!(plan.next_positions(), BTreeMap::from([(offsets[0].tp.clone(), 3)]));
/// # Ok::<(), sluice_core::Error>(())
/// ```
pub trait Source: Send {
    /// Every partition to read now, sorted, with its log start and latest
    /// offset.
    ///
    /// Called before each batch is planned, so it is where new partitions
    /// are found; a source may answer from what it discovered a moment ago
    /// and only fetch the offsets again. A partition in the answer for the
    /// first time starts at its log start; a partition missing from it gets
    /// no range in the batch. Offsets come for every partition of the answer
    /// or not at all: a source that cannot tell some returns an error rather
    /// than a part of them.
    ///
    /// Errors are [`Error::Source`](crate::Error::Source), transient or not.
    fn partitions(&mut self) -> Result<Vec<PartitionOffsets>>;

    /// Where each partition of `partitions` (this planning's answer of
    /// [`partitions`](Source::partitions)) starts when the job starts for
    /// the first time, as the next offset to read.
    ///
    /// Called once in a job's life, on its first planning: once a batch has
    /// committed, stored positions always win, and partitions without one
    /// start at their log start. The default starts every partition at its
    /// log start.
    fn start_positions(
        &mut self,
        partitions: &[PartitionOffsets],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(partitions
            .iter()
            .map(|p| (p.tp.clone(), p.log_start))
            .collect())
    }

    /// What [`plan`](Source::plan) does with a stored position its log no
    /// longer holds. The default: [`DataLossPolicy::Fail`].
    fn on_data_loss(&self) -> DataLossPolicy {
        DataLossPolicy::Fail
    }

    /// The batch's ranges: one per partition of `partitions`, in their
    /// order, from the partition's position in `positions` (its log start
    /// when it has none) to its latest offset, or fewer offsets when `caps`
    /// (the rate limits' per-partition caps) limits the partition.
    ///
    /// Called for every batch planned, after
    /// [`partitions`](Source::partitions). A position outside its
    /// partition's log is decided by [`on_data_loss`](Source::on_data_loss):
    /// [`Error::DataLoss`](crate::Error::DataLoss) or
    /// [`Error::OffsetAhead`](crate::Error::OffsetAhead), or a reset to the
    /// log start recorded in [`Plan::resets`]. The default is
    /// [`plan_ranges`], a pure function; a source overrides it only if its
    /// offsets do not follow each other as a log's do.
    fn plan(
        &self,
        positions: &BTreeMap<TopicPartition, i64>,
        partitions: &[PartitionOffsets],
        caps: Option<&BTreeMap<TopicPartition, u64>>,
    ) -> Result<Plan> {
        plan_ranges(positions, partitions, caps, self.on_data_loss())
    }

    /// The reader source tasks read the planned ranges with. Called once,
    /// when the job starts; the reader serves every batch of the run (the
    /// Kafka reader keeps a consumer per partition across batches).
    fn reader(&self) -> Arc<dyn InputReader>;

    /// `batch` was committed to the checkpoint: its ranges are read and its
    /// next positions (every range's `until`) stored.
    ///
    /// Called on the driver after every committed batch, and only then: a
    /// batch that failed gets no call. This is where a source lets go of
    /// partitions the batch had no range for (they disappeared), and where
    /// it may tell its system how far the job read (Kafka mirrors the
    /// positions to the consumer group for lag tools). Best effort: the
    /// batch is committed, so a failure here is the source's to log. The
    /// default does nothing.
    fn committed(&mut self, batch: &BatchInfo) {
        let _ = batch;
    }
}
