//! Where a job starts reading when its checkpoint holds no offsets yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sluice_core::{PartitionOffsets, TopicPartition};

use crate::{Error, Result};

/// Where to start every partition on a job's first start (nothing stored in
/// the checkpoint yet). Once offsets are stored they always win, and a
/// partition discovered while running always starts from its log start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartOffsets {
    /// The first offset still in the log (the default).
    #[default]
    Earliest,
    /// The latest offset: only records produced after the start are read.
    Latest,
    /// The first offset whose record timestamp is at or after this time, in
    /// milliseconds since the Unix epoch; partitions with no such record
    /// start at their latest offset.
    Timestamp(i64),
    /// Explicit offsets; partitions missing from the map start from earliest.
    ///
    /// The map is checked on the first start: an entry naming a partition
    /// the job does not read then (a typo, a topic not subscribed, a topic
    /// matching a pattern but not created yet), or an offset outside its
    /// partition's log (below the log start or above the latest offset),
    /// fails the start with [`Error::Config`] for `start_from`. Nothing is
    /// read or written. An offset equal to the latest offset is valid.
    Offsets(BTreeMap<TopicPartition, i64>),
    /// The offsets the source's consumer group (`group_id`, the app id by
    /// default) has committed: where a job that kept its progress in Kafka
    /// (a Spark Streaming job calling `commitAsync`, a plain consumer) left
    /// off, so it moves to sluice without reading anything twice or
    /// skipping anything. Partitions the group committed nothing for start
    /// from earliest. A committed offset the log no longer holds is treated
    /// as a stored one: the source's data-loss policy decides (see
    /// `on_data_loss`).
    GroupCommitted,
}

/// How many partitions an error message names before "and N more".
const NAMED: usize = 10;

/// Resolves `policy` for `partitions` to concrete offsets.
///
/// `assigned` are the explicit offsets of an assign strategy and win over
/// the policy. `looked_up` holds what the broker answered for a policy that
/// asks it, per partition: for [`StartOffsets::Timestamp`] the offset found
/// (`None`: no record that late), for [`StartOffsets::GroupCommitted`] the
/// group's committed offset (`None`: none).
///
/// Explicit offsets (of [`StartOffsets::Offsets`] or of `assigned`) are
/// configuration, not stored positions: one naming a partition missing from
/// `partitions`, or outside its partition's `[log start, latest]`, is an
/// [`Error::Config`] naming the setting (`start_from` or `assign`), every
/// such entry, and the partitions' offsets.
pub(crate) fn resolve(
    policy: &StartOffsets,
    partitions: &[PartitionOffsets],
    assigned: Option<&BTreeMap<TopicPartition, i64>>,
    looked_up: &BTreeMap<TopicPartition, Option<i64>>,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let unknown = match policy {
        StartOffsets::Offsets(map) => unknown_entries(map, partitions),
        _ => None,
    };
    let mut outside = Vec::new();
    let resolved = partitions
        .iter()
        .map(|p| {
            let explicit = assigned
                .and_then(|a| a.get(&p.tp))
                .map(|o| ("assign", *o))
                .or_else(|| match policy {
                    StartOffsets::Offsets(map) => map.get(&p.tp).map(|o| ("start_from", *o)),
                    _ => None,
                });
            let offset = match explicit {
                Some((setting, offset)) => {
                    if offset < p.log_start || offset > p.latest {
                        outside.push((setting, p, offset));
                    }
                    offset
                }
                None => match policy {
                    StartOffsets::Earliest | StartOffsets::Offsets(_) => p.log_start,
                    StartOffsets::Latest => p.latest,
                    StartOffsets::Timestamp(_) => match looked_up.get(&p.tp).copied().flatten() {
                        Some(found) => found.clamp(p.log_start, p.latest.max(p.log_start)),
                        None => p.latest,
                    },
                    // As stored: planning checks it against the log.
                    StartOffsets::GroupCommitted => looked_up
                        .get(&p.tp)
                        .copied()
                        .flatten()
                        .unwrap_or(p.log_start),
                },
            };
            (p.tp.clone(), offset)
        })
        .collect();
    // `start_from` first: an assign strategy's offsets are checked the same way.
    for setting in ["start_from", "assign"] {
        let wrong: Vec<_> = outside.iter().filter(|(s, ..)| *s == setting).collect();
        // Every kind of bad entry at once, so one fix is enough.
        let unknown = unknown.as_ref().filter(|_| setting == "start_from");
        if wrong.is_empty() {
            match unknown {
                Some(reason) => return Err(Error::config(setting, reason.clone())),
                None => continue,
            }
        }
        let mut reason = String::from(
            "on the first start an explicit offset must lie within its partition's log \
             (from its log start to its latest offset): ",
        );
        let named: Vec<String> = wrong
            .iter()
            .map(|(_, p, offset)| {
                let side = if *offset < p.log_start {
                    "below its log start"
                } else {
                    "past its latest offset"
                };
                format!(
                    "start offset {offset} of {} is {side} (log start {}, latest offset {})",
                    p.tp, p.log_start, p.latest
                )
            })
            .collect();
        reason.push_str(&list(&named));
        if let Some(unknown) = unknown {
            let _ = write!(reason, "; and {unknown}");
        }
        return Err(Error::config(setting, reason));
    }
    Ok(resolved)
}

/// Why the start offsets given for partitions the job does not read are
/// refused, if any are.
fn unknown_entries(
    map: &BTreeMap<TopicPartition, i64>,
    partitions: &[PartitionOffsets],
) -> Option<String> {
    let unknown: Vec<String> = map
        .iter()
        .filter(|(tp, _)| !partitions.iter().any(|p| p.tp == **tp))
        .map(|(tp, offset)| format!("{tp}={offset}"))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let found: Vec<String> = partitions.iter().map(|p| p.tp.to_string()).collect();
    let mut reason = format!(
        "offsets given for partitions the job does not read: {}; the job found ",
        list(&unknown)
    );
    if found.is_empty() {
        reason.push_str("no partition");
    } else {
        let _ = write!(reason, "{} partition(s): {}", found.len(), list(&found));
    }
    reason.push_str(
        " (a partition discovered after the first start always begins at its log start, so \
         an entry for a topic not created yet would never apply)",
    );
    Some(reason)
}

/// `items` joined by ", ", the first [`NAMED`] and "and N more".
fn list(items: &[String]) -> String {
    let mut text = items[..items.len().min(NAMED)].join(", ");
    if items.len() > NAMED {
        let _ = write!(text, " and {} more", items.len() - NAMED);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn po(topic: &str, partition: i32, log_start: i64, latest: i64) -> PartitionOffsets {
        PartitionOffsets::new(TopicPartition::new(topic, partition), log_start, latest)
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn earliest_and_latest_use_the_watermarks() {
        let parts = [po("a", 0, 3, 10), po("a", 1, 0, 7)];
        let none = BTreeMap::new();
        let e = resolve(&StartOffsets::Earliest, &parts, None, &none).unwrap();
        assert_eq!(e, BTreeMap::from([(tp("a", 0), 3), (tp("a", 1), 0)]));
        let l = resolve(&StartOffsets::Latest, &parts, None, &none).unwrap();
        assert_eq!(l, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 7)]));
    }

    #[test]
    fn out_of_log_and_unknown_start_offsets_are_refused_in_one_error() {
        let parts = [po("a", 0, 0, 10), po("a", 1, 0, 7)];
        let policy = StartOffsets::Offsets(BTreeMap::from([
            (tp("a", 0), 50),
            (tp("a", 1), 70),
            (tp("a", 7), 1),
        ]));
        let error = resolve(&policy, &parts, None, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        for part in ["a-0", "a-1", "a-7=1", "start_from"] {
            assert!(error.contains(part), "{part} not in: {error}");
        }
    }

    #[test]
    fn explicit_offsets_default_to_earliest() {
        let parts = [po("a", 0, 3, 10), po("a", 1, 2, 7)];
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("a", 0), 5)]));
        let got = resolve(&policy, &parts, None, &BTreeMap::new()).unwrap();
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 5), (tp("a", 1), 2)]));
    }

    #[test]
    fn timestamp_past_the_end_starts_at_latest() {
        let parts = [po("a", 0, 0, 10), po("a", 1, 0, 7)];
        let by_time = BTreeMap::from([(tp("a", 0), Some(4)), (tp("a", 1), None)]);
        let got = resolve(&StartOffsets::Timestamp(1), &parts, None, &by_time).unwrap();
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 4), (tp("a", 1), 7)]));
    }

    #[test]
    fn group_committed_offsets_are_taken_as_stored_and_missing_ones_start_at_earliest() {
        let parts = [po("a", 0, 3, 10), po("a", 1, 2, 7), po("a", 2, 5, 9)];
        // Partition 2's committed offset is below its log start: kept, for
        // planning's data-loss check to decide, not refused as a setting.
        let committed = BTreeMap::from([
            (tp("a", 0), Some(8)),
            (tp("a", 1), None),
            (tp("a", 2), Some(1)),
        ]);
        let got = resolve(&StartOffsets::GroupCommitted, &parts, None, &committed).unwrap();
        assert_eq!(
            got,
            BTreeMap::from([(tp("a", 0), 8), (tp("a", 1), 2), (tp("a", 2), 1)])
        );
    }

    #[test]
    fn assigned_offsets_win() {
        let parts = [po("a", 0, 0, 10), po("a", 1, 0, 7)];
        let assigned = BTreeMap::from([(tp("a", 1), 6)]);
        let got = resolve(
            &StartOffsets::Latest,
            &parts,
            Some(&assigned),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 6)]));
    }

    fn refused(result: Result<BTreeMap<TopicPartition, i64>>) -> (String, String) {
        match result {
            Err(Error::Config { setting, reason }) => (setting, reason),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    /// newuser3 item 2: a start offset past the end is configuration, not
    /// a stored position of a recreated topic.
    #[test]
    fn a_start_offset_past_the_latest_offset_is_refused_naming_it() {
        let parts = [po("t1", 0, 0, 5000), po("t1", 1, 0, 10)];
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("t1", 0), 99999)]));
        let (setting, reason) = refused(resolve(&policy, &parts, None, &BTreeMap::new()));
        assert_eq!(setting, "start_from");
        for needle in [
            "t1-0",
            "99999",
            "past its latest offset",
            "log start 0",
            "latest offset 5000",
        ] {
            assert!(reason.contains(needle), "{needle:?} missing: {reason}");
        }
        assert!(!reason.contains("t1-1"), "{reason}");
    }

    #[test]
    fn a_start_offset_below_the_log_start_is_refused() {
        let parts = [po("t1", 0, 40, 90)];
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("t1", 0), 3)]));
        let (setting, reason) = refused(resolve(&policy, &parts, None, &BTreeMap::new()));
        assert_eq!(setting, "start_from");
        for needle in [
            "start offset 3 of t1-0",
            "below its log start",
            "log start 40",
            "latest offset 90",
        ] {
            assert!(reason.contains(needle), "{needle:?} missing: {reason}");
        }
    }

    #[test]
    fn start_offsets_at_the_log_start_and_at_the_latest_offset_are_valid() {
        let parts = [po("t1", 0, 40, 90), po("t1", 1, 5, 5)];
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("t1", 0), 90), (tp("t1", 1), 5)]));
        let got = resolve(&policy, &parts, None, &BTreeMap::new()).unwrap();
        assert_eq!(got, BTreeMap::from([(tp("t1", 0), 90), (tp("t1", 1), 5)]));
    }

    #[test]
    fn an_assigned_offset_outside_the_log_is_refused_naming_assign() {
        let parts = [po("a", 0, 0, 10)];
        let assigned = BTreeMap::from([(tp("a", 0), 11)]);
        let (setting, reason) = refused(resolve(
            &StartOffsets::Earliest,
            &parts,
            Some(&assigned),
            &BTreeMap::new(),
        ));
        assert_eq!(setting, "assign");
        assert!(reason.contains("start offset 11 of a-0"), "{reason}");
    }

    /// newuser3 item 3: a typo in the start map must not mean "replay
    /// everything".
    #[test]
    fn start_offsets_of_partitions_the_job_does_not_read_are_refused_listing_both() {
        let parts = [po("t1", 0, 0, 10), po("t1", 1, 0, 10)];
        let policy = StartOffsets::Offsets(BTreeMap::from([
            (tp("t1", 7), 5),
            (tp("nosuch", 0), 3),
            (tp("t1", 1), 2),
        ]));
        let (setting, reason) = refused(resolve(&policy, &parts, None, &BTreeMap::new()));
        assert_eq!(setting, "start_from");
        for needle in ["nosuch-0=3", "t1-7=5", "2 partition(s): t1-0, t1-1"] {
            assert!(reason.contains(needle), "{needle:?} missing: {reason}");
        }
        assert!(!reason.contains("t1-1=2"), "{reason}");
    }

    #[test]
    fn a_start_map_for_a_pattern_that_matches_nothing_yet_is_refused() {
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("p-a", 0), 3)]));
        let (_, reason) = refused(resolve(&policy, &[], None, &BTreeMap::new()));
        assert!(
            reason.contains("p-a-0=3") && reason.contains("no partition"),
            "{reason}"
        );
    }

    #[test]
    fn long_lists_name_the_first_ten_and_count_the_rest() {
        let parts: Vec<_> = (0..25).map(|p| po("t", p, 0, 1)).collect();
        let policy = StartOffsets::Offsets((0..25).map(|p| (tp("t", p), 2)).collect());
        let (_, reason) = refused(resolve(&policy, &parts, None, &BTreeMap::new()));
        assert!(reason.contains("and 15 more"), "{reason}");
        assert!(
            reason.contains("t-9 ") && !reason.contains("t-10 "),
            "{reason}"
        );
    }

    proptest! {
        /// Every accepted start lies within its partition's log, and an
        /// explicit offset is refused exactly when it lies outside.
        #[test]
        fn explicit_offsets_are_used_exactly_when_inside_the_log(
            parts in prop::collection::vec((0i64..100, 0i64..100, prop::option::of(0i64..300)), 1..6),
        ) {
            let offsets: Vec<_> = parts
                .iter()
                .enumerate()
                .map(|(i, (start, len, _))| po("t", i as i32, *start, start + len))
                .collect();
            let map: BTreeMap<_, _> = parts
                .iter()
                .enumerate()
                .filter_map(|(i, (_, _, o))| o.map(|o| (tp("t", i as i32), o)))
                .collect();
            let inside = offsets.iter().all(|p| {
                map.get(&p.tp).is_none_or(|o| (p.log_start..=p.latest).contains(o))
            });
            let got = resolve(&StartOffsets::Offsets(map.clone()), &offsets, None, &BTreeMap::new());
            prop_assert_eq!(got.is_ok(), inside);
            if let Ok(got) = got {
                for p in &offsets {
                    let start = got[&p.tp];
                    prop_assert!(p.log_start <= start && start <= p.latest);
                    prop_assert_eq!(start, map.get(&p.tp).copied().unwrap_or(p.log_start));
                }
            }
        }
    }
}
