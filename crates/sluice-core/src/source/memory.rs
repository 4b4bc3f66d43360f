//! [`MemorySource`]: a job's input held in memory, for tests and examples.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{DataLossPolicy, PartitionOffsets, Source};
use crate::{Error, InputReader, OffsetRange, Record, Result, TopicPartition};

/// A [`Source`] whose partitions live in memory and can grow while a job
/// reads them: records appended to a partition, partitions added, the start
/// of a log deleted as retention would.
///
/// A `MemorySource` is a handle: its clones share the same partitions, so a
/// test gives one to the job and keeps another to append to. Offsets are a
/// partition's record numbers, from 0; reads are deterministic, as the
/// engine needs: a range reads the same records however often it is read,
/// until [`delete_before`](Self::delete_before) deletes them.
///
/// The records live only as long as the process: a job restarted on a new
/// `MemorySource` resumes from the offsets in its checkpoint, so the new
/// source must hold at least those records again (or the job stops with an
/// offset-ahead error, unless
/// [`with_data_loss_policy`](Self::with_data_loss_policy) resets it).
///
/// From the `sluice` crate, import it as `sluice::source::MemorySource`
/// (with `sluice::source::Source`); the example below uses this crate's
/// own paths.
///
/// ```
/// use sluice_core::{MemorySource, Source};
///
/// let source = MemorySource::new();
/// source.append("events", 0, ["a", "b"]);
/// let mut job_side = source.clone();
/// source.append("events", 1, ["c"]); // a partition added later
/// let offsets = job_side.partitions()?;
/// assert_eq!(offsets.len(), 2);
/// assert_eq!((offsets[1].log_start, offsets[1].latest), (0, 1));
/// # Ok::<(), sluice_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct MemorySource {
    log: Arc<Log>,
    on_data_loss: DataLossPolicy,
}

#[derive(Default)]
struct Log {
    partitions: Mutex<BTreeMap<TopicPartition, Partition>>,
    /// Answers of `partitions` still to fail.
    failures: AtomicU32,
}

/// One partition's log: `records[i]` has offset `log_start + i`.
#[derive(Default)]
struct Partition {
    log_start: i64,
    records: Vec<Record>,
}

impl Partition {
    fn latest(&self) -> i64 {
        self.log_start + self.records.len() as i64
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partitions: BTreeMap<String, (i64, i64)> = self
            .log
            .lock()
            .iter()
            .map(|(tp, p)| (tp.to_string(), (p.log_start, p.latest())))
            .collect();
        f.debug_struct("MemorySource")
            .field("partitions", &partitions)
            .field("on_data_loss", &self.on_data_loss)
            .finish()
    }
}

impl MemorySource {
    /// A source with no partitions, that fails planning on data loss.
    pub fn new() -> Self {
        Self::default()
    }

    /// What planning does with a stored position that
    /// [`delete_before`](Self::delete_before) deleted (or that is past the
    /// end of its log). Default: [`DataLossPolicy::Fail`].
    pub fn with_data_loss_policy(mut self, policy: DataLossPolicy) -> Self {
        self.on_data_loss = policy;
        self
    }

    /// Appends records carrying `values` to partition `partition` of
    /// `topic`, creating the partition (its log starting at 0) if it does
    /// not exist yet. Returns the partition's latest offset: the offset the
    /// next record appended gets.
    pub fn append<V: Into<Vec<u8>>>(
        &self,
        topic: &str,
        partition: i32,
        values: impl IntoIterator<Item = V>,
    ) -> i64 {
        let empty: Arc<str> = Arc::from("");
        let records = values
            .into_iter()
            .map(|value| Record::with_value(Arc::clone(&empty), partition, 0, value));
        self.append_records(topic, partition, records)
    }

    /// Appends `records` to partition `partition` of `topic` as
    /// [`append`](Self::append) does, keeping each record's key, value,
    /// headers and timestamp: for jobs that route on keys or headers. Their
    /// topic, partition and offset are set to where they land. Returns the
    /// partition's latest offset.
    pub fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: impl IntoIterator<Item = Record>,
    ) -> i64 {
        let mut partitions = self.log.lock();
        let tp = TopicPartition::new(topic, partition);
        // The records share the partition's topic name, as a Kafka
        // consumer's do, rather than hold a copy each.
        let topic = Arc::clone(&tp.topic);
        let log = partitions.entry(tp).or_default();
        for record in records {
            let offset = log.latest();
            log.records.push(Record {
                topic: Arc::clone(&topic),
                partition,
                offset,
                ..record
            });
        }
        log.latest()
    }

    /// Deletes the records of `topic`'s partition `partition` below
    /// `offset`, which becomes its log start (at most its latest offset), as
    /// Kafka's retention does. Does nothing for a partition that does not
    /// exist or whose log already starts there.
    pub fn delete_before(&self, topic: &str, partition: i32, offset: i64) {
        let mut partitions = self.log.lock();
        let Some(log) = partitions.get_mut(&TopicPartition::new(topic, partition)) else {
            return;
        };
        let offset = offset.min(log.latest());
        if offset > log.log_start {
            log.records.drain(..(offset - log.log_start) as usize);
            log.log_start = offset;
        }
    }

    /// Makes the next `answers` calls of [`Source::partitions`] fail with a
    /// transient error, as a source whose system is down for a while: the
    /// driver retries them with backoff.
    pub fn fail_next_partitions(&self, answers: u32) {
        self.log.failures.store(answers, Ordering::SeqCst);
    }
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<TopicPartition, Partition>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Source for MemorySource {
    fn partitions(&mut self) -> Result<Vec<PartitionOffsets>> {
        let failing = self
            .log
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::transient_source(
                "the in-memory source is made to fail (fail_next_partitions)",
            ));
        }
        Ok(self
            .log
            .lock()
            .iter()
            .map(|(tp, p)| PartitionOffsets::new(tp.clone(), p.log_start, p.latest()))
            .collect())
    }

    fn on_data_loss(&self) -> DataLossPolicy {
        self.on_data_loss
    }

    fn reader(&self) -> Arc<dyn InputReader> {
        Arc::new(MemoryReader {
            log: Arc::clone(&self.log),
        })
    }
}

/// Reads a [`MemorySource`]'s ranges, from the log shared with it.
struct MemoryReader {
    log: Arc<Log>,
}

impl InputReader for MemoryReader {
    fn read(&self, range: &OffsetRange) -> Result<Vec<Record>> {
        let partitions = self.log.lock();
        let Some(log) = partitions.get(&range.topic_partition()) else {
            return Err(Error::Read {
                range: range.clone(),
                source: "the in-memory source has no such partition".into(),
            });
        };
        if range.from < log.log_start || range.until > log.latest() {
            return Err(Error::OffsetOutOfRange {
                range: range.clone(),
                source: format!(
                    "the in-memory log holds offsets [{}, {})",
                    log.log_start,
                    log.latest()
                )
                .into(),
            });
        }
        let index = |offset: i64| (offset - log.log_start) as usize;
        Ok(
            log.records[index(range.from)..index(range.until.max(range.from))]
                .iter()
                .map(Record::unshared_copy)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn values(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.value_str().unwrap()).collect()
    }

    #[test]
    fn a_range_reads_the_same_records_every_time() {
        let source = MemorySource::new();
        source.append("t", 0, ["a", "b", "c", "d"]);
        let reader = source.reader();
        let range = OffsetRange::new(&tp(0), 1, 3);
        let first = reader.read(&range).unwrap();
        source.append("t", 0, ["e"]);
        assert_eq!(reader.read(&range).unwrap(), first);
        assert_eq!(values(&first), ["b", "c"]);
        assert_eq!(first[0].offset, 1);
    }

    #[test]
    fn appended_records_keep_keys_headers_and_timestamps_at_their_new_coordinates() {
        let source = MemorySource::new();
        source.append("t", 0, ["a"]);
        let mut record = Record::with_value("elsewhere", 9, 99, "click");
        record.key = Some(Bytes::from_static(b"user-1"));
        record.timestamp = Some(1_700_000_000_000);
        record.headers = vec![("type".to_owned(), Some(Bytes::from_static(b"bot")))];
        assert_eq!(source.append_records("t", 0, [record.clone()]), 2);
        let read = source
            .reader()
            .read(&OffsetRange::new(&tp(0), 1, 2))
            .unwrap();
        let expected = Record {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            ..record
        };
        assert_eq!(read, [expected]);
    }

    #[test]
    fn deleted_offsets_move_the_log_start_and_are_out_of_range() {
        let mut source = MemorySource::new();
        source.append("t", 0, ["a", "b", "c", "d"]);
        source.delete_before("t", 0, 3);
        assert_eq!(
            source.partitions().unwrap(),
            [PartitionOffsets::new(tp(0), 3, 4)]
        );
        let reader = source.reader();
        let gone = OffsetRange::new(&tp(0), 2, 4);
        assert_eq!(
            reader.read(&gone).unwrap_err().offset_out_of_range(),
            Some(&gone)
        );
        let kept = reader.read(&OffsetRange::new(&tp(0), 3, 4)).unwrap();
        assert_eq!((values(&kept), kept[0].offset), (vec!["d"], 3));
        // Records appended after a deletion go on from the latest offset.
        assert_eq!(source.append("t", 0, ["e"]), 5);
    }

    #[test]
    fn made_failures_are_transient_and_run_out() {
        let mut source = MemorySource::new();
        source.append("t", 0, ["a"]);
        source.fail_next_partitions(2);
        for _ in 0..2 {
            assert!(source.partitions().unwrap_err().is_transient());
        }
        assert_eq!(source.partitions().unwrap().len(), 1);
    }
}
