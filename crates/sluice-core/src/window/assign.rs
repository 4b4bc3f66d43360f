//! Which event-time windows a record belongs to, and how session windows
//! merge: plain functions of milliseconds.
//!
//! Tumbling and sliding windows are aligned to the Unix epoch: a window
//! `[start, end)` of a sliding window with slide `s` starts at a multiple
//! of `s`. Arithmetic is done on `i128` and clamped to `i64`, so no event
//! time, however absurd, makes it overflow.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most windows one record may belong to (a sliding window's size
/// divided by its slide): each costs work for every record.
pub(crate) const MAX_WINDOWS_PER_RECORD: i64 = 1000;

/// The shape of an event-time window: tumbling, sliding (hopping) or
/// session.
///
/// Windows are half-open intervals `[start, end)` of event time in
/// milliseconds since the Unix epoch; tumbling and sliding windows are
/// aligned to the epoch.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::window::Window;
///
/// let minute = Window::tumbling(Duration::from_secs(60));
/// let last_ten_minutes_every_minute =
///     Window::sliding(Duration::from_secs(600), Duration::from_secs(60));
/// let visits = Window::session(Duration::from_secs(30 * 60));
/// # let _ = (minute, last_ten_minutes_every_minute, visits);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sliding { size: Duration, slide: Duration },
    Session { gap: Duration },
}

impl Window {
    /// Fixed, non-overlapping windows of `size`: a record at event time
    /// `t` belongs to the one window `[t - t mod size, … + size)`.
    pub fn tumbling(size: Duration) -> Self {
        Self::sliding(size, size)
    }

    /// Windows of `size` starting every `slide`: a record belongs to every
    /// window that contains its event time (`size / slide` of them, at most
    /// 1000). A slide longer than the size leaves gaps that no window
    /// covers; records in them belong to no window and are dropped (they
    /// are not late).
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self {
            kind: Kind::Sliding { size, slide },
        }
    }

    /// Session windows: a record at `t` opens the window `[t, t + gap)`,
    /// and windows of a key that overlap or touch merge into one, within a
    /// batch and across batches. A session closes `gap` after its last
    /// record.
    pub fn session(gap: Duration) -> Self {
        Self {
            kind: Kind::Session { gap },
        }
    }

    /// The window as the checkpoint's state registry records it: a named
    /// window whose size, slide or gap changes is refused at start.
    pub(crate) fn params(&self) -> String {
        match self.kind {
            Kind::Sliding { size, slide } => format!(
                "event_time size_ms={} slide_ms={}",
                size.as_millis(),
                slide.as_millis()
            ),
            Kind::Session { gap } => format!("event_time session gap_ms={}", gap.as_millis()),
        }
    }

    /// The window in milliseconds, or why it cannot be used.
    pub(crate) fn millis(&self) -> Result<Assigner, String> {
        let ms = |what: &str, d: Duration| -> Result<i64, String> {
            match i64::try_from(d.as_millis()) {
                Ok(0) => Err(format!("the window's {what} is shorter than 1 ms")),
                Ok(ms) => Ok(ms),
                Err(_) => Err(format!("the window's {what} is too long")),
            }
        };
        match self.kind {
            Kind::Sliding { size, slide } => {
                let (size, slide) = (ms("size", size)?, ms("slide", slide)?);
                let windows = size / slide + i64::from(size % slide != 0);
                if windows > MAX_WINDOWS_PER_RECORD {
                    return Err(format!(
                        "a sliding window of {size} ms sliding by {slide} ms puts every record \
                         in {windows} windows, more than the {MAX_WINDOWS_PER_RECORD} allowed; \
                         slide further"
                    ));
                }
                Ok(Assigner::Sliding { size, slide })
            }
            Kind::Session { gap } => Ok(Assigner::Session {
                gap: ms("gap", gap)?,
            }),
        }
    }
}

/// A checked [`Window`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assigner {
    /// Tumbling when `size == slide`.
    Sliding {
        size: i64,
        slide: i64,
    },
    Session {
        gap: i64,
    },
}

fn clamp(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl Assigner {
    /// The windows `[start, end)` holding event time `t`, latest first. A
    /// session record's window is `[t, t + gap)`, before any merge.
    pub(crate) fn windows_of(&self, t: i64) -> impl Iterator<Item = (i64, i64)> {
        let t = i128::from(t);
        let (size, slide, last) = match *self {
            Assigner::Sliding { size, slide } => {
                let (size, slide) = (i128::from(size), i128::from(slide));
                (size, slide, t - t.rem_euclid(slide))
            }
            Assigner::Session { gap } => (i128::from(gap), 1, t),
        };
        // Windows `last - k * slide` for every k >= 0 that still holds t.
        let reach = last - t + size;
        let count = if self.is_session() {
            1
        } else if reach <= 0 {
            0
        } else {
            ((reach + slide - 1) / slide).min(i128::from(MAX_WINDOWS_PER_RECORD))
        };
        (0..count).map(move |k| {
            let start = last - k * slide;
            (clamp(start), clamp(start + size))
        })
    }

    /// The end of the latest window holding `t`, or `None` when no window
    /// holds it (a gap between sliding windows). A record is late when this
    /// end is at or behind the watermark: every window it belongs to is
    /// closed.
    pub(crate) fn last_end(&self, t: i64) -> Option<i64> {
        self.windows_of(t).next().map(|(_, end)| end)
    }

    pub(crate) fn is_session(&self) -> bool {
        matches!(self, Assigner::Session { .. })
    }

    /// Why event time `t` cannot be windowed, if it cannot: a window of it
    /// would start or end outside 64-bit milliseconds (and so never close),
    /// or `t` is more than `max_ahead` ms ahead of the batch time
    /// `batch_ms` (a producer's clock far in the future would otherwise
    /// move the watermark past every later record).
    pub(crate) fn refuses(&self, t: i64, batch_ms: i64, max_ahead: Option<i64>) -> Option<String> {
        let t128 = i128::from(t);
        let (size, slide) = match *self {
            Assigner::Sliding { size, slide } => (i128::from(size), i128::from(slide)),
            Assigner::Session { gap } => (i128::from(gap), 1),
        };
        // The latest window's end and the earliest window's start.
        let end = t128 - t128.rem_euclid(slide) + size;
        let start = if self.is_session() {
            t128
        } else {
            t128 - size + 1
        };
        if end > i128::from(i64::MAX) || start < i128::from(i64::MIN) {
            return Some(format!(
                "event time {t} ms is out of range: its windows would not fit in 64-bit \
                 milliseconds"
            ));
        }
        let ahead = t128 - i128::from(batch_ms);
        match max_ahead {
            Some(max) if ahead > i128::from(max) => Some(format!(
                "event time {t} ms is {ahead} ms ahead of the batch time {batch_ms} ms, more \
                 than the window's max_ahead of {max} ms"
            )),
            _ => None,
        }
    }
}

/// An open window of one key and its aggregate, as kept in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenWindow<A> {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) value: A,
}

/// Adds `value` (at event time `t`) to the open windows of a key, sorted
/// by `(start, end)`: to every window of `t` that ends after `open_after`
/// (the watermark the record was judged by), creating the missing ones,
/// and for sessions merging every session the record's window overlaps or
/// touches. Returns the `(start, end)` of the windows changed.
pub(crate) fn add<A: Clone>(
    windows: &mut Vec<OpenWindow<A>>,
    assigner: &Assigner,
    t: i64,
    value: A,
    open_after: Option<i64>,
    combine: &dyn Fn(A, A) -> A,
) -> Vec<(i64, i64)> {
    if assigner.is_session() {
        let (start, end) = assigner
            .windows_of(t)
            .next()
            .expect("a session record has one window");
        return vec![merge_session(windows, start, end, value, combine)];
    }
    let mut changed = Vec::new();
    for (start, end) in assigner.windows_of(t) {
        if open_after.is_some_and(|w| end <= w) {
            continue;
        }
        changed.push((start, end));
        match windows.binary_search_by(|w| (w.start, w.end).cmp(&(start, end))) {
            Ok(i) => fold(&mut windows[i].value, value.clone(), combine),
            Err(i) => windows.insert(
                i,
                OpenWindow {
                    start,
                    end,
                    value: value.clone(),
                },
            ),
        }
    }
    changed
}

/// Merges `partial`, a window combined elsewhere (a map task), into the
/// open windows of a key: into the same window, or for sessions every
/// session it overlaps or touches. Returns the bounds of the window it
/// ended in.
pub(crate) fn merge<A: Clone>(
    windows: &mut Vec<OpenWindow<A>>,
    assigner: &Assigner,
    partial: OpenWindow<A>,
    combine: &dyn Fn(A, A) -> A,
) -> (i64, i64) {
    let OpenWindow { start, end, value } = partial;
    if assigner.is_session() {
        return merge_session(windows, start, end, value, combine);
    }
    match windows.binary_search_by(|w| (w.start, w.end).cmp(&(start, end))) {
        Ok(i) => fold(&mut windows[i].value, value, combine),
        Err(i) => windows.insert(i, OpenWindow { start, end, value }),
    }
    (start, end)
}

fn fold<A: Clone>(slot: &mut A, value: A, combine: &dyn Fn(A, A) -> A) {
    // `combine` takes its arguments by value; the clone is the price of
    // folding in place without an `Option` per window.
    *slot = combine(slot.clone(), value);
}

/// Inserts the session `[start, end)` holding `value` into `sessions`
/// (sorted, pairwise apart), merging every session it overlaps or touches;
/// values combine in start order. Returns the merged session's bounds.
pub(crate) fn merge_session<A>(
    sessions: &mut Vec<OpenWindow<A>>,
    start: i64,
    end: i64,
    value: A,
    combine: &dyn Fn(A, A) -> A,
) -> (i64, i64) {
    let first = sessions.partition_point(|s| s.end < start);
    let last = sessions.partition_point(|s| s.start <= end);
    let mut merged = OpenWindow { start, end, value };
    if first < last {
        let mut absorbed: Vec<OpenWindow<A>> = sessions.drain(first..last).collect();
        let at = absorbed.partition_point(|s| s.start <= start);
        absorbed.insert(at, merged);
        let mut parts = absorbed.into_iter();
        merged = parts.next().expect("at least the new session");
        for part in parts {
            merged.start = merged.start.min(part.start);
            merged.end = merged.end.max(part.end);
            merged.value = combine(merged.value, part.value);
        }
    }
    let bounds = (merged.start, merged.end);
    sessions.insert(first, merged);
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sliding(size: i64, slide: i64) -> Assigner {
        Assigner::Sliding { size, slide }
    }

    /// Regression: an event time of i64::MAX made a window whose end
    /// saturated at i64::MAX, which never closed, and moved the watermark
    /// past every later record.
    #[test]
    fn event_times_at_the_edges_of_i64_are_refused() {
        let session = Assigner::Session { gap: 5_000 };
        for assigner in [sliding(10_000, 10_000), sliding(10_000, 1_000), session] {
            let mut edges = vec![i64::MAX, i64::MAX - 4_000];
            if !assigner.is_session() {
                // Its aligned windows start before i64::MIN; a session's
                // `[t, t + gap)` fits.
                edges.push(i64::MIN);
            }
            for t in edges {
                let why = assigner
                    .refuses(t, 0, None)
                    .unwrap_or_else(|| panic!("{t} accepted"));
                assert!(why.contains("out of range"), "{why}");
            }
            assert_eq!(assigner.refuses(1_700_000_000_000, 0, None), None);
            assert_eq!(assigner.refuses(-5, 0, None), None);
        }
        assert_eq!(session.refuses(i64::MIN, 0, None), None);
    }

    #[test]
    fn an_event_time_too_far_ahead_of_the_batch_is_refused_only_with_max_ahead() {
        let assigner = sliding(1_000, 1_000);
        let batch = 1_700_000_000_000;
        assert_eq!(assigner.refuses(batch + 60_000, batch, Some(60_000)), None);
        let why = assigner
            .refuses(batch + 60_001, batch, Some(60_000))
            .unwrap();
        assert!(
            why.contains("60001 ms ahead") && why.contains("max_ahead of 60000 ms"),
            "{why}"
        );
        assert_eq!(assigner.refuses(batch + 86_400_000_000, batch, None), None);
    }

    proptest! {
        /// An accepted event time's windows fit as they are: none of their
        /// bounds was clamped.
        #[test]
        fn the_windows_of_an_accepted_event_time_are_not_clamped(
            t in any::<i64>(), size in 1i64..1_000_000, slide_div in 1i64..10, session in any::<bool>(),
        ) {
            let assigner = if session {
                Assigner::Session { gap: size }
            } else {
                sliding(size, (size / slide_div).max(1))
            };
            if assigner.refuses(t, 0, None).is_none() {
                for (start, end) in assigner.windows_of(t) {
                    prop_assert!(start <= t && t < end);
                    prop_assert!(end - start == size);
                }
            }
        }

        #[test]
        fn a_tumbling_record_is_in_the_one_aligned_window_holding_it(
            t in -1_000_000i64..1_000_000, size in 1i64..5_000,
        ) {
            let windows: Vec<_> = sliding(size, size).windows_of(t).collect();
            prop_assert_eq!(windows.len(), 1);
            let (start, end) = windows[0];
            prop_assert!(start <= t && t < end);
            prop_assert_eq!(start.rem_euclid(size), 0);
            prop_assert_eq!(end - start, size);
        }

        #[test]
        fn sliding_windows_are_every_aligned_window_holding_the_record(
            t in -100_000i64..100_000, size in 1i64..400, slide in 1i64..400,
        ) {
            let expected: Vec<(i64, i64)> = (t - size - slide..=t + slide)
                .rev()
                .filter(|s| s.rem_euclid(slide) == 0 && *s <= t && t < s + size)
                .map(|s| (s, s + size))
                .collect();
            let found: Vec<_> = sliding(size, slide).windows_of(t).collect();
            prop_assert_eq!(&found, &expected);
            prop_assert_eq!(sliding(size, slide).last_end(t), expected.first().map(|w| w.1));
        }

        #[test]
        fn extreme_times_do_not_overflow(
            t in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
            size in 1i64..i64::MAX, slide in 1i64..i64::MAX, gap in 1i64..i64::MAX,
        ) {
            prop_assert!(sliding(size, slide).windows_of(t).count() <= MAX_WINDOWS_PER_RECORD as usize);
            let _ = Assigner::Session { gap }.last_end(t);
        }

        /// Sessions built one record at a time, in any order, are the
        /// sessions of the sorted records: runs whose consecutive times are
        /// at most `gap` apart, from the first time to the last plus `gap`.
        #[test]
        fn sessions_merged_in_any_order_are_the_sessions_of_the_sorted_records(
            times in proptest::collection::vec(0i64..2_000, 0..40), gap in 1i64..100,
        ) {
            let session = Assigner::Session { gap };
            let mut sessions = Vec::new();
            for &t in &times {
                add(&mut sessions, &session, t, 1u64, None, &|a, b| a + b);
            }
            let mut sorted = times.clone();
            sorted.sort();
            let mut expected: Vec<(i64, i64, u64)> = Vec::new();
            for t in sorted {
                match expected.last_mut() {
                    Some(last) if t <= last.1 => {
                        last.1 = last.1.max(t + gap);
                        last.2 += 1;
                    }
                    _ => expected.push((t, t + gap, 1)),
                }
            }
            let found: Vec<_> = sessions.iter().map(|s| (s.start, s.end, s.value)).collect();
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn only_windows_open_after_the_watermark_change(
            t in -10_000i64..10_000, size in 1i64..300, slide in 1i64..300, w in -10_000i64..10_000,
        ) {
            let assigner = sliding(size, slide);
            let mut windows = Vec::new();
            let changed = add(&mut windows, &assigner, t, 1u8, Some(w), &|a, b| a + b);
            let open: Vec<_> = assigner.windows_of(t).filter(|w2| w2.1 > w).collect();
            prop_assert_eq!(changed.len(), open.len());
            prop_assert!(windows.iter().all(|x| x.end > w));
            prop_assert!(windows.windows(2).all(|p| (p[0].start, p[0].end) < (p[1].start, p[1].end)));
        }
    }

    proptest! {
        /// Combining records in groups (map tasks) and merging the groups'
        /// windows gives the windows of adding every record in one place.
        #[test]
        fn merged_partial_windows_equal_windows_built_in_one_place(
            records in proptest::collection::vec((0i64..1_000, 0usize..3), 0..40),
            kind in prop_oneof![
                (1i64..100, 1i64..100).prop_map(|(size, slide)| sliding(size, slide)),
                (1i64..60).prop_map(|gap| Assigner::Session { gap }),
            ],
            open_after in proptest::option::of(0i64..500),
        ) {
            let sum = |a: u64, b: u64| a + b;
            let mut whole = Vec::new();
            let mut groups = vec![Vec::new(); 3];
            for &(t, group) in &records {
                if open_after.is_some_and(|w| kind.last_end(t).is_none_or(|end| end <= w)) {
                    continue; // late: the operator never adds it
                }
                add(&mut whole, &kind, t, 1u64, open_after, &sum);
                add(&mut groups[group], &kind, t, 1u64, open_after, &sum);
            }
            let mut merged = Vec::new();
            for group in groups {
                for partial in group {
                    merge(&mut merged, &kind, partial, &sum);
                }
            }
            prop_assert_eq!(merged, whole);
        }
    }

    #[test]
    fn windows_are_checked() {
        let ms = Duration::from_millis;
        assert!(Window::tumbling(ms(0)).millis().is_err());
        assert!(Window::sliding(ms(10_000), ms(1)).millis().is_err());
        assert!(Window::sliding(ms(1000), ms(1)).millis().is_ok());
        assert!(Window::session(Duration::MAX).millis().is_err());
        assert_eq!(
            Window::tumbling(ms(60)).millis(),
            Ok(Assigner::Sliding {
                size: 60,
                slide: 60
            })
        );
    }
}
