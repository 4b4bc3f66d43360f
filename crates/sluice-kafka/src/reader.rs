//! The source tasks' reader: one cached consumer per partition.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_core::{InputReader, OffsetRange, Record, TopicPartition};

use crate::consumer::PartitionConsumer;
use crate::partition::PartitionReader;

type Slot = Arc<Mutex<PartitionReader<PartitionConsumer>>>;

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
/// through [`KafkaSourceBuilder::set`](crate::KafkaSourceBuilder::set).
pub struct KafkaReader {
    config: Arc<ClientConfig>,
    poll_timeout: Duration,
    partitions: Mutex<HashMap<TopicPartition, Slot>>,
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader")
            .field("poll_timeout", &self.poll_timeout)
            .field("cached_consumers", &self.cached_consumers())
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    pub(crate) fn new(config: ClientConfig, poll_timeout: Duration) -> Self {
        Self {
            config: Arc::new(config),
            poll_timeout,
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// Number of partitions that have a cached consumer.
    pub fn cached_consumers(&self) -> usize {
        lock(&self.partitions).len()
    }

    /// Closes the consumers of partitions not in `keep` (partitions that
    /// were removed or are no longer subscribed).
    pub fn retain_partitions(&self, keep: &[TopicPartition]) {
        lock(&self.partitions).retain(|tp, _| keep.contains(tp));
    }

    fn slot(&self, tp: TopicPartition) -> Slot {
        lock(&self.partitions)
            .entry(tp)
            .or_insert_with_key(|tp| {
                let consumer = PartitionConsumer::new(tp.clone(), Arc::clone(&self.config));
                Arc::new(Mutex::new(PartitionReader::new(consumer)))
            })
            .clone()
    }
}

impl InputReader for KafkaReader {
    fn read(&self, range: &OffsetRange) -> sluice_core::Result<Vec<Record>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let slot = self.slot(range.topic_partition());
        let mut reader = slot.lock().unwrap_or_else(|poisoned| {
            // A read panicked half-way: where the consumer stands is unknown.
            let mut reader = poisoned.into_inner();
            reader.forget();
            reader
        });
        slot.clear_poison();
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while it was held.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
