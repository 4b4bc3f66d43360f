//! A bounded run (`StreamingContext::run_until_caught_up`): the latest
//! offsets when the run starts are its end, as Structured Streaming's
//! `Trigger.AvailableNow` and Flink's bounded mode have it.

use std::collections::BTreeMap;

use sluice_core::{PartitionOffsets, Plan, TopicPartition};

/// Where a bounded run ends: per partition, the offset to read up to.
pub(crate) type Targets = BTreeMap<TopicPartition, i64>;

/// The end of a bounded run planned from `offsets`: each partition's
/// latest offset. Partitions with nothing to read are left out.
pub(crate) fn targets(offsets: &[PartitionOffsets]) -> Targets {
    offsets
        .iter()
        .filter(|p| p.latest > p.log_start)
        .map(|p| (p.tp.clone(), p.latest))
        .collect()
}

/// `offsets` as a bounded run may read them: no partition past its target,
/// and partitions found after the run started not at all.
pub(crate) fn bound(offsets: &[PartitionOffsets], targets: &Targets) -> Vec<PartitionOffsets> {
    offsets
        .iter()
        .map(|p| {
            let end = targets.get(&p.tp).copied().unwrap_or(p.log_start);
            PartitionOffsets::new(
                p.tp.clone(),
                p.log_start,
                p.latest.min(end).max(p.log_start),
            )
        })
        .collect()
}

/// Whether committed `positions` reached every target.
pub(crate) fn caught_up(positions: &BTreeMap<TopicPartition, i64>, targets: &Targets) -> bool {
    targets
        .iter()
        .all(|(tp, target)| positions.get(tp).is_some_and(|p| p >= target))
}

/// Whether a batch of `plan` would change nothing: no record to read, no
/// partition without a stored position, no position reset.
pub(crate) fn nothing_new(plan: &Plan) -> bool {
    plan.ranges.iter().all(|r| r.count() == 0)
        && plan.new_partitions.is_empty()
        && plan.resets.is_empty()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn offsets(tp: &TopicPartition, log_start: i64, latest: i64) -> PartitionOffsets {
        PartitionOffsets::new(tp.clone(), log_start, latest)
    }

    #[test]
    fn a_partition_found_after_the_start_is_not_read() {
        let (old, new) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
        let targets = targets(&[offsets(&old, 0, 10)]);
        let bounded = bound(&[offsets(&old, 0, 25), offsets(&new, 3, 8)], &targets);
        assert_eq!(bounded, [offsets(&old, 0, 10), offsets(&new, 3, 3)]);
    }

    #[test]
    fn empty_partitions_are_not_waited_for() {
        let tp = TopicPartition::new("t", 0);
        let targets = targets(&[offsets(&tp, 5, 5)]);
        assert!(targets.is_empty());
        assert!(caught_up(&BTreeMap::new(), &targets));
    }

    proptest! {
        /// Bounded offsets never pass the target nor fall below the log
        /// start, and a run is caught up exactly when every position
        /// reached its target.
        #[test]
        fn bounded_offsets_stay_within_target_and_log(
            parts in prop::collection::vec((0i64..100, 0i64..100, 0i64..100, 0i64..200), 1..6),
        ) {
            let mut at_start = Vec::new();
            let mut now = Vec::new();
            let mut positions = BTreeMap::new();
            for (i, (start, len, more, position)) in parts.iter().enumerate() {
                let tp = TopicPartition::new("t", i as i32);
                at_start.push(offsets(&tp, *start, start + len));
                now.push(offsets(&tp, *start, start + len + more));
                positions.insert(tp, *position);
            }
            let targets = targets(&at_start);
            for (p, b) in now.iter().zip(bound(&now, &targets)) {
                prop_assert!(b.latest >= b.log_start);
                prop_assert!(b.latest <= p.latest);
                if let Some(target) = targets.get(&p.tp) {
                    prop_assert!(b.latest <= (*target).max(p.log_start));
                }
            }
            let expected = at_start
                .iter()
                .filter(|p| p.latest > p.log_start)
                .all(|p| positions[&p.tp] >= p.latest);
            prop_assert_eq!(caught_up(&positions, &targets), expected);
        }
    }
}
