//! Offset-range planning: which `[from, until)` every partition reads in the
//! next batch. A pure function of the stored positions and the offsets a
//! [`Source`](crate::Source) reported; the driver feeds it both.
//!
//! ```
//! use std::collections::BTreeMap;
//! use sluice_core::{plan_ranges, DataLossPolicy, PartitionOffsets, TopicPartition};
//!
//! let old = TopicPartition::new("events", 0);
//! let new = TopicPartition::new("events", 1);
//! let positions = BTreeMap::from([(old.clone(), 40)]);
//! let offsets = [
//!     PartitionOffsets::new(old.clone(), 0, 100),
//!     PartitionOffsets::new(new.clone(), 5, 8),
//! ];
//! let caps = BTreeMap::from([(old.clone(), 25), (new.clone(), 25)]);
//! let plan = plan_ranges(&positions, &offsets, Some(&caps), DataLossPolicy::Fail)?;
//! assert_eq!((plan.ranges[0].from, plan.ranges[0].until), (40, 65)); // capped
//! assert_eq!((plan.ranges[1].from, plan.ranges[1].until), (5, 8)); // new: from log start
//! assert_eq!(plan.new_partitions, vec![new]);
//! # Ok::<(), sluice_core::Error>(())
//! ```

use std::collections::BTreeMap;

use crate::{Error, OffsetRange, Result, TopicPartition};

/// The offsets of one partition as its source reports them (for Kafka, the
/// broker's watermarks).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PartitionOffsets {
    /// The partition.
    pub tp: TopicPartition,
    /// First offset still in the log (Kafka's low watermark).
    pub log_start: i64,
    /// Offset after the last readable record: the high watermark, or the
    /// last stable offset with `isolation.level=read_committed`.
    pub latest: i64,
}

impl PartitionOffsets {
    /// Offsets of `tp`: its log starts at `log_start`, and `latest` is the
    /// next offset to be written.
    pub fn new(tp: TopicPartition, log_start: i64, latest: i64) -> Self {
        Self {
            tp,
            log_start,
            latest,
        }
    }
}

/// What to do when stored offsets no longer exist in the source's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataLossPolicy {
    /// Fail the batch with [`Error::DataLoss`] or [`Error::OffsetAhead`]
    /// (the default): an operator decides.
    #[default]
    Fail,
    /// Log a warning and continue from the log start, skipping what was
    /// lost.
    ResetToEarliest,
}

/// Why [`DataLossPolicy::ResetToEarliest`] moved a stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetKind {
    /// The stored offset was below the log start: retention (or compaction
    /// of the head) deleted the records `[stored, log start)` before the job
    /// read them.
    BelowLogStart,
    /// The stored offset was past the latest offset: the topic was deleted
    /// and recreated, or its log truncated.
    PastLatest,
}

/// A stored position that [`DataLossPolicy::ResetToEarliest`] moved to the
/// log start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OffsetReset {
    /// The partition.
    pub tp: TopicPartition,
    /// Why the position was reset.
    pub kind: ResetKind,
    /// The position stored in the checkpoint.
    pub stored: i64,
    /// The log start the partition continues from.
    pub reset_to: i64,
    /// For [`ResetKind::BelowLogStart`], the offsets deleted unread
    /// (`log start - stored`); for [`ResetKind::PastLatest`], how far the
    /// stored position was past the latest offset (`stored - latest`).
    pub offsets: u64,
}

impl OffsetReset {
    /// `tp`'s position `stored` was reset to `reset_to` for `kind`, passing
    /// over `offsets` offsets.
    pub fn new(
        tp: TopicPartition,
        kind: ResetKind,
        stored: i64,
        reset_to: i64,
        offsets: u64,
    ) -> Self {
        Self {
            tp,
            kind,
            stored,
            reset_to,
            offsets,
        }
    }
}

/// A partition whose stored position lies outside its log, as
/// [`Error::DataLoss`] and [`Error::OffsetAhead`] list every partition
/// affected besides the one they are about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OutOfLog {
    /// The partition.
    pub tp: TopicPartition,
    /// Below the log start, or past the latest offset.
    pub kind: ResetKind,
    /// The position stored in the checkpoint.
    pub stored: i64,
    /// First offset still in the log.
    pub log_start: i64,
    /// Latest offset.
    pub latest: i64,
}

impl std::fmt::Display for OutOfLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ResetKind::BelowLogStart => write!(
                f,
                "{} (stored offset {} below its log start {})",
                self.tp, self.stored, self.log_start
            ),
            ResetKind::PastLatest => write!(
                f,
                "{} (stored offset {} past its latest offset {})",
                self.tp, self.stored, self.latest
            ),
        }
    }
}

/// The ranges of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// One range per partition, in the order the partitions were given.
    pub ranges: Vec<OffsetRange>,
    /// Partitions that had no stored position (they start at their log start).
    pub new_partitions: Vec<TopicPartition>,
    /// Positions reset by [`DataLossPolicy::ResetToEarliest`].
    pub resets: Vec<OffsetReset>,
}

impl Plan {
    /// A plan of `ranges`, of which `new_partitions` had no stored position
    /// and `resets` were moved by a data-loss reset.
    pub fn new(
        ranges: Vec<OffsetRange>,
        new_partitions: Vec<TopicPartition>,
        resets: Vec<OffsetReset>,
    ) -> Self {
        Self {
            ranges,
            new_partitions,
            resets,
        }
    }

    /// The positions after this batch succeeds: every range's `until`.
    pub fn next_positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.ranges
            .iter()
            .map(|r| (r.topic_partition(), r.until))
            .collect()
    }

    /// The reset of `tp`'s position, if the plan made one.
    pub fn reset_of(&self, tp: &TopicPartition) -> Option<&OffsetReset> {
        self.resets.iter().find(|r| r.tp == *tp)
    }
}

/// Plans the next batch.
///
/// For every partition of `partitions`: `from` is its position in
/// `positions` (the next offset to read), or its log start if it has none;
/// `until` is `latest`, or `from + cap` when `caps` limits the partition and
/// that is lower. Partitions of `positions` missing from `partitions` get no
/// range.
///
/// A position below the log start, or past the latest offset, is an error
/// under [`DataLossPolicy::Fail`] (about the first such partition, listing
/// the others), and restarts the partition from its log
/// start under [`DataLossPolicy::ResetToEarliest`].
pub fn plan_ranges(
    positions: &BTreeMap<TopicPartition, i64>,
    partitions: &[PartitionOffsets],
    caps: Option<&BTreeMap<TopicPartition, u64>>,
    on_data_loss: DataLossPolicy,
) -> Result<Plan> {
    let mut plan = Plan::default();
    // Under `Fail`, every partition out of its log, so the error names all.
    let mut lost = Vec::new();
    for p in partitions {
        let from = match positions.get(&p.tp).copied() {
            None => {
                plan.new_partitions.push(p.tp.clone());
                p.log_start
            }
            Some(stored) if stored < p.log_start || stored > p.latest => {
                let kind = if stored < p.log_start {
                    ResetKind::BelowLogStart
                } else {
                    ResetKind::PastLatest
                };
                if on_data_loss == DataLossPolicy::Fail {
                    lost.push(OutOfLog {
                        tp: p.tp.clone(),
                        kind,
                        stored,
                        log_start: p.log_start,
                        latest: p.latest,
                    });
                    continue;
                }
                let offsets = match kind {
                    ResetKind::BelowLogStart => {
                        let skipped = (p.log_start - stored) as u64;
                        tracing::warn!(
                            partition = %p.tp, stored, log_start = p.log_start, skipped,
                            "stored offset was deleted from the log; skipping to the log start"
                        );
                        skipped
                    }
                    ResetKind::PastLatest => {
                        tracing::warn!(
                            partition = %p.tp, stored, latest = p.latest, log_start = p.log_start,
                            "stored offset is past the latest offset (topic recreated?); \
                             restarting from the log start"
                        );
                        (stored - p.latest) as u64
                    }
                };
                plan.resets.push(OffsetReset {
                    tp: p.tp.clone(),
                    kind,
                    stored,
                    reset_to: p.log_start,
                    offsets,
                });
                p.log_start
            }
            Some(stored) => stored,
        };
        let cap = caps.and_then(|c| c.get(&p.tp)).copied();
        let capped = match cap {
            Some(cap) => from.saturating_add(i64::try_from(cap).unwrap_or(i64::MAX)),
            None => i64::MAX,
        };
        // Clamped to `from` so a broker reporting latest < log start can
        // never yield a backwards range.
        let until = p.latest.min(capped).max(from);
        plan.ranges.push(OffsetRange::new(&p.tp, from, until));
    }
    if lost.is_empty() {
        return Ok(plan);
    }
    let first = lost.remove(0);
    let (topic, partition) = (first.tp.topic.to_string(), first.tp.partition);
    Err(match first.kind {
        ResetKind::BelowLogStart => Error::DataLoss {
            topic,
            partition,
            stored: first.stored,
            log_start: first.log_start,
            others: lost,
        },
        ResetKind::PastLatest => Error::OffsetAhead {
            topic,
            partition,
            stored: first.stored,
            latest: first.latest,
            others: lost,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn po(p: i32, log_start: i64, latest: i64) -> PartitionOffsets {
        PartitionOffsets::new(tp(p), log_start, latest)
    }

    fn bounds(plan: &Plan) -> Vec<(i64, i64)> {
        plan.ranges.iter().map(|r| (r.from, r.until)).collect()
    }

    #[test]
    fn stored_positions_win_and_new_partitions_start_at_log_start() {
        let positions = BTreeMap::from([(tp(0), 7)]);
        let plan = plan_ranges(
            &positions,
            &[po(0, 2, 20), po(1, 4, 9)],
            None,
            DataLossPolicy::Fail,
        )
        .unwrap();
        assert_eq!(bounds(&plan), [(7, 20), (4, 9)]);
        assert_eq!(plan.new_partitions, [tp(1)]);
        assert!(plan.resets.is_empty());
    }

    #[test]
    fn caps_limit_until() {
        let positions = BTreeMap::from([(tp(0), 10), (tp(1), 10)]);
        let caps = BTreeMap::from([(tp(0), 5), (tp(1), 0)]);
        let plan = plan_ranges(
            &positions,
            &[po(0, 0, 100), po(1, 0, 100), po(2, 0, 3)],
            Some(&caps),
            DataLossPolicy::Fail,
        )
        .unwrap();
        assert_eq!(bounds(&plan), [(10, 15), (10, 10), (0, 3)]);
    }

    #[test]
    fn position_below_log_start_fails_naming_everything() {
        let positions = BTreeMap::from([(tp(3), 5)]);
        let err =
            plan_ranges(&positions, &[po(3, 12, 30)], None, DataLossPolicy::Fail).unwrap_err();
        assert!(matches!(
            err,
            Error::DataLoss { ref topic, partition: 3, stored: 5, log_start: 12, ref others } if topic == "t" && others.is_empty()
        ));
        let msg = err.to_string();
        for needle in ["t-3", "5", "12"] {
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn position_below_log_start_resets_when_allowed() {
        let positions = BTreeMap::from([(tp(0), 5)]);
        let plan = plan_ranges(
            &positions,
            &[po(0, 12, 30)],
            None,
            DataLossPolicy::ResetToEarliest,
        )
        .unwrap();
        assert_eq!(bounds(&plan), [(12, 30)]);
        assert_eq!(
            plan.resets,
            [OffsetReset {
                tp: tp(0),
                kind: ResetKind::BelowLogStart,
                stored: 5,
                reset_to: 12,
                offsets: 7
            }]
        );
    }

    #[test]
    fn position_past_latest_is_an_error_or_a_reset() {
        let positions = BTreeMap::from([(tp(0), 50)]);
        let err = plan_ranges(&positions, &[po(0, 0, 30)], None, DataLossPolicy::Fail).unwrap_err();
        assert!(matches!(
            err,
            Error::OffsetAhead {
                stored: 50,
                latest: 30,
                ..
            }
        ));
        let plan = plan_ranges(
            &positions,
            &[po(0, 0, 30)],
            None,
            DataLossPolicy::ResetToEarliest,
        )
        .unwrap();
        assert_eq!(bounds(&plan), [(0, 30)]);
        assert_eq!(
            plan.resets,
            [OffsetReset {
                tp: tp(0),
                kind: ResetKind::PastLatest,
                stored: 50,
                reset_to: 0,
                offsets: 20
            }]
        );
    }

    /// Regression (newuser3 item 6): with a recreated topic, every
    /// partition was past its latest offset, but the error named only the
    /// first.
    #[test]
    fn a_data_loss_error_names_every_affected_partition() {
        let positions = BTreeMap::from([(tp(0), 50), (tp(1), 7), (tp(2), 1), (tp(3), 60)]);
        let offsets = [po(0, 0, 30), po(1, 0, 30), po(2, 4, 30), po(3, 0, 40)];
        let err = plan_ranges(&positions, &offsets, None, DataLossPolicy::Fail).unwrap_err();
        let Error::OffsetAhead {
            partition: 0,
            stored: 50,
            latest: 30,
            ref others,
            ..
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(
            others
                .iter()
                .map(|o| (o.tp.partition, o.kind))
                .collect::<Vec<_>>(),
            [(2, ResetKind::BelowLogStart), (3, ResetKind::PastLatest)]
        );
        let msg = err.to_string();
        let expected = "stored offset 50 of t-0 is past its latest offset 30; 2 more \
                        partition(s) affected: t-2 (stored offset 1 below its log start 4), \
                        t-3 (stored offset 60 past its latest offset 40); was the topic recreated?";
        assert!(msg.contains(expected), "{msg}");
        assert!(!msg.contains("t-1"), "{msg}");
    }

    #[test]
    fn a_long_list_of_affected_partitions_is_cut_after_ten() {
        let positions: BTreeMap<_, _> = (0..25).map(|p| (tp(p), 1)).collect();
        let offsets: Vec<_> = (0..25).map(|p| po(p, 5, 9)).collect();
        let err = plan_ranges(&positions, &offsets, None, DataLossPolicy::Fail).unwrap_err();
        assert!(matches!(&err, Error::DataLoss { others, .. } if others.len() == 24));
        let msg = err.to_string();
        assert!(msg.contains("24 more partition(s) affected: t-1 "), "{msg}");
        assert!(msg.contains("t-10 (") && !msg.contains("t-11 ("), "{msg}");
        assert!(msg.contains(" and 14 more"), "{msg}");
    }

    #[test]
    fn next_positions_are_the_untils() {
        let plan = plan_ranges(
            &BTreeMap::new(),
            &[po(0, 0, 4), po(1, 2, 2)],
            None,
            DataLossPolicy::Fail,
        )
        .unwrap();
        assert_eq!(
            plan.next_positions(),
            BTreeMap::from([(tp(0), 4), (tp(1), 2)])
        );
    }

    /// Per partition: log start, then the latest offset's growth per batch.
    fn growth() -> impl Strategy<Value = Vec<(i64, Vec<i64>)>> {
        prop::collection::vec((0i64..1_000, prop::collection::vec(0i64..500, 1..12)), 1..6)
    }

    proptest! {
        #[test]
        fn consecutive_batches_chain_without_gaps_or_overlaps(
            parts in growth(),
            cap in prop::option::of(0u64..300),
        ) {
            let batches = parts.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
            let mut latest: Vec<i64> = parts.iter().map(|(s, _)| *s).collect();
            let mut positions = BTreeMap::new();
            let caps: BTreeMap<_, _> = (0..parts.len() as i32)
                .filter_map(|p| cap.map(|c| (tp(p), c)))
                .collect();
            for batch in 0..batches {
                let offsets: Vec<_> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, (start, g))| {
                        latest[i] += g.get(batch).copied().unwrap_or(0);
                        po(i as i32, *start, latest[i])
                    })
                    .collect();
                let plan = plan_ranges(
                    &positions,
                    &offsets,
                    cap.is_some().then_some(&caps),
                    DataLossPolicy::Fail,
                )
                .unwrap();
                prop_assert_eq!(plan.ranges.len(), offsets.len());
                for (range, o) in plan.ranges.iter().zip(&offsets) {
                    let expected_from = positions.get(&o.tp).copied().unwrap_or(o.log_start);
                    prop_assert_eq!(range.from, expected_from, "gap or overlap");
                    prop_assert!(range.from <= range.until);
                    prop_assert!(range.until <= o.latest, "until passed latest");
                    if let Some(c) = cap {
                        prop_assert!(range.count() <= c, "cap exceeded");
                    } else {
                        prop_assert_eq!(range.until, o.latest);
                    }
                }
                positions = plan.next_positions();
            }
            // Without a cap, the last batch always catches up.
            if cap.is_none() {
                for (i, _) in parts.iter().enumerate() {
                    prop_assert_eq!(positions[&tp(i as i32)], latest[i]);
                }
            }
        }

        #[test]
        fn stored_offsets_win_and_new_partitions_start_at_log_start(
            parts in prop::collection::vec((0i64..1_000, 0i64..1_000, prop::option::of(0i64..=1_000)), 1..8),
        ) {
            let offsets: Vec<_> = parts
                .iter()
                .enumerate()
                .map(|(i, (start, len, _))| po(i as i32, *start, start + len))
                .collect();
            // Only positions inside [log_start, latest] are valid stored offsets.
            let positions: BTreeMap<_, _> = parts
                .iter()
                .enumerate()
                .filter_map(|(i, (start, len, pos))| pos.map(|p| (tp(i as i32), start + p % (len + 1))))
                .collect();
            let plan = plan_ranges(&positions, &offsets, None, DataLossPolicy::Fail).unwrap();
            for (range, o) in plan.ranges.iter().zip(&offsets) {
                match positions.get(&o.tp) {
                    Some(&stored) => prop_assert_eq!(range.from, stored),
                    None => {
                        prop_assert_eq!(range.from, o.log_start);
                        prop_assert!(plan.new_partitions.contains(&o.tp));
                    }
                }
            }
            prop_assert_eq!(plan.new_partitions.len(), offsets.len() - positions.len());
        }

        #[test]
        fn a_reset_never_reads_below_log_start_or_past_latest(
            stored in -10i64..2_000,
            start in 0i64..1_000,
            len in 0i64..1_000,
        ) {
            let positions = BTreeMap::from([(tp(0), stored)]);
            let plan = plan_ranges(&positions, &[po(0, start, start + len)], None, DataLossPolicy::ResetToEarliest)
                .unwrap();
            let r = &plan.ranges[0];
            prop_assert!(r.from >= start && r.until <= start + len && r.from <= r.until);
            let strict = plan_ranges(&positions, &[po(0, start, start + len)], None, DataLossPolicy::Fail);
            prop_assert_eq!(strict.is_ok(), plan.resets.is_empty());
            // Every reset is recorded with its kind and count.
            if stored < start {
                let reset = plan.reset_of(&tp(0)).unwrap();
                prop_assert_eq!(reset.kind, ResetKind::BelowLogStart);
                prop_assert_eq!(reset.offsets, (start - stored) as u64);
            } else if stored > start + len {
                let reset = plan.reset_of(&tp(0)).unwrap();
                prop_assert_eq!(reset.kind, ResetKind::PastLatest);
                prop_assert_eq!(reset.offsets, (stored - start - len) as u64);
            }
        }

        #[test]
        fn the_fail_error_lists_exactly_the_partitions_a_reset_would_move(
            parts in prop::collection::vec((0i64..100, 0i64..100, prop::option::of(-10i64..300)), 1..8),
        ) {
            let offsets: Vec<_> = parts
                .iter()
                .enumerate()
                .map(|(i, (start, len, _))| po(i as i32, *start, start + len))
                .collect();
            let positions: BTreeMap<_, _> = parts
                .iter()
                .enumerate()
                .filter_map(|(i, (_, _, pos))| pos.map(|p| (tp(i as i32), p)))
                .collect();
            let reset = plan_ranges(&positions, &offsets, None, DataLossPolicy::ResetToEarliest).unwrap();
            let moved: Vec<_> = reset.resets.iter().map(|r| (r.tp.clone(), r.kind, r.stored)).collect();
            let named = match plan_ranges(&positions, &offsets, None, DataLossPolicy::Fail) {
                Ok(_) => Vec::new(),
                Err(Error::DataLoss { partition, stored, others, .. }) => {
                    std::iter::once((tp(partition), ResetKind::BelowLogStart, stored))
                        .chain(others.into_iter().map(|o| (o.tp, o.kind, o.stored)))
                        .collect()
                }
                Err(Error::OffsetAhead { partition, stored, others, .. }) => {
                    std::iter::once((tp(partition), ResetKind::PastLatest, stored))
                        .chain(others.into_iter().map(|o| (o.tp, o.kind, o.stored)))
                        .collect()
                }
                Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
            };
            prop_assert_eq!(named, moved);
        }
    }
}
