//! The event-time watermark of a window operator: per input partition the
//! greatest event time seen and the batch time it was last seen, combined
//! into one watermark. Plain functions; the operator stores [`Clocks`] in
//! its state.
//!
//! The rule:
//!
//! - a partition's clock starts with its first record; its maximum is the
//!   greatest event time of its records, and its last-seen time the batch
//!   time of the last batch that brought it records;
//! - a partition is **idle** once `idle_timeout` of batch time passed
//!   since it was last seen (never, without an idle timeout);
//! - the candidate is the least maximum over the partitions that are not
//!   idle, minus the allowed lateness; when every partition is idle, the
//!   greatest maximum minus the allowed lateness;
//! - the watermark is the greater of the candidate and the watermark
//!   before: it never goes backward.

use serde::{Deserialize, Serialize};

/// One input partition's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionClock {
    /// The topic; empty for values whose source is not known (a stream
    /// shuffled before the window operator).
    pub(crate) topic: String,
    /// The partition; -1 when not known.
    pub(crate) partition: i32,
    /// The greatest event time seen (ms).
    pub(crate) max_event_time: i64,
    /// Batch time (ms) of the last batch with records of the partition.
    pub(crate) last_seen_ms: i64,
}

/// What the operator keeps between batches: its watermark and the clocks
/// it came from, by topic and partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Clocks {
    /// `None` until the first record.
    pub(crate) watermark: Option<i64>,
    pub(crate) partitions: Vec<PartitionClock>,
}

/// How the watermark is made from the clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Subtracted from the event times (ms).
    pub(crate) allowed_lateness: i64,
    /// Batch time (ms) after which a partition without records is idle.
    pub(crate) idle_timeout: Option<i64>,
}

impl Rule {
    /// True when `clock` no longer holds the watermark back at batch time
    /// `now`.
    pub(crate) fn is_idle(&self, clock: &PartitionClock, now: i64) -> bool {
        self.idle_timeout
            .is_some_and(|idle| now.saturating_sub(clock.last_seen_ms) >= idle)
    }

    /// The clocks after a batch at batch time `now` that saw, per
    /// partition, records up to the event time given (`(topic, partition,
    /// greatest event time)`, each partition at most once).
    pub(crate) fn advance(&self, before: &Clocks, seen: &[(String, i32, i64)], now: i64) -> Clocks {
        let mut partitions = before.partitions.clone();
        for (topic, partition, max) in seen {
            let at = partitions
                .binary_search_by(|c| (c.topic.as_str(), c.partition).cmp(&(topic, *partition)));
            match at {
                Ok(i) => {
                    let clock = &mut partitions[i];
                    clock.max_event_time = clock.max_event_time.max(*max);
                    clock.last_seen_ms = now;
                }
                Err(i) => partitions.insert(
                    i,
                    PartitionClock {
                        topic: topic.clone(),
                        partition: *partition,
                        max_event_time: *max,
                        last_seen_ms: now,
                    },
                ),
            }
        }
        let active = partitions
            .iter()
            .filter(|c| !self.is_idle(c, now))
            .map(|c| c.max_event_time)
            .min();
        let candidate = active
            .or_else(|| partitions.iter().map(|c| c.max_event_time).max())
            .map(|max| max.saturating_sub(self.allowed_lateness));
        let watermark = match (before.watermark, candidate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Clocks {
            watermark,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch: per partition of 0..3, maybe records up to an event time.
    fn batches() -> impl Strategy<Value = Vec<Vec<Option<i64>>>> {
        proptest::collection::vec(
            proptest::collection::vec(proptest::option::of(-1000i64..1000), 3),
            1..12,
        )
    }

    fn seen(batch: &[Option<i64>]) -> Vec<(String, i32, i64)> {
        batch
            .iter()
            .enumerate()
            .filter_map(|(p, max)| Some(("t".to_owned(), p as i32, (*max)?)))
            .collect()
    }

    proptest! {
        #[test]
        fn the_watermark_never_goes_backward(
            batches in batches(), lateness in 0i64..100, idle in proptest::option::of(1i64..50),
        ) {
            let rule = Rule { allowed_lateness: lateness, idle_timeout: idle };
            let mut clocks = Clocks::default();
            for (b, batch) in batches.iter().enumerate() {
                let next = rule.advance(&clocks, &seen(batch), b as i64 * 10);
                if let Some(before) = clocks.watermark {
                    prop_assert!(next.watermark >= Some(before));
                }
                clocks = next;
            }
        }

        /// Without idleness the watermark is the least partition maximum
        /// minus the lateness, or what it was before if that was greater.
        #[test]
        fn without_idleness_the_slowest_partition_holds_the_watermark(
            batches in batches(), lateness in 0i64..100,
        ) {
            let rule = Rule { allowed_lateness: lateness, idle_timeout: None };
            let mut clocks = Clocks::default();
            let mut maxima: [Option<i64>; 3] = [None; 3];
            let mut expected: Option<i64> = None;
            for (b, batch) in batches.iter().enumerate() {
                for (p, max) in batch.iter().enumerate() {
                    if let Some(m) = max {
                        maxima[p] = Some(maxima[p].map_or(*m, |x| x.max(*m)));
                    }
                }
                if let Some(least) = maxima.iter().flatten().min() {
                    expected = Some(expected.map_or(least - lateness, |e| e.max(least - lateness)));
                }
                clocks = rule.advance(&clocks, &seen(batch), b as i64 * 10);
                prop_assert_eq!(clocks.watermark, expected);
            }
        }

        /// A partition idle for the idle time holds nothing back; one that
        /// brought records in this batch holds the watermark again.
        #[test]
        fn idle_partitions_do_not_hold_the_watermark_back(
            batches in batches(), lateness in 0i64..100, idle in 1i64..50,
        ) {
            let rule = Rule { allowed_lateness: lateness, idle_timeout: Some(idle) };
            let mut clocks = Clocks::default();
            for (b, batch) in batches.iter().enumerate() {
                let now = b as i64 * 10;
                let before = clocks.watermark;
                clocks = rule.advance(&clocks, &seen(batch), now);
                let active: Vec<i64> = clocks.partitions.iter()
                    .filter(|c| now - c.last_seen_ms < idle)
                    .map(|c| c.max_event_time)
                    .collect();
                let candidate = match active.iter().min() {
                    Some(least) => Some(least - lateness),
                    None => clocks.partitions.iter().map(|c| c.max_event_time - lateness).max(),
                };
                let expected = match (before, candidate) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                prop_assert_eq!(clocks.watermark, expected);
                for (p, max) in batch.iter().enumerate() {
                    if max.is_some() {
                        let clock = clocks.partitions.iter().find(|c| c.partition == p as i32).unwrap();
                        prop_assert!(!rule.is_idle(clock, now));
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_times_saturate() {
        let rule = Rule {
            allowed_lateness: i64::MAX,
            idle_timeout: Some(1),
        };
        let clocks = rule.advance(&Clocks::default(), &[("t".into(), 0, i64::MIN)], i64::MIN);
        assert_eq!(clocks.watermark, Some(i64::MIN));
        let later = rule.advance(&clocks, &[], i64::MAX);
        assert_eq!(later.watermark, Some(i64::MIN));
    }
}
