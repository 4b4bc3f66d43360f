//! `event_time_window`: keyed tumbling, sliding and session windows over
//! event time, closed by a watermark tracked per input partition, with
//! late records counted and, under a dead-letter policy, kept.
//!
//! A batch runs in three steps:
//!
//! 1. **map side**, in the source tasks: each value gets its event time
//!    (the Kafka record timestamp or the spec's extractor) and is judged
//!    against the watermark committed by the batch before. A late value is
//!    counted for its input partition and, when the job keeps dead letters,
//!    its record is set aside; the others are lifted into the aggregate and
//!    shuffled by key. Each task also notes the greatest event time of each
//!    input partition it read.
//! 2. **watermark**, on the driver thread: the partition clocks are
//!    advanced with those maxima and combined (see `window::watermark`);
//!    the new clocks are staged in the operator's state.
//! 3. **reduce**, one task per key partition: the touched keys' open
//!    windows are read in one bulk read, the values added, and every
//!    window whose end the new watermark reached is closed — found for
//!    untouched keys through the state's index by deadline, which here is
//!    a key's earliest window end, so idle keys cost nothing until they
//!    close.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ops::keyed::{partitioner, reduce_partition, MAX_SHUFFLE_PARTITIONS};
use crate::ops::state::{run_partitions, KeyMap};
use crate::scope::{BatchScope, TaskContext};
use crate::state::layout::{self, Entry};
use crate::state::partition::PartitionState;
use crate::state::{family_of, StateDescriptor};
use crate::stream::{next_stage_id, run_stage, Node, PartIter};
use crate::window::assign::{self, Assigner, OpenWindow};
use crate::window::watermark::{Clocks, Rule};
use crate::window::Window;
use crate::{DStream, Error, Result, WriteSet};

const OPERATOR: &str = "event_time_window";

/// When an event-time window's result is emitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputMode {
    /// Once, in the batch whose watermark reaches the window's end; the
    /// window's state is then removed. The watermark, committed with the
    /// batch, is the mark of what was emitted: no window is emitted twice,
    /// across restarts and crashes included.
    #[default]
    Append,
    /// In every batch that changed the window (records added to it), with
    /// its value so far; the window's state is removed, without another
    /// emission, once the watermark reaches its end. A session that merges
    /// others is emitted under its new bounds; the sessions it absorbed are
    /// not retracted.
    Update,
}

/// The event time of a value, in ms since the Unix epoch.
type Extract<K, V> = dyn Fn(&K, &V) -> i64 + Send + Sync;
type Lift<V, A> = dyn Fn(V) -> A + Send + Sync;
type Combine<A> = dyn Fn(A, A) -> A + Send + Sync;

/// What an event-time window computes: the window, the event time of a
/// value, the aggregate, the watermark's lateness and idle timeout, and
/// the output mode.
///
/// The aggregate turns each value into an `A` (`lift`) and combines two
/// `A`s (`combine`); `combine` must be associative and commutative, since
/// values combine in arrival order and sessions merge in time order.
///
/// ```
/// use std::time::Duration;
/// use sluice_core::window::{EventTimeSpec, OutputMode, Window};
///
/// // Clicks per page per minute by the event's own time, allowing
/// // events to arrive up to 10 s behind the newest one seen.
/// let spec = EventTimeSpec::<String, (i64, String), _>::count(
///     Window::tumbling(Duration::from_secs(60)),
/// )
/// .event_time(|_page, (clicked_at_ms, _user)| *clicked_at_ms)
/// .allowed_lateness(Duration::from_secs(10))
/// .idle_timeout(Duration::from_secs(30))
/// .output_mode(OutputMode::Append);
/// # let _ = spec;
/// ```
pub struct EventTimeSpec<K, V, A> {
    window: Window,
    extract: Option<Arc<Extract<K, V>>>,
    lift: Arc<Lift<V, A>>,
    combine: Arc<Combine<A>>,
    allowed_lateness: Duration,
    idle_timeout: Option<Duration>,
    max_ahead: Option<Duration>,
    mode: OutputMode,
}

impl<K, V> EventTimeSpec<K, V, V> {
    /// Reduces the values of each key and window with `f`, as
    /// `reduce_by_key` does.
    pub fn reduce<F>(window: Window, f: F) -> Self
    where
        F: Fn(V, V) -> V + Send + Sync + 'static,
    {
        Self::aggregate(window, |v| v, f)
    }
}

impl<K, V> EventTimeSpec<K, V, u64> {
    /// Counts the values of each key and window.
    pub fn count(window: Window) -> Self {
        Self::aggregate(window, |_| 1, |a: u64, b| a.saturating_add(b))
    }
}

impl<K, V, A> EventTimeSpec<K, V, A> {
    /// Aggregates each key and window: every value becomes `lift(value)`,
    /// and the results combine with `combine`. The event time is the
    /// Kafka record timestamp, the allowed lateness 0, no partition goes
    /// idle, and results are emitted in [`OutputMode::Append`] — until set
    /// otherwise.
    pub fn aggregate<L, C>(window: Window, lift: L, combine: C) -> Self
    where
        L: Fn(V) -> A + Send + Sync + 'static,
        C: Fn(A, A) -> A + Send + Sync + 'static,
    {
        Self {
            window,
            extract: None,
            lift: Arc::new(lift),
            combine: Arc::new(combine),
            allowed_lateness: Duration::ZERO,
            idle_timeout: None,
            max_ahead: None,
            mode: OutputMode::Append,
        }
    }

    /// Takes a value's event time (ms since the Unix epoch) from the value
    /// itself. By default it is the Kafka timestamp of the value's record,
    /// which is known only before any shuffle (a stream derived from the
    /// input by `map`, `flat_map`, `filter`, …); a record without a
    /// timestamp is then rejected as the poison policy says.
    pub fn event_time<F>(mut self, f: F) -> Self
    where
        F: Fn(&K, &V) -> i64 + Send + Sync + 'static,
    {
        self.extract = Some(Arc::new(f));
        self
    }

    /// How far behind the greatest event time seen a value may be: the
    /// watermark is that event time minus `lateness`. Default 0.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
        self
    }

    /// An input partition that brought no records for `idle` of batch time
    /// stops holding the watermark back, until its next record. Default:
    /// never, so one silent partition stops every window from closing.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Refuses event times more than `ahead` after the batch time: such a
    /// value is a poison record of the window (set aside as a dead letter,
    /// or failing the batch, per the graph's
    /// [`PoisonPolicy`](crate::PoisonPolicy)), and does not move the
    /// watermark. Without it (the default, as in Spark and Flink) one record
    /// stamped far in the future, a producer's clock gone wrong, moves the
    /// watermark past every record that follows, so all of them are late.
    /// Set it to the clock skew your producers may have plus the time
    /// records may take to reach the job, e.g. a few minutes. Event times
    /// whose windows would not fit in 64-bit milliseconds (near `i64::MIN`
    /// or `i64::MAX`) are refused always.
    pub fn max_ahead(mut self, ahead: Duration) -> Self {
        self.max_ahead = Some(ahead);
        self
    }

    /// When results are emitted; default [`OutputMode::Append`].
    pub fn output_mode(mut self, mode: OutputMode) -> Self {
        self.mode = mode;
        self
    }
}

impl<K, V, A> Clone for EventTimeSpec<K, V, A> {
    fn clone(&self) -> Self {
        Self {
            window: self.window,
            extract: self.extract.clone(),
            lift: Arc::clone(&self.lift),
            combine: Arc::clone(&self.combine),
            allowed_lateness: self.allowed_lateness,
            idle_timeout: self.idle_timeout,
            max_ahead: self.max_ahead,
            mode: self.mode,
        }
    }
}

impl<K, V, A> std::fmt::Debug for EventTimeSpec<K, V, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTimeSpec")
            .field("window", &self.window)
            .field("record_timestamp", &self.extract.is_none())
            .field("allowed_lateness", &self.allowed_lateness)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_ahead", &self.max_ahead)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// One result of an event-time window: the window `[start, end)` (event
/// time, ms since the Unix epoch), the key and the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K, A> {
    /// Start of the window, inclusive.
    pub start: i64,
    /// End of the window, exclusive.
    pub end: i64,
    /// The key.
    pub key: K,
    /// The aggregate of the key's values in the window.
    pub value: A,
}

/// How many values of one input partition arrived behind the watermark of
/// an event-time window in a batch (see [`DStream::event_time_window`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateCount {
    /// The window operator's name.
    pub window: String,
    /// Topic of the records; empty when the stream was shuffled before the
    /// window, so the records are not known.
    pub topic: Arc<str>,
    /// Partition of the records; -1 when not known.
    pub partition: i32,
    /// Late values (one per record unless a record gave several values).
    pub count: u64,
}

/// The spec with its window checked and durations in ms.
struct Core<K, V, A> {
    assigner: Assigner,
    /// [`EventTimeSpec::max_ahead`], ms.
    max_ahead: Option<i64>,
    extract: Option<Arc<Extract<K, V>>>,
    lift: Arc<Lift<V, A>>,
    combine: Arc<Combine<A>>,
    rule: Rule,
    mode: OutputMode,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A value as the map side hands it on.
enum Mapped<K, A> {
    /// The values from here on come from this input partition (`None`: not
    /// known).
    Source(Option<(Arc<str>, i32)>),
    /// On time: shuffled to its key's windows.
    OnTime(K, i64, A),
    /// Behind the watermark.
    Late(i64),
    /// In no window (a gap between sliding windows): only its event time
    /// counts, for the watermark.
    Seen(i64),
}

/// The map side: the parent's values with their event times, judged
/// against the watermark of the batch before.
struct Stamp<K, V, A> {
    parent: Arc<dyn Node<(K, V)>>,
    core: Arc<Core<K, V, A>>,
    name: Arc<str>,
    watermark: Option<i64>,
}

impl<K, V, A> Node<Mapped<K, A>> for Stamp<K, V, A>
where
    K: Send + 'static,
    V: Send + 'static,
    A: Send + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        self.parent.prepare(scope)
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        self.parent.partitions(scope)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, Mapped<K, A>>> {
        let values = self.parent.compute(scope, task, part)?;
        let core = &*self.core;
        let batch_ms = scope.info.time_ms();
        let mut last: Option<Option<(Arc<str>, i32)>> = None;
        let items = values.map_while(move |(key, value)| {
            let source = task.source();
            let change = (last.as_ref() != Some(&source)).then(|| {
                last = Some(source.clone());
                Mapped::Source(source)
            });
            let time = match &core.extract {
                Some(extract) => extract(&key, &value),
                None => match task.timestamp() {
                    Some(time) => time,
                    None => {
                        let why = if task.source().is_none() {
                            "the Kafka record timestamp is not known after a shuffle or \
                             map_partitions: give the window an event-time extractor \
                             (EventTimeSpec::event_time)"
                        } else {
                            "the record has no timestamp to take its event time from"
                        };
                        // Set aside as a dead letter, or the task fails.
                        return task.reject(OPERATOR, why.into()).then_some((change, None));
                    }
                },
            };
            if let Some(why) = core.assigner.refuses(time, batch_ms, core.max_ahead) {
                return task.reject(OPERATOR, why.into()).then_some((change, None));
            }
            let item = match core.assigner.last_end(time) {
                None => Mapped::Seen(time),
                Some(end) => match self.watermark.filter(|w| end <= *w) {
                    Some(watermark) => {
                        task.set_aside(
                            OPERATOR,
                            format!(
                                "late record in event_time_window(\"{}\"): event time {time} ms, \
                                 watermark {watermark} ms; its last window ended at {end} ms",
                                self.name
                            ),
                        );
                        Mapped::Late(time)
                    }
                    None => Mapped::OnTime(key, time, (core.lift)(value)),
                },
            };
            Some((change, Some(item)))
        });
        Ok(Box::new(
            items.flat_map(|(change, item)| change.into_iter().chain(item)),
        ))
    }
}

/// What one input partition showed a map task.
struct Tally {
    source: Option<(Arc<str>, i32)>,
    max_event_time: Option<i64>,
    late: u64,
}

/// A key's windows as a map task combined them: sorted by start, and for
/// sessions pairwise apart.
type Partials<K, A> = (K, Vec<OpenWindow<A>>);

/// A map task's result: a bucket per key partition, and its tallies.
struct MapSide<K, A> {
    buckets: Vec<Vec<Partials<K, A>>>,
    tallies: Vec<Tally>,
}

/// The map-side combine: a task's on-time values folded into their keys'
/// windows (only those ending after `judged_by`), so the shuffle moves one
/// partial aggregate per key and window, keys in first-arrival order.
fn map_side<K: Hash + Eq + Clone, V, A: Clone>(
    items: PartIter<'_, Mapped<K, A>>,
    core: &Core<K, V, A>,
    judged_by: Option<i64>,
    reducers: usize,
) -> MapSide<K, A> {
    let mut index: KeyMap<K, usize> = KeyMap::default();
    let mut keys: Vec<Partials<K, A>> = Vec::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut current = 0;
    let tally = |tallies: &mut Vec<Tally>, current: usize, time: i64| {
        if tallies.is_empty() {
            tallies.push(Tally {
                source: None,
                max_event_time: None,
                late: 0,
            });
        }
        let tally = &mut tallies[current];
        tally.max_event_time = Some(tally.max_event_time.map_or(time, |m| m.max(time)));
    };
    for item in items {
        match item {
            Mapped::Source(source) => {
                current = match tallies.iter().position(|t| t.source == source) {
                    Some(i) => i,
                    None => {
                        tallies.push(Tally {
                            source,
                            max_event_time: None,
                            late: 0,
                        });
                        tallies.len() - 1
                    }
                };
            }
            Mapped::OnTime(key, time, value) => {
                tally(&mut tallies, current, time);
                let at = match index.get(&key) {
                    Some(&at) => at,
                    None => {
                        index.insert(key.clone(), keys.len());
                        keys.push((key, Vec::new()));
                        keys.len() - 1
                    }
                };
                assign::add(
                    &mut keys[at].1,
                    &core.assigner,
                    time,
                    value,
                    judged_by,
                    &*core.combine,
                );
            }
            Mapped::Late(time) => {
                tally(&mut tallies, current, time);
                tallies[current].late += 1;
            }
            Mapped::Seen(time) => tally(&mut tallies, current, time),
        }
    }
    let hasher = partitioner();
    let mut buckets: Vec<Vec<Partials<K, A>>> = (0..reducers).map(|_| Vec::new()).collect();
    for (key, windows) in keys {
        buckets[reduce_partition(&hasher, &key, reducers)].push((key, windows));
    }
    MapSide { buckets, tallies }
}

struct EventTimeWindow<K, V, A> {
    id: usize,
    parent: Arc<dyn Node<(K, V)>>,
    name: Arc<str>,
    family: Arc<str>,
    core: Arc<Core<K, V, A>>,
}

impl<K, V, A> EventTimeWindow<K, V, A> {
    fn state_error(&self, source: impl Into<crate::BoxError>) -> Error {
        Error::State {
            state: self.name.to_string(),
            partition: 0,
            source: source.into(),
        }
    }

    /// The clocks the batch before committed.
    fn load_clocks(&self, scope: &BatchScope) -> Result<Clocks> {
        let found = scope
            .state
            .get_many(&self.family, &[layout::watermark_key()])
            .map_err(|e| self.state_error(e))?;
        match found.into_iter().next().flatten() {
            None => Ok(Clocks::default()),
            Some(bytes) => layout::decode(&bytes)
                .map_err(|e| self.state_error(format!("the watermark does not decode: {e}"))),
        }
    }
}

impl<K, V, A> Node<Windowed<K, A>> for EventTimeWindow<K, V, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
    A: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()> {
        let clocks = self.load_clocks(scope)?;
        let reducers = scope.shuffle_partitions.max(1);
        if reducers > MAX_SHUFFLE_PARTITIONS {
            return Err(Error::user(
                OPERATOR,
                format!(
                    "{reducers} reduce partitions is more than the {MAX_SHUFFLE_PARTITIONS} a \
                     shuffle may have"
                ),
            ));
        }
        let stamp: Arc<dyn Node<Mapped<K, A>>> = Arc::new(Stamp {
            parent: Arc::clone(&self.parent),
            core: Arc::clone(&self.core),
            name: Arc::clone(&self.name),
            watermark: clocks.watermark,
        });
        let (core, judged_by) = (Arc::clone(&self.core), clocks.watermark);
        let mapped = run_stage(scope, &stamp, OPERATOR, move |_, items| {
            map_side(items, &core, judged_by, reducers)
        })?;

        // Per input partition: the greatest event time and the late values.
        let mut partitions: BTreeMap<(Arc<str>, i32), (Option<i64>, u64)> = BTreeMap::new();
        let mut inputs: Vec<Vec<Partials<K, A>>> = (0..reducers).map(|_| Vec::new()).collect();
        for side in mapped {
            for tally in side.tallies {
                let at = tally.source.unwrap_or_else(|| (Arc::from(""), -1));
                let (max, late) = partitions.entry(at).or_default();
                *max = (*max).max(tally.max_event_time);
                *late += tally.late;
            }
            for (input, mut bucket) in inputs.iter_mut().zip(side.buckets) {
                input.append(&mut bucket);
            }
        }
        let late: Vec<_> = partitions
            .iter()
            .filter(|(_, (_, late))| *late > 0)
            .map(|((topic, partition), (_, late))| LateCount {
                window: self.name.to_string(),
                topic: Arc::clone(topic),
                partition: *partition,
                count: *late,
            })
            .collect();
        if !late.is_empty() {
            tracing::debug!(window = %self.name, ?late, "late records");
        }
        scope.note_late(&self.name, late);
        let seen: Vec<(String, i32, i64)> = partitions
            .iter()
            .filter_map(|((topic, partition), (max, _))| {
                Some((topic.to_string(), *partition, (*max)?))
            })
            .collect();
        let next = self.core.rule.advance(&clocks, &seen, scope.info.time_ms());
        if next != clocks {
            let bytes = layout::encode(&next)
                .map_err(|e| self.state_error(format!("the watermark does not encode: {e}")))?;
            scope
                .writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(&self.family, layout::watermark_key(), bytes);
        }

        let (name, family, core) = (
            Arc::clone(&self.name),
            Arc::clone(&self.family),
            Arc::clone(&self.core),
        );
        let watermark = next.watermark;
        let results = run_partitions(scope, OPERATOR, inputs, move |scope, part, values| {
            let state =
                PartitionState::new(scope.state.as_ref(), &name, &family, part as u16, false);
            window_partition(&core, state, watermark, values)
        })?;
        let mut outputs = Vec::with_capacity(results.len());
        {
            let mut writes = scope.writes.lock().unwrap_or_else(PoisonError::into_inner);
            for (output, mut staged) in results {
                outputs.push(output);
                writes.append(&mut staged);
            }
        }
        scope.add_stage(self.id, outputs);
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.stage_partitions::<Windowed<K, A>>(self.id)
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        _task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, Windowed<K, A>>> {
        let stage = scope
            .stage::<Windowed<K, A>>(self.id)
            .expect("prepare runs before compute");
        Ok(Box::new(stage.take(part)?.into_iter()))
    }
}

/// The open windows of a key met in this batch.
struct Touched<A> {
    encoded: Vec<u8>,
    /// Index deadline of the committed entry, when there is one.
    stored: Option<Option<i64>>,
    windows: Vec<OpenWindow<A>>,
    changed: Vec<(i64, i64)>,
}

/// Takes the windows whose end the watermark reached out of `windows`.
fn take_closed<A>(windows: &mut Vec<OpenWindow<A>>, watermark: Option<i64>) -> Vec<OpenWindow<A>> {
    let Some(watermark) = watermark else {
        return Vec::new();
    };
    let (closed, open) = std::mem::take(windows)
        .into_iter()
        .partition(|w| w.end <= watermark);
    *windows = open;
    closed
}

/// Stages a key's open windows; the index deadline is its earliest end.
fn store<A: Serialize>(
    state: &mut PartitionState<'_>,
    key: &[u8],
    stored: Option<Option<i64>>,
    windows: Vec<OpenWindow<A>>,
) -> Result<()> {
    if windows.is_empty() {
        if let Some(old) = stored {
            state.delete(key, old);
        }
        return Ok(());
    }
    let entry = Entry {
        timeout_at: windows.iter().map(|w| w.end).min(),
        expires_at: None,
        state: windows,
    };
    state.put(key, stored.flatten(), &entry)
}

/// One key partition of one batch: merges the map tasks' partial windows
/// into their keys' open windows, then closes every window ending at or before
/// `watermark`, touched keys first, then the keys the index says are due.
/// Results are ordered by window end, then start.
fn window_partition<K, V, A>(
    core: &Core<K, V, A>,
    mut state: PartitionState<'_>,
    watermark: Option<i64>,
    values: Vec<Partials<K, A>>,
) -> Result<(Vec<Windowed<K, A>>, WriteSet)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Clone + Serialize + DeserializeOwned,
{
    let append = core.mode == OutputMode::Append;
    let mut index: KeyMap<K, usize> = KeyMap::default();
    let mut keys: Vec<K> = Vec::new();
    for (key, _) in &values {
        if !index.contains_key(key) {
            index.insert(key.clone(), keys.len());
            keys.push(key.clone());
        }
    }
    let encoded = keys
        .iter()
        .map(|k| state.encode_key(k))
        .collect::<Result<Vec<_>>>()?;
    let (entries, _) = state.load::<Vec<OpenWindow<A>>>(&encoded)?;
    let mut touched: Vec<Touched<A>> = encoded
        .into_iter()
        .zip(entries)
        .map(|(encoded, entry)| match entry {
            Some(entry) => Touched {
                encoded,
                stored: Some(entry.deadline()),
                windows: entry.state,
                changed: Vec::new(),
            },
            None => Touched {
                encoded,
                stored: None,
                windows: Vec::new(),
                changed: Vec::new(),
            },
        })
        .collect();
    for (key, partials) in values {
        let slot = &mut touched[index[&key]];
        for partial in partials {
            let changed = assign::merge(&mut slot.windows, &core.assigner, partial, &*core.combine);
            if !append {
                slot.changed.push(changed);
            }
        }
    }

    let mut due = match watermark {
        Some(w) => state.due(w)?,
        None => Vec::new(),
    };
    if !due.is_empty() {
        let fresh: HashSet<&[u8]> = touched.iter().map(|t| t.encoded.as_slice()).collect();
        due.retain(|(_, key)| !fresh.contains(key.as_slice()));
    }

    let mut out = Vec::new();
    for (key, slot) in keys.into_iter().zip(touched) {
        let Touched {
            encoded,
            stored,
            mut windows,
            mut changed,
        } = slot;
        changed.sort_unstable();
        changed.dedup();
        for (start, end) in changed {
            // A session merged into a later one is gone.
            if let Some(w) = windows.iter().find(|w| (w.start, w.end) == (start, end)) {
                out.push(Windowed {
                    start,
                    end,
                    key: key.clone(),
                    value: w.value.clone(),
                });
            }
        }
        let closed = take_closed(&mut windows, watermark);
        if append {
            out.extend(closed.into_iter().map(|w| Windowed {
                start: w.start,
                end: w.end,
                key: key.clone(),
                value: w.value,
            }));
        }
        store(&mut state, &encoded, stored, windows)?;
    }

    let encoded: Vec<Vec<u8>> = due.iter().map(|(_, k)| k.clone()).collect();
    let (entries, _) = state.load::<Vec<OpenWindow<A>>>(&encoded)?;
    for ((indexed, encoded), entry) in due.into_iter().zip(entries) {
        let Some(entry) = entry.filter(|e| e.deadline() == Some(indexed)) else {
            // The key changed or went since this index entry was written.
            state.drop_index(&encoded, indexed);
            continue;
        };
        let mut windows = entry.state;
        let closed = take_closed(&mut windows, watermark);
        if append && !closed.is_empty() {
            let key: K = layout::decode(&encoded)
                .map_err(|e| state.error(format!("a key does not decode: {e}")))?;
            out.extend(closed.into_iter().map(|w| Windowed {
                start: w.start,
                end: w.end,
                key: key.clone(),
                value: w.value,
            }));
        }
        store(&mut state, &encoded, Some(Some(indexed)), windows)?;
    }
    out.sort_by_key(|w| (w.end, w.start));
    let (writes, _) = state.finish();
    Ok((out, writes))
}

impl<K, V> DStream<(K, V)>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Send + 'static,
{
    /// Aggregates each key's values per event-time window, keeping the open
    /// windows and the watermark in the checkpoint under `name`.
    ///
    /// - **Event time** is the Kafka record timestamp, or what
    ///   [`EventTimeSpec::event_time`] takes from the value.
    /// - **Watermark.** Per input partition (topic and partition of the
    ///   value's record) the greatest event time seen; the watermark is the
    ///   least of them over the partitions that are not idle, minus the
    ///   allowed lateness, and never goes backward. A partition without
    ///   records for the idle timeout (batch time) stops holding it back
    ///   until its next record. It advances at the end of each batch, with
    ///   that batch's records.
    /// - **Late values.** A value is late when every window it belongs to
    ///   ends at or before the watermark committed by the batch before
    ///   (`last window end <= watermark`). Late values are in no window:
    ///   they are counted per input partition in
    ///   [`BatchOutput::late_records`], and under
    ///   [`PoisonPolicy::DeadLetter`] their records are also set aside as
    ///   [`DeadLetter`]s whose error gives the event time and the
    ///   watermark; they never fail the batch. An on-time value of a
    ///   sliding window is added to those of its windows still open.
    /// - **Results** ([`Windowed`]) are emitted as the [`OutputMode`] says:
    ///   once when the watermark reaches the window's end (append), or each
    ///   batch the window changes (update). Partition `i` of the stream is
    ///   key partition `i`, its results ordered by window end then start.
    ///
    /// The watermark comes from the values' source records, so put the
    /// window before any shuffle; after one (or `map_partitions`) the
    /// source is not known, all values count as one partition (topic `""`,
    /// partition -1), and late values are counted but cannot be dead
    /// letters.
    ///
    /// `name` (ASCII letters, digits, `.`, `_`, `-`) must be unique in the
    /// job and stay the same across versions of it; a window of 0 ms or one
    /// putting a record in more than 1000 windows fails the job at start.
    ///
    /// [`BatchOutput::late_records`]: crate::BatchOutput::late_records
    /// [`PoisonPolicy::DeadLetter`]: crate::PoisonPolicy::DeadLetter
    /// [`DeadLetter`]: crate::DeadLetter
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::{Duration, SystemTime};
    /// use sluice_core::state::MemoryState;
    /// use sluice_core::window::{EventTimeSpec, Window};
    /// use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// // Words per minute of record timestamp.
    /// let graph = StreamGraph::new();
    /// let counts = graph
    ///     .input()
    ///     .values_utf8()
    ///     .map(|word| (word, ()))
    ///     .event_time_window(
    ///         "words_per_minute",
    ///         EventTimeSpec::count(Window::tumbling(Duration::from_secs(60))),
    ///     );
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let out = seen.clone();
    /// counts.foreach_batch(move |batch, _| {
    ///     out.lock().unwrap().extend(batch.into_iter().map(|w| (w.start, w.key, w.value)));
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// let batches = [
    ///     vec![(5_000, "to"), (7_000, "be"), (59_000, "to")],
    ///     vec![(61_000, "or")],   // the watermark passes the first minute
    ///     vec![(30_000, "late")], // behind the watermark: late
    /// ];
    /// for (id, records) in batches.into_iter().enumerate() {
    ///     let input = MemoryInput::new().with_timestamped_partition("words", 0, records);
    ///     let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     let output = graph.run(env)?;
    ///     state.apply(&output.writes); // what the checkpoint commits
    ///     if id == 2 {
    ///         assert_eq!(output.late_records[0].count, 1);
    ///     }
    /// }
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort();
    /// // The first minute was emitted once the watermark reached 61 s.
    /// assert_eq!(seen, [(0, "be".to_owned(), 1), (0, "to".to_owned(), 2)]);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn event_time_window<A>(
        &self,
        name: &str,
        spec: EventTimeSpec<K, V, A>,
    ) -> DStream<Windowed<K, A>>
    where
        A: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.graph.declare_state(
            StateDescriptor::of::<K, Vec<OpenWindow<A>>>(name, OPERATOR)
                .with_params(spec.window.params()),
        );
        let assigner = spec.window.millis().unwrap_or_else(|reason| {
            self.graph.refuse_state(name, OPERATOR, reason);
            // Never run: the graph refuses every batch.
            Assigner::Sliding { size: 1, slide: 1 }
        });
        let core = Core {
            assigner,
            max_ahead: spec.max_ahead.map(millis),
            extract: spec.extract,
            lift: spec.lift,
            combine: spec.combine,
            rule: Rule {
                allowed_lateness: millis(spec.allowed_lateness),
                idle_timeout: spec.idle_timeout.map(millis),
            },
            mode: spec.mode,
        };
        self.derive(EventTimeWindow {
            id: next_stage_id(),
            parent: Arc::clone(&self.node),
            name: name.into(),
            family: family_of(name).into(),
            core: Arc::new(core),
        })
    }
}
