//! Rate control: how many records each partition may read in the next
//! batch. Pure decisions — time, lags and measurements come in as
//! arguments; nothing here reads a clock or talks to Kafka.
//!
//! Three parts, one file each:
//!
//! - [`RateLimits`] (`limits.rs`): the configured limits and
//!   [`PidSettings`], checked up front by [`RateLimits::validate`].
//! - [`PidRateEstimator`] (`estimator.rs`): Spark's PID backpressure
//!   controller. After every batch the driver feeds it the batch's size and
//!   delays; it answers with a new job-wide rate.
//! - [`batch_caps`] (`split.rs`): turns the limits, the latest estimate and
//!   every partition's lag into [`BatchCaps`] — the per-partition caps that
//!   [`plan_ranges`](crate::plan_ranges) takes — and the [`RateLimit`] that bound
//!   the batch. [`batch_caps_within`] also takes what is left of the
//!   job-wide `max_rate` over wall-clock time, which the driver meters
//!   with a token bucket.
//!
//! ```
//! use std::time::Duration;
//! use sluice_core::{batch_caps, PidRateEstimator, RateLimits, RateReason, TopicPartition};
//!
//! let limits = RateLimits::new().backpressure(true).initial_rate(1_000.0);
//! limits.validate()?;
//! let mut pid = PidRateEstimator::new(limits.pid)?;
//! let interval = Duration::from_secs(1);
//! let lags = [(TopicPartition::new("t", 0), 30_000), (TopicPartition::new("t", 1), 10_000)];
//!
//! // No estimate yet: the initial rate bounds the first batch.
//! let first = batch_caps(&limits, None, true, interval, &lags);
//! let caps = first.caps.unwrap();
//! assert_eq!(caps.values().sum::<u64>(), 1_000);
//! assert_eq!(first.limit.unwrap().reason, RateReason::InitialRate);
//!
//! // The first measured batch only seeds the controller; the second yields a rate.
//! assert_eq!(pid.compute(1_000, 1_000, 500, 0, 1_000), None);
//! let estimate = pid.compute(2_000, 1_000, 800, 0, 1_000);
//! assert_eq!(estimate, Some(1_250.0));
//! let next = batch_caps(&limits, estimate, false, interval, &lags);
//! assert_eq!(next.caps.unwrap().values().sum::<u64>(), 1_250);
//! assert_eq!(next.limit.unwrap().to_string(), "backpressure estimate 1250/s");
//! # Ok::<(), sluice_core::RateError>(())
//! ```

mod estimator;
mod limits;
mod split;

pub use estimator::PidRateEstimator;
pub use limits::{PidSettings, RateError, RateLimits};
pub use split::{batch_budget, batch_caps, batch_caps_within, BatchCaps, RateLimit, RateReason};
