//! Event-time windows against a brute-force model: random records with
//! random event times over several input partitions, split into random
//! batches, run on fresh graphs over one `MemoryState` (a restart before
//! any batch), compared batch by batch with a direct computation of the
//! documented rules.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use sluice_core::state::MemoryState;
use sluice_core::window::{EventTimeSpec, OutputMode, Window, Windowed};
use sluice_core::{
    BatchEnv, BatchInfo, BatchOutput, Executor, InlineExecutor, MemoryInput, OffsetRange,
    PoisonPolicy, Result, StreamGraph,
};

use super::ThreadedExecutor;

const T0: i64 = 1_000_000;
const INTERVAL: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

impl Kind {
    fn window(self) -> Window {
        let ms = |x: i64| Duration::from_millis(x as u64);
        match self {
            Kind::Sliding { size, slide } => Window::sliding(ms(size), ms(slide)),
            Kind::Session { gap } => Window::session(ms(gap)),
        }
    }

    /// Every window holding `t`, by a scan of the candidate starts.
    fn windows_of(self, t: i64) -> Vec<(i64, i64)> {
        match self {
            Kind::Sliding { size, slide } => (t - size + 1..=t)
                .filter(|s| s.rem_euclid(slide) == 0)
                .map(|s| (s, s + size))
                .collect(),
            Kind::Session { gap } => vec![(t, t + gap)],
        }
    }
}

#[derive(Debug, Clone)]
struct Setup {
    kind: Kind,
    lateness: i64,
    idle: Option<i64>,
    mode: OutputMode,
    dead_letters: bool,
    shuffle: usize,
    threaded: bool,
}

/// A record: the batch it arrives in, key, event time and value.
type Rec = (usize, u8, i64, u64);

type Emitted = Arc<Mutex<Vec<Windowed<u8, u64>>>>;

fn build(setup: &Setup, emitted: &Emitted) -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph.set_shuffle_partitions(NonZeroUsize::new(setup.shuffle).unwrap());
    if setup.dead_letters {
        graph.set_poison_policy(PoisonPolicy::dead_letter("late"));
    }
    let mut spec = EventTimeSpec::aggregate(setup.kind.window(), |(_, v)| v, |a: u64, b| a + b)
        .event_time(|_, (t, _): &(i64, u64)| *t)
        .allowed_lateness(Duration::from_millis(setup.lateness as u64))
        .output_mode(setup.mode);
    if let Some(idle) = setup.idle {
        spec = spec.idle_timeout(Duration::from_millis(idle as u64));
    }
    let out = Arc::clone(emitted);
    graph
        .input()
        .map(|r| {
            let v = r.value.unwrap();
            let t = i64::from_le_bytes(v[1..9].try_into().unwrap());
            (v[0], (t, u64::from(v[9])))
        })
        .event_time_window("windows", spec)
        .foreach_batch(move |batch, _| {
            out.lock().unwrap().extend(batch);
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    graph
}

fn encode(key: u8, t: i64, v: u64) -> Vec<u8> {
    let mut bytes = vec![key];
    bytes.extend_from_slice(&t.to_le_bytes());
    bytes.push(v as u8);
    bytes
}

/// The documented rules, computed directly: clocks per partition, windows
/// as sets of records.
#[derive(Default)]
struct Model {
    watermark: Option<i64>,
    /// Per partition: greatest event time, last batch time with records.
    clocks: BTreeMap<usize, (i64, i64)>,
    /// Open tumbling/sliding windows: (key, start, end) → sum.
    windows: BTreeMap<(u8, i64, i64), u64>,
    /// Open sessions per key: their records' (time, value).
    sessions: BTreeMap<u8, Vec<Vec<(i64, u64)>>>,
}

/// What one batch must give.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    emitted: Vec<(u8, i64, i64, u64)>,
    late: BTreeMap<i32, u64>,
    dead: BTreeSet<(i32, i64)>,
}

impl Model {
    fn session_bounds(records: &[(i64, u64)], gap: i64) -> (i64, i64) {
        let start = records.iter().map(|r| r.0).min().unwrap();
        let end = records.iter().map(|r| r.0).max().unwrap() + gap;
        (start, end)
    }

    /// One batch: `records` per partition as (offset, key, time, value).
    fn batch(&mut self, setup: &Setup, now: i64, records: &[Vec<(i64, u8, i64, u64)>]) -> Expected {
        let mut expected = Expected::default();
        let judged_by = self.watermark;
        let mut changed: BTreeSet<(u8, i64, i64)> = BTreeSet::new();
        let mut touched_sessions: BTreeSet<(u8, i64)> = BTreeSet::new();
        for (p, records) in records.iter().enumerate() {
            for &(offset, key, t, v) in records {
                let clock = self.clocks.entry(p).or_insert((t, now));
                *clock = (clock.0.max(t), now);
                let windows = setup.kind.windows_of(t);
                let Some(last_end) = windows.iter().map(|w| w.1).max() else {
                    continue; // in no window
                };
                if judged_by.is_some_and(|w| last_end <= w) {
                    *expected.late.entry(p as i32).or_default() += 1;
                    if setup.dead_letters {
                        expected.dead.insert((p as i32, offset));
                    }
                    continue;
                }
                match setup.kind {
                    Kind::Sliding { .. } => {
                        for (s, e) in windows {
                            if judged_by.is_some_and(|w| e <= w) {
                                continue;
                            }
                            *self.windows.entry((key, s, e)).or_default() += v;
                            changed.insert((key, s, e));
                        }
                    }
                    Kind::Session { gap } => {
                        let sessions = self.sessions.entry(key).or_default();
                        let (mut joined, apart): (Vec<_>, Vec<_>) =
                            std::mem::take(sessions).into_iter().partition(|s| {
                                let (start, end) = Model::session_bounds(s, gap);
                                start <= t + gap && t <= end
                            });
                        let mut merged: Vec<(i64, u64)> = joined.drain(..).flatten().collect();
                        merged.push((t, v));
                        *sessions = apart;
                        sessions.push(merged);
                        touched_sessions.insert((key, t));
                    }
                }
            }
        }
        // The watermark after the batch.
        let active = self
            .clocks
            .values()
            .filter(|(_, seen)| setup.idle.is_none_or(|idle| now - seen < idle))
            .map(|c| c.0)
            .min();
        let candidate = active
            .or_else(|| self.clocks.values().map(|c| c.0).max())
            .map(|m| m - setup.lateness);
        self.watermark = match (self.watermark, candidate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let closes = |end: i64| self.watermark.is_some_and(|w| end <= w);
        let update = setup.mode == OutputMode::Update;
        match setup.kind {
            Kind::Sliding { .. } => {
                for (&(key, s, e), &sum) in &self.windows {
                    if (update && changed.contains(&(key, s, e))) || (!update && closes(e)) {
                        expected.emitted.push((key, s, e, sum));
                    }
                }
                self.windows.retain(|&(_, _, e), _| !closes(e));
            }
            Kind::Session { gap } => {
                for (&key, sessions) in &mut self.sessions {
                    for session in sessions.iter() {
                        let (s, e) = Model::session_bounds(session, gap);
                        let fresh = session
                            .iter()
                            .any(|&(t, _)| touched_sessions.contains(&(key, t)));
                        let sum = session.iter().map(|r| r.1).sum();
                        if (update && fresh) || (!update && closes(e)) {
                            expected.emitted.push((key, s, e, sum));
                        }
                    }
                    sessions.retain(|s| !closes(Model::session_bounds(s, gap).1));
                }
            }
        }
        expected.emitted.sort();
        expected
    }
}

fn observed(output: &BatchOutput, emitted: Vec<Windowed<u8, u64>>) -> Expected {
    let mut emitted: Vec<_> = emitted
        .into_iter()
        .map(|w| (w.key, w.start, w.end, w.value))
        .collect();
    emitted.sort();
    Expected {
        emitted,
        late: output
            .late_records
            .iter()
            .map(|l| {
                assert_eq!((l.window.as_str(), &*l.topic), ("windows", "t"));
                (l.partition, l.count)
            })
            .collect(),
        dead: output
            .dead_letters
            .iter()
            .map(|d| {
                assert!(d.error.contains("watermark"), "{}", d.error);
                assert!(d.record.is_some(), "the late record is read back");
                (d.partition, d.offset)
            })
            .collect(),
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1i64..120).prop_map(|size| Kind::Sliding { size, slide: size }),
        (1i64..120, 1i64..60).prop_map(|(size, slide)| Kind::Sliding { size, slide }),
        (1i64..60).prop_map(|gap| Kind::Session { gap }),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        kind(),
        0i64..60,
        proptest::option::of(prop_oneof![Just(100i64), Just(150), Just(250)]),
        prop_oneof![Just(OutputMode::Append), Just(OutputMode::Update)],
        any::<bool>(),
        1usize..4,
        any::<bool>(),
    )
        .prop_map(
            |(kind, lateness, idle, mode, dead_letters, shuffle, threaded)| Setup {
                kind,
                lateness,
                idle,
                mode,
                dead_letters,
                shuffle,
                threaded,
            },
        )
}

/// Per partition, records tagged with the batch they arrive in.
fn partitions() -> impl Strategy<Value = Vec<Vec<Rec>>> {
    proptest::collection::vec(
        proptest::collection::vec((0usize..6, 0u8..4, 0i64..500, 1u64..5), 0..25),
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn windows_late_counts_and_dead_letters_match_the_model_across_restarts(
        setup in setup(),
        mut partitions in partitions(),
        restarts in proptest::collection::vec(any::<bool>(), 8),
    ) {
        for records in &mut partitions {
            records.sort_by_key(|r| r.0); // offsets follow the batches
        }
        let input = partitions.iter().enumerate().fold(MemoryInput::new(), |input, (p, recs)| {
            input.with_partition("t", p as i32, recs.iter().map(|&(_, k, t, v)| encode(k, t, v)))
        });
        let input = Arc::new(input);
        let executor: Arc<dyn Executor> =
            if setup.threaded { Arc::new(ThreadedExecutor) } else { Arc::new(InlineExecutor) };
        let state = Arc::new(MemoryState::new());
        let emitted: Emitted = Arc::default();
        let mut graph = build(&setup, &emitted);
        let mut model = Model::default();
        let mut once: BTreeSet<(u8, i64, i64)> = BTreeSet::new();
        // Six batches of data, then two without, so idle partitions show.
        for (b, restart) in restarts.into_iter().enumerate() {
            if restart {
                graph = build(&setup, &emitted);
            }
            let now = T0 + b as i64 * INTERVAL;
            let mut ranges = Vec::new();
            let mut batch = Vec::new();
            for (p, recs) in partitions.iter().enumerate() {
                let from = recs.partition_point(|r| r.0 < b) as i64;
                let until = recs.partition_point(|r| r.0 <= b) as i64;
                ranges.push(OffsetRange::new(&sluice_core::TopicPartition::new("t", p as i32), from, until));
                batch.push(
                    (from..until)
                        .map(|o| {
                            let (_, k, t, v) = recs[o as usize];
                            (o, k, t, v)
                        })
                        .collect::<Vec<_>>(),
                );
            }
            let info = BatchInfo::new(
                b as u64,
                SystemTime::UNIX_EPOCH + Duration::from_millis(now as u64),
                ranges,
            );
            let env = BatchEnv::new(info, input.clone(), Arc::clone(&executor)).with_state(state.clone());
            let output = graph.run(env).unwrap();
            state.apply(&output.writes);
            let got = observed(&output, std::mem::take(&mut *emitted.lock().unwrap()));
            let want = model.batch(&setup, now, &batch);
            prop_assert_eq!(&got, &want, "batch {}", b);
            if setup.mode == OutputMode::Append {
                for &(k, s, e, _) in &got.emitted {
                    prop_assert!(once.insert((k, s, e)), "window {:?} emitted twice", (k, s, e));
                }
            }
        }
    }
}

fn run_batch(
    graph: &StreamGraph,
    state: &Arc<MemoryState>,
    id: u64,
    now: i64,
    input: MemoryInput,
) -> Result<BatchOutput> {
    let info = BatchInfo::new(
        id,
        SystemTime::UNIX_EPOCH + Duration::from_millis(now as u64),
        input.full_ranges(),
    );
    let env =
        BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor)).with_state(state.clone());
    let output = graph.run(env)?;
    state.apply(&output.writes);
    Ok(output)
}

/// Counts per 100 ms of record timestamp, in append mode.
fn counting(idle: Option<u64>) -> (Arc<StreamGraph>, Emitted) {
    counting_after(idle, false)
}

/// [`counting`], with the keyed records cached before the window when
/// `cache` is set.
fn counting_after(idle: Option<u64>, cache: bool) -> (Arc<StreamGraph>, Emitted) {
    let graph = StreamGraph::new();
    graph.set_poison_policy(PoisonPolicy::dead_letter("late"));
    let mut spec = EventTimeSpec::count(Window::tumbling(Duration::from_millis(100)));
    if let Some(idle) = idle {
        spec = spec.idle_timeout(Duration::from_millis(idle));
    }
    let emitted: Emitted = Arc::default();
    let out = Arc::clone(&emitted);
    let keyed = graph.input().map(|r| (r.value.unwrap()[0], ()));
    let keyed = if cache { keyed.cache() } else { keyed };
    keyed
        .event_time_window("counts", spec)
        .foreach_batch(move |batch, _| {
            out.lock().unwrap().extend(batch);
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    (graph, emitted)
}

fn two_partitions(p0: &[i64], p1: &[i64]) -> MemoryInput {
    MemoryInput::new()
        .with_timestamped_partition("clicks", 0, p0.iter().map(|&t| (t, [b'a'])))
        .with_timestamped_partition("clicks", 1, p1.iter().map(|&t| (t, [b'b'])))
}

fn starts(emitted: &Emitted) -> Vec<i64> {
    let mut starts: Vec<i64> = emitted.lock().unwrap().drain(..).map(|w| w.start).collect();
    starts.sort();
    starts
}

#[test]
fn a_silent_partition_stalls_windows_without_an_idle_timeout() {
    let (graph, emitted) = counting(None);
    let state = Arc::new(MemoryState::new());
    run_batch(&graph, &state, 0, T0, two_partitions(&[10], &[20])).unwrap();
    for b in 1..6 {
        run_batch(
            &graph,
            &state,
            b,
            T0 + b as i64 * INTERVAL,
            two_partitions(&[b as i64 * 100 + 10], &[]),
        )
        .unwrap();
    }
    assert_eq!(
        starts(&emitted),
        Vec::<i64>::new(),
        "partition 1 holds the watermark at 20"
    );
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_and_is_held_again_on_return() {
    let (graph, emitted) = counting(Some(200));
    let state = Arc::new(MemoryState::new());
    run_batch(&graph, &state, 0, T0, two_partitions(&[10], &[20])).unwrap();
    run_batch(&graph, &state, 1, T0 + 100, two_partitions(&[110], &[])).unwrap();
    assert_eq!(starts(&emitted), Vec::<i64>::new(), "not idle yet");
    // 200 ms of batch time after partition 1's last record: idle.
    run_batch(&graph, &state, 2, T0 + 200, two_partitions(&[210], &[])).unwrap();
    assert_eq!(starts(&emitted), [0, 0, 100]);
    // Partition 1 returns behind the watermark (210): its record is late,
    // and it holds the watermark again at its 250.
    let output = run_batch(
        &graph,
        &state,
        3,
        T0 + 300,
        two_partitions(&[900], &[30, 250]),
    )
    .unwrap();
    assert_eq!(output.late_records.len(), 1);
    assert_eq!(
        (
            output.late_records[0].partition,
            output.late_records[0].count
        ),
        (1, 1)
    );
    assert_eq!(output.dead_letters.len(), 1);
    let letter = &output.dead_letters[0];
    assert_eq!(
        (&*letter.topic, letter.partition, letter.offset),
        ("clicks", 1, 0)
    );
    assert!(
        letter.error.contains("event time 30 ms") && letter.error.contains("watermark 210 ms"),
        "{}",
        letter.error
    );
    assert_eq!(
        starts(&emitted),
        Vec::<i64>::new(),
        "held at 250 by partition 1, not 900"
    );
    run_batch(&graph, &state, 4, T0 + 400, two_partitions(&[1000], &[])).unwrap();
    assert_eq!(
        starts(&emitted),
        Vec::<i64>::new(),
        "still held by partition 1"
    );
    run_batch(&graph, &state, 5, T0 + 500, two_partitions(&[], &[])).unwrap();
    assert_eq!(starts(&emitted), [200, 200, 900], "partition 1 idle again");
}

/// A cached stream keeps each value's record timestamp and coordinates:
/// an event-time window after `cache` sees the same event times,
/// watermarks, late records and dead letters as one without it.
#[test]
fn an_event_time_window_after_cache_reads_the_same_record_timestamps() {
    let batches = [
        two_partitions(&[10], &[20]),
        two_partitions(&[110], &[]),
        two_partitions(&[210], &[]),
        two_partitions(&[900], &[30, 250]),
        two_partitions(&[], &[]),
        two_partitions(&[], &[]),
    ];
    let observe = |cache: bool| {
        let (graph, emitted) = counting_after(Some(200), cache);
        let state = Arc::new(MemoryState::new());
        batches
            .iter()
            .enumerate()
            .map(|(b, input)| {
                let now = T0 + b as i64 * INTERVAL;
                let output = run_batch(&graph, &state, b as u64, now, input.clone()).unwrap();
                let letters: Vec<_> = output
                    .dead_letters
                    .iter()
                    .map(|l| (l.topic.to_string(), l.partition, l.offset, l.error.clone()))
                    .collect();
                (starts(&emitted), output.late_records, letters)
            })
            .collect::<Vec<_>>()
    };
    let cached = observe(true);
    assert_eq!(cached, observe(false));
    let windows: Vec<i64> = cached.iter().flat_map(|(s, _, _)| s.clone()).collect();
    assert_eq!(windows, [0, 0, 100, 200, 200]);
    let letters: Vec<_> = cached.iter().flat_map(|(_, _, l)| l.clone()).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (&*letters[0].0, letters[0].1, letters[0].2),
        ("clicks", 1, 0)
    );
}

#[test]
fn the_record_timestamp_needs_the_source_records() {
    // Before a shuffle: a record without a timestamp is a dead letter.
    let (graph, _) = counting(None);
    let state = Arc::new(MemoryState::new());
    let input = MemoryInput::new().with_partition("clicks", 0, ["a"]);
    let output = run_batch(&graph, &state, 0, T0, input).unwrap();
    assert_eq!(output.dead_letters.len(), 1);
    assert!(output.dead_letters[0].error.contains("no timestamp"));

    // After one, the timestamp is not known: the batch fails saying so.
    let graph = StreamGraph::new();
    graph
        .input()
        .map(|r| (r.value.unwrap()[0], ()))
        .repartition(2)
        .event_time_window(
            "counts",
            EventTimeSpec::count(Window::tumbling(Duration::from_millis(100))),
        )
        .print(1)
        .unwrap();
    let error = run_batch(&graph, &state, 0, T0, two_partitions(&[1], &[2])).unwrap_err();
    assert!(error.to_string().contains("extractor"), "{error}");
}

#[test]
fn a_window_of_nothing_is_refused_before_any_batch() {
    let graph = StreamGraph::new();
    graph
        .input()
        .map(|r| (r.partition, ()))
        .event_time_window("w", EventTimeSpec::count(Window::tumbling(Duration::ZERO)))
        .print(1)
        .unwrap();
    let error = graph.check_states().unwrap_err();
    assert!(
        error.to_string().contains("event_time_window(\"w\")"),
        "{error}"
    );
    assert!(error.to_string().contains("shorter than 1 ms"), "{error}");
}

#[test]
fn sessions_merge_across_batches() {
    let graph = StreamGraph::new();
    let emitted: Emitted = Arc::default();
    let out = Arc::clone(&emitted);
    graph
        .input()
        .map(|r| (r.value.unwrap()[0], ()))
        .event_time_window(
            "sessions",
            EventTimeSpec::count(Window::session(Duration::from_millis(50)))
                .allowed_lateness(Duration::from_millis(200)),
        )
        .foreach_batch(move |batch, _| {
            out.lock().unwrap().extend(batch);
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let state = Arc::new(MemoryState::new());
    let one = |times: &[i64]| {
        MemoryInput::new().with_timestamped_partition(
            "clicks",
            0,
            times.iter().map(|&t| (t, [b'u'])),
        )
    };
    run_batch(&graph, &state, 0, T0, one(&[100, 200])).unwrap();
    run_batch(&graph, &state, 1, T0 + 100, one(&[140, 150])).unwrap(); // bridges both
    assert!(emitted.lock().unwrap().is_empty());
    run_batch(&graph, &state, 2, T0 + 200, one(&[1000])).unwrap();
    let got: Vec<_> = emitted
        .lock()
        .unwrap()
        .iter()
        .map(|w| (w.start, w.end, w.value))
        .collect();
    assert_eq!(got, [(100, 250, 4)]);
}

#[test]
fn a_window_read_by_two_outputs_counts_its_late_records_once() {
    let (graph, emitted) = counting(None);
    // A second output on the same window stream runs the operator twice.
    let again: Emitted = Arc::default();
    let out = Arc::clone(&again);
    let windows = graph
        .input()
        .map(|r| (r.value.unwrap()[0], ()))
        .event_time_window(
            "twice",
            EventTimeSpec::count(Window::tumbling(Duration::from_millis(100))),
        );
    for _ in 0..2 {
        let out = Arc::clone(&out);
        windows
            .foreach_batch(move |batch, _| {
                out.lock().unwrap().extend(batch);
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
    }
    let state = Arc::new(MemoryState::new());
    run_batch(&graph, &state, 0, T0, two_partitions(&[250], &[260])).unwrap();
    let output = run_batch(
        &graph,
        &state,
        1,
        T0 + 100,
        two_partitions(&[5, 6, 300], &[7]),
    )
    .unwrap();
    let late: Vec<_> = output
        .late_records
        .iter()
        .map(|l| (l.window.as_str(), l.partition, l.count))
        .collect();
    assert_eq!(
        late,
        [
            ("counts", 0, 2),
            ("counts", 1, 1),
            ("twice", 0, 2),
            ("twice", 1, 1)
        ]
    );
    let dead: Vec<_> = output
        .dead_letters
        .iter()
        .map(|d| (d.partition, d.offset))
        .collect();
    assert_eq!(dead, [(0, 0), (0, 1), (1, 0)], "one dead letter per record");
    assert!(emitted.lock().unwrap().is_empty() && again.lock().unwrap().is_empty());
}

/// Regression: one record stamped `i64::MAX` got a window that never
/// closed and moved the watermark past every later record, silently. It is
/// a dead letter now, and moves no watermark.
#[test]
fn a_record_stamped_at_the_end_of_time_is_a_dead_letter_and_moves_no_watermark() {
    let (graph, emitted) = counting(None);
    let state = Arc::new(MemoryState::new());
    let input = |times: &[i64]| {
        MemoryInput::new().with_timestamped_partition(
            "clicks",
            0,
            times.iter().map(|&t| (t, [b'a'])),
        )
    };
    let output = run_batch(&graph, &state, 0, T0, input(&[10, i64::MAX])).unwrap();
    assert_eq!(output.dead_letters.len(), 1);
    let letter = &output.dead_letters[0];
    assert_eq!(letter.offset, 1);
    assert!(letter.error.contains("out of range"), "{}", letter.error);
    let output = run_batch(&graph, &state, 1, T0 + 100, input(&[10, i64::MAX, 150])).unwrap();
    assert!(output.late_records.is_empty(), "{:?}", output.late_records);
    assert_eq!(
        starts(&emitted),
        [0],
        "the watermark is 150, not the end of time"
    );
}

/// `max_ahead` refuses an event time too far after the batch time, which
/// then moves no watermark either.
#[test]
fn max_ahead_sets_aside_an_event_time_far_after_the_batch_time() {
    let graph = StreamGraph::new();
    graph.set_poison_policy(PoisonPolicy::dead_letter("bad"));
    let emitted: Emitted = Arc::default();
    let out = Arc::clone(&emitted);
    let spec = EventTimeSpec::count(Window::tumbling(Duration::from_millis(100)))
        .max_ahead(Duration::from_secs(1));
    graph
        .input()
        .map(|r| (r.value.unwrap()[0], ()))
        .event_time_window("counts", spec)
        .foreach_batch(move |batch, _| {
            out.lock().unwrap().extend(batch);
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let state = Arc::new(MemoryState::new());
    let input = |times: &[i64]| {
        MemoryInput::new().with_timestamped_partition(
            "clicks",
            0,
            times.iter().map(|&t| (t, [b'a'])),
        )
    };
    let output = run_batch(
        &graph,
        &state,
        0,
        T0,
        input(&[T0 - 50, T0 + 1_000, T0 + 1_001]),
    )
    .unwrap();
    let refused: Vec<i64> = output.dead_letters.iter().map(|l| l.offset).collect();
    assert_eq!(refused, [2], "{:?}", output.dead_letters);
    assert!(output.dead_letters[0]
        .error
        .contains("max_ahead of 1000 ms"));
    // The watermark is T0 + 1000: the window of T0 - 50 closed, that of
    // T0 + 1000 is open.
    assert_eq!(starts(&emitted), [T0 - 100]);
}
