//! The source tasks' reader: one cached consumer per partition.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_core::{InputReader, OffsetRange, Record, TopicPartition};

use crate::consumer::PartitionConsumer;
use crate::lookup::Lookups;
use crate::partition::PartitionReader;

type Slot = Arc<Mutex<PartitionReader<PartitionConsumer>>>;

/// Threads that position (and on a first read, create) the consumers of a
/// batch's partitions at its start, when more than one needs it.
const PREPARE_THREADS: usize = 8;

/// Reads offset ranges for source tasks: Spark's cached Kafka consumers.
///
/// Keeps one consumer per partition, assigned to that partition alone and
/// reused across batches: a range that continues where the previous one of
/// its partition ended is read without seeking. Reads of different
/// partitions run in parallel; reads of one partition are serialised.
///
/// A read returns exactly the records with offsets in `[from, until)`, in
/// order, and the same records every time it is repeated. It ends when the
/// record at `until - 1` (or a later one, kept for the next range) arrives,
/// or when the consumer reports the end of the partition after being
/// positioned for this read — which is how ranges ending on a transaction
/// marker or a compacted gap finish. Offsets below the log start fail the
/// read: consumers are created with `auto.offset.reset=error`. Errors are
/// [`sluice_core::Error::OffsetOutOfRange`] for offsets the log no longer
/// holds, else [`sluice_core::Error::Read`], with a [`crate::Error`] as
/// source.
///
/// Every consumer prefetches (librdkafka's `queued.max.messages.kbytes`,
/// 8 MiB by default in sluice); with many partitions per process, lower it
/// through [`KafkaSourceBuilder::set`](crate::KafkaSourceBuilder::set). The
/// consumers of partitions that disappear are closed by
/// [`KafkaReader::retain_ranges`], which the driver calls after every
/// committed batch.
///
/// Records are looked up by offset ([`InputReader::read_back`], for dead
/// letters) on other consumers, shared by all partitions, that fetch little
/// and stop fetching once the lookup is done: the cached consumers keep
/// their position and what they prefetched for the next batch.
pub struct KafkaReader {
    config: Arc<ClientConfig>,
    poll_timeout: Duration,
    partitions: Mutex<HashMap<TopicPartition, Slot>>,
    /// Times a cached consumer was positioned (assigned at an offset).
    positions: Arc<AtomicU64>,
    lookups: Lookups,
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader")
            .field("poll_timeout", &self.poll_timeout)
            .field("cached_consumers", &self.cached_consumers())
            .field("idle_lookup_consumers", &self.lookups.idle())
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    pub(crate) fn new(config: ClientConfig, poll_timeout: Duration) -> Self {
        let lookups = Lookups::new(&config, poll_timeout);
        Self {
            config: Arc::new(config),
            poll_timeout,
            partitions: Mutex::new(HashMap::new()),
            positions: Arc::default(),
            lookups,
        }
    }

    /// Number of partitions that have a cached consumer.
    pub fn cached_consumers(&self) -> usize {
        lock(&self.partitions).len()
    }

    /// Closes the consumers of partitions not in `keep` (partitions that
    /// were removed or are no longer subscribed).
    pub fn retain_partitions(&self, keep: &[TopicPartition]) {
        let keep: HashSet<(&str, i32)> = keep.iter().map(|tp| (&*tp.topic, tp.partition)).collect();
        self.retain(&keep);
    }

    /// Closes the consumers of partitions that have no range in `ranges`,
    /// the ranges of a batch: every partition the source still has gets
    /// one, empty or not, so a partition without one has disappeared (its
    /// topic was deleted, or no longer matches the pattern). Its consumer
    /// and what it prefetched are freed; should the partition come back, its
    /// next read creates a consumer again.
    pub fn retain_ranges(&self, ranges: &[OffsetRange]) {
        let keep: HashSet<(&str, i32)> = ranges.iter().map(|r| (&*r.topic, r.partition)).collect();
        self.retain(&keep);
    }

    fn retain(&self, keep: &HashSet<(&str, i32)>) {
        let mut partitions = lock(&self.partitions);
        let before = partitions.len();
        partitions.retain(|tp, _| keep.contains(&(&*tp.topic, tp.partition)));
        if partitions.len() < before {
            tracing::info!(
                closed = before - partitions.len(),
                cached = partitions.len(),
                "closed the consumers of partitions that disappeared"
            );
        }
    }

    /// Times a cached consumer was positioned: once when it starts reading,
    /// and again whenever a read does not continue where the one before
    /// ended. For tests.
    #[doc(hidden)]
    pub fn positions(&self) -> u64 {
        self.positions.load(Ordering::Relaxed)
    }

    /// Records read back by [`InputReader::read_back`] so far. For tests.
    #[doc(hidden)]
    pub fn records_read_back(&self) -> u64 {
        self.lookups.records()
    }

    fn slot(&self, tp: TopicPartition) -> Slot {
        lock(&self.partitions)
            .entry(tp)
            .or_insert_with_key(|tp| {
                let consumer = PartitionConsumer::new(
                    tp.clone(),
                    Arc::clone(&self.config),
                    None,
                    Arc::clone(&self.positions),
                );
                Arc::new(Mutex::new(PartitionReader::new(consumer)))
            })
            .clone()
    }
}

impl InputReader for KafkaReader {
    /// Reads the runs on a lookup consumer, never on the partition's cached
    /// one.
    fn read_back(
        &self,
        runs: &[OffsetRange],
        each: &mut dyn FnMut(&OffsetRange, sluice_core::Result<Vec<Record>>),
    ) {
        self.lookups.read(runs, each);
    }

    /// Positions the consumer of each partition with records to read at
    /// its range's start (creating it on a first read), unless it continues
    /// there: every partition fetches while the first tasks run, not only
    /// once its own task starts. A consumer that cannot be positioned now
    /// is left to its read, which reports why.
    ///
    /// Creating a consumer takes a few milliseconds (its client threads), so
    /// when several need positioning, up to [`PREPARE_THREADS`] threads
    /// share them; a batch whose consumers all continue where their ranges
    /// start (a running job's) spawns none.
    fn prepare(&self, ranges: &[OffsetRange]) {
        let started = std::time::Instant::now();
        let pending: Vec<(&OffsetRange, Slot)> = ranges
            .iter()
            .filter(|range| !range.is_empty())
            .map(|range| (range, self.slot(range.topic_partition())))
            .filter(|(range, slot)| !lock_reader(slot).continues_at(range.from))
            .collect();
        let position = |(range, slot): &(&OffsetRange, Slot)| {
            if let Err(error) = lock_reader(slot).prepare(range) {
                tracing::debug!(range = %range, %error, "could not position a consumer ahead of its read");
            }
        };
        match pending.len() {
            0 => return,
            1 => position(&pending[0]),
            n => thread::scope(|s| {
                for share in pending.chunks(n.div_ceil(PREPARE_THREADS)) {
                    s.spawn(move || share.iter().for_each(position));
                }
            }),
        }
        tracing::debug!(
            positioned = pending.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "positioned partition consumers ahead of the batch's reads"
        );
    }

    fn read(&self, range: &OffsetRange) -> sluice_core::Result<Vec<Record>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let slot = self.slot(range.topic_partition());
        let mut reader = lock_reader(&slot);
        reader.read(range, self.poll_timeout).map_err(|e| match e {
            crate::Error::OffsetOutOfRange { .. } => sluice_core::Error::OffsetOutOfRange {
                range: range.clone(),
                source: Box::new(e),
            },
            e => sluice_core::Error::Read {
                range: range.clone(),
                source: Box::new(e),
            },
        })
    }
}

/// The reader of a slot; one whose read panicked half-way forgets where its
/// consumer stands.
fn lock_reader(slot: &Slot) -> MutexGuard<'_, PartitionReader<PartitionConsumer>> {
    let reader = slot.lock().unwrap_or_else(|poisoned| {
        let mut reader = poisoned.into_inner();
        reader.forget();
        reader
    });
    slot.clear_poison();
    reader
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while it was held.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
