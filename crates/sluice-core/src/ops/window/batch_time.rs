//! `window`: every value of the batches a batch-time window covers —
//! DStream's `window(windowLength, slideInterval)`.
//!
//! The values of a batch are kept, in chunks, under the pane of its batch
//! time for as long as a later window needs them; no shuffle is involved.
//! A window is the stored chunks of its panes followed by the values of
//! the batch that emits it.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{declare, refused};
use crate::ops::materialize::Materialized;
use crate::ops::state::run_partitions;
use crate::ops::MAX_SHUFFLE_PARTITIONS;
use crate::scope::BatchScope;
use crate::state::family_of;
use crate::state::layout::Entry;
use crate::state::partition::PartitionState;
use crate::stream::{run_stage, Node};
use crate::window::panes::Panes;
use crate::{DStream, Error, Result, WriteSet};

const OPERATOR: &str = "window";

/// Where a chunk of a batch's values is kept: pane, batch id, source task
/// and chunk index. Sorting by it gives the values in arrival order.
type ChunkKey = (i64, u64, u32, u32);

/// Values kept per state entry, so no entry grows with the batch.
const CHUNK: usize = 4096;

struct Window<T> {
    parent: Arc<dyn Node<T>>,
    name: Arc<str>,
    family: Arc<str>,
    panes: std::result::Result<Panes, String>,
}

impl<T> Window<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn step(&self, scope: &Arc<BatchScope>) -> Result<Vec<Vec<T>>> {
        let panes = self
            .panes
            .clone()
            .map_err(|reason| refused(&self.name, OPERATOR, &reason))?;
        let partitions = scope.shuffle_partitions.max(1);
        if partitions > MAX_SHUFFLE_PARTITIONS {
            return Err(Error::user(
                OPERATOR,
                format!(
                    "{partitions} key partitions is more than the {MAX_SHUFFLE_PARTITIONS} a \
                     state may have"
                ),
            ));
        }
        let now = scope.info.time_ms();
        let batch = scope.info.id;
        let pane = panes.pane_of(now);
        let keep = panes.needed_after(pane, now);

        // Each source task keeps its values in key partition task % n.
        let (store, name, family) = (
            Arc::clone(&scope.state),
            Arc::clone(&self.name),
            Arc::clone(&self.family),
        );
        let fresh = run_stage(scope, &self.parent, OPERATOR, move |task, values| {
            let values: Vec<T> = values.collect();
            let part = (task % partitions) as u16;
            let mut state = PartitionState::new(store.as_ref(), &name, &family, part, false);
            if keep {
                for (i, chunk) in values.chunks(CHUNK).enumerate() {
                    let key = state.encode_key(&(pane, batch, task as u32, i as u32))?;
                    let entry = Entry {
                        state: chunk,
                        timeout_at: None,
                        expires_at: None,
                    };
                    state.put(&key, None, &entry)?;
                }
            }
            Ok::<_, Error>((values, state.finish().0))
        })?;
        let fresh = fresh.into_iter().collect::<Result<Vec<_>>>()?;

        let mut outputs: Vec<Vec<T>> = (0..partitions).map(|_| Vec::new()).collect();
        let mut writes = WriteSet::new();
        if panes.is_emission(now) {
            let (name, family) = (Arc::clone(&self.name), Arc::clone(&self.family));
            let stored = run_partitions(
                scope,
                OPERATOR,
                vec![(); partitions],
                move |scope, part, ()| {
                    let state = PartitionState::new(
                        scope.state.as_ref(),
                        &name,
                        &family,
                        part as u16,
                        false,
                    );
                    stored_values(state, panes, now)
                },
            )?;
            for (output, (values, mut deletes)) in outputs.iter_mut().zip(stored) {
                *output = values;
                writes.append(&mut deletes);
            }
        }
        for (task, (values, mut staged)) in fresh.into_iter().enumerate() {
            writes.append(&mut staged);
            if panes.is_emission(now) {
                outputs[task % partitions].extend(values);
            }
        }
        scope
            .writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut writes);
        Ok(outputs)
    }
}

/// The stored values of one key partition that the window emitted at `now`
/// holds, in arrival order, and the deletion of the chunks no later window
/// needs.
fn stored_values<T: DeserializeOwned>(
    mut state: PartitionState<'_>,
    panes: Panes,
    now: i64,
) -> Result<(Vec<T>, WriteSet)> {
    let (first, last) = panes.window_at(now);
    let mut chunks = state.scan::<ChunkKey, Vec<T>>()?;
    chunks.sort_by_key(|(_, key, _)| *key);
    let mut values = Vec::new();
    for (encoded, (pane, ..), entry) in chunks {
        if first <= pane && pane <= last {
            values.extend(entry.state);
        }
        if !panes.needed_after(pane, now) {
            state.delete(&encoded, None);
        }
    }
    Ok((values, state.finish().0))
}

impl<T> DStream<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Every value of the batches in a sliding window of batch time —
    /// DStream's `window`. The batch whose time `t` is a multiple of
    /// `slide` (since the Unix epoch) emits the values of the batches whose
    /// time is in `(t - len, t]`; at other batches the stream is empty.
    /// `len` and `slide` must be multiples of the batch interval and
    /// `slide` at most `len` (see [`StreamGraph::check_batch_interval`]).
    ///
    /// The values are kept in the checkpoint under `name` (unique in the
    /// job, stable across its versions, as for
    /// [`DStream::map_with_state`]) until no later window needs them, and
    /// committed with each batch, so a restart continues the window
    /// without reading Kafka again. Every value of the window is stored:
    /// to aggregate, prefer [`DStream::reduce_by_key_and_window`], which
    /// keeps one partial result per key and pane.
    ///
    /// A window has one partition per key partition of the job (its
    /// shuffle partitions); within one, values come by batch, then source
    /// partition, then offset.
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
    ///     .window("last_2s", Duration::from_secs(2), Duration::from_secs(2))
    ///     .foreach_batch(move |batch, info| {
    ///         out.lock().unwrap().push((info.time_ms(), batch.into_iter().collect::<Vec<_>>()));
    ///         Ok::<_, std::io::Error>(())
    ///     })?;
    /// graph.check_batch_interval(Duration::from_secs(1))?;
    ///
    /// let state = Arc::new(MemoryState::new());
    /// for (second, lines) in [(1, ["a"]), (2, ["b"]), (3, ["c"]), (4, ["d"])] {
    ///     let input = MemoryInput::new().with_partition("lines", 0, lines);
    ///     let time = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
    ///     let info = BatchInfo::new(second, time, input.full_ranges());
    ///     let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
    ///         .with_state(state.clone());
    ///     state.apply(&graph.run(env)?.writes); // what the checkpoint commits
    /// }
    /// let windows = windows.lock().unwrap().clone();
    /// assert_eq!(windows[1], (2_000, vec!["a".to_owned(), "b".to_owned()]));
    /// assert_eq!(windows[2], (3_000, vec![])); // not a multiple of the slide
    /// assert_eq!(windows[3], (4_000, vec!["c".to_owned(), "d".to_owned()]));
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn window(&self, name: &str, len: Duration, slide: Duration) -> DStream<T> {
        let panes = declare::<ChunkKey, Vec<T>>(
            &self.graph,
            name,
            (OPERATOR, OPERATOR),
            (len, slide),
            None,
        );
        let window = Window {
            parent: Arc::clone(&self.node),
            name: name.into(),
            family: family_of(name).into(),
            panes,
        };
        self.derive(Materialized::new(move |scope| window.step(scope)))
    }
}
