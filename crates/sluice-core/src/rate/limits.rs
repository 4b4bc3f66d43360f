//! The configured rate limits and their validation.

use std::collections::BTreeMap;

use crate::TopicPartition;

/// A rate limit configuration that cannot work. A configuration mistake:
/// the operator must fix the setting named in the message; retrying does
/// not help.
///
/// ```
/// use sluice_core::{RateError, RateLimits};
///
/// let err = RateLimits::new().initial_rate(f64::NAN).validate().unwrap_err();
/// assert!(matches!(err, RateError::Invalid { ref setting, .. } if setting == "initial_rate"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// A rate or gain is NaN, infinite, negative, or zero where zero would
    /// stall the job.
    #[error("invalid rate limit setting `{setting}` = {value}: must be {expected}")]
    Invalid {
        /// The setting, e.g. `max_rate_per_partition` or
        /// `per_partition_max[events-3]`.
        setting: String,
        /// The value given.
        value: f64,
        /// What the setting accepts.
        expected: &'static str,
    },
    /// A minimum rate is above the maximum it must stay under.
    #[error("invalid rate limits: `{min_setting}` ({min}/s) is above `{max_setting}` ({max}/s)")]
    MinAboveMax {
        /// The minimum, e.g. `min_rate_per_partition`.
        min_setting: String,
        /// Its value, in records per second.
        min: f64,
        /// The maximum it exceeds, e.g. `per_partition_max[events-3]`.
        max_setting: String,
        /// Its value, in records per second.
        max: f64,
    },
}

/// Gains and floor of the [`PidRateEstimator`](crate::PidRateEstimator);
/// the defaults are Spark's (`spark.streaming.backpressure.pid.*`).
///
/// ```
/// use sluice_core::PidSettings;
///
/// let pid = PidSettings { integral: 0.1, ..PidSettings::default() };
/// assert_eq!((pid.proportional, pid.integral, pid.min_rate), (1.0, 0.1, 100.0));
/// pid.validate()?;
/// # Ok::<(), sluice_core::RateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PidSettings {
    /// Weight of the current error (last rate minus measured processing
    /// rate). Default 1.0; must be finite and ≥ 0.
    pub proportional: f64,
    /// Weight of the accumulated error, derived from the scheduling delay.
    /// Default 0.2; must be finite and ≥ 0.
    pub integral: f64,
    /// Weight of the error's change per second. Default 0.0; must be finite
    /// and ≥ 0.
    pub derivative: f64,
    /// Lowest rate the estimator answers, in records per second for the
    /// whole job — a rate, not a number of records per batch. Default 100.0;
    /// must be finite and > 0 so the job always reads something to measure.
    pub min_rate: f64,
}

impl Default for PidSettings {
    fn default() -> Self {
        Self {
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
        }
    }
}

impl PidSettings {
    /// Checks every gain and the floor, naming the first bad one.
    ///
    /// ```
    /// use sluice_core::{PidSettings, RateError};
    ///
    /// let bad = PidSettings { min_rate: 0.0, ..PidSettings::default() };
    /// let err = bad.validate().unwrap_err();
    /// assert!(err.to_string().contains("pid.min_rate"), "{err}");
    /// ```
    pub fn validate(&self) -> Result<(), RateError> {
        non_negative("pid.proportional", self.proportional)?;
        non_negative("pid.integral", self.integral)?;
        non_negative("pid.derivative", self.derivative)?;
        positive("pid.min_rate", self.min_rate)
    }
}

/// The limits on how fast a job reads, all in records per second.
///
/// Start from [`RateLimits::new`] (no limit at all) and chain setters; each
/// setter documents its default. Fields are public for reading and for
/// config code; call [`RateLimits::validate`] before use. For every batch
/// the driver turns them into per-partition caps (`batch_caps`).
///
/// ```
/// use sluice_core::{RateLimits, TopicPartition};
///
/// let hot = TopicPartition::new("events", 3);
/// let limits = RateLimits::new()
///     .max_rate_per_partition(1_000.0)
///     .per_partition_max(hot.clone(), 200.0)
///     .max_rate(5_000.0)
///     .backpressure(true);
/// limits.validate()?;
/// assert_eq!(limits.max_rate_for(&hot), Some(200.0));
/// assert_eq!(limits.max_rate_for(&TopicPartition::new("events", 0)), Some(1_000.0));
/// # Ok::<(), sluice_core::RateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RateLimits {
    /// Most records per second any one partition reads (Spark's
    /// `maxRatePerPartition`). `None`: no per-partition limit.
    pub max_rate_per_partition: Option<f64>,
    /// Records per second every partition with lag reads at least, even
    /// when a job-wide limit is lower (Spark's `minRatePerPartition`, but a
    /// rate, not a per-batch count). 0: no floor.
    pub min_rate_per_partition: f64,
    /// Per-partition maxima that replace `max_rate_per_partition` for
    /// their partition.
    pub per_partition_max: BTreeMap<TopicPartition, f64>,
    /// Most records per second for the whole job, over all partitions.
    /// `None`: no job-wide limit.
    pub max_rate: Option<f64>,
    /// Whether the [`PidRateEstimator`](crate::PidRateEstimator)'s estimate
    /// limits the job.
    pub backpressure: bool,
    /// Records per second for the whole job, not per partition, for the
    /// first batch after a start, and with backpressure, for every batch
    /// until the estimator has an estimate: the first batch after downtime
    /// stays bounded (SPARK-18580). The batch's budget, rate × interval, is
    /// split over the partitions by lag, so with 4 equally lagging
    /// partitions and 1 s batches, 1 000/s reads about 250 from each.
    /// `None`: no such bound.
    pub initial_rate: Option<f64>,
    /// Settings of the backpressure estimator.
    pub pid: PidSettings,
}

impl RateLimits {
    /// No limit at all: batches read everything available.
    ///
    /// ```
    /// let limits = sluice_core::RateLimits::new();
    /// assert_eq!((limits.max_rate, limits.backpressure), (None, false));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps every partition at `rate` records per second, unless it has its
    /// own [`per_partition_max`](Self::per_partition_max). Default: none.
    ///
    /// ```
    /// let limits = sluice_core::RateLimits::new().max_rate_per_partition(500.0);
    /// assert_eq!(limits.max_rate_per_partition, Some(500.0));
    /// ```
    pub fn max_rate_per_partition(mut self, rate: f64) -> Self {
        self.max_rate_per_partition = Some(rate);
        self
    }

    /// Lets every partition with lag read at least `rate` records per
    /// second (never more than it has). Default: 0.
    ///
    /// ```
    /// let limits = sluice_core::RateLimits::new().min_rate_per_partition(5.0);
    /// assert_eq!(limits.min_rate_per_partition, 5.0);
    /// ```
    pub fn min_rate_per_partition(mut self, rate: f64) -> Self {
        self.min_rate_per_partition = rate;
        self
    }

    /// Caps `tp` at `rate` records per second instead of
    /// [`max_rate_per_partition`](Self::max_rate_per_partition). Default:
    /// no override.
    ///
    /// ```
    /// use sluice_core::{RateLimits, TopicPartition};
    ///
    /// let hot = TopicPartition::new("events", 3);
    /// let limits = RateLimits::new().per_partition_max(hot.clone(), 50.0);
    /// assert_eq!(limits.max_rate_for(&hot), Some(50.0));
    /// ```
    pub fn per_partition_max(mut self, tp: TopicPartition, rate: f64) -> Self {
        self.per_partition_max.insert(tp, rate);
        self
    }

    /// Caps the whole job at `rate` records per second. Default: none.
    ///
    /// ```
    /// let limits = sluice_core::RateLimits::new().max_rate(10_000.0);
    /// assert_eq!(limits.max_rate, Some(10_000.0));
    /// ```
    pub fn max_rate(mut self, rate: f64) -> Self {
        self.max_rate = Some(rate);
        self
    }

    /// Limits the job by the backpressure estimate. Default: off.
    ///
    /// ```
    /// assert!(sluice_core::RateLimits::new().backpressure(true).backpressure);
    /// ```
    pub fn backpressure(mut self, on: bool) -> Self {
        self.backpressure = on;
        self
    }

    /// Bounds the first batch after a start (and, with backpressure, every
    /// batch until there is an estimate) at `rate` records per second for
    /// the whole job: the budget `rate` × batch interval is split over the
    /// partitions in proportion to their lag, it is not a per-partition
    /// rate. Default: none.
    ///
    /// ```
    /// let limits = sluice_core::RateLimits::new().initial_rate(1_000.0);
    /// assert_eq!(limits.initial_rate, Some(1_000.0));
    /// ```
    pub fn initial_rate(mut self, rate: f64) -> Self {
        self.initial_rate = Some(rate);
        self
    }

    /// Sets the estimator's gains and floor. Default:
    /// [`PidSettings::default`] (Spark's).
    ///
    /// ```
    /// use sluice_core::{PidSettings, RateLimits};
    ///
    /// let limits = RateLimits::new().pid(PidSettings { min_rate: 10.0, ..PidSettings::default() });
    /// assert_eq!(limits.pid.min_rate, 10.0);
    /// ```
    pub fn pid(mut self, pid: PidSettings) -> Self {
        self.pid = pid;
        self
    }

    /// The most records per second `tp` may read: its override, else
    /// [`max_rate_per_partition`](Self::max_rate_per_partition).
    ///
    /// ```
    /// use sluice_core::{RateLimits, TopicPartition};
    ///
    /// let tp = TopicPartition::new("events", 0);
    /// assert_eq!(RateLimits::new().max_rate_for(&tp), None);
    /// assert_eq!(RateLimits::new().max_rate_per_partition(10.0).max_rate_for(&tp), Some(10.0));
    /// ```
    pub fn max_rate_for(&self, tp: &TopicPartition) -> Option<f64> {
        self.per_partition_max
            .get(tp)
            .copied()
            .or(self.max_rate_per_partition)
    }

    /// Checks every setting, naming the first that cannot work: rates that
    /// are NaN, infinite, negative or zero (a zero maximum would stall the
    /// job — leave it unset for no limit), a negative minimum, and a
    /// minimum above a maximum.
    ///
    /// ```
    /// use sluice_core::{RateError, RateLimits};
    ///
    /// let err = RateLimits::new().max_rate(-5.0).validate().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid rate limit setting `max_rate` = -5: must be a finite number > 0"
    /// );
    /// let err = RateLimits::new()
    ///     .max_rate_per_partition(10.0)
    ///     .min_rate_per_partition(50.0)
    ///     .validate()
    ///     .unwrap_err();
    /// assert!(matches!(err, RateError::MinAboveMax { .. }));
    /// ```
    pub fn validate(&self) -> Result<(), RateError> {
        if let Some(rate) = self.max_rate_per_partition {
            positive("max_rate_per_partition", rate)?;
        }
        non_negative("min_rate_per_partition", self.min_rate_per_partition)?;
        for (tp, &rate) in &self.per_partition_max {
            positive(&format!("per_partition_max[{tp}]"), rate)?;
        }
        if let Some(rate) = self.max_rate {
            positive("max_rate", rate)?;
        }
        if let Some(rate) = self.initial_rate {
            positive("initial_rate", rate)?;
        }
        self.pid.validate()?;

        let min = self.min_rate_per_partition;
        let maxima = self
            .max_rate_per_partition
            .map(|max| ("max_rate_per_partition".to_owned(), max))
            .into_iter()
            .chain(
                self.per_partition_max
                    .iter()
                    .map(|(tp, &max)| (format!("per_partition_max[{tp}]"), max)),
            )
            .chain(self.max_rate.map(|max| ("max_rate".to_owned(), max)));
        for (max_setting, max) in maxima {
            if min > max {
                return Err(RateError::MinAboveMax {
                    min_setting: "min_rate_per_partition".to_owned(),
                    min,
                    max_setting,
                    max,
                });
            }
        }
        Ok(())
    }
}

fn positive(setting: &str, value: f64) -> Result<(), RateError> {
    check(setting, value, value > 0.0, "a finite number > 0")
}

fn non_negative(setting: &str, value: f64) -> Result<(), RateError> {
    check(setting, value, value >= 0.0, "a finite number >= 0")
}

fn check(setting: &str, value: f64, ok: bool, expected: &'static str) -> Result<(), RateError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(RateError::Invalid {
            setting: setting.to_owned(),
            value,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(err: RateError) -> String {
        match err {
            RateError::Invalid { setting, .. } => setting,
            RateError::MinAboveMax { max_setting, .. } => max_setting,
        }
    }

    #[test]
    fn defaults_are_unlimited_with_spark_pid_gains() {
        let limits = RateLimits::new();
        assert_eq!(limits.max_rate_per_partition, None);
        assert_eq!(limits.min_rate_per_partition, 0.0);
        assert!(limits.per_partition_max.is_empty());
        assert_eq!(limits.max_rate, None);
        assert!(!limits.backpressure);
        assert_eq!(limits.initial_rate, None);
        assert_eq!(
            limits.pid,
            PidSettings {
                proportional: 1.0,
                integral: 0.2,
                derivative: 0.0,
                min_rate: 100.0
            }
        );
        limits.validate().unwrap();
    }

    #[test]
    fn invalid_rates_name_their_setting() {
        let tp = TopicPartition::new("events", 3);
        let cases = [
            (
                RateLimits::new().max_rate_per_partition(0.0),
                "max_rate_per_partition",
            ),
            (
                RateLimits::new().max_rate_per_partition(f64::NAN),
                "max_rate_per_partition",
            ),
            (
                RateLimits::new().min_rate_per_partition(-1.0),
                "min_rate_per_partition",
            ),
            (
                RateLimits::new().per_partition_max(tp.clone(), -2.0),
                "per_partition_max[events-3]",
            ),
            (RateLimits::new().max_rate(f64::INFINITY), "max_rate"),
            (RateLimits::new().initial_rate(0.0), "initial_rate"),
            (
                RateLimits::new().pid(PidSettings {
                    proportional: -0.1,
                    ..Default::default()
                }),
                "pid.proportional",
            ),
            (
                RateLimits::new().pid(PidSettings {
                    integral: f64::NAN,
                    ..Default::default()
                }),
                "pid.integral",
            ),
            (
                RateLimits::new().pid(PidSettings {
                    derivative: -1.0,
                    ..Default::default()
                }),
                "pid.derivative",
            ),
            (
                RateLimits::new().pid(PidSettings {
                    min_rate: 0.0,
                    ..Default::default()
                }),
                "pid.min_rate",
            ),
        ];
        for (limits, setting) in cases {
            let err = limits.validate().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{setting}`")), "{msg}");
            assert_eq!(setting_of(err), setting);
        }
    }

    #[test]
    fn zero_gains_and_zero_minimum_are_valid() {
        let pid = PidSettings {
            proportional: 0.0,
            integral: 0.0,
            derivative: 0.0,
            min_rate: 0.5,
        };
        RateLimits::new()
            .pid(pid)
            .min_rate_per_partition(0.0)
            .validate()
            .unwrap();
    }

    #[test]
    fn minimum_above_any_maximum_is_refused() {
        let tp = TopicPartition::new("events", 3);
        let base = RateLimits::new().min_rate_per_partition(50.0);
        for (limits, max_setting) in [
            (
                base.clone().max_rate_per_partition(10.0),
                "max_rate_per_partition",
            ),
            (
                base.clone().per_partition_max(tp.clone(), 10.0),
                "per_partition_max[events-3]",
            ),
            (base.clone().max_rate(10.0), "max_rate"),
        ] {
            let err = limits.validate().unwrap_err();
            assert_eq!(
                err,
                RateError::MinAboveMax {
                    min_setting: "min_rate_per_partition".into(),
                    min: 50.0,
                    max_setting: max_setting.into(),
                    max: 10.0,
                }
            );
            assert!(err.to_string().contains("(50/s) is above"), "{err}");
        }
        base.max_rate_per_partition(50.0).validate().unwrap();
    }

    #[test]
    fn override_replaces_the_partition_maximum() {
        let hot = TopicPartition::new("events", 3);
        let limits = RateLimits::new()
            .max_rate_per_partition(100.0)
            .per_partition_max(hot.clone(), 500.0);
        assert_eq!(limits.max_rate_for(&hot), Some(500.0));
        assert_eq!(
            limits.max_rate_for(&TopicPartition::new("events", 0)),
            Some(100.0)
        );
        let only_override = RateLimits::new().per_partition_max(hot.clone(), 5.0);
        assert_eq!(only_override.max_rate_for(&hot), Some(5.0));
        assert_eq!(
            only_override.max_rate_for(&TopicPartition::new("x", 0)),
            None
        );
    }
}
