//! Batch-time windowed reductions: `reduce_by_key_and_window`, with and
//! without an inverse function, and the operators built on it
//! (`reduce_by_window`, `count_by_window`, `count_by_value_and_window`) —
//! DStream's windowed reductions.
//!
//! The batch's values are combined per key (map-side, then in the reduce
//! task of the key's key partition, as `reduce_by_key` does) and folded
//! into the key's pane of the batch time. Each key's state is its
//! per-pane partial results and, for the incremental form, its window
//! value as of the last window. A batch that emits a window reads its key
//! partitions' whole state — the window holds every key with a value in
//! it — and drops the panes no later window needs; other batches read and
//! write only their own keys.

use std::cmp::Ordering;
use std::hash::Hash;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::key_panes::{self, KeyPanes};
use super::{declare, refused};
use crate::ops::materialize::Materialized;
use crate::scope::BatchScope;
use crate::state::family_of;
use crate::state::layout::Entry;
use crate::state::partition::PartitionState;
use crate::stream::{run_stage, Node, PartIter};
use crate::window::panes::Panes;
use crate::window::{FilterFn, InverseReduce, ReduceFn};
use crate::{DStream, Error, Result};

const REDUCE_BY_KEY_AND_WINDOW: &str = "reduce_by_key_and_window";

/// The inverse function and the filter of the incremental form.
type Incremental<K, V> = (Arc<ReduceFn<V>>, Option<Arc<FilterFn<K, V>>>);

fn entry<V>(state: KeyPanes<V>) -> Entry<KeyPanes<V>> {
    Entry {
        state,
        timeout_at: None,
        expires_at: None,
    }
}

/// A windowed reduction by key, fed by a `reduce_by_key` of the batch.
struct KeyedWindow<K, V> {
    name: Arc<str>,
    family: Arc<str>,
    operator: &'static str,
    panes: std::result::Result<Panes, String>,
    reduce: Arc<ReduceFn<V>>,
    /// The inverse function and filter of the incremental form.
    inverse: Option<Incremental<K, V>>,
}

impl<K, V> KeyedWindow<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn step(
        self: &Arc<Self>,
        scope: &Arc<BatchScope>,
        parent: &Arc<dyn Node<(K, V)>>,
    ) -> Result<Vec<Vec<(K, V)>>> {
        let panes = self
            .panes
            .clone()
            .map_err(|reason| refused(&self.name, self.operator, &reason))?;
        let now = scope.info.time_ms();
        let store = Arc::clone(&scope.state);
        let window = Arc::clone(self);
        // The parent's partition i holds the keys of key partition i.
        let results = run_stage(scope, parent, self.operator, move |part, values| {
            let mut state = PartitionState::new(
                store.as_ref(),
                &window.name,
                &window.family,
                part as u16,
                false,
            );
            let output = if panes.is_emission(now) {
                window.emit(&mut state, panes, now, values)?
            } else {
                window.add(&mut state, panes.pane_of(now), values)?;
                Vec::new()
            };
            Ok::<_, Error>((output, state.finish().0))
        })?;
        let mut outputs = Vec::with_capacity(results.len());
        let mut writes = scope.writes.lock().unwrap_or_else(PoisonError::into_inner);
        for result in results {
            let (output, mut staged) = result?;
            outputs.push(output);
            writes.append(&mut staged);
        }
        Ok(outputs)
    }

    /// A batch that emits no window: its values go into their keys' pane.
    fn add(
        &self,
        state: &mut PartitionState<'_>,
        pane: i64,
        values: PartIter<'_, (K, V)>,
    ) -> Result<()> {
        let values: Vec<(K, V)> = values.collect();
        let keys = values
            .iter()
            .map(|(k, _)| state.encode_key(k))
            .collect::<Result<Vec<_>>>()?;
        let (stored, _) = state.load::<KeyPanes<V>>(&keys)?;
        for ((key, (_, value)), stored) in keys.iter().zip(values).zip(stored) {
            let mut panes = stored.map(|e| e.state).unwrap_or_default();
            panes.add(pane, value, self.reduce.as_ref());
            state.put(key, None, &entry(panes))?;
        }
        Ok(())
    }

    /// A batch that emits the window ending at `now`: every key of the
    /// partition, in the order of their encoded bytes. The stored keys come
    /// sorted from the scan and the batch's keys are sorted once, so the
    /// two are merged in one pass.
    fn emit(
        &self,
        state: &mut PartitionState<'_>,
        panes: Panes,
        now: i64,
        values: PartIter<'_, (K, V)>,
    ) -> Result<Vec<(K, V)>> {
        let pane = panes.pane_of(now);
        let reduce = self.reduce.as_ref();
        // Stored keys stay encoded: most are in the batch too, which has
        // them decoded.
        let stored = state.scan_encoded::<KeyPanes<V>>()?;
        let fresh = sorted_by_encoding(state, values, reduce)?;
        let mut output = Vec::with_capacity(stored.len().max(fresh.len()));
        let mut stored = stored.into_iter().peekable();
        let mut fresh = fresh.into_iter().peekable();
        loop {
            let order = match (stored.peek(), fresh.peek()) {
                (Some((s, _)), Some((f, ..))) => s.cmp(f),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            let (encoded, key, kept, is_stored, changed) = match order {
                Ordering::Less => {
                    let (encoded, entry) = stored.next().expect("peeked");
                    let key = state.decode_key(&encoded)?;
                    (encoded, key, entry.state, true, false)
                }
                Ordering::Greater => {
                    let (encoded, key, value) = fresh.next().expect("peeked");
                    let mut kept = KeyPanes::default();
                    kept.add(pane, value, reduce);
                    (encoded, key, kept, false, true)
                }
                Ordering::Equal => {
                    let (encoded, entry) = stored.next().expect("peeked");
                    let (_, key, value) = fresh.next().expect("peeked");
                    let mut kept = entry.state;
                    kept.add(pane, value, reduce);
                    (encoded, key, kept, true, true)
                }
            };
            let key = Settle {
                encoded,
                key,
                kept,
                stored: is_stored,
                changed,
            };
            if let Some(emitted) = self.settle(state, key, panes, now)? {
                output.push(emitted);
            }
        }
        Ok(output)
    }

    /// One key at the window ending at `now`: its value in the window, if
    /// it has one the filter keeps, and its state staged — deleted when
    /// nothing is left, rewritten only when it changed.
    fn settle(
        &self,
        state: &mut PartitionState<'_>,
        key: Settle<K, V>,
        panes: Panes,
        now: i64,
    ) -> Result<Option<(K, V)>> {
        let Settle {
            encoded,
            key,
            mut kept,
            stored,
            mut changed,
        } = key;
        let (first, last) = panes.window_at(now);
        let reduce = self.reduce.as_ref();
        let value = match &self.inverse {
            Some((inverse, filter)) => {
                let before = kept.running.take();
                let had_running = before.is_some();
                let (value, end) = match before {
                    Some((end, running)) => {
                        let (value, moved) =
                            kept.slide(end, running, (first, last), reduce, inverse.as_ref());
                        // A running value no pane entered or left stands
                        // as stored: no later pane can enter `(end, last]`.
                        changed |= moved;
                        (Some(value), if moved { last } else { end })
                    }
                    None => (kept.fold(first, last, reduce), last),
                };
                let value = value.filter(|v| filter.as_ref().is_none_or(|keep| keep(&key, v)));
                changed |= had_running != value.is_some();
                kept.running = value.clone().map(|v| (end, v));
                value
            }
            None => {
                changed |= kept.running.take().is_some();
                kept.fold(first, last, reduce)
            }
        };
        // The incremental form subtracts the panes of this window when
        // they leave it, so it keeps them until then.
        let incremental = self.inverse.is_some();
        let before = kept.panes.len();
        kept.panes
            .retain(|(p, _)| (incremental && *p >= first) || panes.needed_after(*p, now));
        changed |= kept.panes.len() != before;
        if kept.panes.is_empty() && kept.running.is_none() {
            if stored {
                state.delete(&encoded, None);
            }
        } else if changed {
            state.put(&encoded, None, &entry(kept))?;
        }
        Ok(value.map(|v| (key, v)))
    }
}

/// A key met by a window, before it is settled.
struct Settle<K, V> {
    encoded: Vec<u8>,
    key: K,
    kept: KeyPanes<V>,
    /// Whether the checkpoint holds the key.
    stored: bool,
    /// Whether its stored state no longer holds.
    changed: bool,
}

/// The batch's values with their encoded keys, sorted by them; values of
/// keys that encode alike are reduced into one.
fn sorted_by_encoding<K: Serialize, V>(
    state: &PartitionState<'_>,
    values: PartIter<'_, (K, V)>,
    reduce: &ReduceFn<V>,
) -> Result<Vec<(Vec<u8>, K, V)>> {
    let mut encoded = values
        .map(|(key, value)| Ok((state.encode_key(&key)?, key, value)))
        .collect::<Result<Vec<_>>>()?;
    encoded.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut sorted: Vec<(Vec<u8>, K, V)> = Vec::with_capacity(encoded.len());
    for (bytes, key, value) in encoded {
        let value = match sorted.last() {
            Some((last, ..)) if *last == bytes => {
                let (_, _, old) = sorted.pop().expect("a last value");
                reduce(old, value)
            }
            _ => value,
        };
        sorted.push((bytes, key, value));
    }
    Ok(sorted)
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Each key's values over a sliding window of batch time, combined
    /// with `reduce` (associative and commutative) — DStream's
    /// `reduceByKeyAndWindow(func, windowLength, slideInterval)`.
    ///
    /// The batch whose time `t` is a multiple of `slide` (since the Unix
    /// epoch) emits, for every key with values in the batches whose time
    /// is in `(t - len, t]`, those values reduced; at other batches the
    /// stream is empty. `len` and `slide` must be multiples of the batch
    /// interval and `slide` at most `len` (see
    /// [`StreamGraph::check_batch_interval`]).
    ///
    /// The window is kept in the checkpoint under `name` (unique in the
    /// job, stable across its versions, as for
    /// [`DStream::map_with_state`]) as one reduced value per key and pane
    /// (`gcd(len, slide)` of batch time), committed with each batch, so a
    /// restart continues it exactly. A batch that emits a window reads the
    /// whole window state; other batches only their keys. Values are
    /// shuffled by key to the job's shuffle partitions, which are the key
    /// partitions of the state; within one, keys come in the order of
    /// their encoded bytes.
    ///
    /// [`StreamGraph::check_batch_interval`]: crate::StreamGraph::check_batch_interval
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::{Duration, SystemTime};
    /// use sluice_core::state::MemoryState;
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// let windows = Arc::new(Mutex::new(Vec::new()));
    /// let out = windows.clone();
    /// graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|page| (page, 1i64))
    ///     // Clicks per page over the last 3 s, every second.
    ///     .reduce_by_key_and_window("clicks_3s", |a, b| a + b, Duration::from_secs(3), Duration::from_secs(1))
    ///     .foreach_batch(move |batch, _| {
    ///         let mut window: Vec<(String, i64)> = batch.into_iter().collect();
    ///         window.sort();
    ///         out.lock().unwrap().push(window);
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    /// graph.check_batch_interval(Duration::from_secs(1))?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// let clicks: [&[&str]; 4] = [&["a", "b"], &["a"], &[], &["b"]];
    /// for (second, pages) in (1..).zip(clicks) {
    ///     let input = MemoryInput::new().with_partition("clicks", 0, pages.iter().copied());
    ///     let time = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
    ///     let info = BatchInfo::new(second, time, input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes); // what the checkpoint commits
    /// }
    /// let (a, b) = ("a".to_owned(), "b".to_owned());
    /// assert_eq!(
    ///     *windows.lock().unwrap(),
    ///     [
    ///         vec![(a.clone(), 1), (b.clone(), 1)], // batches of (-2 s, 1 s]
    ///         vec![(a.clone(), 2), (b.clone(), 1)], // (-1 s, 2 s]
    ///         vec![(a.clone(), 2), (b.clone(), 1)], // (0 s, 3 s]
    ///         vec![(a.clone(), 1), (b.clone(), 1)], // (1 s, 4 s]
    ///     ]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn reduce_by_key_and_window<F>(
        &self,
        name: &str,
        reduce: F,
        len: Duration,
        slide: Duration,
    ) -> DStream<(K, V)>
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        self.windowed_reduce(
            name,
            (REDUCE_BY_KEY_AND_WINDOW, REDUCE_BY_KEY_AND_WINDOW),
            len,
            slide,
            Arc::new(reduce),
            None,
        )
    }

    /// [`DStream::reduce_by_key_and_window`] kept up to date incrementally
    /// — DStream's `reduceByKeyAndWindow(func, invFunc, windowLength,
    /// slideInterval, filterFunc)`: each key's window value is kept, and
    /// each window adds the panes that entered it and takes out, with the
    /// inverse function, those that left it, instead of reducing every
    /// pane of the window. See [`InverseReduce`] for the functions and the
    /// filter.
    ///
    /// A key whose values all left the window is still emitted, with the
    /// value the inverse left (0 for a sum), until the filter drops it.
    /// With a filter keeping the keys whose value is not neutral, it emits
    /// what [`DStream::reduce_by_key_and_window`] emits, filtered. Both
    /// forms keep the same state under the operator kind
    /// `reduce_by_key_and_window`, so a job may switch between them under
    /// the same name, length and slide.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::{Duration, SystemTime};
    /// use sluice_core::state::MemoryState;
    /// use sluice_core::window::InverseReduce;
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// let windows = Arc::new(Mutex::new(Vec::new()));
    /// let out = windows.clone();
    /// let sum = InverseReduce::new(|a: i64, b| a + b, |a, b| a - b)
    ///     .filter(|_page: &String, clicks| *clicks != 0);
    /// graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|page| (page, 1i64))
    ///     .reduce_by_key_and_window_inv("clicks_2s", sum, Duration::from_secs(2), Duration::from_secs(1))
    ///     .foreach_batch(move |batch, _| {
    ///         let mut window: Vec<(String, i64)> = batch.into_iter().collect();
    ///         window.sort();
    ///         out.lock().unwrap().push(window);
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// let clicks: [&[&str]; 4] = [&["a", "b"], &["a"], &[], &[]];
    /// for (second, pages) in (1..).zip(clicks) {
    ///     let input = MemoryInput::new().with_partition("clicks", 0, pages.iter().copied());
    ///     let time = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
    ///     let info = BatchInfo::new(second, time, input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes);
    /// }
    /// let (a, b) = ("a".to_owned(), "b".to_owned());
    /// assert_eq!(
    ///     *windows.lock().unwrap(),
    ///     [
    ///         vec![(a.clone(), 1), (b.clone(), 1)],
    ///         vec![(a.clone(), 2), (b.clone(), 1)],
    ///         vec![(a.clone(), 1)], // b went back to 0: filtered out
    ///         vec![],
    ///     ]
    /// );
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn reduce_by_key_and_window_inv(
        &self,
        name: &str,
        functions: InverseReduce<K, V>,
        len: Duration,
        slide: Duration,
    ) -> DStream<(K, V)> {
        let InverseReduce {
            reduce,
            inverse,
            filter,
        } = functions;
        self.windowed_reduce(
            name,
            (REDUCE_BY_KEY_AND_WINDOW, "reduce_by_key_and_window_inv"),
            len,
            slide,
            reduce,
            Some((inverse, filter)),
        )
    }

    /// A windowed reduction kept by the operator kind `kind` (what the
    /// checkpoint records, the same for both forms of a reduction), whose
    /// errors name `operator`, the method the job called.
    fn windowed_reduce(
        &self,
        name: &str,
        (kind, operator): (&'static str, &'static str),
        len: Duration,
        slide: Duration,
        reduce: Arc<ReduceFn<V>>,
        inverse: Option<Incremental<K, V>>,
    ) -> DStream<(K, V)> {
        let panes = declare::<K, KeyPanes<V>>(
            &self.graph,
            name,
            (kind, operator),
            (len, slide),
            Some(key_panes::LAYOUT),
        );
        let combine = Arc::clone(&reduce);
        // A map-side combine and a shuffle to the job's shuffle partitions,
        // which are the state's key partitions.
        let combined = self.reduce_by_key(move |a, b| combine(a, b));
        let parent = Arc::clone(&combined.node);
        let window = Arc::new(KeyedWindow {
            name: name.into(),
            family: family_of(name).into(),
            operator,
            panes,
            reduce,
            inverse,
        });
        self.derive(Materialized::new(move |scope| window.step(scope, &parent)))
    }
}

impl<T> DStream<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The values of a sliding window of batch time reduced to one with
    /// `reduce` (associative and commutative) — DStream's
    /// `reduceByWindow`. Emitted, as one value, by the batches whose time
    /// is a multiple of `slide`, over the batches of `(t - len, t]`; an
    /// empty window emits nothing. Kept under `name` as one value per pane;
    /// see [`DStream::reduce_by_key_and_window`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let graph = sluice_core::StreamGraph::new();
    /// // The longest line of the last minute, every 10 s.
    /// let longest = graph.input().values_utf8().reduce_by_window(
    ///     "longest_line",
    ///     |a, b| if b.len() > a.len() { b } else { a },
    ///     Duration::from_secs(60),
    ///     Duration::from_secs(10),
    /// );
    /// ```
    pub fn reduce_by_window<F>(
        &self,
        name: &str,
        reduce: F,
        len: Duration,
        slide: Duration,
    ) -> DStream<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        self.map(|value| ((), value))
            .windowed_reduce(
                name,
                ("reduce_by_window", "reduce_by_window"),
                len,
                slide,
                Arc::new(reduce),
                None,
            )
            .map(|((), value)| value)
    }
}

impl<T> DStream<T>
where
    T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// How many times each distinct value occurs in a sliding window of
    /// batch time — DStream's `countByValueAndWindow`. Emitted by the
    /// batches whose time is a multiple of `slide`, over the batches of
    /// `(t - len, t]`; values that no longer occur in the window are not
    /// emitted. Kept incrementally under `name` (a count per value and
    /// pane, and per value its count in the last window); see
    /// [`DStream::reduce_by_key_and_window_inv`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let graph = sluice_core::StreamGraph::new();
    /// // Words of the last 10 minutes, every minute.
    /// let words = graph
    ///     .input()
    ///     .values_utf8()
    ///     .flat_map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    /// let counts = words.count_by_value_and_window(
    ///     "words_10m",
    ///     Duration::from_secs(600),
    ///     Duration::from_secs(60),
    /// );
    /// ```
    pub fn count_by_value_and_window(
        &self,
        name: &str,
        len: Duration,
        slide: Duration,
    ) -> DStream<(T, i64)> {
        let add = |a: i64, b: i64| a + b;
        self.map(|value| (value, 1i64)).windowed_reduce(
            name,
            ("count_by_value_and_window", "count_by_value_and_window"),
            len,
            slide,
            Arc::new(add),
            Some((
                Arc::new(|a: i64, b: i64| a - b),
                Some(Arc::new(|_: &T, count: &i64| *count != 0)),
            )),
        )
    }
}

impl<T: Send + 'static> DStream<T> {
    /// The number of values in a sliding window of batch time — DStream's
    /// `countByWindow`. The batches whose time is a multiple of `slide`
    /// emit one count (0 for an empty window) over the batches of
    /// `(t - len, t]`; other batches emit nothing. Kept under `name` as
    /// one count per pane; see [`DStream::reduce_by_key_and_window`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let graph = sluice_core::StreamGraph::new();
    /// // Records of the last 5 minutes, every 30 s.
    /// graph
    ///     .input()
    ///     .count_by_window("records_5m", Duration::from_secs(300), Duration::from_secs(30))
    ///     .print(1)?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn count_by_window(&self, name: &str, len: Duration, slide: Duration) -> DStream<i64> {
        let counts = self.map(|_| ((), 1i64)).windowed_reduce(
            name,
            ("count_by_window", "count_by_window"),
            len,
            slide,
            Arc::new(|a: i64, b: i64| a + b),
            None,
        );
        let emits = Panes::new(len, slide).ok();
        let parent = counts.node;
        self.derive(Materialized::new(move |scope| {
            let counts = run_stage(scope, &parent, "count_by_window", |_, values| {
                values.map(|((), count)| count).sum::<i64>()
            })?;
            let now = scope.info.time_ms();
            Ok(match emits.filter(|panes| panes.is_emission(now)) {
                Some(_) => vec![vec![counts.into_iter().sum()]],
                None => vec![Vec::new()],
            })
        }))
    }
}
