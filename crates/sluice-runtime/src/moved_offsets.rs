//! Offsets moved while the job was stopped (`sluice offsets set`, a
//! restored backup): at the start, every stored position is compared with
//! where the last committed batch left its partition, and a difference is
//! said in a warning and in the next batch record, so the batch history
//! shows records skipped or read again on purpose.

use std::collections::BTreeMap;

use sluice_checkpoint::BatchRecord;
use sluice_core::TopicPartition;

/// A partition whose stored position is not where the last batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) partition: TopicPartition,
    /// Where the last batch's range ended.
    pub(crate) ended: i64,
    /// The stored position now.
    pub(crate) stored: i64,
}

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            partition,
            ended,
            stored,
        } = self;
        let (how, n) = if stored > ended {
            ("skips", stored - ended)
        } else {
            ("reads again", ended - stored)
        };
        write!(
            f,
            "{}:{} {ended} -> {stored} ({how} {n} offsets)",
            partition.topic, partition.partition
        )
    }
}

/// The partitions of `last`'s ranges whose position in `positions` is not
/// the end of their range. Partitions the batch did not read are not
/// compared: where they stood is not recorded.
pub(crate) fn moved(last: &BatchRecord, positions: &BTreeMap<TopicPartition, i64>) -> Vec<Moved> {
    last.ranges
        .iter()
        .filter_map(|range| {
            let partition = TopicPartition::new(range.topic.as_str(), range.partition);
            let stored = *positions.get(&partition)?;
            (stored != range.until).then_some(Moved {
                partition,
                ended: range.until,
                stored,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sluice_checkpoint::RangeRecord;
    use sluice_core::OffsetRange;

    use super::*;

    fn batch(ranges: &[(i32, i64, i64)]) -> BatchRecord {
        let mut record = BatchRecord::new(7, 0);
        record.ranges = ranges
            .iter()
            .map(|&(p, from, until)| {
                let tp = TopicPartition::new("lines", p);
                RangeRecord::from_range(&OffsetRange::new(&tp, from, until), 0)
            })
            .collect();
        record
    }

    #[test]
    fn a_position_moved_past_or_behind_the_last_range_is_named() {
        let last = batch(&[(0, 1403, 1433), (1, 1402, 1432), (2, 10, 10)]);
        let positions = BTreeMap::from([
            (TopicPartition::new("lines", 0), 2000),
            (TopicPartition::new("lines", 1), 1400),
            (TopicPartition::new("lines", 2), 10),
            (TopicPartition::new("lines", 3), 99),
        ]);
        let moved: Vec<String> = moved(&last, &positions)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            moved,
            [
                "lines:0 1433 -> 2000 (skips 567 offsets)",
                "lines:1 1432 -> 1400 (reads again 32 offsets)"
            ]
        );
    }

    proptest! {
        /// Positions where the batch left them are never reported; any
        /// other is, once.
        #[test]
        fn only_moved_positions_are_reported(
            ends in proptest::collection::vec(0i64..1000, 1..6),
            shifts in proptest::collection::vec(-5i64..5, 6),
        ) {
            let ranges: Vec<(i32, i64, i64)> =
                ends.iter().enumerate().map(|(p, &end)| (p as i32, 0, end)).collect();
            let positions: BTreeMap<TopicPartition, i64> = ranges
                .iter()
                .zip(&shifts)
                .map(|(&(p, _, end), shift)| (TopicPartition::new("lines", p), end + shift))
                .collect();
            let reported = moved(&batch(&ranges), &positions);
            let expected = shifts.iter().take(ranges.len()).filter(|s| **s != 0).count();
            prop_assert_eq!(reported.len(), expected);
            for m in reported {
                prop_assert_ne!(m.ended, m.stored);
            }
        }
    }
}
