//! Windows: aggregates over the last stretch of a stream, kept in the
//! checkpoint so a restart continues them exactly.
//!
//! # Batch-time windows
//!
//! DStream's windows, over batch (processing) time. A window has a length
//! `L` and a slide `S`, both multiples of the batch interval (checked when
//! the job starts, by [`StreamGraph::check_batch_interval`]). A window is
//! emitted by every batch whose time `t` is a multiple of `S` (counted from
//! the Unix epoch) and covers the batches whose time is in `(t - L, t]`; at
//! other batches a windowed stream is empty.
//!
//! | operator | emits at each window |
//! |---|---|
//! | [`DStream::window`] | every value of the window's batches |
//! | [`DStream::count_by_window`] | one count (0 for an empty window) |
//! | [`DStream::reduce_by_window`] | the values reduced to one (none for an empty window) |
//! | [`DStream::reduce_by_key_and_window`] | each key's values reduced |
//! | [`DStream::reduce_by_key_and_window_inv`] | the same, kept up to date with an [`InverseReduce`] |
//! | [`DStream::count_by_value_and_window`] | each distinct value's count |
//!
//! Each operator takes a name, unique in the job and stable across its
//! versions, as `map_with_state` does: the window's contents live in the
//! checkpoint under that name as per-pane partial aggregates (a pane is
//! `gcd(L, S)` of batch time, so one slide when `S` divides `L`), staged
//! with each batch and committed with its offsets. A restart continues the
//! window from the checkpoint and never re-reads Kafka.
//!
//! [`StreamGraph::check_batch_interval`]: crate::StreamGraph::check_batch_interval
//! [`DStream::window`]: crate::DStream::window
//! [`DStream::count_by_window`]: crate::DStream::count_by_window
//! [`DStream::reduce_by_window`]: crate::DStream::reduce_by_window
//! [`DStream::reduce_by_key_and_window`]: crate::DStream::reduce_by_key_and_window
//! [`DStream::reduce_by_key_and_window_inv`]: crate::DStream::reduce_by_key_and_window_inv
//! [`DStream::count_by_value_and_window`]: crate::DStream::count_by_value_and_window

pub(crate) mod assign;
pub(crate) mod panes;
pub(crate) mod watermark;

pub use crate::ops::{EventTimeSpec, LateCount, OutputMode, Windowed};
pub use assign::Window;

use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Result};

/// The reduce function of a window: associative and commutative.
pub(crate) type ReduceFn<V> = dyn Fn(V, V) -> V + Send + Sync;

/// Which keys an incremental window keeps.
pub(crate) type FilterFn<K, V> = dyn Fn(&K, &V) -> bool + Send + Sync;

/// The functions of [`DStream::reduce_by_key_and_window_inv`]: a reduce
/// function, its inverse, and an optional filter — Spark's `reduceFunc`,
/// `invReduceFunc` and `filterFunc`.
///
/// `inverse(reduce(a, b), b)` must equal `a`: the window's value is kept per
/// key and updated each slide by adding the panes that enter it and
/// subtracting, with `inverse`, those that leave it, instead of reducing
/// every pane of the window again.
///
/// A key whose values all left the window keeps its last value (the
/// neutral one, such as 0 for a sum) and is emitted with it in every later
/// window, unless the [`filter`](InverseReduce::filter) drops it.
///
/// ```
/// use sluice_core::window::InverseReduce;
///
/// // Clicks per page: a sum, its inverse, and pages with no click left
/// // in the window dropped.
/// let clicks = InverseReduce::new(|a: i64, b| a + b, |a, b| a - b)
///     .filter(|_page: &String, clicks| *clicks != 0);
/// ```
///
/// [`DStream::reduce_by_key_and_window_inv`]: crate::DStream::reduce_by_key_and_window_inv
pub struct InverseReduce<K, V> {
    pub(crate) reduce: Arc<ReduceFn<V>>,
    pub(crate) inverse: Arc<ReduceFn<V>>,
    pub(crate) filter: Option<Arc<FilterFn<K, V>>>,
}

impl<K, V> InverseReduce<K, V> {
    /// Reduces with `reduce` and takes values leaving the window out with
    /// `inverse`. No filter by default: every key ever seen stays.
    pub fn new<F, G>(reduce: F, inverse: G) -> Self
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
        G: Fn(V, V) -> V + Send + Sync + 'static,
    {
        Self {
            reduce: Arc::new(reduce),
            inverse: Arc::new(inverse),
            filter: None,
        }
    }

    /// Keeps only the keys for which `keep(key, window value)` is true: the
    /// others are neither emitted nor carried to the next window (their
    /// values still in the window are kept, so the key comes back exactly
    /// when it gets a value again). Typically `|_, v| *v != 0` for a sum.
    pub fn filter<P>(mut self, keep: P) -> Self
    where
        P: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(keep));
        self
    }
}

impl<K, V> Clone for InverseReduce<K, V> {
    fn clone(&self) -> Self {
        Self {
            reduce: Arc::clone(&self.reduce),
            inverse: Arc::clone(&self.inverse),
            filter: self.filter.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for InverseReduce<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InverseReduce")
            .field("filter", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

/// A batch-time window as the graph records it, for the checks at start.
#[derive(Debug, Clone)]
pub(crate) struct BatchWindow {
    pub(crate) name: String,
    pub(crate) operator: &'static str,
    pub(crate) len: Duration,
    pub(crate) slide: Duration,
}

impl BatchWindow {
    fn error(&self, reason: String) -> Error {
        Error::Window {
            name: self.name.clone(),
            operator: self.operator,
            reason,
        }
    }
}

/// The first window whose length or slide is not allowed whatever the
/// batch interval: zero, not whole milliseconds, or a slide longer than
/// the length.
pub(crate) fn check_windows(windows: &[BatchWindow]) -> Result<()> {
    for window in windows {
        panes::Panes::new(window.len, window.slide).map_err(|reason| window.error(reason))?;
    }
    Ok(())
}

/// The first window that cannot run with batches every `interval`.
pub(crate) fn check_batch_interval(windows: &[BatchWindow], interval: Duration) -> Result<()> {
    check_windows(windows)?;
    for window in windows {
        panes::check_interval(window.len, window.slide, interval)
            .map_err(|reason| window.error(reason))?;
    }
    Ok(())
}
