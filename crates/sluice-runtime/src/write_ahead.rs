//! The write-ahead plan: every batch's id, time and ranges are stored
//! before it runs, and a batch that did not commit is redone after a
//! restart with exactly those ranges. Its id and ranges, and with them the
//! idempotency keys outside systems see, never change.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_checkpoint::{BatchRecord, RangeRecord, ResetRecord, ResetRecordKind};
use sluice_core::{BatchInfo, OffsetRange, OffsetReset, Plan, ResetKind, TopicPartition};

/// A planned batch to redo.
pub(crate) struct Replay {
    pub(crate) plan: Plan,
    pub(crate) time: SystemTime,
    /// The rate limit the batch was planned under, as recorded.
    pub(crate) rate_limit: Option<String>,
}

/// What is stored before batch `info` runs: its record with zero counts.
pub(crate) fn record(info: &BatchInfo, plan: &Plan) -> BatchRecord {
    let mut record = BatchRecord::new(info.id, info.time_ms());
    record.ranges = info
        .ranges
        .iter()
        .map(|range| {
            let stored = RangeRecord::from_range(range, 0);
            match plan.reset_of(&range.topic_partition()) {
                Some(reset) => stored.with_reset(
                    ResetRecord::new(record_kind(reset.kind), reset.stored),
                    reset.offsets,
                ),
                None => stored,
            }
        })
        .collect();
    record.rate_limit = info.rate_limit.map(|limit| limit.to_string());
    record
}

fn record_kind(kind: ResetKind) -> ResetRecordKind {
    match kind {
        ResetKind::PastLatest => ResetRecordKind::PastLatest,
        _ => ResetRecordKind::BelowLogStart,
    }
}

fn plan_kind(kind: ResetRecordKind) -> ResetKind {
    match kind {
        ResetRecordKind::PastLatest => ResetKind::PastLatest,
        _ => ResetKind::BelowLogStart,
    }
}

/// The batch to redo from its stored plan, if the plan still continues
/// from the stored positions. Partitions without a position were new.
pub(crate) fn replay(
    pending: &BatchRecord,
    positions: &BTreeMap<TopicPartition, i64>,
) -> Option<Replay> {
    let mut plan = Plan::new(
        Vec::with_capacity(pending.ranges.len()),
        Vec::new(),
        Vec::new(),
    );
    for stored in &pending.ranges {
        let tp = TopicPartition::new(stored.topic.as_str(), stored.partition);
        match positions.get(&tp) {
            Some(&position) if position != stored.from => {
                tracing::warn!(
                    batch = pending.id, partition = %tp, planned_from = stored.from, position,
                    "the stored plan does not continue from the stored offsets; planning the batch again"
                );
                return None;
            }
            Some(_) => {}
            None => plan.new_partitions.push(tp.clone()),
        }
        if let Some(reset) = stored.reset {
            plan.resets.push(OffsetReset::new(
                tp.clone(),
                plan_kind(reset.kind),
                reset.stored,
                stored.from,
                stored.skipped_offsets,
            ));
        }
        plan.ranges
            .push(OffsetRange::new(&tp, stored.from, stored.until));
    }
    let time = UNIX_EPOCH + Duration::from_millis(pending.time_ms.max(0) as u64);
    Some(Replay {
        plan,
        time,
        rate_limit: pending.rate_limit.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn planned() -> (BatchInfo, Plan) {
        let plan = Plan::new(
            vec![
                OffsetRange::new(&tp(0), 5, 9),
                OffsetRange::new(&tp(1), 0, 3),
            ],
            vec![tp(1)],
            vec![OffsetReset::new(tp(0), ResetKind::BelowLogStart, 3, 5, 2)],
        );
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        (BatchInfo::new(4, time, plan.ranges.clone()), plan)
    }

    #[test]
    fn a_stored_plan_replays_the_same_ranges_time_and_skips() {
        let (info, plan) = planned();
        let stored = record(&info, &plan);
        let positions = BTreeMap::from([(tp(0), 5)]);
        let replay = replay(&stored, &positions).expect("the plan continues from position 5");
        assert_eq!(replay.plan.ranges, plan.ranges);
        assert_eq!(replay.plan.new_partitions, [tp(1)]);
        assert_eq!(replay.plan.resets, plan.resets);
        assert_eq!(replay.time, info.time);
    }

    #[test]
    fn a_plan_that_does_not_continue_from_the_positions_is_dropped() {
        let (info, plan) = planned();
        let stored = record(&info, &plan);
        let positions = BTreeMap::from([(tp(0), 9)]);
        assert!(replay(&stored, &positions).is_none());
    }
}
