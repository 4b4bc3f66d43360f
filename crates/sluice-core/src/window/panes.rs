//! Pane arithmetic of batch-time windows: plain functions from batch times
//! to pane indexes and back, with no state and no I/O.
//!
//! A window of length `L` sliding by `S` is cut into *panes* of
//! `P = gcd(L, S)` milliseconds: `L / P` panes make a window and it moves
//! by `S / P` panes. Pane `p` holds the batches whose time `b` satisfies
//! `(p - 1)·P < b ≤ p·P`, so the window emitted at an epoch-aligned batch
//! time `t` (a multiple of `S`) — the batches of `(t - L, t]` — is exactly
//! the panes `t/P - L/P + 1 ..= t/P`.
//!
//! Times are milliseconds since the Unix epoch. Arithmetic saturates
//! instead of overflowing: no user value makes these functions panic.

use std::time::Duration;

/// The longest window length or slide accepted: about 35 years, so pane
/// arithmetic on any batch time of this millennium stays far from `i64`
/// overflow.
pub(crate) const MAX_WINDOW_MS: i64 = 1 << 40;

/// The geometry of one batch-time window, in panes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Panes {
    /// Pane length in milliseconds: gcd(length, slide).
    pane_ms: i64,
    /// Window length in milliseconds.
    len_ms: i64,
    /// Slide in milliseconds.
    slide_ms: i64,
    /// Window length in panes.
    len: i64,
    /// Slide in panes.
    slide: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `⌈a / b⌉` for `b > 0`, without overflow.
fn ceil_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
}

/// The length or slide `d` in whole milliseconds, or why it is refused
/// (`what` names the setting in the reason).
fn millis(what: &str, d: Duration) -> Result<i64, String> {
    if d.is_zero() {
        return Err(format!("the window {what} is zero"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "the window {what} ({d:?}) is not a whole number of milliseconds, as batch times are"
        ));
    }
    match i64::try_from(d.as_millis()) {
        Ok(ms) if ms <= MAX_WINDOW_MS => Ok(ms),
        _ => Err(format!(
            "the window {what} ({d:?}) is longer than the {MAX_WINDOW_MS} ms allowed"
        )),
    }
}

impl Panes {
    /// The geometry of a window of length `len` sliding by `slide`, or why
    /// these values are refused: zero, not whole milliseconds, longer than
    /// [`MAX_WINDOW_MS`], or a slide longer than the window (batches
    /// between two windows would belong to none).
    pub(crate) fn new(len: Duration, slide: Duration) -> Result<Self, String> {
        let len_ms = millis("length", len)?;
        let slide_ms = millis("slide", slide)?;
        if slide_ms > len_ms {
            return Err(format!(
                "the window slide ({slide:?}) is longer than its length ({len:?}); batches between \
                 two windows would belong to none"
            ));
        }
        let pane_ms = gcd(len_ms, slide_ms);
        Ok(Self {
            pane_ms,
            len_ms,
            slide_ms,
            len: len_ms / pane_ms,
            slide: slide_ms / pane_ms,
        })
    }

    /// Length of a pane in milliseconds.
    #[cfg(test)]
    pub(crate) fn pane_ms(&self) -> i64 {
        self.pane_ms
    }

    /// Window length in panes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> i64 {
        self.len
    }

    /// The pane a batch of time `time_ms` belongs to: `⌈time / P⌉`.
    pub(crate) fn pane_of(&self, time_ms: i64) -> i64 {
        ceil_div(time_ms, self.pane_ms)
    }

    /// True when the batch of time `time_ms` emits a window: its time is a
    /// multiple of the slide (epoch-aligned).
    pub(crate) fn is_emission(&self, time_ms: i64) -> bool {
        time_ms.rem_euclid(self.slide_ms) == 0
    }

    /// The first and last pane of the window ending at `time_ms`: the
    /// batches of `(time - L, time]` when `time_ms` is an emission time.
    pub(crate) fn window_at(&self, time_ms: i64) -> (i64, i64) {
        let last = self.pane_of(time_ms);
        (last.saturating_sub(self.len - 1), last)
    }

    /// True when pane `pane` belongs to a window emitted after the batch of
    /// time `time_ms` — at an emission time strictly greater than it. A pane
    /// for which this is false can be deleted once that batch commits.
    pub(crate) fn needed_after(&self, pane: i64, time_ms: i64) -> bool {
        // Windows holding `pane` end at the emission times in
        // [pane·P, (pane + len - 1)·P].
        let from = pane
            .saturating_mul(self.pane_ms)
            .max(time_ms.saturating_add(1));
        let until = pane
            .saturating_add(self.len - 1)
            .saturating_mul(self.pane_ms);
        let next_emission = ceil_div(from, self.slide_ms).saturating_mul(self.slide_ms);
        next_emission <= until
    }

    /// What the checkpoint records of this window, so that a job started
    /// with another length or slide on the same state is refused.
    pub(crate) fn params(len: Duration, slide: Duration) -> String {
        format!(
            "batch_time len_ms={} slide_ms={}",
            len.as_millis(),
            slide.as_millis()
        )
    }
}

/// Why a window of length `len` sliding by `slide` cannot run with batches
/// every `interval`, if it cannot: both must be multiples of the interval.
pub(crate) fn check_interval(
    len: Duration,
    slide: Duration,
    interval: Duration,
) -> Result<(), String> {
    if interval.is_zero() {
        return Err("the batch interval is zero".to_owned());
    }
    for (what, d) in [("length", len), ("slide", slide)] {
        if d.as_nanos() % interval.as_nanos() != 0 {
            return Err(format!(
                "the window {what} ({d:?}) is not a multiple of the batch interval ({interval:?})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn panes(len: u64, slide: u64) -> Panes {
        Panes::new(ms(len), ms(slide)).unwrap()
    }

    #[test]
    fn a_sliding_window_of_ten_panes_moves_by_one() {
        let w = panes(10_000, 1_000);
        assert_eq!((w.pane_ms(), w.len()), (1_000, 10));
        assert_eq!(w.pane_of(0), 0);
        assert_eq!(w.pane_of(1), 1);
        assert_eq!(w.pane_of(1_000), 1);
        assert_eq!(w.pane_of(1_001), 2);
        assert!(w.is_emission(60_000));
        assert_eq!(w.window_at(60_000), (51, 60));
        assert!(w.needed_after(52, 60_000));
        assert!(!w.needed_after(51, 60_000));
    }

    #[test]
    fn a_length_that_is_not_a_multiple_of_the_slide_uses_their_gcd() {
        let w = panes(3_000, 2_000);
        assert_eq!((w.pane_ms(), w.len()), (1_000, 3));
        assert!(w.is_emission(4_000) && !w.is_emission(3_000));
        assert_eq!(w.window_at(4_000), (2, 4)); // batches 2 s, 3 s, 4 s
    }

    #[test]
    fn a_tumbling_window_needs_no_pane_after_it_is_emitted() {
        let w = panes(5_000, 5_000);
        assert_eq!(w.len(), 1);
        assert!(w.needed_after(w.pane_of(9_000), 9_000));
        assert!(!w.needed_after(w.pane_of(10_000), 10_000));
    }

    #[test]
    fn invalid_lengths_and_slides_are_refused_with_a_reason() {
        let refused = |len, slide| Panes::new(len, slide).unwrap_err();
        assert!(refused(ms(0), ms(1)).contains("length is zero"));
        assert!(refused(ms(10), ms(0)).contains("slide is zero"));
        assert!(refused(ms(10), ms(20)).contains("longer than its length"));
        assert!(refused(Duration::from_micros(1_500), ms(1)).contains("milliseconds"));
        assert!(refused(Duration::from_secs(u64::MAX), ms(1)).contains("allowed"));
    }

    #[test]
    fn lengths_and_slides_must_be_multiples_of_the_batch_interval() {
        assert!(check_interval(ms(10_000), ms(2_000), ms(1_000)).is_ok());
        let e = check_interval(ms(10_000), ms(1_500), ms(1_000)).unwrap_err();
        assert!(e.contains("slide (1.5s)") && e.contains("(1s)"), "{e}");
        let e = check_interval(ms(2_500), ms(500), ms(1_000)).unwrap_err();
        assert!(e.contains("length (2.5s)"), "{e}");
        assert!(check_interval(ms(1), ms(1), Duration::ZERO).is_err());
    }

    proptest! {
        #[test]
        fn a_window_holds_exactly_the_panes_of_its_batches(
            len in 1u64..12, slide in 1u64..12, batch in -50i64..200, end in -10i64..40,
        ) {
            prop_assume!(slide <= len);
            let interval = 250;
            let w = panes(len * interval, slide * interval);
            let (time, now) = (batch * interval as i64, end * (slide * interval) as i64);
            prop_assert!(w.is_emission(now));
            let (first, last) = w.window_at(now);
            let inside = now - ((len * interval) as i64) < time && time <= now;
            let pane = w.pane_of(time);
            prop_assert_eq!(inside, first <= pane && pane <= last);
            prop_assert_eq!(last - first + 1, w.len());
        }

        #[test]
        fn a_pane_is_needed_after_a_batch_exactly_when_a_later_window_holds_it(
            len in 1u64..10, slide in 1u64..10, pane in -20i64..60, now in -200i64..600,
        ) {
            prop_assume!(slide <= len);
            let w = panes(len * 100, slide * 100);
            let now = now * 10; // times off the pane grid too
            // Brute force: every emission time (a multiple of 100) up to
            // past the last window that could hold the pane.
            let until = (pane + len as i64 + 1) * w.pane_ms();
            let later = (now + 1..=until.max(now + 1))
                .filter(|&t| t % 100 == 0 && w.is_emission(t))
                .any(|t| {
                    let (first, last) = w.window_at(t);
                    first <= pane && pane <= last
                });
            prop_assert_eq!(w.needed_after(pane, now), later);
        }

        #[test]
        fn only_multiples_of_the_slide_emit(
            len in 1u64..10, slide in 1u64..10, time in -10_000i64..10_000,
        ) {
            prop_assume!(slide <= len);
            let w = panes(len * 100, slide * 100);
            prop_assert_eq!(w.is_emission(time), time % (slide as i64 * 100) == 0);
        }

        #[test]
        fn no_time_makes_the_arithmetic_panic(
            len in 1i64..=MAX_WINDOW_MS, slide in 1i64..=MAX_WINDOW_MS,
            time in any::<i64>(), pane in any::<i64>(),
        ) {
            prop_assume!(slide <= len);
            let w = panes(len as u64, slide as u64);
            let _ = (w.pane_of(time), w.is_emission(time), w.window_at(time));
            let _ = w.needed_after(pane, time);
        }

        #[test]
        fn multiples_of_the_interval_pass_the_interval_check(
            interval in 1u64..5_000, len in 1u64..20, slide in 1u64..20,
        ) {
            prop_assert!(check_interval(ms(len * interval), ms(slide * interval), ms(interval)).is_ok());
            let off = check_interval(ms(len * interval + 1), ms(slide * interval), ms(interval));
            prop_assert_eq!(off.is_ok(), interval == 1);
        }
    }
}
