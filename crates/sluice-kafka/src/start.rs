//! Where a job starts reading when its checkpoint holds no offsets yet.

use std::collections::BTreeMap;

use sluice_core::{PartitionOffsets, TopicPartition};

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
    Offsets(BTreeMap<TopicPartition, i64>),
}

/// Resolves `policy` for `partitions` to concrete offsets.
///
/// `assigned` are the explicit offsets of an assign strategy and win over
/// the policy. `by_time` holds, for [`StartOffsets::Timestamp`], the offset
/// the broker found per partition (`None`: no record that late).
pub(crate) fn resolve(
    policy: &StartOffsets,
    partitions: &[PartitionOffsets],
    assigned: Option<&BTreeMap<TopicPartition, i64>>,
    by_time: &BTreeMap<TopicPartition, Option<i64>>,
) -> BTreeMap<TopicPartition, i64> {
    partitions
        .iter()
        .map(|p| {
            let explicit = assigned.and_then(|a| a.get(&p.tp)).copied();
            let offset = explicit.unwrap_or_else(|| match policy {
                StartOffsets::Earliest => p.log_start,
                StartOffsets::Latest => p.latest,
                StartOffsets::Timestamp(_) => match by_time.get(&p.tp).copied().flatten() {
                    Some(found) => found.clamp(p.log_start, p.latest.max(p.log_start)),
                    None => p.latest,
                },
                StartOffsets::Offsets(map) => map.get(&p.tp).copied().unwrap_or(p.log_start),
            });
            (p.tp.clone(), offset)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = resolve(&StartOffsets::Earliest, &parts, None, &none);
        assert_eq!(e, BTreeMap::from([(tp("a", 0), 3), (tp("a", 1), 0)]));
        let l = resolve(&StartOffsets::Latest, &parts, None, &none);
        assert_eq!(l, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 7)]));
    }

    #[test]
    fn explicit_offsets_default_to_earliest() {
        let parts = [po("a", 0, 3, 10), po("a", 1, 2, 7)];
        let policy = StartOffsets::Offsets(BTreeMap::from([(tp("a", 0), 5)]));
        let got = resolve(&policy, &parts, None, &BTreeMap::new());
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 5), (tp("a", 1), 2)]));
    }

    #[test]
    fn timestamp_past_the_end_starts_at_latest() {
        let parts = [po("a", 0, 0, 10), po("a", 1, 0, 7)];
        let by_time = BTreeMap::from([(tp("a", 0), Some(4)), (tp("a", 1), None)]);
        let got = resolve(&StartOffsets::Timestamp(1), &parts, None, &by_time);
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 4), (tp("a", 1), 7)]));
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
        );
        assert_eq!(got, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 6)]));
    }
}
