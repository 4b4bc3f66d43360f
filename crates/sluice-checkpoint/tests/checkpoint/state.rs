//! Keyed state on a real checkpoint: `update_state_by_key` and
//! `map_with_state` checked batch by batch against brute-force models,
//! batches that fail or are redone, upgrades through `open_states`, and
//! read-back through a read-only handle.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use sluice_checkpoint::{
    BatchRecord, CheckpointStore, Commit, Error, RocksCheckpoint, StateChanges, StateRecord,
};
use sluice_core::state::{family_of, Migration, State, StateSpec};
use sluice_core::{
    run_task, BatchEnv, BatchInfo, BatchOutput, DStream, Executor, InlineExecutor, MemoryInput,
    StreamGraph, TaskFn, WriteSet,
};
use tempfile::TempDir;

use crate::util::{open, APP};

/// Batch time of every test's time 0, in ms since the epoch.
const T0: i64 = 1_700_000_000_000;

/// The values of one batch: one input partition per inner vector.
type Input = Vec<Vec<String>>;

fn new_graph(shuffle_partitions: usize) -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph.set_shuffle_partitions(NonZeroUsize::new(shuffle_partitions).unwrap());
    graph
}

/// Opens the checkpoint in `dir` without syncing: the tests never crash
/// the machine, and commits are many.
fn open_fast(dir: &Path) -> RocksCheckpoint {
    RocksCheckpoint::builder(dir)
        .app_id(APP)
        .sync(false)
        .open()
        .unwrap()
}

/// Opens `graph`'s states in the checkpoint, declaring nothing else.
fn open_states(store: &mut RocksCheckpoint, graph: &StreamGraph) -> sluice_checkpoint::Result<()> {
    store.open_states(&graph.states(), &StateChanges::default())
}

/// Runs batch `id` at time `at` (ms after [`T0`]) over `input` on the state
/// `store` has committed, without committing it.
fn run(
    graph: &StreamGraph,
    store: &RocksCheckpoint,
    id: u64,
    at: i64,
    input: &[Vec<String>],
) -> sluice_core::Result<BatchOutput> {
    run_on(Arc::new(InlineExecutor), graph, store, id, at, input)
}

/// [`run`] on `executor`.
fn run_on(
    executor: Arc<dyn Executor>,
    graph: &StreamGraph,
    store: &RocksCheckpoint,
    id: u64,
    at: i64,
    input: &[Vec<String>],
) -> sluice_core::Result<BatchOutput> {
    let input = input
        .iter()
        .enumerate()
        .fold(MemoryInput::new(), |memory, (partition, values)| {
            memory.with_partition("events", partition as i32, values.clone())
        });
    let time = UNIX_EPOCH + Duration::from_millis((T0 + at) as u64);
    let info = BatchInfo::new(id, time, input.full_ranges());
    let env = BatchEnv::new(info, Arc::new(input), executor).with_state(store.state_store());
    graph.run(env)
}

/// Runs every task of a stage at once, each on a thread of its own, so
/// state is read from many threads and tasks finish in any order.
struct ThreadPerTask;

impl Executor for ThreadPerTask {
    fn parallelism(&self) -> usize {
        4
    }

    fn run(&self, _stage: &str, tasks: usize, task: TaskFn) -> sluice_core::Result<()> {
        std::thread::scope(|scope| {
            let running: Vec<_> = (0..tasks)
                .map(|index| {
                    let task = &task;
                    scope.spawn(move || run_task(task, index))
                })
                .collect();
            running
                .into_iter()
                .try_for_each(|t| t.join().expect("run_task catches panics"))
        })
    }
}

fn commit(store: &mut RocksCheckpoint, id: u64, at: i64, writes: WriteSet) {
    store
        .commit(Commit {
            record: BatchRecord::new(id, T0 + at),
            next_offsets: vec![],
            writes,
        })
        .unwrap();
}

/// Runs batch `id` and commits it.
fn step(graph: &StreamGraph, store: &mut RocksCheckpoint, id: u64, at: i64, input: &[Vec<String>]) {
    let out = run(graph, store, id, at, input).unwrap();
    commit(store, id, at, out.writes);
}

/// One input partition holding `values`.
fn one(values: &[&str]) -> Input {
    vec![values.iter().map(|v| v.to_string()).collect()]
}

/// Collects what `stream` outputs, in partition order.
fn collect<T: Send + 'static>(stream: &DStream<T>) -> Arc<Mutex<Vec<T>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    stream
        .foreach_batch(move |batch, _| {
            sink.lock()
                .unwrap()
                .extend(batch.into_partitions().into_iter().flatten());
            Ok::<_, Infallible>(())
        })
        .unwrap();
    seen
}

fn drain<T>(seen: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *seen.lock().unwrap())
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

fn read<S: serde::de::DeserializeOwned + Ord>(
    store: &RocksCheckpoint,
    name: &str,
) -> Vec<(String, S)> {
    sorted(store.read_state(name).unwrap())
}

/// Raw key/value pairs of a family, by key.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Everything a checkpoint says about its states: the registry, the state
/// families RocksDB holds, and the raw bytes of each registered state.
#[derive(Debug, PartialEq, Eq)]
struct StateImage {
    registry: Vec<StateRecord>,
    families: Vec<String>,
    data: BTreeMap<String, Pairs>,
}

fn image(store: &RocksCheckpoint) -> StateImage {
    let registry = store.states().unwrap();
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), store.path())
        .unwrap()
        .into_iter()
        .filter(|f| f.starts_with("sluice_state."))
        .collect();
    let data = registry
        .iter()
        .map(|r| (r.name.clone(), store.scan(&family_of(&r.name)).unwrap()))
        .collect();
    StateImage {
        registry,
        families: sorted(families),
        data,
    }
}

fn state_error(err: Error) -> (String, String) {
    match err {
        Error::State { state, reason, .. } => (state, reason),
        other => panic!("expected Error::State, got {other}"),
    }
}

// ---------------------------------------------------------------------------
// Jobs used by several tests.

/// `word → running count` kept by `map_with_state` under `name`, with no
/// output.
fn count_words(graph: &Arc<StreamGraph>, name: &str) {
    let spec = StateSpec::function(|_: &String, _: Option<u64>, state: &mut State<u64>| {
        let count = state.get().copied().unwrap_or(0) + 1;
        state.update(count);
    });
    let counts = graph
        .input()
        .values_utf8()
        .map(|word| (word, 1u64))
        .map_with_state(name, spec);
    counts
        .foreach_batch(|_, _| Ok::<_, Infallible>(()))
        .unwrap();
}

/// `word → total of its values` kept by `update_state_by_key` under
/// `name`.
fn total_words(graph: &Arc<StreamGraph>, name: &str) {
    graph
        .input()
        .values_utf8()
        .map(|word| (word, 1u64))
        .update_state_by_key(name, |new: Vec<u64>, total: Option<u64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .foreach_batch(|_, _| Ok::<_, Infallible>(()))
        .unwrap();
}

// ---------------------------------------------------------------------------
// Property tests against brute-force models.

/// A generated batch.
#[derive(Debug, Clone)]
struct Step {
    /// Time since the previous batch: a multiple of 5 ms, so deadlines are
    /// often hit exactly.
    gap: i64,
    /// The job restarts (reopens the checkpoint) before the batch.
    restart: bool,
    /// The batch runs on [`ThreadPerTask`] rather than inline.
    threaded: bool,
    /// Each input partition's records, `(key, value)`: keys from a
    /// four-letter alphabet, so they repeat. Empty batches, with no ranges
    /// or only empty ones, are common.
    partitions: Vec<Vec<(u8, u8)>>,
}

impl Step {
    fn executor(&self) -> Arc<dyn Executor> {
        match self.threaded {
            true => Arc::new(ThreadPerTask),
            false => Arc::new(InlineExecutor),
        }
    }
}

fn steps(values: u8) -> impl Strategy<Value = Vec<Step>> {
    let partition = prop::collection::vec((0u8..4, 0..values), 0..6);
    let partitions = prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec(Just(Vec::new()), 1..3),
        5 => prop::collection::vec(partition, 1..3),
    ];
    let step = (
        1i64..8,
        prop::bool::weighted(0.1),
        any::<bool>(),
        partitions,
    )
        .prop_map(|(gap, restart, threaded, partitions)| Step {
            gap: gap * 5,
            restart,
            threaded,
            partitions,
        });
    prop::collection::vec(step, 1..14)
}

fn key(k: u8) -> String {
    ((b'a' + k) as char).to_string()
}

/// The batch's records as the input holds them, `key:value`.
fn encode(partitions: &[Vec<(u8, u8)>]) -> Input {
    partitions
        .iter()
        .map(|p| p.iter().map(|&(k, v)| format!("{}:{v}", key(k))).collect())
        .collect()
}

fn decode(record: String) -> (String, u8) {
    let (key, value) = record.split_once(':').unwrap();
    (key.to_owned(), value.parse().unwrap())
}

/// A running total that a value of 0 resets (removes).
fn add(total: Option<u64>, value: u8) -> Option<u64> {
    match value {
        0 => None,
        v => Some(total.unwrap_or(0) + u64::from(v)),
    }
}

/// What the `map_with_state` function of the model job outputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A counted value: the key's new count.
    Counted(u64),
    /// A value that only read the state (so did not write it).
    Peeked(Option<u64>),
    /// The key timed out holding this count.
    TimedOut(u64),
}

/// The model of a key's stored `map_with_state` entry.
#[derive(Debug, Clone)]
struct ModelEntry {
    count: u64,
    timeout_at: Option<i64>,
    expires_at: Option<i64>,
}

/// `map_with_state` as its documentation states it, key by key.
#[derive(Debug)]
struct CountModel {
    timeout: Option<i64>,
    ttl: Option<i64>,
    /// The initial state, until the first batch loads it.
    initial: Option<BTreeMap<String, u64>>,
    keys: BTreeMap<String, ModelEntry>,
}

impl CountModel {
    /// Runs a batch at `now` over `records` (in arrival order; `true`
    /// counts, `false` peeks) and returns each key's events in order.
    fn batch(&mut self, now: i64, records: &[(String, bool)]) -> BTreeMap<String, Vec<Event>> {
        // The initial state is loaded before the first batch's values, its
        // timeouts and TTLs counting from that batch.
        for (key, count) in self.initial.take().unwrap_or_default() {
            let entry = ModelEntry {
                count,
                timeout_at: self.timeout.map(|t| now + t),
                expires_at: self.ttl.map(|ttl| now + ttl),
            };
            self.keys.insert(key, entry);
        }
        let mut events: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        // Keys with data: their count as the function sees it, and whether
        // the function wrote it.
        let mut touched: BTreeMap<String, (Option<u64>, bool)> = BTreeMap::new();
        for (key, counts) in records {
            let slot = touched.entry(key.clone()).or_insert_with(|| {
                let live = self
                    .keys
                    .get(key)
                    .filter(|e| e.expires_at.is_none_or(|at| at > now));
                (live.map(|e| e.count), false)
            });
            let event = if *counts {
                let count = slot.0.unwrap_or(0) + 1;
                *slot = (Some(count), true);
                Event::Counted(count)
            } else {
                Event::Peeked(slot.0)
            };
            events.entry(key.clone()).or_default().push(event);
        }
        let idle: Vec<String> = self
            .keys
            .keys()
            .filter(|k| !touched.contains_key(*k))
            .cloned()
            .collect();
        for key in idle {
            let entry = &self.keys[&key];
            if entry.expires_at.is_some_and(|at| at <= now) {
                self.keys.remove(&key);
            } else if entry.timeout_at.is_some_and(|at| at <= now) {
                events
                    .entry(key.clone())
                    .or_default()
                    .push(Event::TimedOut(entry.count));
                self.keys.remove(&key);
            }
        }
        for (key, (count, written)) in touched {
            let Some(count) = count else {
                self.keys.remove(&key);
                continue;
            };
            // New data restarts the timeout; only a write restarts the TTL.
            let expires_at = match written {
                true => self.ttl.map(|ttl| now + ttl),
                false => self.keys[&key].expires_at,
            };
            let entry = ModelEntry {
                count,
                timeout_at: self.timeout.map(|t| now + t),
                expires_at,
            };
            self.keys.insert(key, entry);
        }
        events
    }

    fn state(&self) -> Vec<(String, u64)> {
        self.keys
            .iter()
            .map(|(k, e)| (k.clone(), e.count))
            .collect()
    }
}

/// Outputs grouped by key, each key's in the order they came.
fn by_key(outputs: Vec<(String, Event)>) -> BTreeMap<String, Vec<Event>> {
    let mut grouped: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (key, event) in outputs {
        grouped.entry(key).or_default().push(event);
    }
    grouped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// After every committed batch, the state of a running total (reset by
    /// a 0) equals a fold over every record so far in arrival order (input
    /// partition, then offset), and so does the operator's output.
    #[test]
    fn update_state_by_key_equals_a_fold_over_every_record(
        batches in steps(5), shuffle_partitions in 1usize..=5,
    ) {
        let dir = TempDir::new().unwrap();
        let graph = new_graph(shuffle_partitions);
        let totals = graph
            .input()
            .values_utf8()
            .map(decode)
            .update_state_by_key("totals", |new: Vec<u8>, total: Option<u64>| {
                new.into_iter().fold(total, add)
            });
        let outputs = collect(&totals);
        let mut store = open_fast(dir.path());
        open_states(&mut store, &graph).unwrap();

        let mut records: Vec<(String, u8)> = Vec::new();
        let mut at = 0;
        for (id, batch) in batches.iter().enumerate() {
            at += batch.gap;
            if batch.restart {
                drop(store);
                store = open_fast(dir.path());
                open_states(&mut store, &graph).unwrap();
            }
            let out = run_on(batch.executor(), &graph, &store, id as u64, at, &encode(&batch.partitions))
                .unwrap();
            commit(&mut store, id as u64, at, out.writes);
            records.extend(batch.partitions.iter().flatten().map(|&(k, v)| (key(k), v)));

            let mut expected: BTreeMap<String, Option<u64>> = BTreeMap::new();
            for (k, v) in &records {
                let total = expected.entry(k.clone()).or_default();
                *total = add(*total, *v);
            }
            let expected: Vec<(String, u64)> = expected
                .into_iter()
                .filter_map(|(k, total)| Some((k, total?)))
                .collect();
            prop_assert_eq!(read::<u64>(&store, "totals"), expected.clone(), "batch {}", id);
            prop_assert_eq!(sorted(drain(&outputs)), expected, "output of batch {}", id);
        }
    }

    /// A running count with an idle timeout, a TTL and an initial state
    /// (loaded once, by the first batch): after every batch
    /// the outputs (per key, in order), the state snapshots and the
    /// committed state equal the model. A key times out in the first batch
    /// at or past its last value's time plus the timeout, with or without
    /// data in that batch; a TTL removes it unseen; values that only read
    /// the state restart the timeout but not the TTL.
    #[test]
    fn map_with_state_follows_its_model_of_timeouts_and_ttl(
        batches in steps(4),
        shuffle_partitions in 1usize..=5,
        timeout in prop::option::weighted(0.8, (1i64..=12).prop_map(|t| t * 5)),
        ttl in prop::option::weighted(0.5, (1i64..=20).prop_map(|t| t * 5)),
        initial in prop::collection::btree_map((0u8..4).prop_map(key), 1u64..5, 0..3),
    ) {
        let dir = TempDir::new().unwrap();
        let graph = new_graph(shuffle_partitions);
        let mut spec = StateSpec::function(
            |key: &String, value: Option<bool>, state: &mut State<u64>| {
                let event = match value {
                    Some(true) => {
                        let count = state.get().copied().unwrap_or(0) + 1;
                        state.update(count);
                        Event::Counted(count)
                    }
                    Some(false) => Event::Peeked(state.get().copied()),
                    None => {
                        assert!(state.is_timing_out());
                        Event::TimedOut(*state.get().expect("a timing-out key has state"))
                    }
                };
                (key.clone(), event)
            },
        );
        if let Some(t) = timeout {
            spec = spec.timeout(Duration::from_millis(t as u64));
        }
        if let Some(t) = ttl {
            spec = spec.ttl(Duration::from_millis(t as u64));
        }
        spec = spec.initial_state(initial.clone());
        let counts = graph
            .input()
            .values_utf8()
            .map(|record| {
                let (key, value) = decode(record);
                (key, value != 0) // 0 only reads the state
            })
            .map_with_state("counts", spec);
        let outputs = collect(&counts);
        let snapshots = collect(&counts.state_snapshots());
        let mut store = open_fast(dir.path());
        open_states(&mut store, &graph).unwrap();

        let mut model = CountModel { timeout, ttl, initial: Some(initial), keys: BTreeMap::new() };
        let mut at = 0;
        for (id, batch) in batches.iter().enumerate() {
            at += batch.gap;
            if batch.restart {
                drop(store);
                store = open_fast(dir.path());
                open_states(&mut store, &graph).unwrap();
            }
            let out = run_on(batch.executor(), &graph, &store, id as u64, at, &encode(&batch.partitions))
                .unwrap();
            commit(&mut store, id as u64, at, out.writes);
            let records: Vec<(String, bool)> =
                batch.partitions.iter().flatten().map(|&(k, v)| (key(k), v != 0)).collect();
            let expected = model.batch(at, &records);

            prop_assert_eq!(by_key(drain(&outputs)), expected, "outputs of batch {} at {}", id, at);
            prop_assert_eq!(sorted(drain(&snapshots)), model.state(), "snapshots of batch {}", id);
            prop_assert_eq!(read::<u64>(&store, "counts"), model.state(), "state after batch {}", id);
        }
    }
}

// ---------------------------------------------------------------------------
// Timeouts, pinned by hand.

#[test]
fn a_key_times_out_in_the_first_batch_at_its_deadline_even_without_data() {
    let dir = TempDir::new().unwrap();
    let graph = new_graph(3);
    let spec =
        StateSpec::function(
            |key: &String, value: Option<u64>, state: &mut State<u64>| match value {
                Some(v) => {
                    state.update(state.get().copied().unwrap_or(0) + v);
                    None
                }
                None => Some((key.clone(), *state.get().unwrap())),
            },
        )
        .timeout(Duration::from_millis(100));
    let timed_out = graph
        .input()
        .values_utf8()
        .map(|word| (word, 1u64))
        .map_with_state("sessions", spec)
        .flat_map(|out| out);
    let timed_out = collect(&timed_out);
    let mut store = open_fast(dir.path());
    open_states(&mut store, &graph).unwrap();

    step(&graph, &mut store, 0, 0, &one(&["a", "b", "a"]));
    step(&graph, &mut store, 1, 50, &one(&["b"])); // b's timeout restarts
    step(&graph, &mut store, 2, 99, &[]); // no ranges at all
    assert!(drain(&timed_out).is_empty());
    step(&graph, &mut store, 3, 100, &[vec![], vec![]]); // only empty ranges
    assert_eq!(drain(&timed_out), [("a".to_owned(), 2)]);
    assert_eq!(read::<u64>(&store, "sessions"), [("b".to_owned(), 2)]);
    step(&graph, &mut store, 4, 149, &[]);
    assert!(drain(&timed_out).is_empty());
    step(&graph, &mut store, 5, 400, &[]);
    assert_eq!(drain(&timed_out), [("b".to_owned(), 2)]);
    assert!(read::<u64>(&store, "sessions").is_empty());
}

// ---------------------------------------------------------------------------
// Failed, uncommitted and redone batches.

/// A job with both stateful operators (timeout, TTL and initial state on
/// the second) and a sink that fails the batch while `fail` is set — after
/// both operators staged their changes.
fn job_with_failing_sink(fail: &Arc<AtomicBool>) -> Arc<StreamGraph> {
    let graph = new_graph(3);
    total_words(&graph, "totals");
    let spec = StateSpec::function(|_: &String, v: Option<u64>, state: &mut State<u64>| {
        if let Some(v) = v {
            state.update(state.get().copied().unwrap_or(0) + v);
        }
    })
    .timeout(Duration::from_millis(30))
    .ttl(Duration::from_millis(70))
    .initial_state([("a".to_owned(), 100), ("z".to_owned(), 7)]);
    let counts = graph
        .input()
        .values_utf8()
        .map(|word| (word, 1u64))
        .map_with_state("counts", spec);
    collect(&counts.state_snapshots());
    let fail = Arc::clone(fail);
    graph
        .input()
        .foreach_batch(move |_, _| match fail.load(Ordering::Relaxed) {
            true => Err(std::io::Error::other("the sink is down")),
            false => Ok(()),
        })
        .unwrap();
    graph
}

fn batches() -> Vec<(i64, Input)> {
    vec![
        (0, one(&["a", "b", "c"])),
        (20, one(&["b", "d"])),
        (40, vec![]),
        (60, vec![vec!["c".into()], vec!["a".into(), "e".into()]]),
        (100, one(&["e"])),
    ]
}

#[test]
fn a_failed_or_uncommitted_batch_leaves_no_trace() {
    let (once_dir, dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let fail = Arc::new(AtomicBool::new(false));
    let graph = job_with_failing_sink(&fail);

    // Every batch once.
    let mut reference = open_fast(once_dir.path());
    open_states(&mut reference, &graph).unwrap();
    for (id, (at, input)) in batches().into_iter().enumerate() {
        step(&graph, &mut reference, id as u64, at, &input);
    }

    // Every batch first fails, then runs without committing (and the
    // process dies), then is redone and committed.
    let mut store = open_fast(dir.path());
    open_states(&mut store, &graph).unwrap();
    for (id, (at, input)) in batches().into_iter().enumerate() {
        let id = id as u64;
        let before = image(&store);
        fail.store(true, Ordering::Relaxed);
        let err = run(&graph, &store, id, at, &input).unwrap_err();
        assert!(err.to_string().contains("the sink is down"), "{err}");
        fail.store(false, Ordering::Relaxed);
        let first = run(&graph, &store, id, at, &input).unwrap();
        assert_eq!(image(&store), before, "batch {id} left a trace uncommitted");
        drop(store);
        store = open_fast(dir.path());
        open_states(&mut store, &graph).unwrap();
        assert_eq!(
            image(&store),
            before,
            "batch {id} left a trace after a restart"
        );

        // Redone on another executor, whose tasks finish in another order.
        let redone = run_on(Arc::new(ThreadPerTask), &graph, &store, id, at, &input).unwrap();
        assert!(!redone.writes.is_empty(), "batch {id} changes the state");
        assert_eq!(
            redone.writes, first.writes,
            "batch {id} redone wrote otherwise"
        );
        commit(&mut store, id, at, redone.writes);
    }
    assert_eq!(image(&store), image(&reference));
    assert_eq!(
        read::<u64>(&store, "counts"),
        read::<u64>(&reference, "counts")
    );
    assert_eq!(
        read::<u64>(&store, "totals"),
        [("a", 2), ("b", 2), ("c", 2), ("d", 1), ("e", 2)].map(|(k, n)| (k.to_owned(), n))
    );
}

// ---------------------------------------------------------------------------
// Upgrades through open_states.

/// A checkpoint in which `counts` (map_with_state) and `totals`
/// (update_state_by_key) each committed two batches.
fn checkpoint_with_state() -> TempDir {
    let dir = TempDir::new().unwrap();
    let graph = new_graph(4);
    count_words(&graph, "counts");
    total_words(&graph, "totals");
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &graph).unwrap();
    step(&graph, &mut store, 0, 0, &one(&["a", "b", "a", "c"]));
    step(&graph, &mut store, 1, 10, &one(&["a", "d"]));
    dir
}

fn expected_counts() -> Vec<(String, u64)> {
    [("a", 3), ("b", 1), ("c", 1), ("d", 1)]
        .map(|(k, n)| (k.to_owned(), n))
        .to_vec()
}

#[test]
fn a_job_adding_an_operator_and_reordering_them_keeps_every_state() {
    let dir = checkpoint_with_state();
    let graph = new_graph(4);
    total_words(&graph, "totals");
    count_words(&graph, "sessions");
    count_words(&graph, "counts");
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &graph).unwrap();

    assert_eq!(read::<u64>(&store, "counts"), expected_counts());
    assert_eq!(read::<u64>(&store, "totals"), expected_counts());
    assert!(read::<u64>(&store, "sessions").is_empty());
    let names: Vec<String> = store
        .states()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["counts", "sessions", "totals"]);

    step(&graph, &mut store, 2, 20, &one(&["a", "e"]));
    let mut counts = expected_counts();
    counts[0].1 += 1;
    counts.push(("e".into(), 1));
    assert_eq!(read::<u64>(&store, "counts"), counts);
    assert_eq!(read::<u64>(&store, "totals"), counts);
    assert_eq!(
        read::<u64>(&store, "sessions"),
        [("a".to_owned(), 1), ("e".to_owned(), 1)]
    );
}

#[test]
fn an_undeclared_rename_is_refused_and_leaves_the_checkpoint_untouched() {
    let dir = checkpoint_with_state();
    let mut store = open(dir.path()).unwrap();
    let before = image(&store);

    let renamed = new_graph(4);
    count_words(&renamed, "word_counts");
    total_words(&renamed, "totals");
    let (state, reason) = state_error(open_states(&mut store, &renamed).unwrap_err());
    assert_eq!(state, "counts");
    assert!(reason.contains("rename_state(\"counts\""), "{reason}");
    assert!(reason.contains("drop_state(\"counts\")"), "{reason}");
    assert_eq!(image(&store), before);
    assert_eq!(read::<u64>(&store, "counts"), expected_counts());
    drop(store);

    // The old job still runs on it.
    let old = new_graph(4);
    count_words(&old, "counts");
    total_words(&old, "totals");
    let mut store = open(dir.path()).unwrap();
    assert_eq!(image(&store), before);
    open_states(&mut store, &old).unwrap();
    assert_eq!(image(&store), before);
    step(&old, &mut store, 2, 20, &one(&["b"]));
    assert_eq!(read::<u64>(&store, "counts")[1], ("b".to_owned(), 2));
}

mod v1 {
    /// A session as the first version of a job kept it.
    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    )]
    pub(crate) struct Session {
        pub(crate) clicks: u64,
    }
}

mod v2 {
    /// The same session with a field added.
    #[derive(
        Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    )]
    pub(crate) struct Session {
        pub(crate) clicks: u64,
        pub(crate) last_ms: i64,
    }
}

/// A job keeping `name` by `map_with_state` with key `K` and state `S`.
fn keep<K, S>(graph: &Arc<StreamGraph>, name: &str, key: fn(String) -> K, state: fn(u64) -> S)
where
    K: std::hash::Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    K: Send + Sync + 'static,
    S: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let spec = StateSpec::function(move |_: &K, _: Option<u64>, s: &mut State<S>| {
        s.update(state(1));
    });
    graph
        .input()
        .values_utf8()
        .map(move |word| (key(word), 1u64))
        .map_with_state(name, spec)
        .foreach_batch(|_, _| Ok::<_, Infallible>(()))
        .unwrap();
}

#[test]
fn a_changed_state_or_key_type_is_refused_naming_the_state() {
    let dir = TempDir::new().unwrap();
    let old = new_graph(2);
    keep(&old, "sessions", |w| w, |clicks| v1::Session { clicks });
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &old).unwrap();
    step(&old, &mut store, 0, 0, &one(&["a", "b"]));
    let before = image(&store);

    let added_field = new_graph(2);
    keep(
        &added_field,
        "sessions",
        |w| w,
        |clicks| v2::Session { clicks, last_ms: 0 },
    );
    let to_string = new_graph(2);
    keep(&to_string, "sessions", |w| w, |n| n.to_string());
    let to_u64 = new_graph(2);
    keep(&to_u64, "sessions", |w| w, |n| n);
    let new_key = new_graph(2);
    keep(
        &new_key,
        "sessions",
        |w| w.len() as u32,
        |clicks| v1::Session { clicks },
    );
    for (job, what) in [
        (&added_field, "state"),
        (&to_string, "state"),
        (&to_u64, "state"),
        (&new_key, "key"),
    ] {
        let (state, reason) = state_error(open_states(&mut store, job).unwrap_err());
        assert_eq!(state, "sessions");
        assert!(reason.contains(&format!("changed {what} type")), "{reason}");
        assert_eq!(image(&store), before);
    }
    open_states(&mut store, &old).unwrap();
    assert_eq!(
        read::<v1::Session>(&store, "sessions"),
        [("a", 1), ("b", 1)].map(|(k, clicks)| (k.to_owned(), v1::Session { clicks }))
    );
}

fn migrate(name: &str, migration: Migration) -> StateChanges {
    StateChanges {
        migrate: [(name.to_owned(), migration)].into(),
        ..StateChanges::default()
    }
}

#[test]
fn a_declared_migration_converts_every_state_once() {
    let dir = TempDir::new().unwrap();
    let old = new_graph(2);
    keep(&old, "sessions", |w| w, |clicks| v1::Session { clicks });
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &old).unwrap();
    step(&old, &mut store, 0, 0, &one(&["a", "b", "c"]));

    let new = new_graph(2);
    keep(
        &new,
        "sessions",
        |w| w,
        |clicks| v2::Session { clicks, last_ms: 0 },
    );
    let to_v2 = |s: v1::Session| v2::Session {
        clicks: s.clicks * 10,
        last_ms: -1,
    };
    // A migration from another type than the stored one is refused.
    let wrong = migrate(
        "sessions",
        Migration::new(|n: u64| v2::Session {
            clicks: n,
            last_ms: 0,
        }),
    );
    let before = image(&store);
    let (state, reason) = state_error(store.open_states(&new.states(), &wrong).unwrap_err());
    assert_eq!(state, "sessions");
    assert!(reason.contains("has a migration from"), "{reason}");
    assert_eq!(image(&store), before);

    let changes = migrate("sessions", Migration::new(to_v2));
    store.open_states(&new.states(), &changes).unwrap();
    let migrated = [("a", 10), ("b", 10), ("c", 10)].map(|(k, clicks)| {
        (
            k.to_owned(),
            v2::Session {
                clicks,
                last_ms: -1,
            },
        )
    });
    assert_eq!(read::<v2::Session>(&store, "sessions"), migrated);
    // The next start finds it done; the old job is refused now.
    store.open_states(&new.states(), &changes).unwrap();
    assert_eq!(read::<v2::Session>(&store, "sessions"), migrated);
    let (_, reason) = state_error(open_states(&mut store, &old).unwrap_err());
    assert!(reason.contains("changed state type"), "{reason}");
}

fn rename(old: &str, new: &str) -> StateChanges {
    StateChanges {
        rename: [(old.to_owned(), new.to_owned())].into(),
        ..StateChanges::default()
    }
}

#[test]
fn a_declared_rename_moves_the_data_once() {
    let dir = checkpoint_with_state();
    let graph = new_graph(4);
    count_words(&graph, "word_counts");
    total_words(&graph, "totals");
    let changes = rename("counts", "word_counts");
    let mut store = open(dir.path()).unwrap();
    store.open_states(&graph.states(), &changes).unwrap();

    assert_eq!(read::<u64>(&store, "word_counts"), expected_counts());
    let (state, _) = state_error(store.read_state::<String, u64>("counts").unwrap_err());
    assert_eq!(state, "counts");
    let after = image(&store);
    let names: Vec<&str> = after.registry.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["totals", "word_counts"]);
    assert_eq!(
        after.families,
        ["sluice_state.totals", "sluice_state.word_counts"]
    );

    // Started again with the same declaration: nothing left to do.
    store.open_states(&graph.states(), &changes).unwrap();
    assert_eq!(image(&store), after);
    drop(store);
    let mut store = open(dir.path()).unwrap();
    store.open_states(&graph.states(), &changes).unwrap();
    assert_eq!(image(&store), after);

    step(&graph, &mut store, 2, 20, &one(&["d"]));
    assert_eq!(read::<u64>(&store, "word_counts")[3], ("d".to_owned(), 2));
}

/// Regression: a rename onto a name the checkpoint already held was taken
/// for one an earlier start had done, and ignored: the start succeeded and
/// the renamed state's data stayed under its old name.
#[test]
fn a_rename_onto_a_state_the_checkpoint_holds_is_refused() {
    let dir = TempDir::new().unwrap();
    let old = new_graph(4);
    count_words(&old, "counts");
    count_words(&old, "old_counts");
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &old).unwrap();
    step(&old, &mut store, 0, 0, &one(&["a"]));
    let before = image(&store);

    let new = new_graph(4);
    count_words(&new, "counts");
    let err = store
        .open_states(&new.states(), &rename("old_counts", "counts"))
        .unwrap_err();
    let (state, reason) = state_error(err);
    assert_eq!(state, "old_counts");
    assert!(reason.contains("holds a state named 'counts'"), "{reason}");
    assert!(reason.contains("drop_state"), "{reason}");
    assert_eq!(image(&store), before);
}

/// Regression: renaming a state while an operator of the job kept its old
/// name was accepted, then the old name's family was dropped as an orphan,
/// so every commit of that operator failed with an unknown family.
#[test]
fn a_rename_of_a_name_the_job_still_declares_is_refused() {
    let dir = checkpoint_with_state();
    let mut store = open(dir.path()).unwrap();
    let before = image(&store);
    let graph = new_graph(4);
    count_words(&graph, "counts");
    count_words(&graph, "counts_v1");
    total_words(&graph, "totals");
    let err = store
        .open_states(&graph.states(), &rename("counts", "counts_v1"))
        .unwrap_err();
    let (state, reason) = state_error(err);
    assert_eq!(state, "counts");
    assert!(reason.contains("declared by an operator"), "{reason}");
    assert_eq!(image(&store), before);
}

#[test]
fn a_dropped_state_is_gone_and_a_new_operator_of_its_name_starts_empty() {
    let dir = checkpoint_with_state();
    let without = new_graph(4);
    total_words(&without, "totals");
    let changes = StateChanges {
        drop: ["counts".to_owned()].into(),
        ..StateChanges::default()
    };
    let mut store = open(dir.path()).unwrap();
    store.open_states(&without.states(), &changes).unwrap();
    let (state, _) = state_error(store.read_state::<String, u64>("counts").unwrap_err());
    assert_eq!(state, "counts");
    assert_eq!(image(&store).families, ["sluice_state.totals"]);
    assert_eq!(read::<u64>(&store, "totals"), expected_counts());
    step(&without, &mut store, 2, 20, &one(&["a"]));
    drop(store);

    let again = new_graph(4);
    count_words(&again, "counts");
    total_words(&again, "totals");
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &again).unwrap();
    assert!(read::<u64>(&store, "counts").is_empty());
    step(&again, &mut store, 3, 30, &one(&["a", "b"]));
    assert_eq!(
        read::<u64>(&store, "counts"),
        [("a".to_owned(), 1), ("b".to_owned(), 1)]
    );
    assert_eq!(read::<u64>(&store, "totals")[0], ("a".to_owned(), 5));
}

// ---------------------------------------------------------------------------
// Read-back.

#[test]
fn a_read_only_handle_reads_state_while_the_writer_runs() {
    let dir = checkpoint_with_state();
    let graph = new_graph(4);
    count_words(&graph, "counts");
    total_words(&graph, "totals");
    let mut writer = open(dir.path()).unwrap();
    open_states(&mut writer, &graph).unwrap();

    let mut reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(read::<u64>(&reader, "counts"), expected_counts());
    assert_eq!(read::<u64>(&reader, "totals"), expected_counts());
    let (state, reason) = state_error(reader.read_state::<String, u64>("nope").unwrap_err());
    assert_eq!(state, "nope");
    assert!(reason.contains("counts"), "{reason}");
    let err = open_states(&mut reader, &graph).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err}");

    // The writer goes on; a reader opened after its commit sees it.
    step(&graph, &mut writer, 2, 20, &one(&["b"]));
    assert_eq!(read::<u64>(&reader, "counts"), expected_counts());
    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    assert_eq!(read::<u64>(&reader, "counts")[1], ("b".to_owned(), 2));
    assert_eq!(
        read::<u64>(&reader, "counts"),
        read::<u64>(&writer, "counts")
    );
}

/// newuser2 report, item 1: `read_state::<u64, u64>` of a `String → u64`
/// state returned the strings' lengths as keys.
#[test]
fn read_state_with_other_types_than_recorded_is_refused_naming_both_shapes() {
    let dir = checkpoint_with_state();
    let reader = RocksCheckpoint::open_read_only(dir.path(), APP).unwrap();
    let (state, reason) = state_error(reader.read_state::<u64, u64>("counts").unwrap_err());
    assert_eq!(state, "counts");
    assert!(
        reason.contains(r#"key type ["STR",{}]"#) && reason.contains(r#"key type ["U64",{}]"#),
        "{reason}"
    );
    let (_, reason) = state_error(reader.read_state::<String, String>("totals").unwrap_err());
    assert!(
        reason.contains(r#"state type ["U64",{}]"#) && reason.contains(r#"state type ["STR",{}]"#),
        "{reason}"
    );
    assert_eq!(read::<u64>(&reader, "counts"), expected_counts());
}

/// newuser2 report, item 6: a `u64 → String` migration of a state the
/// checkpoint and the job both keep as `u64` was silently ignored.
#[test]
fn a_migration_to_another_type_than_the_job_declares_is_refused_at_start() {
    let dir = TempDir::new().unwrap();
    let job = new_graph(2);
    keep(&job, "clicks", |w| w, |n| n);
    let mut store = open(dir.path()).unwrap();
    open_states(&mut store, &job).unwrap();
    step(&job, &mut store, 0, 0, &one(&["a", "b"]));
    let before = image(&store);

    let wrong = migrate("clicks", Migration::new(|n: u64| format!("n={n}")));
    let (state, reason) = state_error(store.open_states(&job.states(), &wrong).unwrap_err());
    assert_eq!(state, "clicks");
    assert!(
        reason.contains(r#"has a migration from ["U64",{}] to ["STR",{}]"#)
            && reason.contains(r#"the job declares ["U64",{}]"#)
            && reason.contains(r#"the checkpoint holds ["U64",{}]"#),
        "{reason}"
    );
    assert_eq!(image(&store), before);

    // The migration the job needs runs once, and stays a no-op when the
    // job keeps declaring it.
    let strings = new_graph(2);
    keep(&strings, "clicks", |w| w, |n| format!("n={n}"));
    let right = migrate("clicks", Migration::new(|n: u64| format!("n={n}")));
    store.open_states(&strings.states(), &right).unwrap();
    let migrated = [("a", "n=1"), ("b", "n=1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(read::<String>(&store, "clicks"), migrated);
    let after = image(&store);
    store.open_states(&strings.states(), &right).unwrap();
    assert_eq!(image(&store), after);
    step(&strings, &mut store, 1, 10, &one(&["c"]));
    assert_eq!(read::<String>(&store, "clicks").len(), 3);
}
