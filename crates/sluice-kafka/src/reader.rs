//! Reading one offset range per source task, with one cached consumer per
//! partition.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_core::{InputReader, OffsetRange, Record, TopicPartition};

use crate::error::is_transient_code;
use crate::{Error, Result};

/// Reads offset ranges for source tasks: Spark's cached Kafka consumers.
///
/// Keeps one consumer per partition, assigned to that partition alone and
/// reused across batches: a range that continues where the previous one of
/// its partition ended is read without seeking. Reads of different
/// partitions run in parallel; reads of one partition are serialised.
///
/// A read returns exactly the records with offsets in `[from, until)`, in
/// order, and the same records every time it is repeated. It ends when the
/// record at `until - 1` (or a later one) arrives, or when the consumer
/// reports the end of the partition after being positioned for this read —
/// which is how ranges ending on a transaction marker or a compacted gap
/// finish. Offsets below the log start fail the read: consumers are created
/// with `auto.offset.reset=error`.
///
/// Every consumer prefetches (librdkafka's `queued.max.messages.kbytes`,
/// 64 MiB by default); with many partitions per process, lower it through
/// [`KafkaSourceBuilder::set`](crate::KafkaSourceBuilder::set).
pub struct KafkaReader {
    config: ClientConfig,
    poll_timeout: Duration,
    partitions: Mutex<HashMap<TopicPartition, Arc<Mutex<PartitionReader>>>>,
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
            config,
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

    fn slot(&self, tp: TopicPartition) -> Arc<Mutex<PartitionReader>> {
        lock(&self.partitions)
            .entry(tp)
            .or_insert_with_key(|tp| Arc::new(Mutex::new(PartitionReader::new(tp.clone()))))
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
        reader
            .read(&self.config, range, self.poll_timeout)
            .map_err(|e| sluice_core::Error::Read {
                range: range.clone(),
                source: Box::new(e),
            })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while it was held.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The consumer of one partition and where it stands.
struct PartitionReader {
    tp: TopicPartition,
    consumer: Option<BaseConsumer>,
    /// The offset the consumer continues at: every record below it was
    /// handed out or is not wanted. `None` until positioned, or after a
    /// failed read.
    next: Option<i64>,
    /// The first record at or after `next`, already taken from the consumer
    /// by a read that ended before it.
    stash: Option<Record>,
}

/// One poll, with the message already copied out of the consumer.
enum Polled {
    Nothing,
    Record(Record),
    /// A record below the offset wanted; never handed out.
    Stale(i64),
    Eof,
    Failed(KafkaError),
}

impl PartitionReader {
    fn new(tp: TopicPartition) -> Self {
        Self {
            tp,
            consumer: None,
            next: None,
            stash: None,
        }
    }

    fn forget(&mut self) {
        self.next = None;
        self.stash = None;
    }

    fn read(
        &mut self,
        config: &ClientConfig,
        range: &OffsetRange,
        timeout: Duration,
    ) -> Result<Vec<Record>> {
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        let result = self.fill(config, range, deadline, timeout, &mut records);
        match result {
            Ok(()) => {
                self.next = Some(range.until);
                tracing::trace!(range = %range, records = records.len(), "read range");
                Ok(records)
            }
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    fn fill(
        &mut self,
        config: &ClientConfig,
        range: &OffsetRange,
        deadline: Instant,
        timeout: Duration,
        records: &mut Vec<Record>,
    ) -> Result<()> {
        // An end-of-partition event is proof that the range is complete only
        // if it was raised after this read positioned the consumer: one
        // queued earlier may predate the records of this range.
        let mut positioned = false;
        if self.next != Some(range.from) {
            self.position(config, range.from)?;
            positioned = true;
        }
        if let Some(stash) = self.stash.take() {
            if stash.offset >= range.until {
                // Nothing between `from` and the stashed record: a gap.
                self.stash = Some(stash);
                return Ok(());
            }
            let last = stash.offset >= range.until - 1;
            records.push(stash);
            if last {
                return Ok(());
            }
        }
        loop {
            let want = records.last().map_or(range.from, |r| r.offset + 1);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::ReadTimeout {
                    topic: range.topic.to_string(),
                    partition: range.partition,
                    from: range.from,
                    until: range.until,
                    received: records.len(),
                    waiting_for: want,
                    timeout,
                });
            }
            let consumer = self.consumer.as_ref().expect("positioned above");
            let polled = match consumer.poll(remaining) {
                None => Polled::Nothing,
                Some(Ok(msg)) if msg.offset() < want => Polled::Stale(msg.offset()),
                Some(Ok(msg)) => Polled::Record(to_record(&range.topic, &msg)),
                Some(Err(KafkaError::PartitionEOF(_))) => Polled::Eof,
                Some(Err(e)) => Polled::Failed(e),
            };
            match polled {
                Polled::Nothing => {}
                Polled::Stale(offset) => {
                    tracing::trace!(partition = %self.tp, offset, want, "dropping record below the range");
                }
                Polled::Record(record) if record.offset >= range.until => {
                    // The consumer has moved past it: keep it for the next range.
                    self.stash = Some(record);
                    return Ok(());
                }
                Polled::Record(record) => {
                    let last = record.offset >= range.until - 1;
                    records.push(record);
                    if last {
                        return Ok(());
                    }
                }
                Polled::Eof if positioned => {
                    // Raised at the end offset of a fetch made after this
                    // read positioned the consumer, hence after the range was
                    // planned: everything below `until` was delivered —
                    // unless the range was planned past the end.
                    let (_, latest) = self
                        .consumer
                        .as_ref()
                        .expect("positioned above")
                        .fetch_watermarks(&self.tp.topic, self.tp.partition, remaining)
                        .map_err(|e| {
                            Error::kafka(format!("fetching the offsets of {}", self.tp), e)
                        })?;
                    if latest >= range.until {
                        return Ok(());
                    }
                    tracing::debug!(
                        partition = %self.tp, latest, until = range.until,
                        "range ends past the end of the partition; waiting for more records"
                    );
                }
                Polled::Eof => {
                    tracing::debug!(
                        partition = %self.tp, want, until = range.until,
                        "end of partition before the range was complete; repositioning to confirm"
                    );
                    self.position(config, want)?;
                    positioned = true;
                }
                Polled::Failed(e) if e.rdkafka_error_code().is_some_and(is_transient_code) => {
                    tracing::warn!(partition = %self.tp, error = %e, "transient Kafka error while reading; still waiting");
                }
                Polled::Failed(e) => {
                    return Err(Error::kafka(format!("reading {range}"), e));
                }
            }
        }
    }

    /// Makes the consumer deliver from `offset` on, creating it if needed.
    fn position(&mut self, config: &ClientConfig, offset: i64) -> Result<()> {
        self.forget();
        let consumer = match &mut self.consumer {
            Some(consumer) => consumer,
            slot @ None => {
                let consumer: BaseConsumer = config.create().map_err(|e| {
                    Error::kafka(format!("creating the consumer of {}", self.tp), e)
                })?;
                tracing::debug!(partition = %self.tp, "created partition consumer");
                slot.insert(consumer)
            }
        };
        let mut tpl = TopicPartitionList::with_capacity(1);
        let context = || format!("positioning the consumer of {} at offset {offset}", self.tp);
        tpl.add_partition_offset(&self.tp.topic, self.tp.partition, Offset::Offset(offset))
            .map_err(|e| Error::kafka(context(), e))?;
        // Re-assigning restarts fetching under a new version: librdkafka
        // drops everything fetched for the old position, events included.
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(context(), e))?;
        tracing::debug!(partition = %self.tp, offset, "positioned partition consumer");
        Ok(())
    }
}

fn to_record(topic: &Arc<str>, msg: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: topic.clone(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers: msg
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
