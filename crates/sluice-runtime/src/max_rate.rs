//! The job-wide `max_rate` metered over wall-clock time: a token bucket
//! that holds at most one and a quarter batch's worth of records.
//!
//! A budget of rate × interval per batch keeps the average under the rate,
//! but not every stretch of time: batches due while an overrun batch ran
//! start back to back, and each would read a whole interval's worth. The
//! bucket refills at the rate, so such catch-up batches read only what
//! accrued since the last one. In any span of `t` seconds the job reads at
//! most `rate × t` plus the bucket's capacity (and the
//! `min_rate_per_partition` floors, which go beyond any budget).
//!
//! The quarter above one budget absorbs the jitter of when batches are
//! planned: a batch planned a few milliseconds less than an interval after
//! the one before still gets its whole budget.
//!
//! The bucket lives as long as the running job: a restart starts with a
//! full one. A batch redone after a restart has fixed ranges, but what it
//! reads is taken from the bucket too.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use sluice_core::batch_budget;

/// Records the job may still read under its `max_rate`.
pub(crate) struct MaxRateBucket<C: Clock = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    /// Time one record's token takes to come back.
    per_record: Duration,
    /// Most records the bucket holds: one and a quarter batch's budget.
    capacity: u32,
}

impl MaxRateBucket {
    /// A full bucket for `rate` records per second and batches every
    /// `interval`; `None` when the rate is beyond what the bucket can meter
    /// (over a billion records per second, or a budget over `u32::MAX`),
    /// where the per-batch budget alone applies.
    pub(crate) fn new(rate: f64, interval: Duration) -> Option<Self> {
        Self::with_clock(rate, interval, DefaultClock::default())
    }
}

impl<C: Clock> MaxRateBucket<C> {
    fn with_clock(rate: f64, interval: Duration, clock: C) -> Option<Self> {
        let budget = batch_budget(rate, interval);
        let capacity = NonZeroU32::new(u32::try_from(budget + budget / 4).ok()?)?;
        let per_record = Duration::try_from_secs_f64(1.0 / rate).ok()?;
        let quota = Quota::with_period(per_record)?.allow_burst(capacity);
        Some(Self {
            limiter: RateLimiter::direct_with_clock(quota, clock),
            per_record,
            capacity: capacity.get(),
        })
    }

    /// Takes up to `wanted` records out of the bucket and returns how many
    /// it gave: all of them, or as many as it holds.
    pub(crate) fn take(&self, wanted: u64) -> u64 {
        let asked = wanted.min(u64::from(self.capacity)) as u32;
        let Some(asked) = NonZeroU32::new(asked) else {
            return 0;
        };
        let not_until = match self.limiter.check_n(asked) {
            Ok(Ok(())) => return u64::from(asked.get()),
            Ok(Err(not_until)) => not_until,
            // Never: `asked` is at most the capacity.
            Err(_) => return 0,
        };
        // Each record missing from the bucket is `per_record` of waiting.
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        let missing = wait.as_nanos().div_ceil(self.per_record.as_nanos().max(1));
        let held = u128::from(asked.get()).saturating_sub(missing) as u32;
        match NonZeroU32::new(held).map(|held| self.limiter.check_n(held)) {
            Some(Ok(Ok(()))) => u64::from(held),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;

    fn bucket(
        rate: f64,
        interval_ms: u64,
    ) -> (MaxRateBucket<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let interval = Duration::from_millis(interval_ms);
        let bucket = MaxRateBucket::with_clock(rate, interval, clock.clone()).unwrap();
        (bucket, clock)
    }

    #[test]
    fn a_full_bucket_gives_its_capacity_and_refills_at_the_rate() {
        let (bucket, clock) = bucket(1_000.0, 100);
        assert_eq!(bucket.take(5_000), 125, "a batch's budget and a quarter");
        assert_eq!(bucket.take(5_000), 0, "nothing left at the same instant");
        clock.advance(Duration::from_millis(30));
        assert_eq!(bucket.take(5_000), 30, "what 30 ms accrued");
        clock.advance(Duration::from_secs(60));
        assert_eq!(bucket.take(5_000), 125, "never more than the capacity");
    }

    #[test]
    fn batches_planned_a_little_early_still_get_their_budget() {
        let (bucket, clock) = bucket(1_000.0, 100);
        assert_eq!(bucket.take(100), 100);
        for early_ms in [3, 1, 0, 5] {
            clock.advance(Duration::from_millis(100 - early_ms));
            assert_eq!(bucket.take(100), 100, "{early_ms} ms early");
            clock.advance(Duration::from_millis(early_ms));
        }
        // Planned right after the last one: only the quarter is left.
        assert_eq!(bucket.take(100), 25);
        assert_eq!(bucket.take(100), 0);
    }

    #[test]
    fn what_is_not_taken_stays_in_the_bucket() {
        let (bucket, clock) = bucket(1_000.0, 100);
        assert_eq!(bucket.take(40), 40);
        assert_eq!(bucket.take(0), 0);
        assert_eq!(bucket.take(1_000), 85);
        clock.advance(Duration::from_millis(10));
        assert_eq!(bucket.take(4), 4);
        assert_eq!(bucket.take(100), 6);
    }

    #[test]
    fn rates_under_one_record_per_batch_accrue_across_batches() {
        // 0.5/s with 1 s batches: a record every other batch, not every batch.
        let (bucket, clock) = bucket(0.5, 1_000);
        let mut read = Vec::new();
        for _ in 0..6 {
            read.push(bucket.take(10));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(read, [1, 0, 1, 0, 1, 0]);
    }

    #[test]
    fn rates_beyond_what_a_bucket_meters_have_none() {
        let interval = Duration::from_secs(1);
        assert!(MaxRateBucket::new(1e10, interval).is_none());
        assert!(MaxRateBucket::new(5e9, interval).is_none());
        assert!(MaxRateBucket::new(1_000.0, interval).is_some());
    }

    proptest! {
        /// Over any sequence of takes, the bucket gives at most its capacity
        /// plus what the elapsed time accrued, and never more than asked.
        #[test]
        fn takes_stay_within_rate_times_time_plus_one_batch(
            rate in prop_oneof![0.5f64..10.0, 10.0f64..100_000.0],
            interval_ms in 1u64..2_000,
            steps in prop::collection::vec((0u64..3_000, 0u64..200_000), 1..40),
        ) {
            let (bucket, clock) = bucket(rate, interval_ms);
            let capacity = u64::from(bucket.capacity);
            let (mut elapsed, mut total) = (Duration::ZERO, 0u64);
            for (advance_ms, wanted) in steps {
                clock.advance(Duration::from_millis(advance_ms));
                elapsed += Duration::from_millis(advance_ms);
                let given = bucket.take(wanted);
                prop_assert!(given <= wanted);
                total += given;
                let accrued = (rate * elapsed.as_secs_f64()).ceil() as u64;
                prop_assert!(total <= capacity + accrued, "{total} > {capacity} + {accrued}");
            }
        }

        /// Long enough without takes, the bucket is full again.
        #[test]
        fn an_idle_spell_refills_the_bucket(
            rate in prop_oneof![0.5f64..10.0, 10.0f64..100_000.0],
            interval_ms in 1u64..2_000,
            first in 0u64..200_000,
        ) {
            let (bucket, clock) = bucket(rate, interval_ms);
            let capacity = u64::from(bucket.capacity);
            bucket.take(first);
            clock.advance(Duration::from_millis(interval_ms).max(bucket.per_record * bucket.capacity));
            prop_assert_eq!(bucket.take(u64::MAX), capacity);
        }
    }
}
