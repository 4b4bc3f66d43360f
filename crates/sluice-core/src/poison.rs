//! What happens to a record an operator cannot process: fail the batch, or
//! set the record aside as a dead letter and go on; and reading a dead
//! letter's record back from the input.

use std::sync::Arc;

use crate::stream::READ_CHUNK;
use crate::{InputReader, OffsetRange, Record, TopicPartition};

/// What a batch does when an operator's closure returns an error for a
/// record (`try_map`, `try_flat_map`, `values_utf8`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// The task fails, is retried, and the batch fails if every attempt
    /// does: nothing of it is committed. The error names the record's
    /// topic, partition and offset.
    #[default]
    FailBatch,
    /// The record is dropped from the stream of the operator that failed,
    /// and a [`DeadLetter`] naming it is committed with the batch into the
    /// checkpoint family `family`.
    ///
    /// Only errors inside source tasks (before any shuffle) name a record;
    /// an error after a shuffle still fails the batch.
    DeadLetter {
        /// The checkpoint family (a RocksDB column family) dead letters go
        /// to.
        family: String,
    },
}

impl PoisonPolicy {
    /// Dead letters go to the checkpoint family `family`.
    pub fn dead_letter(family: impl Into<String>) -> Self {
        PoisonPolicy::DeadLetter {
            family: family.into(),
        }
    }

    /// The family dead letters go to, when they are kept.
    pub fn family(&self) -> Option<&str> {
        match self {
            PoisonPolicy::FailBatch => None,
            PoisonPolicy::DeadLetter { family } => Some(family),
        }
    }
}

/// A record an operator rejected, by its coordinates, with the record as
/// the input holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic of the record.
    pub topic: Arc<str>,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// The operator whose closure returned the error.
    pub operator: &'static str,
    /// The error, as text.
    pub error: String,
    /// The rejected record (key, value, timestamp, headers), read back from
    /// the input once its task was done: the operator saw only what the
    /// operators before it made of the record. `None` when it could not be
    /// read back; then `unread` says why.
    pub record: Option<Record>,
    /// Why the record could not be read back, when it could not.
    pub unread: Option<String>,
}

/// Rejected offsets of a partition at most this far apart are read back in
/// one run: reading the few records between them costs less than moving a
/// consumer (a fetch round trip). Offsets further apart are read apart, and
/// what lies between them is never read.
const RUN_GAP: i64 = 512;

/// The most offsets one run covers: reading back holds one run's records at
/// a time, as a source task holds one chunk.
const RUN_SPAN: i64 = READ_CHUNK;

/// The runs that read `offsets` (ascending, distinct) of `tp` back: offsets
/// at most [`RUN_GAP`] apart share a span, read in contiguous runs of at
/// most [`RUN_SPAN`] offsets.
pub(crate) fn read_back_runs(tp: &TopicPartition, offsets: &[i64]) -> Vec<OffsetRange> {
    let mut runs = Vec::new();
    let mut offsets = offsets.iter().copied().peekable();
    while let Some(first) = offsets.next() {
        let mut last = first;
        while let Some(next) = offsets.next_if(|&next| next - last <= RUN_GAP) {
            last = next;
        }
        let mut from = first;
        while from <= last {
            let until = last.min(from.saturating_add(RUN_SPAN - 1)) + 1;
            runs.push(OffsetRange::new(tp, from, until));
            from = until;
        }
    }
    runs
}

/// Reads the record of every letter back from `input`, a few runs per
/// partition (see [`read_back_runs`]). A letter whose record cannot be read
/// back keeps its coordinates and says why in `unread`.
pub(crate) fn read_back(input: &dyn InputReader, letters: &mut [DeadLetter]) {
    letters
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    for group in letters.chunk_by_mut(|a, b| a.topic == b.topic && a.partition == b.partition) {
        let tp = TopicPartition::new(Arc::clone(&group[0].topic), group[0].partition);
        let mut offsets: Vec<i64> = group.iter().map(|l| l.offset).collect();
        // One record can yield several rejected values (after a flat_map).
        offsets.dedup();
        let runs = read_back_runs(&tp, &offsets);
        let mut pending: &mut [DeadLetter] = &mut *group;
        input.read_back(&runs, &mut |run, read| {
            let split = pending.partition_point(|l| l.offset < run.until);
            let (in_run, rest) = std::mem::take(&mut pending).split_at_mut(split);
            pending = rest;
            match read {
                Ok(records) => {
                    let mut records = records.into_iter().peekable();
                    // Letters below the run are of a run the input skipped.
                    for letter in in_run.iter_mut().filter(|l| l.offset >= run.from) {
                        while records.next_if(|r| r.offset < letter.offset).is_some() {}
                        match records.peek() {
                            Some(record) if record.offset == letter.offset => {
                                letter.record = Some(record.clone());
                            }
                            _ => letter.unread = Some("the offset holds no record".to_owned()),
                        }
                    }
                }
                Err(e) => {
                    for letter in in_run.iter_mut().filter(|l| l.offset >= run.from) {
                        letter.unread = Some(format!("could not read the record back: {e}"));
                    }
                }
            }
        });
        for letter in group.iter_mut() {
            if letter.record.is_none() && letter.unread.is_none() {
                letter.unread = Some("the input did not read the record back".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;
    use crate::{MemoryInput, Result};

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    fn spans(runs: &[OffsetRange]) -> Vec<(i64, i64)> {
        runs.iter().map(|r| (r.from, r.until)).collect()
    }

    fn letter(partition: i32, offset: i64) -> DeadLetter {
        DeadLetter {
            topic: "t".into(),
            partition,
            offset,
            operator: "try_map",
            error: "bad".into(),
            record: None,
            unread: None,
        }
    }

    /// Records the runs it is asked to read.
    struct Recording {
        input: MemoryInput,
        runs: Mutex<Vec<(i32, i64, i64)>>,
        fail_partition: Option<i32>,
    }

    impl InputReader for Recording {
        fn read(&self, range: &OffsetRange) -> Result<Vec<Record>> {
            self.runs
                .lock()
                .unwrap()
                .push((range.partition, range.from, range.until));
            if Some(range.partition) == self.fail_partition {
                return Err(crate::Error::Read {
                    range: range.clone(),
                    source: "the broker went away".into(),
                });
            }
            self.input.read(range)
        }
    }

    #[test]
    fn far_apart_offsets_are_read_back_alone_and_near_ones_together() {
        assert_eq!(
            spans(&read_back_runs(&tp(), &[0, 50_000])),
            [(0, 1), (50_000, 50_001)]
        );
        assert_eq!(
            spans(&read_back_runs(
                &tp(),
                &[3, 10, 10 + RUN_GAP, 11 + 2 * RUN_GAP]
            )),
            [(3, 11 + RUN_GAP), (11 + 2 * RUN_GAP, 12 + 2 * RUN_GAP)]
        );
        // A long span is read in contiguous runs of at most RUN_SPAN offsets.
        let dense: Vec<i64> = (0..10_000).step_by(100).collect();
        assert_eq!(
            spans(&read_back_runs(&tp(), &dense)),
            [
                (0, RUN_SPAN),
                (RUN_SPAN, 2 * RUN_SPAN),
                (2 * RUN_SPAN, 9_901)
            ]
        );
        assert!(read_back_runs(&tp(), &[]).is_empty());
    }

    proptest! {
        #[test]
        fn runs_cover_every_offset_once_and_never_the_span_between_far_apart_ones(
            gaps in prop::collection::vec(1i64..3 * RUN_GAP, 0..60),
            start in 0i64..1_000_000,
        ) {
            let offsets: Vec<i64> = gaps
                .iter()
                .scan(start, |at, gap| {
                    *at += gap;
                    Some(*at)
                })
                .collect();
            let runs = read_back_runs(&tp(), &offsets);
            for run in &runs {
                prop_assert!(!run.is_empty() && run.count() <= RUN_SPAN as u64, "{}", run);
            }
            for pair in runs.windows(2) {
                prop_assert!(pair[0].until <= pair[1].from, "{} then {}", pair[0], pair[1]);
            }
            for &offset in &offsets {
                prop_assert_eq!(
                    runs.iter().filter(|r| r.from <= offset && offset < r.until).count(),
                    1,
                    "offset {}", offset
                );
            }
            // Between wanted offsets further apart than RUN_GAP, nothing is read.
            for pair in offsets.windows(2) {
                if pair[1] - pair[0] > RUN_GAP {
                    prop_assert!(
                        runs.iter().all(|r| r.until <= pair[0] + 1 || r.from >= pair[1]),
                        "offsets {} and {} are read together", pair[0], pair[1]
                    );
                }
            }
            // A run starts at a wanted offset or where the run before ended.
            for (i, run) in runs.iter().enumerate() {
                prop_assert!(
                    offsets.contains(&run.from) || (i > 0 && runs[i - 1].until == run.from),
                    "{}", run
                );
            }
        }
    }

    #[test]
    fn letters_get_their_records_read_back_by_partition() {
        let input = Recording {
            input: MemoryInput::new()
                .with_partition("t", 0, (0..2000).map(|i| format!("zero {i}")))
                .with_partition("t", 1, (0..10).map(|i| format!("one {i}"))),
            runs: Mutex::new(Vec::new()),
            fail_partition: None,
        };
        // Out of order, a duplicate (two values of one record), and an
        // offset past the end of partition 1.
        let mut letters = vec![
            letter(1, 4),
            letter(0, 1999),
            letter(0, 2),
            letter(1, 4),
            letter(1, 12),
        ];
        read_back(&input, &mut letters);
        let found: Vec<_> = letters
            .iter()
            .map(|l| {
                (
                    l.partition,
                    l.offset,
                    l.record.as_ref().map(|r| r.value_str().unwrap().to_owned()),
                    l.unread.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (0, 2, Some("zero 2".to_owned()), None),
                (0, 1999, Some("zero 1999".to_owned()), None),
                (1, 4, Some("one 4".to_owned()), None),
                (1, 4, Some("one 4".to_owned()), None),
                (1, 12, None, Some("the offset holds no record".to_owned())),
            ]
        );
        assert_eq!(
            *input.runs.lock().unwrap(),
            [(0, 2, 3), (0, 1999, 2000), (1, 4, 13)]
        );
    }

    #[test]
    fn a_failed_read_back_keeps_the_letter_with_the_reason() {
        let input = Recording {
            input: MemoryInput::new().with_partition("t", 0, ["a", "b"]),
            runs: Mutex::new(Vec::new()),
            fail_partition: Some(0),
        };
        let mut letters = vec![letter(0, 1)];
        read_back(&input, &mut letters);
        assert_eq!(letters[0].record, None);
        let reason = letters[0].unread.as_deref().unwrap();
        assert!(
            reason.contains("t-0 [1, 2)") && reason.contains("the broker went away"),
            "{reason}"
        );
    }
}
