//! Splitting a job's rate into per-partition caps for one batch.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::RateLimits;
use crate::TopicPartition;

/// Which limit was the tightest in force for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateReason {
    /// [`RateLimits::max_rate_per_partition`] or a
    /// [`RateLimits::per_partition_max`] override.
    MaxRatePerPartition,
    /// The job-wide [`RateLimits::max_rate`].
    MaxRate,
    /// The backpressure estimate of the
    /// [`PidRateEstimator`](crate::PidRateEstimator).
    Backpressure,
    /// [`RateLimits::initial_rate`], before there is an estimate.
    InitialRate,
}

impl fmt::Display for RateReason {
    /// ```
    /// assert_eq!(sluice_core::RateReason::MaxRate.to_string(), "max rate");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateReason::MaxRatePerPartition => "max rate per partition",
            RateReason::MaxRate => "max rate",
            RateReason::Backpressure => "backpressure estimate",
            RateReason::InitialRate => "initial rate",
        })
    }
}

/// The tightest rate limit in force for a batch, for logs, listeners
/// ([`BatchInfo::rate_limit`](crate::BatchInfo::rate_limit)) and the batch
/// record.
///
/// `records_per_second` is job-wide, except for
/// [`RateReason::MaxRatePerPartition`], where it is the lowest maximum of
/// the job's partitions.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::{batch_caps, RateLimits, TopicPartition};
///
/// let limits = RateLimits::new().max_rate(2_500.0);
/// let lags = [(TopicPartition::new("t", 0), 10_000)];
/// let limit = batch_caps(&limits, None, false, Duration::from_secs(1), &lags).limit.unwrap();
/// assert_eq!(limit.records_per_second, 2_500.0);
/// assert_eq!(limit.to_string(), "max rate 2500/s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// The limit, in records per second.
    pub records_per_second: f64,
    /// Which setting or estimate it comes from.
    pub reason: RateReason,
}

impl fmt::Display for RateLimit {
    /// ```
    /// # use std::time::Duration;
    /// # use sluice_core::{batch_caps, RateLimits, TopicPartition};
    /// let limits = RateLimits::new().backpressure(true);
    /// let lags = [(TopicPartition::new("t", 0), 10_000)];
    /// let caps = batch_caps(&limits, Some(1_234.5), false, Duration::from_secs(1), &lags);
    /// assert_eq!(caps.limit.unwrap().to_string(), "backpressure estimate 1234.5/s");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.records_per_second;
        if rate.fract() == 0.0 {
            write!(f, "{} {rate}/s", self.reason)
        } else {
            write!(f, "{} {rate:.1}/s", self.reason)
        }
    }
}

/// The caps of one batch: what [`batch_caps`] decided.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::{batch_caps, RateLimits, TopicPartition};
///
/// let lags = [(TopicPartition::new("t", 0), 10_000)];
/// let unlimited = batch_caps(&RateLimits::new(), None, false, Duration::from_secs(1), &lags);
/// assert_eq!((unlimited.caps, unlimited.limit), (None, None));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchCaps {
    /// Most records each partition may read, for
    /// [`plan_ranges`](crate::plan_ranges). `None`: no limit applies. A partition
    /// missing from the map is unlimited.
    pub caps: Option<BTreeMap<TopicPartition, u64>>,
    /// The tightest limit in force; `Some` exactly when `caps` is.
    pub limit: Option<RateLimit>,
}

impl BatchCaps {
    /// The most records the batch may read in all: `None` when some
    /// partition is unlimited.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_core::{batch_caps, RateLimits, TopicPartition};
    ///
    /// let lags = [(TopicPartition::new("t", 0), 70), (TopicPartition::new("t", 1), 90)];
    /// let second = Duration::from_secs(1);
    /// let capped = batch_caps(&RateLimits::new().max_rate(100.0), None, false, second, &lags);
    /// assert_eq!(capped.total(), Some(100));
    /// assert_eq!(batch_caps(&RateLimits::new(), None, false, second, &lags).total(), None);
    /// ```
    pub fn total(&self) -> Option<u64> {
        self.caps.as_ref().map(|caps| caps.values().sum())
    }
}

/// Decides how many records each partition may read in the next batch.
///
/// `lags` holds every partition of the job with the records it has
/// available (a repeated partition keeps its last lag); `estimate` is the
/// latest [`PidRateEstimator`](crate::PidRateEstimator) answer and
/// `first_batch` is true for the first batch after a start.
///
/// **Job budget.** The job-wide rate is the lowest of:
/// - the estimate, when [`RateLimits::backpressure`] is on and the estimate
///   is > 0;
/// - otherwise [`RateLimits::initial_rate`], on the first batch, and with
///   backpressure on every batch until there is an estimate (SPARK-18580:
///   the first batch after downtime is bounded);
/// - [`RateLimits::max_rate`].
///
/// The budget is that rate × `batch_interval`, rounded down but at least 1
/// so the job always moves.
///
/// **Split.** Each partition gets a share of the budget in proportion to
/// its lag, never more than its lag nor than its maximum
/// ([`RateLimits::max_rate_for`] × interval, rounded down but at least 1);
/// what a capped partition cannot use goes to the others. Each partition
/// with lag reads at least [`RateLimits::min_rate_per_partition`] ×
/// interval (at most its lag), even beyond the budget; and when the budget
/// is at least the number of lagging partitions, each reads at least one
/// record (SPARK-18371). Shares are rounded by largest remainder, so the
/// caps add up to exactly the budget when lags and maxima allow: with no
/// floor, the sum is `min(budget, Σ min(lag, maximum))`.
///
/// Without a job budget, only partitions with a maximum get a cap
/// (`min(lag, maximum)`); without any limit, `caps` is `None`. The result
/// depends only on the arguments, not on the order of `lags`.
///
/// Ties in [`BatchCaps::limit`] name the configured limit over the
/// dynamic one, and job-wide limits over per-partition maxima.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use sluice_core::{batch_caps, RateLimits, RateReason, TopicPartition};
///
/// let [a, b, c] = [0, 1, 2].map(|p| TopicPartition::new("t", p));
/// let limits = RateLimits::new().max_rate(300.0).per_partition_max(c.clone(), 50.0);
/// let lags = [(a.clone(), 1_000), (b.clone(), 1_000), (c.clone(), 4_000)];
/// let split = batch_caps(&limits, None, false, Duration::from_secs(1), &lags);
/// // By lag: 50, 50, 200 — but `c` may read 50, so `a` and `b` get the rest.
/// assert_eq!(split.caps.unwrap(), BTreeMap::from([(a, 125), (b, 125), (c, 50)]));
/// assert_eq!(split.limit.unwrap().reason, RateReason::MaxRate);
/// ```
pub fn batch_caps(
    limits: &RateLimits,
    estimate: Option<f64>,
    first_batch: bool,
    batch_interval: Duration,
    lags: &[(TopicPartition, u64)],
) -> BatchCaps {
    batch_caps_within(
        limits,
        estimate,
        first_batch,
        batch_interval,
        lags,
        u64::MAX,
    )
}

/// [`batch_caps`] with the job budget lowered to at most `allowance`
/// records: what is left of the job-wide [`RateLimits::max_rate`] over
/// wall-clock time, when batches come closer together than the batch
/// interval (catching up after an overrun). Unlike the rate × interval
/// budget, an allowance of 0 reads nothing; only
/// [`RateLimits::min_rate_per_partition`] reads beyond it. Without a job
/// budget the allowance does not apply.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::{batch_caps_within, RateLimits, TopicPartition};
///
/// let limits = RateLimits::new().max_rate(1_000.0);
/// let lags = [(TopicPartition::new("t", 0), 5_000), (TopicPartition::new("t", 1), 5_000)];
/// let second = Duration::from_secs(1);
/// let caps = batch_caps_within(&limits, None, false, second, &lags, 300).caps.unwrap();
/// assert_eq!(caps.values().sum::<u64>(), 300);
/// let none_left = batch_caps_within(&limits, None, false, second, &lags, 0).caps.unwrap();
/// assert_eq!(none_left.values().sum::<u64>(), 0);
/// ```
pub fn batch_caps_within(
    limits: &RateLimits,
    estimate: Option<f64>,
    first_batch: bool,
    batch_interval: Duration,
    lags: &[(TopicPartition, u64)],
    allowance: u64,
) -> BatchCaps {
    let lags: BTreeMap<&TopicPartition, u64> = lags.iter().map(|(tp, lag)| (tp, *lag)).collect();
    let job = job_rate(limits, estimate, first_batch);
    let maxima: Vec<Option<f64>> = lags.keys().map(|tp| limits.max_rate_for(tp)).collect();
    let Some(limit) = tightest(job, &maxima) else {
        return BatchCaps {
            caps: None,
            limit: None,
        };
    };

    let floor = records_in(limits.min_rate_per_partition, batch_interval);
    let mut slots: Vec<Slot> = lags
        .values()
        .zip(&maxima)
        .map(|(&lag, max)| {
            let hi = match max {
                Some(rate) => lag.min(batch_budget(*rate, batch_interval)),
                None => lag,
            };
            Slot {
                lag,
                lo: floor.min(hi),
                hi,
            }
        })
        .collect();

    let caps: Vec<Option<u64>> = match job {
        Some(job) => {
            let budget = batch_budget(job.records_per_second, batch_interval).min(allowance);
            let lagging = slots.iter().filter(|s| s.lag > 0).count() as u64;
            if budget >= lagging {
                for slot in slots.iter_mut().filter(|s| s.lag > 0) {
                    slot.lo = slot.lo.max(1);
                }
            }
            fill(&slots, budget).into_iter().map(Some).collect()
        }
        None => slots
            .iter()
            .zip(&maxima)
            .map(|(slot, max)| max.map(|_| slot.hi))
            .collect(),
    };
    let caps = lags
        .keys()
        .zip(caps)
        .filter_map(|(tp, cap)| cap.map(|cap| ((*tp).clone(), cap)))
        .collect();
    BatchCaps {
        caps: Some(caps),
        limit: Some(limit),
    }
}

/// The job-wide limit, if any: the lowest candidate; on a tie the
/// configured `max_rate`.
fn job_rate(limits: &RateLimits, estimate: Option<f64>, first_batch: bool) -> Option<RateLimit> {
    let backpressure = estimate.filter(|&e| limits.backpressure && e > 0.0);
    let initial = if backpressure.is_none() && (first_batch || limits.backpressure) {
        limits.initial_rate
    } else {
        None
    };
    [
        (limits.max_rate, RateReason::MaxRate),
        (backpressure, RateReason::Backpressure),
        (initial, RateReason::InitialRate),
    ]
    .into_iter()
    .filter_map(|(rate, reason)| {
        rate.filter(|r| !r.is_nan())
            .map(|records_per_second| RateLimit {
                records_per_second,
                reason,
            })
    })
    .reduce(|best, next| {
        if next.records_per_second < best.records_per_second {
            next
        } else {
            best
        }
    })
}

/// The limit reported for the batch: the job's, unless every partition has
/// a maximum and together they allow less.
fn tightest(job: Option<RateLimit>, maxima: &[Option<f64>]) -> Option<RateLimit> {
    let lowest = maxima
        .iter()
        .flatten()
        .copied()
        .filter(|r| !r.is_nan())
        .reduce(f64::min);
    let per_partition = lowest.map(|records_per_second| RateLimit {
        records_per_second,
        reason: RateReason::MaxRatePerPartition,
    });
    match (job, per_partition) {
        (Some(job), Some(pp)) => {
            let all: Option<f64> = maxima.iter().copied().sum();
            match all {
                Some(total) if total < job.records_per_second => Some(pp),
                _ => Some(job),
            }
        }
        (job, pp) => job.or(pp),
    }
}

/// The most records a batch of `batch_interval` may read at
/// `records_per_second`: whole records, rounded down, but at least 1 so the
/// job always moves. [`batch_caps`] budgets every rate limit this way.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::batch_budget;
///
/// assert_eq!(batch_budget(2_500.0, Duration::from_millis(100)), 250);
/// assert_eq!(batch_budget(0.3, Duration::from_secs(1)), 1);
/// ```
pub fn batch_budget(records_per_second: f64, batch_interval: Duration) -> u64 {
    records_in(records_per_second, batch_interval).max(1)
}

/// Whole records `rate` allows in `interval`, rounded down. The small slack
/// keeps e.g. 0.3/s × 10 s at 3 rather than 2.999….
fn records_in(rate: f64, interval: Duration) -> u64 {
    let records = rate * interval.as_nanos() as f64 / 1e9;
    // `as` saturates: NaN and negatives give 0, huge values u64::MAX.
    (records + 1e-6).floor() as u64
}

/// One partition's bounds for the split: `lo <= hi <= lag`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    lag: u64,
    lo: u64,
    hi: u64,
}

/// Splits `budget` in proportion to lag, each share clamped to its slot's
/// `[lo, hi]`: finds the level λ where `Σ clamp(λ × lag, lo, hi)` meets the
/// budget, then rounds by largest remainder. The sum is
/// `clamp(budget, Σ lo, Σ hi)`.
fn fill(slots: &[Slot], budget: u64) -> Vec<u64> {
    let sum_lo: u128 = slots.iter().map(|s| u128::from(s.lo)).sum();
    let sum_hi: u128 = slots.iter().map(|s| u128::from(s.hi)).sum();
    let target = u128::from(budget);
    if target <= sum_lo {
        return slots.iter().map(|s| s.lo).collect();
    }
    if target >= sum_hi {
        return slots.iter().map(|s| s.hi).collect();
    }

    let share =
        |slot: &Slot, level: f64| (level * slot.lag as f64).clamp(slot.lo as f64, slot.hi as f64);
    let total = |level: f64| slots.iter().map(|s| share(s, level)).sum::<f64>();
    // Σ clamp(...) is piecewise linear in λ, bending where a share meets a
    // bound: find the piece that holds the budget and solve on it.
    let mut bends: Vec<f64> = std::iter::once(0.0)
        .chain(
            slots
                .iter()
                .filter(|s| s.lag > 0)
                .flat_map(|s| [s.lo as f64 / s.lag as f64, s.hi as f64 / s.lag as f64]),
        )
        .collect();
    bends.sort_by(f64::total_cmp);
    bends.dedup();
    let goal = budget as f64;
    let below = bends.partition_point(|&b| total(b) <= goal).max(1);
    let level = match bends.get(below) {
        Some(&upper) => {
            let lower = bends[below - 1];
            let (at_lower, at_upper) = (total(lower), total(upper));
            if at_upper > at_lower {
                lower + (goal - at_lower) / (at_upper - at_lower) * (upper - lower)
            } else {
                lower
            }
        }
        None => bends[bends.len() - 1],
    };

    let exact: Vec<f64> = slots.iter().map(|s| share(s, level)).collect();
    let mut caps: Vec<u64> = slots
        .iter()
        .zip(&exact)
        .map(|(s, &x)| (x.floor() as u64).clamp(s.lo, s.hi))
        .collect();
    let given: u128 = caps.iter().map(|&c| u128::from(c)).sum();
    let remainder = |i: usize| exact[i] - caps[i] as f64;
    let mut order: Vec<usize> = (0..slots.len()).collect();
    match given.cmp(&target) {
        Ordering::Less => {
            // Largest remainder first; then larger lag; then partition order.
            order.sort_by(|&a, &b| {
                remainder(b)
                    .total_cmp(&remainder(a))
                    .then(slots[b].lag.cmp(&slots[a].lag))
                    .then(a.cmp(&b))
            });
            adjust(
                &mut caps,
                &order,
                target - given,
                |i, c| slots[i].hi.saturating_sub(c),
                |c, n| c + n,
            );
        }
        Ordering::Greater => {
            // Only from float error: take back from the smallest remainders.
            order.sort_by(|&a, &b| {
                remainder(a)
                    .total_cmp(&remainder(b))
                    .then(slots[a].lag.cmp(&slots[b].lag))
                    .then(b.cmp(&a))
            });
            adjust(
                &mut caps,
                &order,
                given - target,
                |i, c| c.saturating_sub(slots[i].lo),
                |c, n| c - n,
            );
        }
        Ordering::Equal => {}
    }
    caps
}

/// Moves `count` records one at a time along `order`, then — only when
/// float error left more than one round — in bulk, within each slot's room.
fn adjust(
    caps: &mut [u64],
    order: &[usize],
    mut count: u128,
    room: impl Fn(usize, u64) -> u64,
    apply: impl Fn(u64, u64) -> u64,
) {
    for &i in order {
        if count == 0 {
            return;
        }
        if room(i, caps[i]) > 0 {
            caps[i] = apply(caps[i], 1);
            count -= 1;
        }
    }
    for &i in order {
        if count == 0 {
            return;
        }
        let n = u64::try_from(count)
            .unwrap_or(u64::MAX)
            .min(room(i, caps[i]));
        caps[i] = apply(caps[i], n);
        count -= u128::from(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn lags(values: &[u64]) -> Vec<(TopicPartition, u64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &lag)| (tp(i as i32), lag))
            .collect()
    }

    fn caps_of(split: &BatchCaps) -> Vec<u64> {
        split.caps.as_ref().unwrap().values().copied().collect()
    }

    fn reason_of(split: &BatchCaps) -> RateReason {
        split.limit.unwrap().reason
    }

    #[test]
    fn no_limit_means_no_caps() {
        let limits = RateLimits::new().min_rate_per_partition(10.0);
        let split = batch_caps(&limits, Some(5.0), true, SECOND, &lags(&[100, 200]));
        assert_eq!(
            split,
            BatchCaps {
                caps: None,
                limit: None
            }
        );
    }

    #[test]
    fn per_partition_maximum_alone_caps_at_lag() {
        let limits = RateLimits::new().max_rate_per_partition(100.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            Duration::from_secs(2),
            &lags(&[1_000, 50]),
        );
        assert_eq!(caps_of(&split), [200, 50]);
        assert_eq!(
            split.limit,
            Some(RateLimit {
                records_per_second: 100.0,
                reason: RateReason::MaxRatePerPartition
            })
        );
    }

    #[test]
    fn partitions_without_a_maximum_stay_unlimited_without_a_budget() {
        let limits = RateLimits::new().per_partition_max(tp(1), 10.0);
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[1_000, 1_000]));
        assert_eq!(split.caps, Some(BTreeMap::from([(tp(1), 10)])));
        assert_eq!(split.limit.unwrap().records_per_second, 10.0);
    }

    #[test]
    fn budget_splits_in_proportion_to_lag() {
        let limits = RateLimits::new().backpressure(true);
        let split = batch_caps(
            &limits,
            Some(1_000.0),
            false,
            SECOND,
            &lags(&[600, 200, 1_200]),
        );
        assert_eq!(caps_of(&split), [300, 100, 600]);
        assert_eq!(reason_of(&split), RateReason::Backpressure);
    }

    #[test]
    fn largest_remainder_makes_the_sum_exact() {
        let limits = RateLimits::new().max_rate(10.0);
        // 10/3 each: floors 3, 3, 3; the spare record goes to the first.
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[30, 30, 30]));
        assert_eq!(caps_of(&split), [4, 3, 3]);
        // 7 × (5, 3, 2)/10 = 3.5, 2.1, 1.4: floors 3, 2, 1; spare to 3.5.
        let limits = RateLimits::new().max_rate(7.0);
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[500, 300, 200]));
        assert_eq!(caps_of(&split), [4, 2, 1]);
    }

    /// SPARK-18371: a small budget must not round a lagging partition's
    /// share down to nothing.
    #[test]
    fn spark_18371_small_shares_do_not_round_to_zero() {
        let limits = RateLimits::new().backpressure(true);
        // By lag 4.995 and 0.005; each lagging partition reads at least 1.
        let split = batch_caps(&limits, Some(5.0), false, SECOND, &lags(&[1_000, 1]));
        assert_eq!(caps_of(&split), [4, 1]);
        // With fewer records than lagging partitions, the largest lags read.
        let split = batch_caps(
            &limits,
            Some(2.0),
            false,
            SECOND,
            &lags(&[50, 80, 10, 90, 0]),
        );
        assert_eq!(caps_of(&split), [0, 1, 0, 1, 0]);
    }

    #[test]
    fn budget_below_one_record_still_reads_one() {
        let limits = RateLimits::new().max_rate(1.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            Duration::from_millis(100),
            &lags(&[5, 5]),
        );
        assert_eq!(caps_of(&split), [1, 0]);
        let limits = RateLimits::new().max_rate_per_partition(1.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            Duration::from_millis(100),
            &lags(&[5, 0]),
        );
        assert_eq!(caps_of(&split), [1, 0]);
    }

    #[test]
    fn capped_partitions_give_their_share_to_the_others() {
        let limits = RateLimits::new()
            .max_rate(300.0)
            .per_partition_max(tp(2), 50.0);
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[1_000, 1_000, 4_000]));
        assert_eq!(caps_of(&split), [125, 125, 50]);
        assert_eq!(reason_of(&split), RateReason::MaxRate);
        // The rest stays in proportion: 10 : 1 000 of 250 is 2.475 : 247.5.
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[10, 1_000, 4_000]));
        assert_eq!(caps_of(&split), [2, 248, 50]);
    }

    #[test]
    fn per_partition_maxima_bind_when_together_below_the_job_rate() {
        let limits = RateLimits::new()
            .max_rate(1_000.0)
            .max_rate_per_partition(100.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            SECOND,
            &lags(&[10_000, 10_000, 100_000]),
        );
        assert_eq!(caps_of(&split), [100, 100, 100]);
        assert_eq!(
            split.limit,
            Some(RateLimit {
                records_per_second: 100.0,
                reason: RateReason::MaxRatePerPartition
            })
        );
        let limits = limits.max_rate(250.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            SECOND,
            &lags(&[10_000, 10_000, 100_000]),
        );
        // 250 by lag would give the last 200; it may read 100.
        assert_eq!(caps_of(&split), [75, 75, 100]);
        assert_eq!(reason_of(&split), RateReason::MaxRate);
    }

    /// The floor is `min_rate_per_partition` records per second times the
    /// interval, not that many records per batch; it may exceed the budget.
    #[test]
    fn min_rate_per_partition_is_a_rate_and_beats_the_budget() {
        let limits = RateLimits::new()
            .backpressure(true)
            .min_rate_per_partition(10.0);
        let half = Duration::from_millis(500);
        let split = batch_caps(&limits, Some(20.0), false, half, &lags(&[1_000, 1, 10]));
        assert_eq!(caps_of(&split), [5, 1, 5]);
        let split = batch_caps(&limits, Some(200.0), false, half, &lags(&[1_000, 1, 10]));
        // The last partition's share (under 1) is raised to its floor.
        assert_eq!(caps_of(&split), [94, 1, 5]);
    }

    #[test]
    fn lagless_partitions_get_zero() {
        let limits = RateLimits::new()
            .max_rate(100.0)
            .min_rate_per_partition(5.0);
        let split = batch_caps(&limits, None, false, SECOND, &lags(&[0, 1_000]));
        assert_eq!(caps_of(&split), [0, 100]);
    }

    /// The limit reported is the one in force, whether or not it shortens
    /// a range: a batch with nothing to read names it too
    /// (`BatchInfo::rate_limit`).
    #[test]
    fn a_batch_with_nothing_to_read_reports_the_limit_in_force() {
        let limits = RateLimits::new().max_rate_per_partition(100.0);
        let empty = batch_caps(&limits, None, false, SECOND, &lags(&[0, 0]));
        assert_eq!(caps_of(&empty), [0, 0]);
        assert_eq!(reason_of(&empty), RateReason::MaxRatePerPartition);
        // Lags below the caps: nothing is shortened, the limit is still in force.
        let short = batch_caps(&limits, None, false, SECOND, &lags(&[3, 7]));
        assert_eq!(caps_of(&short), [3, 7]);
        assert_eq!(short.limit.unwrap().records_per_second, 100.0);
        // Backpressure alone, before its first estimate: none in force.
        let waiting = RateLimits::new().backpressure(true);
        assert_eq!(
            batch_caps(&waiting, None, false, SECOND, &lags(&[0, 9])).limit,
            None
        );
    }

    /// SPARK-18580: the first batch after downtime is bounded by the
    /// initial rate, with or without backpressure.
    #[test]
    fn spark_18580_initial_rate_bounds_the_first_batch() {
        let backlog = lags(&[1_000_000, 1_000_000]);
        let plain = RateLimits::new().initial_rate(500.0);
        let first = batch_caps(&plain, None, true, SECOND, &backlog);
        assert_eq!(caps_of(&first), [250, 250]);
        assert_eq!(reason_of(&first), RateReason::InitialRate);
        // Without backpressure it bounds only the first batch.
        assert_eq!(batch_caps(&plain, None, false, SECOND, &backlog).caps, None);

        let pid = plain.clone().backpressure(true);
        let waiting = batch_caps(&pid, None, false, SECOND, &backlog);
        assert_eq!(reason_of(&waiting), RateReason::InitialRate);
        let estimated = batch_caps(&pid, Some(2_000.0), false, SECOND, &backlog);
        assert_eq!(caps_of(&estimated), [1_000, 1_000]);
        assert_eq!(reason_of(&estimated), RateReason::Backpressure);
        // A non-positive estimate counts as none (as in Spark).
        let zero = batch_caps(&pid, Some(0.0), false, SECOND, &backlog);
        assert_eq!(reason_of(&zero), RateReason::InitialRate);
    }

    #[test]
    fn the_estimate_is_ignored_without_backpressure() {
        let limits = RateLimits::new().max_rate(900.0);
        let split = batch_caps(&limits, Some(10.0), false, SECOND, &lags(&[10_000]));
        assert_eq!(caps_of(&split), [900]);
        assert_eq!(reason_of(&split), RateReason::MaxRate);
    }

    #[test]
    fn the_lowest_job_limit_binds_and_ties_name_max_rate() {
        let limits = RateLimits::new().max_rate(1_000.0).backpressure(true);
        let lags = lags(&[100_000]);
        let low = batch_caps(&limits, Some(400.0), false, SECOND, &lags);
        assert_eq!(
            low.limit,
            Some(RateLimit {
                records_per_second: 400.0,
                reason: RateReason::Backpressure
            })
        );
        let high = batch_caps(&limits, Some(4_000.0), false, SECOND, &lags);
        assert_eq!(
            high.limit,
            Some(RateLimit {
                records_per_second: 1_000.0,
                reason: RateReason::MaxRate
            })
        );
        let tie = batch_caps(&limits, Some(1_000.0), false, SECOND, &lags);
        assert_eq!(reason_of(&tie), RateReason::MaxRate);
    }

    #[test]
    fn budget_uses_the_whole_interval() {
        let limits = RateLimits::new().max_rate(0.3);
        let split = batch_caps(&limits, None, false, Duration::from_secs(10), &lags(&[100]));
        assert_eq!(caps_of(&split), [3]);
        let limits = RateLimits::new().max_rate(1_000.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            Duration::from_millis(250),
            &lags(&[10_000]),
        );
        assert_eq!(caps_of(&split), [250]);
    }

    #[test]
    fn huge_lags_and_rates_do_not_overflow() {
        let limits = RateLimits::new().max_rate(1e30);
        let split = batch_caps(
            &limits,
            None,
            false,
            SECOND,
            &lags(&[u64::MAX / 2, u64::MAX / 4, 7]),
        );
        assert_eq!(caps_of(&split), [u64::MAX / 2, u64::MAX / 4, 7]);
        for rate in [1e19, 1e30] {
            let limits = RateLimits::new().max_rate(rate);
            let split = batch_caps(
                &limits,
                None,
                false,
                SECOND,
                &lags(&[u64::MAX, u64::MAX / 3, 7]),
            );
            let caps = caps_of(&split);
            let sum: u128 = caps.iter().map(|&c| u128::from(c)).sum();
            assert_eq!(sum, u128::from(records_in(rate, SECOND)));
            assert!(caps[2] >= 1);
        }
    }

    #[test]
    fn repeated_partitions_keep_their_last_lag_and_order_does_not_matter() {
        let limits = RateLimits::new().max_rate(100.0);
        let split = batch_caps(
            &limits,
            None,
            false,
            SECOND,
            &[(tp(1), 1), (tp(0), 300), (tp(1), 100)],
        );
        assert_eq!(caps_of(&split), [75, 25]);
    }

    #[test]
    fn display_names_the_limit() {
        let cases = [
            (
                RateReason::MaxRatePerPartition,
                100.0,
                "max rate per partition 100/s",
            ),
            (RateReason::MaxRate, 5_000.0, "max rate 5000/s"),
            (
                RateReason::Backpressure,
                1_234.5,
                "backpressure estimate 1234.5/s",
            ),
            (RateReason::InitialRate, 0.26, "initial rate 0.3/s"),
        ];
        for (reason, records_per_second, text) in cases {
            assert_eq!(
                RateLimit {
                    records_per_second,
                    reason
                }
                .to_string(),
                text
            );
        }
    }

    /// Limits, estimate, first batch, interval and lags.
    type Scenario = (
        RateLimits,
        Option<f64>,
        bool,
        Duration,
        Vec<(TopicPartition, u64)>,
    );

    /// Limits and inputs for the properties; every rate is valid.
    fn scenario() -> impl Strategy<Value = Scenario> {
        let rate = || prop_oneof![0.5f64..50.0, 50.0f64..100_000.0, 1e9f64..1e16];
        (
            (
                prop::option::of(rate()),
                prop::option::of(rate()),
                prop::option::of(rate()),
                any::<bool>(),
                prop_oneof![Just(0.0), 0.0f64..20.0],
            ),
            prop::collection::vec(
                (
                    prop_oneof![3 => 0u64..5_000, 1 => 0u64..1 << 50],
                    prop::option::of(rate()),
                ),
                0..12,
            ),
            prop::option::of(prop_oneof![Just(0.0), rate()]),
            any::<bool>(),
            prop_oneof![Just(1_000u64), 1u64..10_000],
        )
            .prop_map(
                |((pp, max, initial, backpressure, min), parts, estimate, first, ms)| {
                    let mut limits = RateLimits::new().backpressure(backpressure);
                    limits.max_rate_per_partition = pp;
                    limits.max_rate = max;
                    limits.initial_rate = initial;
                    let lags: Vec<_> = parts
                        .iter()
                        .enumerate()
                        .map(|(i, (lag, _))| (tp(i as i32), *lag))
                        .collect();
                    for (i, (_, over)) in parts.iter().enumerate() {
                        if let Some(rate) = over {
                            limits.per_partition_max.insert(tp(i as i32), *rate);
                        }
                    }
                    // Keep the floor under every maximum, as validate demands.
                    let lowest = pp
                        .into_iter()
                        .chain(max)
                        .chain(limits.per_partition_max.values().copied())
                        .fold(f64::INFINITY, f64::min);
                    limits.min_rate_per_partition = min.min(lowest);
                    limits.validate().unwrap();
                    (limits, estimate, first, Duration::from_millis(ms), lags)
                },
            )
    }

    /// The budget as the documentation states it, computed independently.
    fn expected_budget(
        limits: &RateLimits,
        estimate: Option<f64>,
        first: bool,
        interval: Duration,
    ) -> Option<u64> {
        let estimate = estimate.filter(|&e| limits.backpressure && e > 0.0);
        let initial = limits
            .initial_rate
            .filter(|_| estimate.is_none() && (first || limits.backpressure));
        let rate = [limits.max_rate, estimate, initial]
            .into_iter()
            .flatten()
            .reduce(f64::min)?;
        Some(records_in(rate, interval).max(1))
    }

    fn partition_max(limits: &RateLimits, tp: &TopicPartition, interval: Duration) -> Option<u64> {
        limits
            .max_rate_for(tp)
            .map(|r| records_in(r, interval).max(1))
    }

    proptest! {
        #[test]
        fn caps_respect_lag_and_partition_maximum(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            prop_assert_eq!(split.caps.is_some(), split.limit.is_some());
            for (tp, cap) in split.caps.iter().flatten() {
                let lag = lags.iter().find(|(t, _)| t == tp).unwrap().1;
                prop_assert!(*cap <= lag, "{tp}: cap {cap} > lag {lag}");
                if let Some(max) = partition_max(&limits, tp, interval) {
                    prop_assert!(*cap <= max, "{tp}: cap {cap} > max {max}");
                }
            }
        }

        #[test]
        fn caps_add_up_to_the_budget_when_lags_allow(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            let Some(budget) = expected_budget(&limits, estimate, first, interval) else {
                return Ok(());
            };
            let caps = split.caps.unwrap();
            prop_assert_eq!(caps.len(), lags.len());
            let floor = records_in(limits.min_rate_per_partition, interval);
            let lagging = lags.iter().filter(|(_, l)| *l > 0).count() as u64;
            let (mut sum_lo, mut sum_hi) = (0u64, 0u64);
            for (tp, lag) in &lags {
                let hi = partition_max(&limits, tp, interval).map_or(*lag, |m| m.min(*lag));
                let one = u64::from(*lag > 0 && budget >= lagging);
                sum_lo += floor.max(one).min(hi);
                sum_hi += hi;
            }
            let sum: u64 = caps.values().sum();
            prop_assert_eq!(sum, budget.min(sum_hi).max(sum_lo));
            if limits.min_rate_per_partition == 0.0 {
                prop_assert!(sum <= budget);
            }
        }

        #[test]
        fn an_allowance_lowers_the_budget_and_nothing_else(
            (limits, estimate, first, interval, lags) in scenario(),
            allowance in prop_oneof![Just(0u64), 0u64..10_000, Just(u64::MAX)],
        ) {
            let full = batch_caps(&limits, estimate, first, interval, &lags);
            let within = batch_caps_within(&limits, estimate, first, interval, &lags, allowance);
            prop_assert_eq!(full.limit, within.limit);
            let Some(budget) = expected_budget(&limits, estimate, first, interval) else {
                // No job budget: the allowance does not apply.
                prop_assert_eq!(full, within);
                return Ok(());
            };
            // The same split, as if the budget were the smaller of the two.
            let (full, within) = (full.caps.unwrap(), within.caps.unwrap());
            let sum = |caps: &BTreeMap<TopicPartition, u64>| caps.values().sum::<u64>();
            let floors: u64 = lags
                .iter()
                .map(|(tp, lag)| {
                    let hi = partition_max(&limits, tp, interval).map_or(*lag, |m| m.min(*lag));
                    records_in(limits.min_rate_per_partition, interval).min(hi)
                })
                .sum();
            prop_assert!(sum(&within) <= sum(&full));
            prop_assert!(sum(&within) <= allowance.max(floors), "{} > {allowance}", sum(&within));
            if allowance >= budget {
                prop_assert_eq!(full, within);
            }
        }

        #[test]
        fn every_lagging_partition_reads_when_the_budget_allows(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            let lagging = lags.iter().filter(|(_, l)| *l > 0).count() as u64;
            let budget = expected_budget(&limits, estimate, first, interval);
            if budget.is_none_or(|b| b >= lagging) {
                for (tp, lag) in &lags {
                    let cap = split.caps.as_ref().and_then(|c| c.get(tp)).copied();
                    prop_assert!(*lag == 0 || cap != Some(0), "{tp} starved");
                }
            }
        }

        #[test]
        fn larger_lag_never_gets_less_under_equal_limits(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            let Some(caps) = split.caps else { return Ok(()) };
            for (a, lag_a) in &lags {
                for (b, lag_b) in &lags {
                    let same = limits.max_rate_for(a) == limits.max_rate_for(b);
                    if let (true, Some(ca), Some(cb)) = (same, caps.get(a), caps.get(b)) {
                        if lag_a > lag_b {
                            prop_assert!(ca >= cb, "{a} lag {lag_a} cap {ca} < {b} lag {lag_b} cap {cb}");
                        } else if lag_a == lag_b {
                            // Equal shares differ by at most the rounding record.
                            prop_assert!(ca.abs_diff(*cb) <= 1, "{a} {ca} vs {b} {cb}");
                        }
                    }
                }
            }
        }

        #[test]
        fn caps_are_deterministic_and_ignore_input_order(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            prop_assert_eq!(&split, &batch_caps(&limits, estimate, first, interval, &lags));
            let mut reversed = lags.clone();
            reversed.reverse();
            prop_assert_eq!(&split, &batch_caps(&limits, estimate, first, interval, &reversed));
        }

        #[test]
        fn the_limit_is_the_lowest_job_rate_or_per_partition_maximum(
            (limits, estimate, first, interval, lags) in scenario(),
        ) {
            let split = batch_caps(&limits, estimate, first, interval, &lags);
            let Some(limit) = split.limit else { return Ok(()) };
            let estimate = estimate.filter(|&e| limits.backpressure && e > 0.0);
            let initial = limits.initial_rate.filter(|_| estimate.is_none() && (first || limits.backpressure));
            let job = [limits.max_rate, estimate, initial].into_iter().flatten().reduce(f64::min);
            match limit.reason {
                RateReason::MaxRatePerPartition => {
                    let maxima: Vec<_> = lags.iter().map(|(tp, _)| limits.max_rate_for(tp)).collect();
                    let lowest = maxima.iter().flatten().copied().reduce(f64::min);
                    prop_assert_eq!(Some(limit.records_per_second), lowest);
                    if let Some(job) = job {
                        let total: Option<f64> = maxima.iter().copied().sum();
                        prop_assert!(total.is_some_and(|t| t < job));
                    }
                }
                _ => prop_assert_eq!(Some(limit.records_per_second), job),
            }
        }
    }
}
