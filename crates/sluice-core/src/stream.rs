//! The stream graph: [`StreamGraph`] owns the output operations, a
//! [`DStream`] is a node of the graph, and [`run_stage`] turns a node into
//! tasks on the executor.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::lineage::Lineage;
use crate::scope::{BatchScope, TaskContext};
use crate::shared_reads::{SharedReads, DEFAULT_SHARED_INPUT_BYTES};
use crate::sink::OutsideSink;
use crate::state::StateDescriptor;
use crate::{
    BatchEnv, BatchInfo, DeadLetter, Error, Executor, InputReader, LateCount, OffsetRange,
    PoisonPolicy, Record, Result, WriteSet,
};

/// Values flowing through one task: a fused chain of narrow operators.
pub(crate) type PartIter<'a, T> = Box<dyn Iterator<Item = T> + 'a>;

/// Boxes the values an operator hands to the next one.
///
/// The values pass through one inlined closure that does nothing to them.
/// It changes how the compiler moves each value across the boxed `next`:
/// without it, `flat_map` + `map` + `reduce_by_key` over 1.6M words ran 40 %
/// slower (96 against 68 ms a batch on one thread, 2026-12-05), most of it
/// spent on the load right after each call to a boxed `next`, the stall of
/// a wide load of a value the callee had just stored in narrower parts.
/// The loops that consume a partition (the map-side combine of
/// [`DStream::reduce_by_key`]) read their values the same way.
/// ([`DStream::count_keys`] does not take values: they are lent to it,
/// see [`Node::lend`].)
#[expect(
    clippy::map_identity,
    reason = "the identity map is the point, see above"
)]
pub(crate) fn boxed<'a, T: 'a>(values: impl Iterator<Item = T> + 'a) -> PartIter<'a, T> {
    Box::new(values.map(|value| value))
}

/// One operator of the graph, producing partitions of `T` for a batch.
pub(crate) trait Node<T>: Send + Sync {
    /// Runs the stages this node's partitions depend on (shuffles,
    /// materialised transforms), on the calling thread, before any task of
    /// this node starts. Tasks never wait on other tasks.
    fn prepare(&self, scope: &Arc<BatchScope>) -> Result<()>;

    /// Number of partitions (tasks) this node has in the current batch;
    /// valid after [`Node::prepare`].
    fn partitions(&self, scope: &BatchScope) -> usize;

    /// The values of partition `part`, lazily.
    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, T>>;

    /// The values of partition `part` lent a chunk at a time, for an
    /// operator that makes values of its own from each chunk before handing
    /// them on (`values_utf8` its `String`s, without an owned record for
    /// each); `None` when this node cannot lend its values so (the
    /// default). Only the input can: the records of each chunk it reads.
    /// The consumer calls [`TaskContext::at_record`] for each value it
    /// hands on.
    fn lend_chunks<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Option<Box<dyn ChunkLender<T> + 'a>> {
        let _ = (scope, task, part);
        None
    }

    /// Lends the values of partition `part` to `each`, one at a time, until
    /// `each` breaks: the values [`Node::compute`] gives, with the same
    /// errors, for a consumer that only looks at them
    /// ([`DStream::count_keys`], [`DStream::count`]). A node that can show
    /// a value without making an owned one overrides it: the input lends
    /// the records it read, `values_utf8` each value in one reused
    /// `String`, `filter` its parent's values. The default lends what
    /// `compute` gives.
    fn lend(
        &self,
        scope: &BatchScope,
        task: &TaskContext,
        part: usize,
        each: &mut dyn FnMut(&T) -> ControlFlow<()>,
    ) -> Result<()> {
        for value in self.compute(scope, task, part)? {
            if each(&value).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Lends a partition's values a chunk at a time ([`Node::lend_chunks`]).
pub(crate) trait ChunkLender<T> {
    /// Lends the next chunk to `each`, in one or more slices; `false` once
    /// the partition is done or its read failed (which fails the task).
    fn next_chunk(&mut self, each: &mut dyn FnMut(&[T])) -> bool;
}

/// An operation that consumes a stream each batch (print, foreach_batch,
/// sinks). Outputs run in the order they were registered.
pub(crate) trait Output: Send + Sync {
    fn run(&self, scope: &Arc<BatchScope>) -> Result<()>;
}

/// The registered outputs, the families they write to, and whether the
/// graph still takes more: one lock, so a registration racing with
/// [`StreamGraph::seal`] is either in what the runtime reads or refused.
#[derive(Default)]
struct Outputs {
    list: Vec<Arc<dyn Output>>,
    /// What each output reads, in the same order.
    lineages: Vec<Lineage>,
    families: Vec<String>,
    outside: Vec<Arc<dyn OutsideSink>>,
    sealed: bool,
}

/// The stateful operators declared on a graph, and the declarations
/// refused.
#[derive(Default)]
struct States {
    descriptors: Vec<StateDescriptor>,
    errors: Vec<StateNameError>,
    windows: Vec<crate::window::BatchWindow>,
}

/// A refused state declaration, turned into [`Error::StateName`] on demand
/// (errors are not `Clone`).
struct StateNameError {
    name: String,
    operator: &'static str,
    reason: String,
}

impl StateNameError {
    fn to_error(&self) -> Error {
        Error::StateName {
            name: self.name.clone(),
            operator: self.operator,
            reason: self.reason.clone(),
        }
    }
}

/// What a successfully computed batch leaves to commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutput {
    /// Writes staged by the batch's sinks.
    pub writes: WriteSet,
    /// Records read from each offset range, in range order.
    pub records_read: Vec<u64>,
    /// Records the batch took from its [`InputReader`], counting a record
    /// once per read of it. Equal to the sum of `records_read` when every
    /// range was read once, however many outputs use the input; more when
    /// part of a range was read again: chunks that did not fit in
    /// [`StreamGraph::set_shared_input_bytes`] are read once per output
    /// that uses them, and a retried task reads its range again. Records
    /// read back for dead letters are not counted.
    pub records_fetched: u64,
    /// The smallest Kafka timestamp (ms since the Unix epoch) of the records
    /// read; `None` when no record read had a timestamp.
    pub min_timestamp: Option<i64>,
    /// The largest Kafka timestamp of the records read, as `min_timestamp`.
    pub max_timestamp: Option<i64>,
    /// Records set aside under [`PoisonPolicy::DeadLetter`], by topic,
    /// partition and offset, each with the record as the input holds it
    /// (read back by its source task).
    pub dead_letters: Vec<DeadLetter>,
    /// Records that arrived behind the watermark of an event-time window
    /// operator, counted per operator and input partition (non-zero
    /// counts only). They are not in any window; under
    /// [`PoisonPolicy::DeadLetter`] they are in `dead_letters` too.
    pub late_records: Vec<LateCount>,
}

/// The job: the input and every output operation registered on streams
/// derived from it.
///
/// Normally created and driven by the runtime's `StreamingContext`; usable
/// directly to run a batch over any [`InputReader`]:
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use sluice_core::{BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
///
/// let graph = StreamGraph::new();
/// graph
///     .input()
///     .values_utf8()
///     .flat_map(|line| line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>())
///     .count_by_value()
///     .save_counts("words")?;
///
/// let input = MemoryInput::new().with_partition("t", 0, ["a b", "b"]);
/// let info = BatchInfo::new(1, SystemTime::now(), input.full_ranges());
/// let output = graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
/// assert_eq!(output.writes.len(), 2); // +1 for "a", +2 for "b"
/// assert_eq!(output.records_read, [2]);
/// assert_eq!(output.records_fetched, 2); // each record read from the input once
/// # Ok::<(), sluice_core::Error>(())
/// ```
pub struct StreamGraph {
    outputs: Mutex<Outputs>,
    states: Mutex<States>,
    poison: Mutex<PoisonPolicy>,
    shuffle_partitions: Mutex<Option<NonZeroUsize>>,
    shared_input_bytes: AtomicUsize,
}

impl std::fmt::Debug for StreamGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGraph")
            .field("outputs", &self.output_count())
            .field("families", &self.families())
            .field("poison", &self.poison_policy())
            .field("sealed", &self.is_sealed())
            .field("shuffle_partitions", &self.shuffle_partitions())
            .field("shared_input_bytes", &self.shared_input_bytes())
            .finish()
    }
}

impl StreamGraph {
    /// An empty graph.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            outputs: Mutex::new(Outputs::default()),
            states: Mutex::new(States::default()),
            poison: Mutex::new(PoisonPolicy::default()),
            shuffle_partitions: Mutex::new(None),
            shared_input_bytes: AtomicUsize::new(DEFAULT_SHARED_INPUT_BYTES),
        })
    }

    /// The input stream: partition `i` of a batch holds the records of the
    /// batch's `i`-th offset range.
    pub fn input(self: &Arc<Self>) -> DStream<Record> {
        DStream::new(self, Arc::new(Input), Lineage::input())
    }

    /// Checkpoint families the registered sinks write to, and the
    /// dead-letter family of the poison policy.
    pub fn families(&self) -> Vec<String> {
        let mut families = self.lock_outputs().families.clone();
        if let Some(family) = self.poison_policy().family() {
            if !families.iter().any(|f| f == family) {
                families.push(family.to_owned());
            }
        }
        families
    }

    /// What batches do with records an operator rejects; see
    /// [`PoisonPolicy`]. Applies from the next batch.
    pub fn set_poison_policy(&self, policy: PoisonPolicy) {
        *self.poison.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// The poison policy in force.
    pub fn poison_policy(&self) -> PoisonPolicy {
        self.poison
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets how many reduce partitions (tasks) a shuffle without an explicit
    /// count uses (`reduce_by_key`, `count_by_value`, `count_keys`,
    /// `cogroup` and the joins); applies from the next batch.
    ///
    /// Which records land in reduce partition `i`, and so what
    /// [`BatchInfo::idempotency_key`] names after a shuffle, depends on this
    /// number and on nothing else of the machine: a key goes to partition
    /// `XXH3(key) % partitions`. Unset, a shuffle uses the executor's
    /// [`parallelism`](Executor::parallelism), which differs between
    /// machines and pools; the runtime therefore always sets it, to the
    /// value its checkpoint recorded at the job's first start.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use std::sync::Arc;
    /// use std::time::SystemTime;
    /// use sluice_core::{BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
    ///
    /// let graph = StreamGraph::new();
    /// graph.set_shuffle_partitions(NonZeroUsize::new(4).unwrap());
    /// graph.input().values_utf8().count_by_value().foreach_batch(|batch, _| {
    ///     assert_eq!(batch.partitions().len(), 4); // whatever the executor
    ///     Ok::<_, std::io::Error>(())
    /// })?;
    /// let input = MemoryInput::new().with_partition("t", 0, ["a", "b"]);
    /// let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
    /// graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn set_shuffle_partitions(&self, partitions: NonZeroUsize) {
        *self
            .shuffle_partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(partitions);
    }

    /// The reduce partitions of a shuffle, if set with
    /// [`StreamGraph::set_shuffle_partitions`].
    pub fn shuffle_partitions(&self) -> Option<NonZeroUsize> {
        *self
            .shuffle_partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets how many bytes of a batch's input are kept in memory for its
    /// later outputs (default [`DEFAULT_SHARED_INPUT_BYTES`], 128 MiB);
    /// applies from the next batch.
    ///
    /// With several output operations, the input is read once per batch:
    /// each chunk the first output reads is kept for the others. Once the
    /// kept chunks take this many bytes (records with their keys, values
    /// and headers; allocator overhead comes on top), later chunks are not
    /// kept and each output reads them from the input again, so a batch
    /// that reads a large backlog holds at most about this much of it for
    /// later outputs. `0` keeps nothing.
    pub fn set_shared_input_bytes(&self, bytes: usize) {
        self.shared_input_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The bytes of a batch's input kept for later outputs; see
    /// [`StreamGraph::set_shared_input_bytes`].
    pub fn shared_input_bytes(&self) -> usize {
        self.shared_input_bytes.load(Ordering::Relaxed)
    }

    /// The outside sinks of the job, in the order they were registered: the
    /// runtime begins, commits and aborts each batch on them (see
    /// [`OutsideSink`]).
    pub fn outside_sinks(&self) -> Vec<Arc<dyn OutsideSink>> {
        self.lock_outputs().outside.clone()
    }

    /// Number of registered output operations.
    pub fn output_count(&self) -> usize {
        self.lock_outputs().list.len()
    }

    /// Refuses every output registered from now on: `foreach_batch`,
    /// `print` and `sink` return [`Error::RegisteredAfterStart`]. The
    /// runtime seals the graph when its job starts, because that is when it
    /// reads the outputs and creates the checkpoint families they write to;
    /// an output added later would run with a family that does not exist.
    ///
    /// ```
    /// # let graph = sluice_core::StreamGraph::new();
    /// let lines = graph.input().values_utf8();
    /// lines.print(10)?;
    /// graph.seal();
    /// let late = lines.count_by_value().save_counts("words").unwrap_err();
    /// assert!(late.to_string().contains("save_counts(\"words\")"), "{late}");
    /// assert_eq!(graph.output_count(), 1);
    /// # Ok::<(), sluice_core::Error>(())
    /// ```
    pub fn seal(&self) {
        self.lock_outputs().sealed = true;
    }

    /// True once [`StreamGraph::seal`] was called.
    pub fn is_sealed(&self) -> bool {
        self.lock_outputs().sealed
    }

    fn lock_outputs(&self) -> std::sync::MutexGuard<'_, Outputs> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stateful operators of the job, in the order they were created.
    pub fn states(&self) -> Vec<StateDescriptor> {
        self.lock_states().descriptors.clone()
    }

    /// Fails when the job's stateful operators are not valid: two share a
    /// name, a name is not allowed (see [`check_name`]), an operator's
    /// settings are not valid (a window of 0 ms, a slide longer than the
    /// length; see [`StreamGraph::check_batch_interval`]). The runtime
    /// checks this when the job starts; [`StreamGraph::run`] before every
    /// batch.
    ///
    /// [`check_name`]: crate::state::check_name
    pub fn check_states(&self) -> Result<()> {
        let states = self.lock_states();
        match states.errors.first() {
            Some(error) => Err(error.to_error()),
            None => crate::window::check_windows(&states.windows),
        }
    }

    /// Fails, with [`Error::Window`] naming the operator and the values,
    /// when a batch-time window's length or slide is not a multiple of
    /// `interval` (or is not allowed at all: zero, or a slide longer than
    /// the length). The runtime checks this with its batch interval when
    /// the job starts.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let graph = sluice_core::StreamGraph::new();
    /// let words = graph.input().values_utf8();
    /// words.count_by_window("words_90s", Duration::from_secs(90), Duration::from_secs(30));
    /// assert!(graph.check_batch_interval(Duration::from_secs(10)).is_ok());
    /// let error = graph.check_batch_interval(Duration::from_secs(60)).unwrap_err();
    /// assert!(error.to_string().contains("words_90s"), "{error}");
    /// ```
    pub fn check_batch_interval(&self, interval: std::time::Duration) -> Result<()> {
        crate::window::check_batch_interval(&self.lock_states().windows, interval)
    }

    /// Records a batch-time window for [`StreamGraph::check_batch_interval`]
    /// and [`StreamGraph::check_states`].
    pub(crate) fn declare_window(&self, window: crate::window::BatchWindow) {
        self.lock_states().windows.push(window);
    }

    /// Records a stateful operator; a name taken or not allowed is kept
    /// as an error for [`StreamGraph::check_states`].
    pub(crate) fn declare_state(&self, descriptor: StateDescriptor) {
        let mut states = self.lock_states();
        let reason = match crate::state::check_name(&descriptor.name) {
            Err(reason) => Some(reason.to_owned()),
            Ok(()) => states
                .descriptors
                .iter()
                .find(|d| d.name == descriptor.name)
                .map(|d| {
                    format!(
                        "the name is taken by a {} of the same job; every stateful operator needs a name of its own",
                        d.operator
                    )
                }),
        };
        match reason {
            Some(reason) => states.errors.push(StateNameError {
                name: descriptor.name,
                operator: descriptor.operator,
                reason,
            }),
            None => states.descriptors.push(descriptor),
        }
    }

    /// Records a stateful operator whose configuration is not valid, as an
    /// error for [`StreamGraph::check_states`].
    pub(crate) fn refuse_state(&self, name: &str, operator: &'static str, reason: String) {
        self.lock_states().errors.push(StateNameError {
            name: name.to_owned(),
            operator,
            reason,
        });
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, States> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Computes one batch: runs every output operation in registration
    /// order and returns the writes they staged for the atomic commit.
    /// Keyed state starts empty; use [`StreamGraph::run`] with a
    /// [`BatchEnv`] to give it state.
    pub fn run_batch(
        &self,
        info: BatchInfo,
        input: Arc<dyn InputReader>,
        executor: Arc<dyn Executor>,
    ) -> Result<BatchOutput> {
        self.run(BatchEnv::new(info, input, executor))
    }

    /// Computes one batch in `env`: runs every output operation in
    /// registration order and returns the writes they staged — results and
    /// state changes — for the atomic commit.
    pub fn run(&self, env: BatchEnv) -> Result<BatchOutput> {
        self.check_states()?;
        let (outputs, readers) = {
            let outputs = self.lock_outputs();
            (
                outputs.list.clone(),
                Lineage::input_reads(&outputs.lineages),
            )
        };
        let shuffle_partitions = self
            .shuffle_partitions()
            .map_or_else(|| env.executor.parallelism().max(1), NonZeroUsize::get);
        let scope = Arc::new(BatchScope::new(
            env,
            self.poison_policy(),
            shuffle_partitions,
            SharedReads::new(readers, self.shared_input_bytes()),
        ));
        scope.input.prepare(&scope.info.ranges);
        for output in outputs {
            scope.check_cancelled()?;
            output.run(&scope)?;
        }
        let writes =
            std::mem::take(&mut *scope.writes.lock().unwrap_or_else(PoisonError::into_inner));
        let timestamps = scope.timestamps();
        Ok(BatchOutput {
            writes,
            records_read: scope.records_read(),
            records_fetched: scope.records_fetched(),
            min_timestamp: timestamps.map(|(min, _)| min),
            max_timestamp: timestamps.map(|(_, max)| max),
            dead_letters: scope.take_dead_letters(),
            late_records: scope.take_late(),
        })
    }

    /// Adds `output` (described by `name` in errors) and the families it
    /// writes to, unless the graph is sealed.
    pub(crate) fn register(
        &self,
        name: impl FnOnce() -> String,
        output: Arc<dyn Output>,
        lineage: &Lineage,
        families: &[String],
    ) -> Result<()> {
        let mut outputs = self.lock_outputs();
        if outputs.sealed {
            return Err(Error::RegisteredAfterStart { output: name() });
        }
        outputs.list.push(output);
        outputs.lineages.push(lineage.clone());
        for family in families {
            if !outputs.families.contains(family) {
                outputs.families.push(family.clone());
            }
        }
        Ok(())
    }

    /// Adds an outside sink and the output that writes to it, unless the
    /// graph is sealed or the sink's name is empty or taken.
    pub(crate) fn register_outside(
        &self,
        sink: Arc<dyn OutsideSink>,
        output: Arc<dyn Output>,
        lineage: &Lineage,
    ) -> Result<()> {
        let mut outputs = self.lock_outputs();
        let name = sink.name().to_owned();
        if outputs.sealed {
            return Err(Error::RegisteredAfterStart {
                output: format!("sink {name:?}"),
            });
        }
        let reason = if name.is_empty() {
            Some("a sink needs a name")
        } else if outputs.outside.iter().any(|s| s.name() == name) {
            Some("another sink of the job has this name; each needs its own, since a sink finds its progress by it")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::SinkName { name, reason });
        }
        outputs.list.push(output);
        outputs.lineages.push(lineage.clone());
        outputs.outside.push(sink);
        Ok(())
    }
}

/// A discretised stream: a sequence of batches of `T`, defined by the
/// operators applied to the job's input.
///
/// Operators are lazy; they describe what every batch computes. Narrow
/// operators (`map`, `filter`, …) fuse into the source task of each
/// partition; keyed aggregations and joins shuffle by key hash to reduce
/// tasks.
/// Nothing runs until an output operation (`foreach_batch`, `print`, a
/// sink) is registered and the context starts.
pub struct DStream<T> {
    pub(crate) graph: Arc<StreamGraph>,
    pub(crate) node: Arc<dyn Node<T>>,
    /// What computing this stream reads.
    pub(crate) lineage: Lineage,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        Self {
            graph: Arc::clone(&self.graph),
            node: Arc::clone(&self.node),
            lineage: self.lineage.clone(),
        }
    }
}

impl<T> std::fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DStream").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> DStream<T> {
    pub(crate) fn new(graph: &Arc<StreamGraph>, node: Arc<dyn Node<T>>, lineage: Lineage) -> Self {
        Self {
            graph: Arc::clone(graph),
            node,
            lineage,
        }
    }

    /// A stream computed from this one by `node`.
    pub(crate) fn derive<U: Send + 'static>(&self, node: impl Node<U> + 'static) -> DStream<U> {
        DStream::new(&self.graph, Arc::new(node), self.lineage.clone())
    }

    /// A stream computed from this one and `other` by `node`.
    pub(crate) fn derive_with<W, U: Send + 'static>(
        &self,
        other: &DStream<W>,
        node: impl Node<U> + 'static,
    ) -> DStream<U> {
        DStream::new(
            &self.graph,
            Arc::new(node),
            self.lineage.both(&other.lineage),
        )
    }
}

/// A fresh id for a stage whose output is kept in the batch scope.
pub(crate) fn next_stage_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs one task per partition of `node` on the executor; `consume` turns
/// a partition's values into the task's result.
pub(crate) fn run_stage<T, R, F>(
    scope: &Arc<BatchScope>,
    node: &Arc<dyn Node<T>>,
    stage: &str,
    consume: F,
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, PartIter<'_, T>) -> R + Send + Sync + 'static,
{
    run_stage_with(scope, node, stage, move |node, scope, task, part| {
        Ok(consume(part, node.compute(scope, task, part)?))
    })
}

/// [`run_stage`] for a task that asks its node for its values itself:
/// `body` gets the node, the batch, the task and the partition, and may
/// compute the values or have them lent ([`Node::lend`]).
pub(crate) fn run_stage_with<T, R, F>(
    scope: &Arc<BatchScope>,
    node: &Arc<dyn Node<T>>,
    stage: &str,
    body: F,
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(&dyn Node<T>, &BatchScope, &TaskContext, usize) -> Result<R> + Send + Sync + 'static,
{
    // The task count is known once the node is prepared, inside.
    let results: Arc<Mutex<Vec<(usize, R)>>> = Arc::default();
    let finished = Arc::clone(&results);
    run_tasks(scope, node, stage, body, move |part, result| {
        finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((part, result));
        Ok(())
    })?;
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(PoisonError::into_inner));
    results.sort_unstable_by_key(|(part, _)| *part);
    debug_assert!(results.iter().enumerate().all(|(i, (part, _))| i == *part));
    Ok(results.into_iter().map(|(_, result)| result).collect())
}

/// Runs one task per partition of `node` on the executor, like
/// [`run_stage`], and hands each task's result to `finish` on the worker
/// thread, once the task has succeeded: its operators reported no error,
/// so `finish` sees each partition once, whatever attempts came before.
/// An error from `finish` fails the task (the caller picks an error the
/// executor does not retry when `finish` has effects outside the batch).
pub(crate) fn run_stage_finishing<T, R, F, G>(
    scope: &Arc<BatchScope>,
    node: &Arc<dyn Node<T>>,
    stage: &str,
    consume: F,
    finish: G,
) -> Result<()>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(usize, PartIter<'_, T>) -> R + Send + Sync + 'static,
    G: Fn(usize, R) -> Result<()> + Send + Sync + 'static,
{
    let body = move |node: &dyn Node<T>, scope: &BatchScope, task: &TaskContext, part| {
        Ok(consume(part, node.compute(scope, task, part)?))
    };
    run_tasks(scope, node, stage, body, finish)
}

/// Runs one task per partition of `node`, each running `body` and handing
/// its result to `finish` once its operators reported no error.
fn run_tasks<T, R, F, G>(
    scope: &Arc<BatchScope>,
    node: &Arc<dyn Node<T>>,
    stage: &str,
    body: F,
    finish: G,
) -> Result<()>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(&dyn Node<T>, &BatchScope, &TaskContext, usize) -> Result<R> + Send + Sync + 'static,
    G: Fn(usize, R) -> Result<()> + Send + Sync + 'static,
{
    node.prepare(scope)?;
    let tasks = node.partitions(scope);
    let task = {
        let (scope, node) = (Arc::clone(scope), Arc::clone(node));
        Arc::new(move |part: usize| {
            scope.check_cancelled()?;
            let context = TaskContext::new(&scope.poison);
            let result = body(node.as_ref(), &scope, &context, part)?;
            // An operator that failed mid-stream truncated the values, so
            // its error wins over whatever `body` made of them.
            scope.add_dead_letters(context.finish()?);
            finish(part, result)
        })
    };
    scope.executor.run(stage, tasks, task)
}

/// The job's input: one partition per offset range of the batch.
struct Input;

/// Offsets a source task asks its reader for at a time. A range is read in
/// chunks so a task holds a few thousand records, not the whole range: its
/// memory does not grow with the batch, and each record is processed while
/// it is still in the cache it was copied into.
pub(crate) const READ_CHUNK: i64 = 4096;

impl Node<Record> for Input {
    fn prepare(&self, _scope: &Arc<BatchScope>) -> Result<()> {
        Ok(())
    }

    fn partitions(&self, scope: &BatchScope) -> usize {
        scope.info.ranges.len()
    }

    fn compute<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Result<PartIter<'a, Record>> {
        let range = &scope.info.ranges[part];
        task.enter_source(range);
        let mut read = 0;
        // A failed read ends the values and fails the task.
        let records = chunks(range).map_while(move |chunk| match scope.read_chunk(part, &chunk) {
            Ok(records) => {
                read += records.len();
                scope.note_records_read(part, read);
                scope.note_timestamps(&records);
                Some(records)
            }
            Err(e) => {
                task.fail(e);
                None
            }
        });
        Ok(boxed(records.flatten().inspect(|record| {
            task.at_record(record.offset, record.timestamp)
        })))
    }

    fn lend_chunks<'a>(
        &'a self,
        scope: &'a BatchScope,
        task: &'a TaskContext,
        part: usize,
    ) -> Option<Box<dyn ChunkLender<Record> + 'a>> {
        let range = &scope.info.ranges[part];
        task.enter_source(range);
        Some(Box::new(InputChunks {
            scope,
            task,
            part,
            chunks: Some(Box::new(chunks(range))),
            read: 0,
        }))
    }

    /// The records as `compute` reads them, lent where the input can lend
    /// them ([`InputReader::lend`]).
    fn lend(
        &self,
        scope: &BatchScope,
        task: &TaskContext,
        part: usize,
        each: &mut dyn FnMut(&Record) -> ControlFlow<()>,
    ) -> Result<()> {
        let range = &scope.info.ranges[part];
        task.enter_source(range);
        let mut read = 0;
        for chunk in chunks(range) {
            let mut flow = ControlFlow::Continue(());
            let lent = scope.lend_chunk(part, &chunk, &mut |records| {
                read += records.len();
                scope.note_records_read(part, read);
                scope.note_timestamps(records);
                // A reader may lend a chunk in several slices: none is
                // handed on once the consumer stopped.
                if flow.is_break() {
                    return;
                }
                for record in records {
                    task.at_record(record.offset, record.timestamp);
                    flow = each(record);
                    if flow.is_break() {
                        break;
                    }
                }
            });
            if let Err(e) = lent {
                // As in `compute`: a failed read ends the values and fails
                // the task.
                task.fail(e);
                break;
            }
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The chunks of one range of the input, lent as they are read, with the
/// bookkeeping `compute` does for them.
struct InputChunks<'a> {
    scope: &'a BatchScope,
    task: &'a TaskContext,
    part: usize,
    /// The chunks still to read; `None` once a read failed.
    chunks: Option<Box<dyn Iterator<Item = OffsetRange> + 'a>>,
    /// Records read so far.
    read: usize,
}

impl ChunkLender<Record> for InputChunks<'_> {
    fn next_chunk(&mut self, each: &mut dyn FnMut(&[Record])) -> bool {
        let Some(chunk) = self.chunks.as_mut().and_then(Iterator::next) else {
            return false;
        };
        let (scope, part, read) = (self.scope, self.part, &mut self.read);
        let lent = scope.lend_chunk(part, &chunk, &mut |records| {
            *read += records.len();
            scope.note_records_read(part, *read);
            scope.note_timestamps(records);
            each(records);
        });
        match lent {
            Ok(()) => true,
            Err(e) => {
                // As in `compute`: a failed read ends the values and fails
                // the task.
                self.task.fail(e);
                self.chunks = None;
                false
            }
        }
    }
}

/// `range` in chunks of at most [`READ_CHUNK`] offsets.
fn chunks(range: &OffsetRange) -> impl Iterator<Item = OffsetRange> + '_ {
    (range.from..range.until)
        .step_by(READ_CHUNK as usize)
        .map(|from| OffsetRange {
            from,
            until: range.until.min(from.saturating_add(READ_CHUNK)),
            ..range.clone()
        })
}
