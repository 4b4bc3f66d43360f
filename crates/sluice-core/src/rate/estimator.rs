//! The PID backpressure estimator: Spark's `PIDRateEstimator` algorithm.

use super::{PidSettings, RateError};

/// Estimates how many records per second the job can process, from what
/// each finished batch measured — a proportional-integral-derivative
/// controller, as Spark Streaming's backpressure uses.
///
/// The setpoint is the rate the estimator answered last time; the measured
/// value is the batch's processing rate (records ÷ processing time). The
/// *proportional* term corrects the difference between them, the
/// *integral* term the backlog the scheduling delay reveals (a delay of `s`
/// means about `s × processing rate` records are waiting), and the
/// *derivative* term the error's change per second. The answer is never
/// below [`PidSettings::min_rate`] records per second.
///
/// The first usable batch only seeds the controller with its processing
/// rate and answers `None`; limit that batch with
/// [`RateLimits::initial_rate`](crate::RateLimits::initial_rate).
///
/// ```
/// use sluice_core::{PidRateEstimator, PidSettings};
///
/// let mut pid = PidRateEstimator::new(PidSettings::default())?;
/// // 2 000 records processed in 1 s: seeds the controller at 2 000/s.
/// assert_eq!(pid.compute(1_000, 2_000, 1_000, 0, 1_000), None);
/// // Now only 1 000/s, and 500 ms behind schedule:
/// // 2 000 − 1.0 × (2 000 − 1 000) − 0.2 × (500 × 1 000 / 1 000) = 900.
/// assert_eq!(pid.compute(2_000, 1_000, 1_000, 500, 1_000), Some(900.0));
/// assert_eq!(pid.latest_estimate(), Some(900.0));
/// # Ok::<(), sluice_core::RateError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PidRateEstimator {
    settings: PidSettings,
    /// Batch time of the last usable batch.
    latest_time_ms: Option<i64>,
    /// Setpoint: the last answer, or the first batch's processing rate.
    latest_rate: f64,
    latest_error: f64,
    latest_estimate: Option<f64>,
}

impl PidRateEstimator {
    /// An estimator with `settings`, refused when a gain is negative or
    /// not finite or the floor is not > 0 (see [`PidSettings::validate`]).
    ///
    /// ```
    /// use sluice_core::{PidRateEstimator, PidSettings};
    ///
    /// let bad = PidSettings { derivative: -1.0, ..PidSettings::default() };
    /// assert!(PidRateEstimator::new(bad).is_err());
    /// ```
    pub fn new(settings: PidSettings) -> Result<Self, RateError> {
        settings.validate()?;
        Ok(Self {
            settings,
            latest_time_ms: None,
            latest_rate: 0.0,
            latest_error: 0.0,
            latest_estimate: None,
        })
    }

    /// Feeds one finished batch and returns the new rate in records per
    /// second, or `None` when there is nothing to estimate from.
    ///
    /// `batch_time_ms` is the batch time (ms since the epoch), `records`
    /// how many records it read, `processing_delay_ms` how long it took,
    /// `scheduling_delay_ms` how long it waited after its batch time before
    /// it started, `batch_interval_ms` the configured interval.
    ///
    /// `None`, with the state untouched, when the batch read no records,
    /// took no time, is not later than the last usable batch, or the
    /// interval is 0. `None` also for the first usable batch, which seeds
    /// the controller. Otherwise the rate is finite and at least
    /// [`PidSettings::min_rate`].
    ///
    /// ```
    /// use sluice_core::{PidRateEstimator, PidSettings};
    ///
    /// let mut pid = PidRateEstimator::new(PidSettings::default())?;
    /// assert_eq!(pid.compute(1_000, 0, 10, 0, 1_000), None); // no records
    /// assert_eq!(pid.compute(1_000, 500, 250, 0, 1_000), None); // seeds 2 000/s
    /// assert_eq!(pid.compute(1_000, 500, 250, 0, 1_000), None); // same batch time
    /// assert_eq!(pid.compute(2_000, 500, 250, 0, 1_000), Some(2_000.0));
    /// # Ok::<(), sluice_core::RateError>(())
    /// ```
    pub fn compute(
        &mut self,
        batch_time_ms: i64,
        records: u64,
        processing_delay_ms: u64,
        scheduling_delay_ms: u64,
        batch_interval_ms: u64,
    ) -> Option<f64> {
        let later = self.latest_time_ms.is_none_or(|t| batch_time_ms > t);
        if !later || records == 0 || processing_delay_ms == 0 || batch_interval_ms == 0 {
            tracing::trace!(
                batch_time_ms,
                records,
                processing_delay_ms,
                "rate estimation skipped"
            );
            return None;
        }
        let processing_rate = records as f64 * 1_000.0 / processing_delay_ms as f64;
        let Some(latest_time_ms) = self.latest_time_ms else {
            self.latest_time_ms = Some(batch_time_ms);
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            tracing::trace!(processing_rate, "first batch seeds the rate estimator");
            return None;
        };

        let PidSettings {
            proportional,
            integral,
            derivative,
            min_rate,
        } = self.settings;
        // Seconds since the last usable batch; about one interval.
        let since_update_s = (batch_time_ms as f64 - latest_time_ms as f64) / 1_000.0;
        let error = self.latest_rate - processing_rate;
        // Records left over from earlier batches, spread over one interval.
        let historical_error =
            scheduling_delay_ms as f64 * processing_rate / batch_interval_ms as f64;
        // Skipped when unused: an overflowing error change times 0 is NaN.
        let derivative_term = if derivative == 0.0 {
            0.0
        } else {
            derivative * (error - self.latest_error) / since_update_s
        };
        let raw =
            self.latest_rate - proportional * error - integral * historical_error - derivative_term;
        // NaN only from overflowing extremes; slow down rather than stall.
        let rate = if raw.is_nan() {
            min_rate
        } else {
            raw.clamp(min_rate, f64::MAX)
        };
        tracing::trace!(
            processing_rate,
            error,
            historical_error,
            derivative_term,
            rate,
            "new rate estimate"
        );

        self.latest_time_ms = Some(batch_time_ms);
        self.latest_rate = rate;
        self.latest_error = if error.is_finite() { error } else { 0.0 };
        self.latest_estimate = Some(rate);
        Some(rate)
    }

    /// The last rate [`compute`](Self::compute) answered, if any.
    ///
    /// ```
    /// use sluice_core::{PidRateEstimator, PidSettings};
    ///
    /// let pid = PidRateEstimator::new(PidSettings::default())?;
    /// assert_eq!(pid.latest_estimate(), None);
    /// # Ok::<(), sluice_core::RateError>(())
    /// ```
    pub fn latest_estimate(&self) -> Option<f64> {
        self.latest_estimate
    }

    /// The settings this estimator runs with.
    ///
    /// ```
    /// use sluice_core::{PidRateEstimator, PidSettings};
    ///
    /// let pid = PidRateEstimator::new(PidSettings::default())?;
    /// assert_eq!(pid.settings().min_rate, 100.0);
    /// # Ok::<(), sluice_core::RateError>(())
    /// ```
    pub fn settings(&self) -> &PidSettings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pid(proportional: f64, integral: f64, derivative: f64, min_rate: f64) -> PidRateEstimator {
        PidRateEstimator::new(PidSettings {
            proportional,
            integral,
            derivative,
            min_rate,
        })
        .unwrap()
    }

    #[test]
    fn first_usable_batch_seeds_and_answers_none() {
        let mut p = pid(1.0, 0.2, 0.0, 100.0);
        assert_eq!(p.compute(1_000, 2_000, 1_000, 0, 1_000), None);
        assert_eq!(p.latest_estimate(), None);
        // Seeded at 2 000/s: a batch processed at exactly that rate keeps it.
        assert_eq!(p.compute(2_000, 1_000, 500, 0, 1_000), Some(2_000.0));
    }

    #[test]
    fn proportional_and_integral_terms_by_hand() {
        let mut p = pid(1.0, 0.2, 0.0, 100.0);
        p.compute(1_000, 2_000, 1_000, 0, 1_000);
        // processing 1 000/s; error 2 000 − 1 000 = 1 000;
        // historical 500 ms × 1 000/s ÷ 1 000 ms = 500;
        // 2 000 − 1 000 − 0.2 × 500 = 900.
        assert_eq!(p.compute(2_000, 1_000, 1_000, 500, 1_000), Some(900.0));
        // processing 900/0.45 s = 2 000/s; error 900 − 2 000 = −1 100;
        // 900 + 1 100 = 2 000.
        assert_eq!(p.compute(3_000, 900, 450, 0, 1_000), Some(2_000.0));
    }

    #[test]
    fn derivative_term_by_hand() {
        let mut p = pid(1.0, 0.2, 0.5, 100.0);
        p.compute(1_000, 2_000, 1_000, 0, 1_000);
        // As above, less 0.5 × (1 000 − 0) / 1 s = 500: 900 − 500 = 400.
        assert_eq!(p.compute(2_000, 1_000, 1_000, 500, 1_000), Some(400.0));
        // processing 400/0.2 s = 2 000/s; error 400 − 2 000 = −1 600;
        // change (−1 600 − 1 000) / 2 s = −1 300;
        // 400 + 1 600 + 0.5 × 1 300 = 2 650.
        assert_eq!(p.compute(4_000, 400, 200, 0, 1_000), Some(2_650.0));
    }

    #[test]
    fn the_integral_term_scales_with_the_interval() {
        let mut p = pid(0.0, 1.0, 0.0, 1.0);
        p.compute(500, 1_000, 500, 0, 500);
        // processing 2 000/s, 250 ms behind on a 500 ms interval:
        // 2 000 − 250 × 2 000 / 500 = 1 000.
        assert_eq!(p.compute(1_000, 1_000, 500, 250, 500), Some(1_000.0));
    }

    #[test]
    fn never_below_min_rate() {
        let mut p = pid(1.0, 0.2, 0.0, 100.0);
        p.compute(1_000, 2_000, 1_000, 0, 1_000);
        // 2 000 − (2 000 − 10) − 0.2 × 10 000 × 10 / 1 000 < 0.
        assert_eq!(p.compute(2_000, 10, 1_000, 10_000, 1_000), Some(100.0));
        // The floor became the setpoint.
        assert_eq!(p.compute(3_000, 100, 1_000, 0, 1_000), Some(100.0));
    }

    /// SPARK-37515-style: the floor is a rate in records per second, the
    /// same whatever the batch interval — not a number of records per
    /// batch.
    #[test]
    fn min_rate_is_per_second_not_per_batch() {
        for interval_ms in [100, 1_000, 10_000] {
            let mut p = pid(1.0, 0.2, 0.0, 100.0);
            p.compute(0, 10_000, 10, 0, interval_ms);
            let t = interval_ms as i64;
            assert_eq!(p.compute(t, 1, 1_000, 60_000, interval_ms), Some(100.0));
        }
    }

    #[test]
    fn unusable_batches_answer_none_and_change_nothing() {
        let mut p = pid(1.0, 0.2, 0.0, 100.0);
        p.compute(1_000, 2_000, 1_000, 0, 1_000);
        let before = p.clone();
        assert_eq!(p.compute(2_000, 0, 1_000, 0, 1_000), None, "no records");
        assert_eq!(
            p.compute(2_000, 10, 0, 0, 1_000),
            None,
            "no processing time"
        );
        assert_eq!(p.compute(1_000, 10, 10, 0, 1_000), None, "same batch time");
        assert_eq!(p.compute(500, 10, 10, 0, 1_000), None, "earlier batch time");
        assert_eq!(p.compute(2_000, 10, 10, 0, 0), None, "zero interval");
        assert_eq!(p, before);
        // Unusable batches before the first usable one do not seed.
        let mut fresh = pid(1.0, 0.2, 0.0, 100.0);
        assert_eq!(fresh.compute(0, 0, 0, 0, 1_000), None);
        assert_eq!(fresh.compute(1_000, 1_000, 1_000, 0, 1_000), None);
        assert_eq!(fresh.compute(2_000, 500, 1_000, 0, 1_000), Some(500.0));
    }

    #[test]
    fn negative_batch_times_work() {
        let mut p = pid(1.0, 0.2, 0.0, 100.0);
        assert_eq!(p.compute(-2_000, 1_000, 1_000, 0, 1_000), None);
        assert_eq!(p.compute(-1_000, 1_000, 1_000, 0, 1_000), Some(1_000.0));
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        let mut p = pid(0.0, 0.0, f64::MAX, 1.0);
        p.compute(0, u64::MAX, 1, 0, 1);
        for (t, records, proc_ms) in [(1, 1, u64::MAX), (2, u64::MAX, 1), (3, 1, u64::MAX)] {
            let rate = p.compute(t, records, proc_ms, u64::MAX, 1).unwrap();
            assert!(rate.is_finite() && rate >= 1.0, "{rate}");
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        let err = PidRateEstimator::new(PidSettings {
            min_rate: -1.0,
            ..PidSettings::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("pid.min_rate"), "{err}");
    }

    fn gain() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), 0.0..10.0, Just(1e12)]
    }

    proptest! {
        #[test]
        fn rate_is_finite_and_at_least_min_rate(
            gains in (gain(), gain(), gain(), 0.001f64..10_000.0),
            interval_ms in 1u64..60_000,
            batches in prop::collection::vec(
                (0i64..120_000, 0u64..10_000_000, 0u64..600_000, 0u64..600_000),
                1..40,
            ),
        ) {
            let (p, i, d, min_rate) = gains;
            let mut est = pid(p, i, d, min_rate);
            let mut t = 0i64;
            for (step, records, proc_ms, sched_ms) in batches {
                t += step;
                if let Some(rate) = est.compute(t, records, proc_ms, sched_ms, interval_ms) {
                    prop_assert!(rate.is_finite(), "{rate}");
                    prop_assert!(rate >= min_rate, "{rate} < {min_rate}");
                    prop_assert_eq!(est.latest_estimate(), Some(rate));
                }
            }
        }

        #[test]
        fn unusable_batches_never_answer(
            t in any::<i64>(),
            records in any::<u64>(),
            proc_ms in any::<u64>(),
        ) {
            let mut est = pid(1.0, 0.2, 0.0, 100.0);
            est.compute(i64::MIN, 1, 1, 0, 1_000);
            est.compute(i64::MIN + 1, 1, 1, 0, 1_000);
            prop_assert_eq!(est.compute(t, 0, proc_ms, 0, 1_000), None);
            prop_assert_eq!(est.compute(t, records, 0, 0, 1_000), None);
            prop_assert_eq!(est.compute(i64::MIN + 1, records, proc_ms, 0, 1_000), None);
        }
    }
}
