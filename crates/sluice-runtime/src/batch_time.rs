//! Where a run's batch times start.
//!
//! Batch times sit on a grid of the batch interval on the wall clock, so
//! they are round numbers and line up across restarts. They also never
//! repeat: a batch-time window or a listener that keys on the time would
//! otherwise see two batches at one time after a quick restart. As in
//! Spark Streaming, whose restarted job carries on from the checkpoint's
//! last batch time, a run's first batch comes after the last batch the
//! checkpoint holds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The time of a run's first batch: the last tick of the interval grid at
/// or before `now`, or, when the checkpoint already holds a batch at or
/// after that tick (the job was restarted within one interval), the tick
/// after `last`, its latest batch time (committed, or planned before the
/// restart). An interval below a nanosecond counts as one.
pub(crate) fn first_batch_time(
    now: SystemTime,
    interval: Duration,
    last: Option<SystemTime>,
) -> SystemTime {
    let tick = floor_to_grid(now, interval);
    match last {
        Some(last) if last >= tick => floor_to_grid(last, interval)
            .checked_add(interval.max(Duration::from_nanos(1)))
            .unwrap_or(last),
        _ => tick,
    }
}

/// The last multiple of `interval` since the epoch at or before `time`
/// (the epoch itself for times before it).
fn floor_to_grid(time: SystemTime, interval: Duration) -> SystemTime {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let step = interval.as_nanos().max(1);
    let into_interval = (since_epoch.as_nanos() % step) as u64;
    time.checked_sub(Duration::from_nanos(into_interval))
        .unwrap_or(UNIX_EPOCH)
}

/// The instant batch time `time` stands for, given that `now` on the wall
/// clock is `at`. A time more than one interval ahead (the clock was set
/// back since the checkpoint's last batch) counts as one interval ahead, so
/// a run waits at most one interval for its first batch.
pub(crate) fn instant_of(
    time: SystemTime,
    now: SystemTime,
    at: Instant,
    interval: Duration,
) -> Instant {
    match time.duration_since(now) {
        Ok(ahead) => at + ahead.min(interval),
        Err(behind) => at.checked_sub(behind.duration()).unwrap_or(at),
    }
}

/// A batch time in milliseconds since the epoch, as batch records keep it.
pub(crate) fn from_millis(time_ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(time_ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_first_start_takes_the_tick_at_or_before_now() {
        let second = Duration::from_secs(1);
        assert_eq!(first_batch_time(at_ms(10_700), second, None), at_ms(10_000));
        assert_eq!(first_batch_time(at_ms(10_000), second, None), at_ms(10_000));
    }

    #[test]
    fn a_restart_within_the_last_batchs_interval_takes_the_next_tick() {
        let second = Duration::from_secs(1);
        let last = Some(at_ms(10_000));
        assert_eq!(first_batch_time(at_ms(10_300), second, last), at_ms(11_000));
    }

    #[test]
    fn a_restart_after_downtime_resumes_at_the_current_tick() {
        let second = Duration::from_secs(1);
        let last = Some(at_ms(10_000));
        assert_eq!(first_batch_time(at_ms(15_300), second, last), at_ms(15_000));
    }

    #[test]
    fn a_batch_time_ahead_of_the_clock_is_waited_for_at_most_one_interval() {
        let (now, at, second) = (at_ms(10_300), Instant::now(), Duration::from_secs(1));
        assert_eq!(
            instant_of(at_ms(11_000), now, at, second),
            at + Duration::from_millis(700)
        );
        assert_eq!(instant_of(at_ms(99_000), now, at, second), at + second);
        assert!(instant_of(at_ms(10_000), now, at, second) <= at);
    }

    proptest! {
        #[test]
        fn the_first_batch_time_is_on_the_grid_after_the_last_and_at_most_a_tick_ahead(
            now_ms in 0u64..1 << 42,
            interval_ms in 1u64..100_000,
            last_behind_ms in proptest::option::of(-200_000i64..200_000),
        ) {
            let interval = Duration::from_millis(interval_ms);
            let now = at_ms(now_ms);
            // A last batch on the grid, before or (clock set back) after now.
            let last = last_behind_ms.map(|behind| {
                let ms = (now_ms as i64 - behind).max(0) as u64;
                at_ms(ms - ms % interval_ms)
            });
            let first = first_batch_time(now, interval, last);
            let first_ms = first.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            prop_assert_eq!(first_ms % interval_ms, 0, "on the grid");
            if let Some(last) = last {
                prop_assert!(first > last, "after the last batch time");
                if last < now - Duration::from_millis(now_ms % interval_ms) {
                    prop_assert!(first <= now, "not ahead of the clock after downtime");
                }
            }
            prop_assert!(
                first <= now + interval || last.is_some_and(|l| l + interval == first),
                "at most one tick ahead of the clock, or of the last batch"
            );
        }
    }
}
