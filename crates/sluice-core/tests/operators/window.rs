//! Batch-time windows against brute force: every window a batch emits
//! equals a direct computation over the records of the batches it covers,
//! across restarts (a fresh graph over the same state) and failed batches.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use sluice_core::state::MemoryState;
use sluice_core::window::InverseReduce;
use sluice_core::{
    BatchEnv, BatchInfo, DStream, Error, Executor, InlineExecutor, MemoryInput, StreamGraph,
};

use super::ThreadedExecutor;

/// What each output saw, per batch: batch time and values.
type Seen<T> = Arc<Mutex<Vec<(i64, Vec<T>)>>>;

fn collect<T: Send + 'static>(stream: &DStream<T>) -> Seen<T> {
    let seen: Seen<T> = Arc::default();
    let out = Arc::clone(&seen);
    stream
        .foreach_batch(move |batch, info| {
            out.lock()
                .unwrap()
                .push((info.time_ms(), batch.into_iter().collect()));
            Ok::<_, Error>(())
        })
        .unwrap();
    seen
}

/// The windowed outputs of one job: every operator over the same pairs.
struct Job {
    graph: Arc<StreamGraph>,
    window: Seen<(u8, u8)>,
    count: Seen<i64>,
    total: Seen<i64>,
    by_key: Seen<(u8, i64)>,
    by_key_inv: Seen<(u8, i64)>,
    by_key_inv_unfiltered: Seen<(u8, i64)>,
    by_value: Seen<(u8, i64)>,
}

impl Job {
    fn new(len: Duration, slide: Duration, shuffle: usize) -> Self {
        let graph = StreamGraph::new();
        graph.set_shuffle_partitions(NonZeroUsize::new(shuffle).unwrap());
        let pairs = graph.input().map(|r| {
            let v = r.value.expect("test records have values");
            (v[0], v[1])
        });
        let sums = pairs.map(|(k, v)| (k, i64::from(v)));
        let add = |a: i64, b: i64| a + b;
        let sub = |a: i64, b: i64| a - b;
        Self {
            window: collect(&pairs.window("w", len, slide)),
            count: collect(&pairs.count_by_window("c", len, slide)),
            total: collect(&sums.map(|(_, v)| v).reduce_by_window("r", add, len, slide)),
            by_key: collect(&sums.reduce_by_key_and_window("k", add, len, slide)),
            by_key_inv: collect(&sums.reduce_by_key_and_window_inv(
                "ki",
                InverseReduce::new(add, sub).filter(|_, v| *v != 0),
                len,
                slide,
            )),
            by_key_inv_unfiltered: collect(&sums.reduce_by_key_and_window_inv(
                "kn",
                InverseReduce::new(add, sub),
                len,
                slide,
            )),
            by_value: collect(
                &pairs
                    .map(|(k, _)| k)
                    .count_by_value_and_window("v", len, slide),
            ),
            graph,
        }
    }

    /// Runs one batch; its writes are applied when `commit` is set.
    fn run(
        &self,
        state: &Arc<MemoryState>,
        id: u64,
        time_ms: i64,
        partitions: &[Vec<(u8, u8)>],
        executor: Arc<dyn Executor>,
        commit: bool,
    ) {
        let input = partitions
            .iter()
            .enumerate()
            .fold(MemoryInput::new(), |input, (p, pairs)| {
                input.with_partition("t", p as i32, pairs.iter().map(|&(k, v)| vec![k, v]))
            });
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(time_ms as u64);
        let info = BatchInfo::new(id, time, input.full_ranges());
        let env = BatchEnv::new(info, Arc::new(input), executor).with_state(state.clone());
        let output = self.graph.run(env).unwrap();
        if commit {
            state.apply(&output.writes);
        }
    }

    /// Forgets what the outputs saw (of a batch whose writes were
    /// dropped).
    fn forget_last(&self) {
        self.window.lock().unwrap().pop();
        self.count.lock().unwrap().pop();
        self.total.lock().unwrap().pop();
        self.by_key.lock().unwrap().pop();
        self.by_key_inv.lock().unwrap().pop();
        self.by_key_inv_unfiltered.lock().unwrap().pop();
        self.by_value.lock().unwrap().pop();
    }
}

fn last<T: Clone>(seen: &Seen<T>) -> (i64, Vec<T>) {
    seen.lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the output ran")
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

/// A batch of the test: its time on the grid and its records by source
/// partition.
#[derive(Debug, Clone)]
struct TestBatch {
    /// Ticks of the batch interval since the previous batch (1: none
    /// skipped).
    gap: u64,
    partitions: Vec<Vec<(u8, u8)>>,
    /// Run once with its writes dropped (a failed batch) before it runs
    /// for real.
    fail_first: bool,
}

fn test_batch() -> impl Strategy<Value = TestBatch> {
    (
        prop_oneof![4 => Just(1u64), 1 => 2u64..5],
        prop::collection::vec(prop::collection::vec((0u8..5, 0u8..4), 0..6), 1..4),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(gap, partitions, fail_first)| TestBatch {
            gap,
            partitions,
            fail_first,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_window_equals_a_direct_computation_over_its_batches(
        (len, slide) in (1u64..6).prop_flat_map(|len| (Just(len), 1..=len)),
        interval in prop_oneof![Just(1_000u64), Just(250u64)],
        start in 0u64..12,
        batches in prop::collection::vec(test_batch(), 1..14),
        restart_at in any::<prop::sample::Index>(),
        restart in any::<bool>(),
        shuffle in 1usize..4,
        threaded in any::<bool>(),
    ) {
        let (len_ms, slide_ms) = ((len * interval) as i64, (slide * interval) as i64);
        let (len_d, slide_d) = (Duration::from_millis(len_ms as u64), Duration::from_millis(slide_ms as u64));
        let executor: Arc<dyn Executor> = if threaded { Arc::new(ThreadedExecutor) } else { Arc::new(InlineExecutor) };
        let state = Arc::new(MemoryState::new());
        let mut job = Job::new(len_d, slide_d, shuffle);
        job.graph.check_batch_interval(Duration::from_millis(interval)).unwrap();
        let restart_at = restart.then(|| restart_at.index(batches.len()));

        let mut history: Vec<(i64, Vec<(u8, u8)>)> = Vec::new();
        let mut ever_emitted: BTreeSet<u8> = BTreeSet::new();
        let mut tick = start;
        for (i, batch) in batches.iter().enumerate() {
            tick += batch.gap;
            let now = (tick * interval) as i64;
            if restart_at == Some(i) {
                job = Job::new(len_d, slide_d, shuffle); // a new process on the same checkpoint
            }
            if batch.fail_first {
                job.run(&state, i as u64, now, &batch.partitions, executor.clone(), false);
                job.forget_last();
            }
            job.run(&state, i as u64, now, &batch.partitions, executor.clone(), true);
            history.push((now, batch.partitions.concat()));

            let emits = now % slide_ms == 0;
            let covered: Vec<(u8, u8)> = history
                .iter()
                .filter(|(t, _)| emits && now - len_ms < *t && *t <= now)
                .flat_map(|(_, records)| records.iter().copied())
                .collect();
            let mut sums: BTreeMap<u8, i64> = BTreeMap::new();
            let mut counts: BTreeMap<u8, i64> = BTreeMap::new();
            for &(k, v) in &covered {
                *sums.entry(k).or_default() += i64::from(v);
                *counts.entry(k).or_default() += 1;
            }
            ever_emitted.extend(sums.keys().copied());

            let context = format!("batch {i} at {now} ms, window {len_ms}/{slide_ms} ms");
            let (t, window) = last(&job.window);
            prop_assert_eq!(t, now);
            prop_assert_eq!(sorted(window), sorted(covered.clone()), "window: {}", context);
            let expected_count = if emits { vec![covered.len() as i64] } else { vec![] };
            prop_assert_eq!(last(&job.count).1, expected_count, "count_by_window: {}", context);
            let expected_total: Vec<i64> = if covered.is_empty() {
                vec![]
            } else {
                vec![sums.values().sum()]
            };
            prop_assert_eq!(last(&job.total).1, expected_total, "reduce_by_window: {}", context);
            let plain: Vec<(u8, i64)> = sums.clone().into_iter().collect();
            prop_assert_eq!(sorted(last(&job.by_key).1), plain.clone(), "reduce_by_key_and_window: {}", context);
            let filtered: Vec<(u8, i64)> = plain.iter().copied().filter(|(_, v)| *v != 0).collect();
            prop_assert_eq!(sorted(last(&job.by_key_inv).1), filtered, "with inverse and filter: {}", context);
            // Without a filter, a key stays (at 0) once it was in a window.
            let unfiltered: Vec<(u8, i64)> = if emits {
                ever_emitted.iter().map(|k| (*k, sums.get(k).copied().unwrap_or(0))).collect()
            } else {
                vec![]
            };
            prop_assert_eq!(sorted(last(&job.by_key_inv_unfiltered).1), unfiltered, "with inverse: {}", context);
            let by_value: Vec<(u8, i64)> = counts.into_iter().collect();
            prop_assert_eq!(sorted(last(&job.by_value).1), by_value, "count_by_value_and_window: {}", context);
        }
    }
}

fn run_words(
    graph: &StreamGraph,
    state: &Arc<MemoryState>,
    second: u64,
    words: &[&str],
) -> sluice_core::Result<sluice_core::BatchOutput> {
    let input = MemoryInput::new().with_partition("words", 0, words.iter().copied());
    let info = BatchInfo::new(
        second,
        SystemTime::UNIX_EPOCH + Duration::from_secs(second),
        input.full_ranges(),
    );
    graph.run(
        BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor)).with_state(state.clone()),
    )
}

#[test]
fn a_failed_batch_leaves_the_window_state_as_before() {
    let graph = StreamGraph::new();
    let words = graph.input().values_utf8();
    let counts = collect(&words.count_by_value_and_window(
        "words",
        Duration::from_secs(3),
        Duration::from_secs(1),
    ));
    // A second output that fails the first time it meets "boom".
    let failed = Arc::new(AtomicBool::new(false));
    let once = Arc::clone(&failed);
    words
        .try_map(move |w| {
            if w == "boom" && !once.swap(true, Ordering::SeqCst) {
                return Err("the sink is down");
            }
            Ok(w)
        })
        .foreach_batch(|_, _| Ok::<_, Error>(()))
        .unwrap();

    let state = Arc::new(MemoryState::new());
    let family = sluice_core::state::family_of("words");
    state.apply(&run_words(&graph, &state, 1, &["a", "b"]).unwrap().writes);
    let before = state.len(&family);
    assert!(run_words(&graph, &state, 2, &["a", "boom"]).is_err());
    assert_eq!(
        state.len(&family),
        before,
        "nothing of the failed batch is kept"
    );
    // The batch is retried from the same ranges: the window is exact.
    state.apply(&run_words(&graph, &state, 2, &["a", "boom"]).unwrap().writes);
    let (time, window) = last(&counts);
    assert_eq!(time, 2_000);
    assert_eq!(
        sorted(window),
        [("a".into(), 2), ("b".into(), 1), ("boom".into(), 1)]
    );
}

#[test]
fn a_window_longer_than_a_chunk_keeps_every_value_in_arrival_order() {
    let graph = StreamGraph::new();
    let values = graph.input().map(|r| r.offset);
    let seen = collect(&values.window("offsets", Duration::from_secs(2), Duration::from_secs(2)));
    let state = Arc::new(MemoryState::new());
    for second in [1u64, 2] {
        let input = MemoryInput::new()
            .with_partition("t", 0, (0..10_000).map(|_| vec![0u8]))
            .with_partition("t", 1, (0..3).map(|_| vec![1u8]));
        let info = BatchInfo::new(
            second,
            SystemTime::UNIX_EPOCH + Duration::from_secs(second),
            input.full_ranges(),
        );
        let env = BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
            .with_state(state.clone());
        state.apply(&graph.run(env).unwrap().writes);
    }
    let (_, window) = last(&seen);
    // One key partition on the inline executor: batch 1 (partition 0,
    // then 1), then batch 2.
    let batch: Vec<i64> = (0..10_000).chain(0..3).collect();
    assert_eq!(window, [batch.clone(), batch].concat());
    assert_eq!(
        state.len(&sluice_core::state::family_of("offsets")),
        0,
        "a tumbling window keeps nothing once emitted"
    );
}

#[test]
fn lengths_and_slides_that_do_not_fit_the_batch_interval_are_refused_naming_the_window() {
    let graph = StreamGraph::new();
    let pairs = graph.input().values_utf8().map(|w| (w, 1i64));
    pairs.reduce_by_key_and_window(
        "clicks_10m",
        |a, b| a + b,
        Duration::from_secs(600),
        Duration::from_secs(90),
    );
    assert!(graph.check_states().is_ok());
    assert!(graph.check_batch_interval(Duration::from_secs(30)).is_ok());
    let error = graph
        .check_batch_interval(Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(error, Error::Window { .. }), "{error:?}");
    let message = error.to_string();
    for part in [
        "reduce_by_key_and_window(\"clicks_10m\")",
        "slide (90s)",
        "batch interval (60s)",
    ] {
        assert!(message.contains(part), "{message}");
    }
    let error = graph
        .check_batch_interval(Duration::from_secs(7))
        .unwrap_err();
    assert!(error.to_string().contains("length (600s)"), "{error}");
}

/// newuser2 report, item 8b: the trending example's slide error named
/// `reduce_by_key_and_window` for a `reduce_by_key_and_window_inv`.
#[test]
fn window_errors_name_the_operator_called_while_the_state_keeps_its_kind() {
    let graph = StreamGraph::new();
    let pairs = graph.input().values_utf8().map(|w| (w, 1i64));
    let sum = InverseReduce::new(|a: i64, b| a + b, |a, b| a - b);
    let windows = pairs.reduce_by_key_and_window_inv(
        "trending_words",
        sum,
        Duration::from_secs(4),
        Duration::from_millis(1500),
    );
    let error = graph
        .check_batch_interval(Duration::from_secs(1))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("reduce_by_key_and_window_inv(\"trending_words\")"),
        "{error}"
    );
    // The error of a batch names it too.
    windows.print(1).unwrap();
    let state = Arc::new(MemoryState::new());
    let bad = StreamGraph::new();
    bad.input()
        .values_utf8()
        .map(|w| (w, 1i64))
        .reduce_by_key_and_window_inv(
            "trending_words",
            InverseReduce::new(|a: i64, b| a + b, |a, b| a - b),
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .print(1)
        .unwrap();
    let error = run_words(&bad, &state, 1, &["a"]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("reduce_by_key_and_window_inv(\"trending_words\")"),
        "{error}"
    );
    // Both forms keep the same state, so a job may switch between them.
    let kinds: Vec<&str> = graph.states().iter().map(|d| d.operator).collect();
    assert_eq!(kinds, ["reduce_by_key_and_window"]);
}

#[test]
fn a_zero_length_or_a_slide_longer_than_the_window_fails_the_job_not_the_process() {
    for (len, slide, reason) in [
        (0, 1, "length is zero"),
        (2, 0, "slide is zero"),
        (2, 3, "longer than its length"),
    ] {
        let graph = StreamGraph::new();
        let counts = graph.input().count_by_window(
            "counts",
            Duration::from_secs(len),
            Duration::from_secs(slide),
        );
        counts.print(1).unwrap();
        let error = graph.check_states().unwrap_err();
        assert!(error.to_string().contains(reason), "{error}");
        assert!(graph.check_batch_interval(Duration::from_secs(1)).is_err());
        let state = Arc::new(MemoryState::new());
        let error = run_words(&graph, &state, 1, &["a"]).unwrap_err();
        assert!(
            error.to_string().contains("count_by_window(\"counts\")"),
            "{error}"
        );
    }
}

#[test]
fn the_checkpoint_sees_each_windows_length_and_slide() {
    let graph = StreamGraph::new();
    let words = graph.input().values_utf8();
    let _ = words.map(|w| (w, 1i64)).reduce_by_key_and_window(
        "clicks_10m",
        |a, b| a + b,
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let _ = words.window("recent", Duration::from_secs(4), Duration::from_secs(2));
    let _ = words
        .map(|w| (w, 1i64))
        .update_state_by_key("totals", |new: Vec<i64>, old: Option<i64>| {
            Some(old.unwrap_or(0) + new.iter().sum::<i64>())
        });
    let states = graph.states();
    let params: Vec<(&str, &str, &str)> = states
        .iter()
        .map(|d| (d.name.as_str(), d.operator, d.params.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            (
                "clicks_10m",
                "reduce_by_key_and_window",
                "batch_time len_ms=600000 slide_ms=60000 layout=2"
            ),
            ("recent", "window", "batch_time len_ms=4000 slide_ms=2000"),
            ("totals", "update_state_by_key", ""),
        ]
    );
    // A window's name is a state name: it may not be taken twice.
    let _ = words.count_by_window("recent", Duration::from_secs(4), Duration::from_secs(2));
    assert!(graph.check_states().is_err());
}

#[test]
fn a_job_may_switch_between_the_plain_and_the_incremental_form_under_one_name() {
    let (len, slide) = (Duration::from_secs(3), Duration::from_secs(1));
    let plain = |graph: &Arc<StreamGraph>| {
        let pairs = graph.input().values_utf8().map(|w| (w, 1i64));
        collect(&pairs.reduce_by_key_and_window("clicks", |a, b| a + b, len, slide))
    };
    let incremental = |graph: &Arc<StreamGraph>| {
        let pairs = graph.input().values_utf8().map(|w| (w, 1i64));
        let sum = InverseReduce::new(|a: i64, b| a + b, |a, b| a - b).filter(|_, v| *v != 0);
        collect(&pairs.reduce_by_key_and_window_inv("clicks", sum, len, slide))
    };
    let batches: [&[&str]; 8] = [&["a", "b"], &["a"], &["c"], &[], &["a"], &[], &[], &[]];
    let expected: [&[(&str, i64)]; 8] = [
        &[("a", 1), ("b", 1)],
        &[("a", 2), ("b", 1)],
        &[("a", 2), ("b", 1), ("c", 1)],
        &[("a", 1), ("c", 1)],
        &[("a", 1), ("c", 1)],
        &[("a", 1)],
        &[("a", 1)],
        &[],
    ];
    let state = Arc::new(MemoryState::new());
    let (mut graph, mut seen) = (StreamGraph::new(), Seen::default());
    for (i, (words, expected)) in batches.iter().zip(expected).enumerate() {
        // Plain, then incremental from the third batch, then plain again.
        if i == 0 || i == 2 || i == 5 {
            graph = StreamGraph::new();
            seen = if i == 2 {
                incremental(&graph)
            } else {
                plain(&graph)
            };
            assert_eq!(graph.states()[0].operator, "reduce_by_key_and_window");
        }
        let output = run_words(&graph, &state, i as u64 + 1, words).unwrap();
        state.apply(&output.writes);
        let expected: Vec<(String, i64)> =
            expected.iter().map(|(w, n)| (w.to_string(), *n)).collect();
        assert_eq!(sorted(last(&seen).1), expected, "batch {i}");
    }
    assert_eq!(state.len(&sluice_core::state::family_of("clicks")), 0);
}
