//! When a key's state times out or expires: plain functions of batch
//! times.

use std::time::Duration;

use super::layout::Entry;

/// What a key's state is at a batch time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Neither its timeout nor its TTL has passed.
    Live,
    /// Its idle timeout passed: the function is called once more.
    TimingOut,
    /// Its TTL passed: it is removed unseen (this wins over a timeout).
    Expired,
}

/// What `entry` is at batch time `now` (ms).
pub(crate) fn due<S>(entry: &Entry<S>, now: i64) -> Due {
    if entry.expires_at.is_some_and(|at| at <= now) {
        Due::Expired
    } else if entry.timeout_at.is_some_and(|at| at <= now) {
        Due::TimingOut
    } else {
        Due::Live
    }
}

/// `now` plus `after`, in ms, saturating.
pub(crate) fn deadline(now: i64, after: Option<Duration>) -> Option<i64> {
    after.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A key last touched at `touched` with timeout `t` times out in the
        /// first batch at or past `touched + t`, and not before.
        #[test]
        fn a_timeout_fires_from_the_first_batch_past_the_idle_time(
            touched in 0i64..1_000_000, timeout in 0u64..100_000, now in 0i64..2_000_000,
        ) {
            let entry = Entry {
                state: (),
                timeout_at: deadline(touched, Some(Duration::from_millis(timeout))),
                expires_at: None,
            };
            let expected = if now >= touched + timeout as i64 { Due::TimingOut } else { Due::Live };
            prop_assert_eq!(due(&entry, now), expected);
        }

        #[test]
        fn a_passed_ttl_wins_over_a_timeout(
            timeout_at in any::<i64>(), expires_at in any::<i64>(), now in any::<i64>(),
        ) {
            let entry = Entry { state: (), timeout_at: Some(timeout_at), expires_at: Some(expires_at) };
            let d = due(&entry, now);
            prop_assert_eq!(d == Due::Expired, expires_at <= now);
            prop_assert_eq!(d == Due::TimingOut, expires_at > now && timeout_at <= now);
            prop_assert_eq!(entry.deadline(), Some(timeout_at.min(expires_at)));
        }
    }

    #[test]
    fn huge_durations_saturate() {
        assert_eq!(deadline(5, Some(Duration::MAX)), Some(i64::MAX));
        assert_eq!(deadline(5, None), None);
    }
}
