//! Reading one range of one partition: when a range is complete, what to
//! keep for the next one, and when to reposition. Generic over the consumer
//! so the logic is tested against a scripted log with gaps.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use sluice_core::{OffsetRange, Record};

use crate::error::is_transient_code;
use crate::{Error, Result};

/// The most records a read reserves room for up front.
const MAX_RESERVED_RECORDS: u64 = 1 << 20;

/// One poll of a partition consumer, with the message copied out.
pub(crate) enum Polled {
    /// Nothing arrived within the timeout.
    Nothing,
    /// A record.
    Record(Record),
    /// The consumer reached the end of the partition.
    Eof,
    /// The client reported an error.
    Failed(KafkaError),
}

/// What reading a range needs from the consumer of one partition.
pub(crate) trait PartitionSource {
    /// Makes the following polls deliver from `offset` on, dropping
    /// everything fetched for an earlier position (events included).
    fn position(&mut self, offset: i64) -> Result<()>;
    /// Waits up to `timeout` for the next record or event.
    fn poll(&mut self, timeout: Duration) -> Polled;
    /// The partition's latest offset, asked of the broker.
    fn latest(&mut self, timeout: Duration) -> Result<i64>;
}

/// How a read learnt that its range was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// From a record: the last of the range, or one past it.
    Record,
    /// From an end-of-partition event.
    Eof,
}

/// A partition consumer and where it stands between reads.
pub(crate) struct PartitionReader<S> {
    source: S,
    /// The offset the consumer continues at: every record below it was
    /// handed out or is not wanted. `None` until positioned, or after a
    /// failed read.
    next: Option<i64>,
    /// The first record at or after `next`, already taken from the consumer
    /// by a read that ended before it.
    stash: Option<Record>,
}

impl<S: PartitionSource> PartitionReader<S> {
    pub(crate) fn new(source: S) -> Self {
        Self {
            source,
            next: None,
            stash: None,
        }
    }

    /// The consumer, once reading is over.
    pub(crate) fn into_source(self) -> S {
        self.source
    }

    /// Forgets where the consumer stands; the next read repositions it.
    pub(crate) fn forget(&mut self) {
        self.next = None;
        self.stash = None;
    }

    /// Whether the consumer continues at `from`: a read from there needs no
    /// positioning.
    pub(crate) fn continues_at(&self, from: i64) -> bool {
        self.next == Some(from)
    }

    /// Positions the consumer at the start of `range` unless it continues
    /// there already: it fetches the range before a read asks for it. An
    /// end-of-partition event raised before the read starts proves nothing
    /// about the range (records may have arrived since): the read treats
    /// the consumer as one that continues from an earlier read.
    pub(crate) fn prepare(&mut self, range: &OffsetRange) -> Result<()> {
        if self.next != Some(range.from) {
            self.position(range.from)?;
            self.next = Some(range.from);
        }
        Ok(())
    }

    /// Reads the records of the non-empty `range`, waiting at most `timeout`.
    pub(crate) fn read(&mut self, range: &OffsetRange, timeout: Duration) -> Result<Vec<Record>> {
        // Room for every offset of the range (gaps only make it roomier),
        // so the records are not moved while the read grows; bounded, since
        // a range can be huge and sparse.
        let mut records = Vec::with_capacity(range.count().min(MAX_RESERVED_RECORDS) as usize);
        match self.fill(range, Instant::now() + timeout, timeout, &mut records) {
            Ok(end) => {
                // The end-of-partition event is raised once per end offset: a
                // consumer that reported it cannot prove the next range
                // complete, so the next read repositions it.
                self.next = (end == End::Record).then_some(range.until);
                tracing::trace!(range = %range, records = records.len(), "read range");
                Ok(records)
            }
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    fn position(&mut self, offset: i64) -> Result<()> {
        self.forget();
        self.source.position(offset)
    }

    fn fill(
        &mut self,
        range: &OffsetRange,
        deadline: Instant,
        timeout: Duration,
        records: &mut Vec<Record>,
    ) -> Result<End> {
        // An end-of-partition event proves the range complete only if it was
        // raised after this read positioned the consumer: one queued earlier
        // may predate the records of this range.
        let mut positioned = false;
        if self.next != Some(range.from) {
            self.position(range.from)?;
            positioned = true;
        }
        if let Some(stash) = self.stash.take() {
            if stash.offset >= range.until {
                // Nothing between `from` and the stashed record: a gap.
                self.stash = Some(stash);
                return Ok(End::Record);
            }
            let last = stash.offset >= range.until - 1;
            records.push(stash);
            if last {
                return Ok(End::Record);
            }
        }
        loop {
            let want = records.last().map_or(range.from, |r| r.offset + 1);
            // While records keep arriving the clock is not read: the
            // deadline is checked only when a poll brings something else,
            // and only a poll that finds the queue empty waits.
            let mut polled = self.source.poll(Duration::ZERO);
            if !matches!(polled, Polled::Record(_)) {
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
                if matches!(polled, Polled::Nothing) {
                    polled = self.source.poll(remaining);
                }
            }
            match polled {
                Polled::Nothing => {}
                Polled::Record(record) if record.offset < want => {
                    tracing::trace!(range = %range, offset = record.offset, want, "dropping record below the range");
                }
                Polled::Record(record) if record.offset >= range.until => {
                    // The consumer has moved past it: keep it for the next range.
                    self.stash = Some(record);
                    return Ok(End::Record);
                }
                Polled::Record(record) => {
                    let last = record.offset >= range.until - 1;
                    records.push(record);
                    if last {
                        return Ok(End::Record);
                    }
                }
                Polled::Eof if positioned => {
                    // Raised by a fetch made after the range was planned:
                    // everything below `until` was delivered, unless the range
                    // was planned past the end.
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let latest = self
                        .source
                        .latest(remaining.max(Duration::from_millis(1)))?;
                    if latest >= range.until {
                        return Ok(End::Eof);
                    }
                    tracing::debug!(
                        range = %range, latest,
                        "range ends past the end of the partition; waiting for more records"
                    );
                }
                Polled::Eof => {
                    tracing::debug!(
                        range = %range, want,
                        "end of partition before the range was complete; repositioning to confirm"
                    );
                    // Keeps the records already read: only `want..` is refetched.
                    self.source.position(want)?;
                    positioned = true;
                }
                Polled::Failed(e) if e.rdkafka_error_code().is_some_and(is_out_of_range) => {
                    return Err(Error::OffsetOutOfRange {
                        topic: range.topic.to_string(),
                        partition: range.partition,
                        offset: want,
                    });
                }
                Polled::Failed(e) if e.rdkafka_error_code().is_some_and(is_transient_code) => {
                    tracing::warn!(range = %range, error = %e, "transient Kafka error while reading; still waiting");
                }
                Polled::Failed(e) => {
                    // librdkafka reports a fetch response above its receive
                    // limit only as a bad message; say which setting to raise.
                    let hint = if e.rdkafka_error_code() == Some(RDKafkaErrorCode::BadMessage) {
                        " (a record larger than receive.message.max.bytes or fetch.max.bytes \
                         gives this error: raise them above the largest record)"
                    } else {
                        ""
                    };
                    return Err(Error::kafka(format!("reading {range}{hint}"), e));
                }
            }
        }
    }
}

/// The broker answered a fetch with OffsetOutOfRange; with
/// `auto.offset.reset=error` librdkafka reports it as "no offset to
/// automatically reset to".
fn is_out_of_range(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use rdkafka::error::RDKafkaErrorCode;
    use sluice_core::TopicPartition;

    use super::*;

    /// A partition log with librdkafka's delivery rules: records in order,
    /// gaps (transaction markers, compacted records) skipped, fetched
    /// ahead into a queue, and one end-of-partition event per end offset
    /// reached, raised by a fetch that finds nothing new.
    #[derive(Default)]
    struct ScriptedLog {
        /// `None`: an offset without a record.
        log: Vec<Option<Record>>,
        queue: VecDeque<Polled>,
        fetch_pos: i64,
        eof_reported: Option<i64>,
        /// Records handed out per fetch.
        batch: usize,
        positions: usize,
        /// Errors to report before the next fetches.
        errors: VecDeque<KafkaError>,
    }

    impl ScriptedLog {
        fn new(batch: usize) -> Self {
            Self {
                batch: batch.max(1),
                ..Self::default()
            }
        }

        fn end(&self) -> i64 {
            self.log.len() as i64
        }

        /// Appends a record (`true`) or a gap (`false`) per entry.
        fn append(&mut self, entries: &[bool]) {
            for &record in entries {
                let offset = self.end();
                self.log
                    .push(record.then(|| Record::with_value("t", 0, offset, offset.to_string())));
            }
        }

        /// One fetch into the queue, as the consumer's background thread
        /// does between and during reads.
        fn fetch(&mut self) {
            let end = self.end();
            if self.fetch_pos >= end {
                if self.eof_reported != Some(end) {
                    self.eof_reported = Some(end);
                    self.queue.push_back(Polled::Eof);
                }
                return;
            }
            let stop = (self.fetch_pos + self.batch as i64).min(end);
            for offset in self.fetch_pos..stop {
                if let Some(record) = &self.log[offset as usize] {
                    self.queue.push_back(Polled::Record(record.clone()));
                }
            }
            self.fetch_pos = stop;
        }

        fn expected(&self, from: i64, until: i64) -> Vec<Record> {
            self.log[from as usize..until as usize]
                .iter()
                .flatten()
                .cloned()
                .collect()
        }
    }

    impl PartitionSource for ScriptedLog {
        fn position(&mut self, offset: i64) -> Result<()> {
            self.positions += 1;
            self.queue.clear();
            self.fetch_pos = offset;
            self.eof_reported = None;
            Ok(())
        }

        fn poll(&mut self, _timeout: Duration) -> Polled {
            if let Some(e) = self.errors.pop_front() {
                return Polled::Failed(e);
            }
            if self.queue.is_empty() {
                self.fetch();
            }
            self.queue.pop_front().unwrap_or(Polled::Nothing)
        }

        fn latest(&mut self, _timeout: Duration) -> Result<i64> {
            Ok(self.end())
        }
    }

    fn range(from: i64, until: i64) -> OffsetRange {
        OffsetRange::new(&TopicPartition::new("t", 0), from, until)
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn a_range_ending_on_a_gap_finishes_on_end_of_partition() {
        let mut log = ScriptedLog::new(100);
        // 0..3 records, 3 a commit marker.
        log.append(&[true, true, true, false]);
        let mut reader = PartitionReader::new(log);
        assert_eq!(
            offsets(&reader.read(&range(0, 4), TIMEOUT).unwrap()),
            [0, 1, 2]
        );
        assert_eq!(reader.source.positions, 1);
    }

    #[test]
    fn a_read_prepared_ahead_continues_from_there_and_confirms_an_end_of_partition() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true, true, true, false]);
        let mut reader = PartitionReader::new(log);
        reader.prepare(&range(0, 4)).unwrap();
        reader.prepare(&range(0, 4)).unwrap();
        assert_eq!(reader.source.positions, 1, "positioned once");
        // Fetched before the read starts, end-of-partition event included.
        reader.source.fetch();
        reader.source.fetch();
        assert!(matches!(reader.source.queue.back(), Some(Polled::Eof)));
        assert_eq!(
            offsets(&reader.read(&range(0, 4), TIMEOUT).unwrap()),
            [0, 1, 2]
        );
        // The event came before the read: it repositioned past the records
        // it had to confirm the end.
        assert_eq!(reader.source.positions, 2);
        // A consumer that continues where the next range starts stays put.
        reader.source.append(&[true, true]);
        reader.prepare(&range(4, 5)).unwrap();
        assert_eq!(
            reader.source.positions, 3,
            "the end-of-partition read needs a new position"
        );
        reader.prepare(&range(4, 5)).unwrap();
        assert_eq!(offsets(&reader.read(&range(4, 5), TIMEOUT).unwrap()), [4]);
        reader.prepare(&range(5, 6)).unwrap();
        assert_eq!(offsets(&reader.read(&range(5, 6), TIMEOUT).unwrap()), [5]);
        assert_eq!(
            reader.source.positions, 3,
            "contiguous reads never reposition"
        );
    }

    /// Found by the property below, when an end-of-partition event after
    /// `prepare` was trusted: it does not prove a longer range, planned
    /// again later (records arrived in between), complete.
    #[test]
    fn an_end_of_partition_after_prepare_does_not_end_a_longer_range_planned_later() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true]);
        let mut reader = PartitionReader::new(log);
        reader.prepare(&range(0, 1)).unwrap();
        reader.source.fetch();
        reader.source.fetch();
        assert!(matches!(reader.source.queue.back(), Some(Polled::Eof)));
        reader.source.append(&[true, true]);
        assert_eq!(
            offsets(&reader.read(&range(0, 3), TIMEOUT).unwrap()),
            [0, 1, 2]
        );
    }

    #[test]
    fn a_record_past_the_range_is_kept_for_the_next_range() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true, true, true, false, true, true, true, false]);
        let mut reader = PartitionReader::new(log);
        // The marker at 3 is never delivered: record 4 ends [0, 4).
        assert_eq!(
            offsets(&reader.read(&range(0, 4), TIMEOUT).unwrap()),
            [0, 1, 2]
        );
        assert_eq!(reader.stash.as_ref().map(|r| r.offset), Some(4));
        assert_eq!(
            offsets(&reader.read(&range(4, 8), TIMEOUT).unwrap()),
            [4, 5, 6]
        );
        // A marker-only range.
        reader.source.append(&[false, true]);
        assert!(reader.read(&range(8, 9), TIMEOUT).unwrap().is_empty());
        assert_eq!(offsets(&reader.read(&range(9, 10), TIMEOUT).unwrap()), [9]);
    }

    /// Found by the property below: the end-of-partition event that ended
    /// `[0, 1)` is never raised again for the same end offset, so `[1, 2)`
    /// (gaps only) waited for it until the timeout.
    #[test]
    fn a_gap_only_range_after_a_read_ended_by_end_of_partition() {
        let mut log = ScriptedLog::new(1);
        log.append(&[false, false]);
        let mut reader = PartitionReader::new(log);
        assert!(reader.read(&range(0, 1), TIMEOUT).unwrap().is_empty());
        assert!(reader.read(&range(1, 2), TIMEOUT).unwrap().is_empty());
    }

    #[test]
    fn a_stash_past_the_next_range_means_the_range_is_a_gap() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true, false, false, true]);
        let mut reader = PartitionReader::new(log);
        assert_eq!(offsets(&reader.read(&range(0, 2), TIMEOUT).unwrap()), [0]);
        let positions = reader.source.positions;
        assert!(reader.read(&range(2, 3), TIMEOUT).unwrap().is_empty());
        assert_eq!(offsets(&reader.read(&range(3, 4), TIMEOUT).unwrap()), [3]);
        assert_eq!(
            reader.source.positions, positions,
            "contiguous reads never reposition"
        );
    }

    #[test]
    fn a_stale_end_of_partition_does_not_end_the_next_range() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true; 5]);
        let mut reader = PartitionReader::new(log);
        assert_eq!(reader.read(&range(0, 5), TIMEOUT).unwrap().len(), 5);
        // The consumer reaches the end while idle, then records arrive.
        reader.source.fetch();
        assert!(matches!(reader.source.queue.back(), Some(Polled::Eof)));
        reader.source.append(&[true; 3]);
        reader.source.fetch();
        assert_eq!(
            offsets(&reader.read(&range(5, 8), TIMEOUT).unwrap()),
            [5, 6, 7]
        );
    }

    #[test]
    fn transient_errors_are_waited_out_and_others_fail_the_read() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true; 3]);
        log.errors.push_back(KafkaError::MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown,
        ));
        let mut reader = PartitionReader::new(log);
        assert_eq!(reader.read(&range(0, 3), TIMEOUT).unwrap().len(), 3);

        reader.source.append(&[true; 3]);
        reader
            .source
            .errors
            .push_back(KafkaError::MessageConsumption(RDKafkaErrorCode::Fail));
        let err = reader.read(&range(3, 6), TIMEOUT).unwrap_err();
        assert!(matches!(err, Error::Kafka { .. }), "{err}");
        assert_eq!(reader.next, None);
        // The retry repositions and succeeds.
        assert_eq!(
            offsets(&reader.read(&range(3, 6), TIMEOUT).unwrap()),
            [3, 4, 5]
        );
    }

    /// A fetch below the log start (retention passed the range) is not an
    /// opaque client error: it names the offset so the driver can take the
    /// data-loss decision.
    #[test]
    fn an_out_of_range_fetch_fails_the_read_naming_the_offset() {
        for code in [
            RDKafkaErrorCode::AutoOffsetReset,
            RDKafkaErrorCode::OffsetOutOfRange,
        ] {
            let mut log = ScriptedLog::new(100);
            log.append(&[true; 3]);
            log.errors.push_back(KafkaError::MessageConsumption(code));
            let mut reader = PartitionReader::new(log);
            let err = reader.read(&range(1, 3), TIMEOUT).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::OffsetOutOfRange {
                        partition: 0,
                        offset: 1,
                        ..
                    }
                ),
                "{code:?}: {err}"
            );
            assert_eq!(reader.next, None, "the next read repositions");
        }
    }

    #[test]
    fn a_range_past_the_end_times_out_naming_the_missing_offset() {
        let mut log = ScriptedLog::new(100);
        log.append(&[true; 4]);
        let mut reader = PartitionReader::new(log);
        let err = reader
            .read(&range(0, 6), Duration::from_millis(50))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::ReadTimeout {
                    received: 4,
                    waiting_for: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Append records (`true`) and gaps (`false`).
        Produce(Vec<bool>),
        /// The consumer fetches ahead while idle.
        Prefetch(usize),
        /// Read from the last position up to a fraction of what is there.
        ReadOn(u8),
        /// Read a range elsewhere (a retry or a restart elsewhere).
        ReadAt(u8, u8),
        /// Position ahead of a read for a range planned now: from the last
        /// position (the next `ReadOn`), or from elsewhere (a batch whose
        /// read never came), to a fraction of what is there.
        Prepare(Option<u8>, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            prop::collection::vec(prop::bool::weighted(0.8), 1..12).prop_map(Step::Produce),
            (1usize..4).prop_map(Step::Prefetch),
            any::<u8>().prop_map(Step::ReadOn),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::ReadAt(a, b)),
            (prop::option::of(any::<u8>()), any::<u8>()).prop_map(|(a, f)| Step::Prepare(a, f)),
        ]
    }

    proptest! {
        #[test]
        fn every_read_returns_exactly_the_records_of_its_range(
            batch in 1usize..6,
            steps in prop::collection::vec(step(), 1..40),
        ) {
            let mut reader = PartitionReader::new(ScriptedLog::new(batch));
            let mut position = 0;
            for step in steps {
                let end = reader.source.end();
                let (from, until) = match step {
                    Step::Produce(entries) => {
                        reader.source.append(&entries);
                        continue;
                    }
                    Step::Prefetch(n) => {
                        for _ in 0..n {
                            reader.source.fetch();
                        }
                        continue;
                    }
                    Step::Prepare(at, f) => {
                        let from = at.map_or(position, |a| end * i64::from(a) / 255);
                        reader.prepare(&range(from, from + (end - from) * i64::from(f) / 255)).unwrap();
                        continue;
                    }
                    Step::ReadOn(f) => (position, position + (end - position) * i64::from(f) / 255),
                    Step::ReadAt(a, b) => {
                        let a = end * i64::from(a) / 255;
                        let b = end * i64::from(b) / 255;
                        (a.min(b), a.max(b))
                    }
                };
                if from == until {
                    continue;
                }
                let records = reader.read(&range(from, until), TIMEOUT).unwrap();
                prop_assert_eq!(records, reader.source.expected(from, until), "[{}, {})", from, until);
                if matches!(step, Step::ReadOn(_)) {
                    position = until;
                }
            }
        }
    }
}
