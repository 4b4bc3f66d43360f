//! Where a batch's records come from.

use std::sync::Arc;

use crate::{OffsetRange, Record, Result};

/// Reads the records of one offset range; a [`Source`](crate::Source) hands
/// one to the tasks (the Kafka reader, [`MemorySource`](crate::MemorySource)'s),
/// and [`MemoryInput`] is one for tests and benchmarks that run a graph
/// without a driver.
///
/// Reading must be deterministic: a retried task reads the same range again
/// and must see the same records.
pub trait InputReader: Send + Sync {
    /// Reads every record in `[range.from, range.until)`, in offset order.
    fn read(&self, range: &OffsetRange) -> Result<Vec<Record>>;

    /// Called with all of a batch's ranges before its tasks read them, and
    /// again before a retry. A reader may start fetching them here (the
    /// Kafka reader positions each partition's consumer, so every partition
    /// prefetches while the first tasks run); errors are left to the reads.
    /// The default does nothing.
    /// It must not change what a read returns: the Kafka reader only
    /// positions consumers, and a read that finds an end-of-partition
    /// event raised before it started confirms it from a new position.
    fn prepare(&self, ranges: &[OffsetRange]) {
        let _ = ranges;
    }

    /// Reads the records of `range` as [`InputReader::read`] does and
    /// lends them to `each`, in offset order, in one or more slices, for
    /// operators that only look at them
    /// ([`DStream::count_keys`](crate::DStream::count_keys) and
    /// [`DStream::count`](crate::DStream::count) over the input or
    /// `values_utf8`) and for `values_utf8` on the input, which makes its
    /// strings from them. An error after some slices were lent fails the
    /// task like a failed `read`. The default lends what `read` returns;
    /// an input that keeps its records may lend them without copying, as
    /// [`MemoryInput`] does.
    fn lend(&self, range: &OffsetRange, each: &mut dyn FnMut(&[Record])) -> Result<()> {
        each(&self.read(range)?);
        Ok(())
    }

    /// Looks records up by offset: reads `runs`, short ranges in ascending
    /// order, and hands each run's records (or why it could not be read) to
    /// `each` before reading the next. Runs of one partition follow each
    /// other.
    ///
    /// Source tasks call this once their range is read, to read the records
    /// an operator rejected back for their dead letters (see
    /// [`PoisonPolicy::DeadLetter`](crate::PoisonPolicy::DeadLetter)). It
    /// must leave [`InputReader::read`] undisturbed: a reader that keeps
    /// state between reads (a consumer's position, prefetched records)
    /// should look records up apart from that state. The default reads each
    /// run through [`InputReader::read`].
    fn read_back(
        &self,
        runs: &[OffsetRange],
        each: &mut dyn FnMut(&OffsetRange, Result<Vec<Record>>),
    ) {
        for run in runs {
            each(run, self.read(run));
        }
    }
}

/// An in-memory input: records kept per partition, read by offset.
///
/// Offsets are positions in each partition's vector.
#[derive(Debug, Default, Clone)]
pub struct MemoryInput {
    partitions: Vec<(crate::TopicPartition, Vec<Record>)>,
}

impl MemoryInput {
    /// An input with no partitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a partition of `topic` whose records carry `values`, at offsets
    /// `0..values.len()`. A read hands out copies of the records, each
    /// payload in a buffer of its own; [`InputReader::lend`] lends the
    /// records kept.
    pub fn with_partition<V: Into<Vec<u8>>>(
        mut self,
        topic: &str,
        partition: i32,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let tp = crate::TopicPartition::new(topic, partition);
        // The records share the partition's topic name, as a Kafka
        // consumer's do, rather than hold a copy each.
        let records = values
            .into_iter()
            .enumerate()
            .map(|(offset, v)| {
                Record::with_value(Arc::clone(&tp.topic), partition, offset as i64, v)
            })
            .collect();
        self.partitions.push((tp, records));
        self
    }

    /// Adds a partition of `topic` whose records carry `(timestamp,
    /// value)` pairs — the Kafka record timestamp in ms — at offsets
    /// `0..len`.
    pub fn with_timestamped_partition<V: Into<Vec<u8>>>(
        mut self,
        topic: &str,
        partition: i32,
        records: impl IntoIterator<Item = (i64, V)>,
    ) -> Self {
        let tp = crate::TopicPartition::new(topic, partition);
        let records = records
            .into_iter()
            .enumerate()
            .map(|(offset, (timestamp, v))| Record {
                timestamp: Some(timestamp),
                ..Record::with_value(Arc::clone(&tp.topic), partition, offset as i64, v)
            })
            .collect();
        self.partitions.push((tp, records));
        self
    }

    /// Ranges that cover every record of every partition.
    pub fn full_ranges(&self) -> Vec<OffsetRange> {
        self.partitions
            .iter()
            .map(|(tp, records)| OffsetRange::new(tp, 0, records.len() as i64))
            .collect()
    }
}

impl MemoryInput {
    /// The kept records of `range`.
    fn records(&self, range: &OffsetRange) -> &[Record] {
        let tp = range.topic_partition();
        let records = self
            .partitions
            .iter()
            .find(|(p, _)| *p == tp)
            .map(|(_, r)| r.as_slice())
            .unwrap_or_default();
        let from = (range.from.max(0) as usize).min(records.len());
        let until = (range.until.max(0) as usize).min(records.len());
        &records[from..until.max(from)]
    }
}

impl InputReader for MemoryInput {
    fn read(&self, range: &OffsetRange) -> Result<Vec<Record>> {
        Ok(self
            .records(range)
            .iter()
            .map(Record::unshared_copy)
            .collect())
    }

    /// Lends the kept records themselves.
    fn lend(&self, range: &OffsetRange, each: &mut dyn FnMut(&[Record])) -> Result<()> {
        each(self.records(range));
        Ok(())
    }
}
