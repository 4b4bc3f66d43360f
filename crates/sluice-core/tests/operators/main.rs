//! Behaviour of the `DStream` operators, run through `StreamGraph::run_batch`
//! over a `MemoryInput`, on the inline executor and on a small threaded one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use sluice_core::{
    run_task, Batch, BatchInfo, BatchOutput, DStream, Error, Executor, InlineExecutor, InputReader,
    LatestValueSink, MemoryInput, OffsetRange, PoisonPolicy, Result, StreamGraph, TaskFn, Write,
};

// Operator families with tests of their own.
mod event_time;
mod join;
mod table;
mod window;

/// Runs a stage's tasks on three scoped threads at once, each thread taking
/// the next task index, so tasks of one stage really run in parallel.
struct ThreadedExecutor;

impl Executor for ThreadedExecutor {
    fn parallelism(&self) -> usize {
        3
    }

    fn run(&self, stage: &str, tasks: usize, task: TaskFn) -> Result<()> {
        let next = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..self.parallelism() {
                s.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= tasks {
                        break;
                    }
                    if let Err(e) = run_task(&task, index) {
                        failures.lock().unwrap().push((index, e));
                    }
                });
            }
        });
        let mut failures = failures.into_inner().unwrap();
        failures.sort_by_key(|(index, _)| *index);
        match failures.into_iter().next() {
            None => Ok(()),
            Some((index, source)) => Err(Error::Task {
                stage: stage.to_owned(),
                task: index,
                attempts: 1,
                source: Box::new(source),
            }),
        }
    }
}

fn executors() -> [Arc<dyn Executor>; 2] {
    [Arc::new(InlineExecutor), Arc::new(ThreadedExecutor)]
}

/// An input of topic `t` with one partition per element of `partitions`.
fn input<V: Into<Vec<u8>>>(partitions: Vec<Vec<V>>) -> MemoryInput {
    partitions
        .into_iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, values)| {
            input.with_partition("t", p as i32, values)
        })
}

fn info_for(input: &MemoryInput) -> BatchInfo {
    BatchInfo::new(
        7,
        SystemTime::UNIX_EPOCH + Duration::from_secs(60),
        input.full_ranges(),
    )
}

fn run(
    graph: &StreamGraph,
    input: MemoryInput,
    executor: &Arc<dyn Executor>,
) -> Result<BatchOutput> {
    graph.run_batch(info_for(&input), Arc::new(input), Arc::clone(executor))
}

/// Every batch an output saw, in order.
type Seen<T> = Arc<Mutex<Vec<Batch<T>>>>;

/// Registers a `foreach_batch` on `stream` that keeps every batch it sees.
fn collect<T: Send + 'static>(stream: &DStream<T>) -> Seen<T> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    stream
        .foreach_batch(move |batch, _info| {
            sink.lock().unwrap().push(batch);
            Ok::<_, Error>(())
        })
        .unwrap();
    seen
}

/// The partitions of the only batch `seen` holds.
fn only_batch<T: Clone>(seen: &Mutex<Vec<Batch<T>>>) -> Vec<Vec<T>> {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "expected exactly one batch");
    seen[0].partitions().to_vec()
}

fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
    values.sort();
    values
}

fn words(lines: &[&[&str]]) -> MemoryInput {
    input(lines.iter().map(|p| p.to_vec()).collect())
}

#[test]
fn map_flat_map_and_filter_transform_values_within_their_partition() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let lines = graph.input().values_utf8();
        let mapped = collect(&lines.map(|line| line.len()));
        let split =
            collect(&lines.flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>()));
        let long = collect(&lines.filter(|line| line.len() > 3));
        let input = words(&[&["a b", "cccc"], &[], &["dd ee ff"]]);
        run(&graph, input, &executor).unwrap();

        assert_eq!(only_batch(&mapped), [vec![3, 4], vec![], vec![8]]);
        assert_eq!(
            only_batch(&split),
            [vec!["a", "b", "cccc"], vec![], vec!["dd", "ee", "ff"]]
        );
        assert_eq!(only_batch(&long), [vec!["cccc"], vec![], vec!["dd ee ff"]]);
    }
}

#[test]
fn map_partitions_sees_each_partition_whole() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let sizes = collect(&graph.input().map_partitions(|records| {
            let partition = records.first().map(|r| r.partition);
            vec![(partition, records.len())]
        }));
        run(&graph, words(&[&["a", "b"], &["c"], &[]]), &executor).unwrap();
        assert_eq!(
            only_batch(&sizes),
            [vec![(Some(0), 2)], vec![(Some(1), 1)], vec![(None, 0)]]
        );
    }
}

#[test]
fn key_by_and_map_values_keep_records_in_their_source_partition() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let keyed = collect(
            &graph
                .input()
                .key_by(|r| r.partition)
                .map_values(|r| r.offset),
        );
        run(
            &graph,
            words(&[&["a", "b"], &["c"], &["d", "e", "f"]]),
            &executor,
        )
        .unwrap();
        assert_eq!(
            only_batch(&keyed),
            [
                vec![(0, 0), (0, 1)],
                vec![(1, 0)],
                vec![(2, 0), (2, 1), (2, 2)]
            ]
        );
    }
}

/// Keyed input as records whose value is `[key, value]`.
fn keyed_input(partitions: &[Vec<(u8, u8)>]) -> MemoryInput {
    input(
        partitions
            .iter()
            .map(|p| p.iter().map(|&(k, v)| vec![k, v]).collect())
            .collect(),
    )
}

fn sum_by_key(graph: &Arc<StreamGraph>) -> Seen<(u8, i64)> {
    let pairs = graph.input().map(|r| {
        let bytes = r.value.expect("test records have values");
        (bytes[0], i64::from(bytes[1]))
    });
    collect(&pairs.reduce_by_key(|a, b| a + b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reduce_by_key_equals_a_sequential_fold(
        partitions in prop::collection::vec(
            prop::collection::vec((0u8..12, any::<u8>()), 0..40),
            0..6,
        )
    ) {
        let mut expected: HashMap<u8, i64> = HashMap::new();
        for &(key, value) in partitions.iter().flatten() {
            *expected.entry(key).or_default() += i64::from(value);
        }
        let expected = sorted(expected.into_iter().collect::<Vec<_>>());

        for executor in executors() {
            let graph = StreamGraph::new();
            let seen = sum_by_key(&graph);
            run(&graph, keyed_input(&partitions), &executor).unwrap();
            let reduced = only_batch(&seen);
            // One reduce task per executor worker.
            prop_assert_eq!(reduced.len(), executor.parallelism());
            prop_assert_eq!(sorted(reduced.concat()), expected.clone());
        }
    }
}

#[test]
fn reduce_by_key_puts_each_key_in_exactly_one_reduce_partition() {
    let graph = StreamGraph::new();
    let seen = sum_by_key(&graph);
    let partitions: Vec<Vec<(u8, u8)>> = (0..4)
        .map(|p| (0..50).map(|i| ((i % 20) as u8, p)).collect())
        .collect();
    run(&graph, keyed_input(&partitions), &executors()[1]).unwrap();
    let reduced = only_batch(&seen);
    assert_eq!(reduced.len(), 3);
    let keys: Vec<u8> = sorted(reduced.concat().into_iter().map(|(k, _)| k).collect());
    assert_eq!(keys, (0..20).collect::<Vec<u8>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn count_keys_equals_flat_map_then_count_by_value(
        partitions in prop::collection::vec(
            prop::collection::vec("( ?[a-d]{0,2} ?){0,4}", 0..20),
            0..5,
        )
    ) {
        for executor in executors() {
            let graph = StreamGraph::new();
            let lines = graph.input().values_utf8();
            let borrowed = collect(
                &lines.count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count)),
            );
            let owned = collect(
                &lines
                    .flat_map(|line| {
                        line.split_ascii_whitespace()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .count_by_value(),
            );
            let input = MemoryInput::new();
            let input = partitions.iter().enumerate().fold(input, |input, (p, lines)| {
                input.with_partition("t", p as i32, lines.iter().map(String::as_bytes))
            });
            run(&graph, input, &executor).unwrap();
            let borrowed = only_batch(&borrowed);
            prop_assert_eq!(borrowed.len(), executor.parallelism());
            prop_assert_eq!(sorted(borrowed.concat()), sorted(only_batch(&owned).concat()));
        }
    }
}

/// What a batch of [`counts_by`] gave: the counts, the rejected records,
/// or the batch's error.
type CountsOrError = std::result::Result<(Vec<(String, i64)>, Vec<(i32, i64, String)>), String>;

/// How the lines reach the operator that counts them.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// Lent: `count_keys` or `count` look at what `filter`, `values_utf8`
    /// and the input lend.
    Lent,
    /// Taken from `values_utf8` over the input, which makes each line's
    /// `String` from the records the input lends a chunk at a time.
    Chunked,
    /// Taken from `values_utf8` over a `map` of the records: each record
    /// read, handed over, and turned into its `String`.
    Taken,
}

const PATHS: [Path; 3] = [Path::Lent, Path::Chunked, Path::Taken];

/// The lines that do not start with `c`, reached by `path` (for
/// `Path::Lent`, the stream `count_keys` and `count` lend from).
fn lines_by(graph: &Arc<StreamGraph>, path: Path) -> DStream<String> {
    let records = match path {
        Path::Lent | Path::Chunked => graph.input(),
        Path::Taken => graph.input().map(|record| record),
    };
    records.values_utf8().filter(|line| !line.starts_with('c'))
}

/// Counts the words of the lines that do not start with `c`, by
/// `count_keys` (`Path::Lent`) or by `flat_map` + `count_by_value`; with a
/// second output beside it when `beside`, so the input is read once and
/// shared.
fn counts_by(
    partitions: &[Vec<Vec<u8>>],
    dead_letters: bool,
    path: Path,
    beside: bool,
    executor: &Arc<dyn Executor>,
) -> CountsOrError {
    let graph = StreamGraph::new();
    if dead_letters {
        graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
    }
    let lines = lines_by(&graph, path);
    let counts = match path {
        Path::Lent => {
            lines.count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        }
        Path::Chunked | Path::Taken => lines
            .flat_map(|line| {
                line.split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .count_by_value(),
    };
    let counts = collect(&counts);
    if beside {
        collect(&graph.input());
    }
    let input = partitions
        .iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, lines)| {
            input.with_partition("t", p as i32, lines.iter().cloned())
        });
    let output = run(&graph, input, executor).map_err(|e| e.to_string())?;
    let letters = output
        .dead_letters
        .iter()
        .map(|l| {
            (
                l.partition,
                l.offset,
                format!("{}: {}", l.operator, l.error),
            )
        })
        .collect();
    Ok((sorted(only_batch(&counts).concat()), sorted(letters)))
}

/// What `count` gives for the lines that do not start with `c`, reached
/// by `path`: lent, or through a `map` that takes each value.
fn count_by(
    partitions: &[Vec<Vec<u8>>],
    dead_letters: bool,
    path: Path,
    executor: &Arc<dyn Executor>,
) -> std::result::Result<(i64, Vec<(i32, i64)>), String> {
    let graph = StreamGraph::new();
    if dead_letters {
        graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
    }
    let lines = lines_by(&graph, path);
    let lines = match path {
        Path::Lent => lines,
        Path::Chunked | Path::Taken => lines.map(|line| line),
    };
    let count = collect(&lines.count());
    let input = partitions
        .iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, lines)| {
            input.with_partition("t", p as i32, lines.iter().cloned())
        });
    let output = run(&graph, input, executor).map_err(|e| e.to_string())?;
    let letters = output
        .dead_letters
        .iter()
        .map(|l| (l.partition, l.offset))
        .collect();
    Ok((only_batch(&count).concat().iter().sum(), letters))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// `count_keys` and `count` look at values their parents lend
    /// (`values_utf8` a reused string, `filter` the values it passes, the
    /// input the records it keeps), and `values_utf8` over the input makes
    /// its strings from records lent a chunk at a time: the counts, the
    /// records set aside, and a failed batch's error must be those of
    /// operators that take each record, whether the input is read for them
    /// alone or shared.
    #[test]
    fn lent_and_chunked_values_give_what_taken_values_give(
        partitions in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    4 => "( ?[a-d]{0,2} ?){0,4}".prop_map(String::into_bytes),
                    1 => Just(vec![b'a', 0xff, b' ', b'b']),
                ],
                0..20,
            ),
            0..5,
        ),
        dead_letters: bool,
        beside: bool,
    ) {
        for executor in executors() {
            let taken = counts_by(&partitions, dead_letters, Path::Taken, beside, &executor);
            let total = count_by(&partitions, dead_letters, Path::Taken, &executor);
            for path in [Path::Lent, Path::Chunked] {
                let counts = counts_by(&partitions, dead_letters, path, beside, &executor);
                prop_assert_eq!(&counts, &taken, "{:?}", path);
                let count = count_by(&partitions, dead_letters, path, &executor);
                prop_assert_eq!(&count, &total, "{:?}", path);
            }
        }
    }
}

#[test]
fn count_by_value_counts_each_distinct_value() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let counts = collect(&graph.input().values_utf8().count_by_value());
        run(
            &graph,
            words(&[&["x", "y"], &["x"], &["x", "z"]]),
            &executor,
        )
        .unwrap();
        assert_eq!(
            sorted(only_batch(&counts).concat()),
            [
                ("x".to_owned(), 3),
                ("y".to_owned(), 1),
                ("z".to_owned(), 1)
            ]
        );
    }
}

#[test]
fn count_yields_one_value_the_total_number_of_values() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let count = collect(&graph.input().flat_map(|r| [r.clone(), r]).count());
        run(&graph, words(&[&["a", "b"], &[], &["c"]]), &executor).unwrap();
        assert_eq!(only_batch(&count), [vec![6]]);
    }
}

#[test]
fn count_of_a_batch_without_ranges_is_zero() {
    let graph = StreamGraph::new();
    let count = collect(&graph.input().count());
    run(&graph, MemoryInput::new(), &executors()[0]).unwrap();
    assert_eq!(only_batch(&count), [vec![0]]);
}

#[test]
fn union_lists_partitions_of_left_then_right() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let offsets = graph.input().map(|r| r.offset);
        let left = offsets.filter(|o| o % 2 == 0);
        let right = offsets.map(|o| o + 100);
        let union = collect(&left.union(&right));
        run(&graph, words(&[&["a", "b", "c"], &["d"]]), &executor).unwrap();
        assert_eq!(
            only_batch(&union),
            [vec![0, 2], vec![0], vec![100, 101, 102], vec![100]]
        );
    }
}

#[test]
fn repartition_spreads_the_same_values_over_n_partitions() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let spread = collect(
            &graph
                .input()
                .map(|r| (r.partition, r.offset))
                .repartition(5),
        );
        let input = words(&[&["a"; 7], &[], &["b"; 4]]);
        run(&graph, input, &executor).unwrap();
        let partitions = only_batch(&spread);
        assert_eq!(partitions.len(), 5);
        assert!(partitions.iter().all(|p| (2..=3).contains(&p.len())));
        let expected: Vec<(i32, i64)> = (0..7)
            .map(|o| (0, o))
            .chain((0..4).map(|o| (2, o)))
            .collect();
        assert_eq!(sorted(partitions.concat()), expected);
    }
}

#[test]
fn transform_sees_the_whole_batch_and_its_info() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let seen = collect(&graph.input().transform(|batch, info| {
            let summary = (
                info.id,
                info.time_ms(),
                info.ranges.len(),
                batch.partitions().iter().map(Vec::len).collect::<Vec<_>>(),
            );
            Batch::new(vec![vec![summary]])
        }));
        run(&graph, words(&[&["a", "b"], &["c"]]), &executor).unwrap();
        assert_eq!(only_batch(&seen), [vec![(7, 60_000, 2, vec![2, 1])]]);
    }
}

#[test]
fn try_map_error_fails_the_batch_naming_operator_and_cause_with_no_writes() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let lines = graph.input().values_utf8();
        // A sink that succeeds before the failing output: its writes must
        // not come out of the failed batch.
        lines.count_by_value().save_counts("words").unwrap();
        lines
            .try_map(|line| line.parse::<i64>())
            .foreach_batch(|_, _| Ok::<_, Error>(()))
            .unwrap();
        let result = run(&graph, words(&[&["1"], &["2", "two"]]), &executor);
        let message = result.expect_err("batch must fail").to_string();
        assert!(message.contains("try_map"), "{message}");
        assert!(message.contains("invalid digit"), "{message}");
    }
}

#[test]
fn values_utf8_on_invalid_bytes_names_topic_partition_and_offset() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.input().values_utf8().count().print(1).unwrap();
        let input = input(vec![
            vec![b"ok".to_vec()],
            vec![b"ok".to_vec(), vec![0xff, 0xfe]],
        ]);
        let message = run(&graph, input, &executor).unwrap_err().to_string();
        assert!(message.contains("t-1@1"), "{message}");
        assert!(message.contains("not valid UTF-8"), "{message}");
    }
}

#[test]
fn panic_in_an_operator_closure_fails_the_batch_with_its_message() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph
            .input()
            .map(|r| {
                assert!(r.offset < 1, "boom at offset {}", r.offset);
                r
            })
            .count()
            .print(1)
            .unwrap();
        let message = run(&graph, words(&[&["a", "b"]]), &executor)
            .unwrap_err()
            .to_string();
        assert!(message.contains("boom at offset 1"), "{message}");
    }
}

#[test]
fn panic_in_foreach_batch_fails_the_batch_with_its_message() {
    let graph = StreamGraph::new();
    graph
        .input()
        .foreach_batch(|_, _| -> Result<(), Error> { panic!("driver-side boom") })
        .unwrap();
    let message = run(&graph, words(&[&["a"]]), &executors()[0])
        .unwrap_err()
        .to_string();
    assert!(message.contains("driver-side boom"), "{message}");
}

fn counter_adds(output: &BatchOutput) -> Vec<(String, Vec<u8>, i64)> {
    sorted(
        output
            .writes
            .iter()
            .map(|w| match w {
                Write::Add { family, key, delta } => (family.clone(), key.clone(), *delta),
                other => panic!("expected an add, got {other:?}"),
            })
            .collect(),
    )
}

#[test]
fn save_counts_stages_one_add_per_distinct_key() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph
            .input()
            .values_utf8()
            .count_by_value()
            .save_counts("words")
            .unwrap();
        assert_eq!(graph.families(), ["words"]);
        let output = run(&graph, words(&[&["a", "b"], &["a"], &["a"]]), &executor).unwrap();
        assert_eq!(
            counter_adds(&output),
            [
                ("words".to_owned(), b"a".to_vec(), 3),
                ("words".to_owned(), b"b".to_vec(), 1)
            ]
        );
    }
}

#[test]
fn latest_value_sink_stages_one_put_per_pair() {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .map(|v| (format!("k-{v}"), v))
        .checkpoint_sink(LatestValueSink::new("latest"))
        .unwrap();
    let output = run(&graph, words(&[&["a"], &["b"]]), &executors()[0]).unwrap();
    let puts: Vec<Write> = output.writes.into_iter().collect();
    assert_eq!(
        puts,
        [
            Write::Put {
                family: "latest".into(),
                key: b"k-a".to_vec(),
                value: b"a".to_vec()
            },
            Write::Put {
                family: "latest".into(),
                key: b"k-b".to_vec(),
                value: b"b".to_vec()
            },
        ]
    );
}

#[test]
fn records_read_counts_each_range_in_order() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.input().filter(|_| false).count().print(1).unwrap();
        let output = run(
            &graph,
            words(&[&["a", "b"], &[], &["c", "d", "e"]]),
            &executor,
        )
        .unwrap();
        assert_eq!(output.records_read, [2, 0, 3]);
        assert!(output.writes.is_empty());
    }
}

#[test]
fn a_batch_reports_the_smallest_and_largest_timestamps_of_the_records_it_read() {
    // Two outputs read every chunk: the figures are those of one read.
    // Partition 0 spans two read chunks: its smallest timestamp is in the
    // second, its largest in the first; records without one are left out.
    let first: Vec<(i64, String)> = (0..5_000).map(|i| (20_000 - i, i.to_string())).collect();
    let input = MemoryInput::new()
        .with_timestamped_partition("t", 0, first)
        .with_timestamped_partition("t", 1, [(16_000, "a"), (17_000, "b")])
        .with_partition("t", 2, ["untimed"]);
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.input().count().print(1).unwrap();
        graph.input().filter(|_| false).count().print(1).unwrap();
        let output = run(&graph, input.clone(), &executor).unwrap();
        assert_eq!(output.records_read, [5_000, 2, 1]);
        assert_eq!(output.min_timestamp, Some(15_001));
        assert_eq!(output.max_timestamp, Some(20_000));
    }
    let graph = StreamGraph::new();
    graph.input().count().print(1).unwrap();
    let untimed = run(&graph, words(&[&["a"]]), &executors()[0]).unwrap();
    assert_eq!((untimed.min_timestamp, untimed.max_timestamp), (None, None));
}

#[test]
fn a_range_longer_than_a_read_chunk_arrives_whole_and_in_order() {
    // Source tasks read a range a few thousand offsets at a time.
    let values: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    for executor in executors() {
        let graph = StreamGraph::new();
        let seen = collect(&graph.input().values_utf8());
        let output = run(
            &graph,
            input(vec![values.clone(), vec!["x".into()]]),
            &executor,
        )
        .unwrap();
        assert_eq!(output.records_read, [10_001, 1]);
        assert_eq!(only_batch(&seen), [values.clone(), vec!["x".to_owned()]]);
    }
}

/// A memory input whose reads fail from offset `fail_from` on: a broker
/// that goes away half-way through a range.
struct FailingFrom {
    input: MemoryInput,
    fail_from: i64,
    reads: AtomicUsize,
}

impl InputReader for FailingFrom {
    fn read(&self, range: &OffsetRange) -> Result<Vec<sluice_core::Record>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if range.until > self.fail_from {
            return Err(Error::Read {
                range: range.clone(),
                source: "the broker went away".into(),
            });
        }
        self.input.read(range)
    }
}

/// The jobs a failed read must fail: values made from records lent a
/// chunk at a time (`count_by_value` over `values_utf8`), made from
/// records taken (over a `map`), looked at (`count_keys`, `count`), and the
/// input read by two outputs.
fn jobs_over_lines() -> Vec<(&'static str, Arc<StreamGraph>)> {
    let chunked = StreamGraph::new();
    let lines = chunked.input().values_utf8();
    lines.count_by_value().save_counts("words").unwrap();
    let taken = StreamGraph::new();
    let lines = taken.input().map(|record| record).values_utf8();
    lines.count_by_value().save_counts("words").unwrap();
    let lent = StreamGraph::new();
    let lines = lent.input().values_utf8();
    lines
        .count_keys(|line: &String, count| count(line.as_str()))
        .save_counts("words")
        .unwrap();
    let counted = StreamGraph::new();
    collect(&counted.input().values_utf8().count());
    let shared = StreamGraph::new();
    collect(&shared.input().values_utf8().count());
    collect(&shared.input().count());
    vec![
        ("count_by_value", chunked),
        ("count_by_value over mapped records", taken),
        ("count_keys", lent),
        ("count", counted),
        ("two counts", shared),
    ]
}

#[test]
fn a_read_failing_half_way_through_a_range_fails_the_batch_naming_the_unread_offsets() {
    for (job, graph) in jobs_over_lines() {
        let values: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        let input = input(vec![values]);
        let info = info_for(&input);
        let reader = Arc::new(FailingFrom {
            input,
            fail_from: 9_000,
            reads: AtomicUsize::new(0),
        });
        let err = graph
            .run_batch(
                info,
                Arc::clone(&reader) as Arc<dyn InputReader>,
                Arc::new(InlineExecutor),
            )
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("the broker went away"), "{job}: {text}");
        // The records before the failure were read, in chunks, and then
        // dropped with the batch: nothing of it is staged.
        assert!(reader.reads.load(Ordering::Relaxed) > 1, "{job}");
        let Error::Task { source, .. } = err else {
            panic!("{job}: expected a task error, got {err:?}");
        };
        let Error::Read { range, .. } = *source else {
            panic!("{job}: expected a read error, got {source:?}");
        };
        assert!(range.from <= 9_000 && range.until > 9_000, "{job}: {range}");
    }
}

/// A memory input that lends its records one at a time.
struct LendingOneByOne(MemoryInput);

impl InputReader for LendingOneByOne {
    fn read(&self, range: &OffsetRange) -> Result<Vec<sluice_core::Record>> {
        self.0.read(range)
    }

    fn lend(
        &self,
        range: &OffsetRange,
        each: &mut dyn FnMut(&[sluice_core::Record]),
    ) -> Result<()> {
        for record in self.read(range)? {
            each(std::slice::from_ref(&record));
        }
        Ok(())
    }
}

#[test]
fn a_rejected_record_stops_a_reader_that_lends_record_by_record() {
    for path in [Path::Lent, Path::Chunked] {
        let mut values: Vec<Vec<u8>> = (0..10_000).map(|i| i.to_string().into_bytes()).collect();
        values[1] = vec![0xff];
        let input = input(vec![values]);
        let info = info_for(&input);
        let graph = StreamGraph::new();
        let looked_at = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&looked_at);
        let lines = lines_by(&graph, path);
        match path {
            Path::Lent => lines.count_keys(move |line: &String, count| {
                seen.fetch_add(1, Ordering::Relaxed);
                count(line.as_str())
            }),
            Path::Chunked | Path::Taken => lines
                .map(move |line| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    line
                })
                .count_by_value(),
        }
        .save_counts("words")
        .unwrap();
        let reader = Arc::new(LendingOneByOne(input));
        let err = graph
            .run_batch(info, reader, Arc::new(InlineExecutor))
            .unwrap_err();
        assert!(format!("{err:?}").contains("t-0@1"), "{path:?}: {err:?}");
        // The line before the bad one, and nothing after it.
        assert_eq!(looked_at.load(Ordering::Relaxed), 1, "{path:?}");
    }
}

/// What a job parsing each line of `partitions` as a number saw: the
/// numbers of each partition, the dead letters, records read and
/// timestamps, or the batch's error.
type Parsed = std::result::Result<
    (
        Vec<Vec<i64>>,
        Vec<(i32, i64, &'static str, String)>,
        Vec<u64>,
        Option<i64>,
        Option<i64>,
    ),
    String,
>;

/// Parses each line of `partitions` (timestamped) as a number, the lines
/// reached by `path` (`Chunked` or `Taken`), with a `cache()` between and a
/// second output on the input when asked.
fn parsed_by(
    partitions: &[Vec<(i64, Vec<u8>)>],
    path: Path,
    dead_letters: bool,
    beside: bool,
    cache: bool,
    executor: &Arc<dyn Executor>,
) -> Parsed {
    let input = partitions
        .iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, records)| {
            input.with_timestamped_partition("t", p as i32, records.iter().cloned())
        });
    let graph = StreamGraph::new();
    if dead_letters {
        graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
    }
    let mut lines = lines_by(&graph, path);
    if cache {
        lines = lines.cache();
    }
    let numbers = collect(&lines.try_map(|line: String| line.parse::<i64>()));
    if beside {
        collect(&graph.input());
    }
    let output = run(&graph, input, executor).map_err(|e| format!("{e:?}"))?;
    let letters = output
        .dead_letters
        .iter()
        .map(|l| (l.partition, l.offset, l.operator, l.error.clone()))
        .collect();
    Ok((
        only_batch(&numbers),
        letters,
        output.records_read,
        output.min_timestamp,
        output.max_timestamp,
    ))
}

/// Two partitions of `len` numbered lines, with `size` bytes each (padded
/// with leading zeros), newest first; the lines at `not_numbers` are
/// words, at `not_utf8` invalid UTF-8.
fn numbered_lines(
    len: usize,
    size: usize,
    not_numbers: &[usize],
    not_utf8: &[usize],
) -> Vec<Vec<(i64, Vec<u8>)>> {
    (0..2)
        .map(|p| {
            (0..len)
                .map(|i| {
                    let value = if not_utf8.contains(&i) {
                        vec![0xff; size]
                    } else if not_numbers.contains(&i) {
                        format!("{:x>size$}", format!("n{i}")).into_bytes()
                    } else {
                        format!("{:0>size$}", i).into_bytes()
                    };
                    (100_000 - i as i64 + p, value)
                })
                .collect()
        })
        .collect()
}

#[test]
fn values_utf8_from_lent_chunks_names_the_records_operators_after_it_reject() {
    // Rejections after `values_utf8` at the edges of the 4096-offset chunks.
    let partitions = numbered_lines(9_000, 4, &[7, 4095, 4096, 8191], &[5, 4097, 8000]);
    for executor in executors() {
        for dead_letters in [false, true] {
            for beside in [false, true] {
                for cache in [false, true] {
                    let case =
                        format!("dead letters {dead_letters}, beside {beside}, cache {cache}");
                    let chunked = parsed_by(
                        &partitions,
                        Path::Chunked,
                        dead_letters,
                        beside,
                        cache,
                        &executor,
                    );
                    let taken = parsed_by(
                        &partitions,
                        Path::Taken,
                        dead_letters,
                        beside,
                        cache,
                        &executor,
                    );
                    assert_eq!(chunked, taken, "{case}");
                    if dead_letters {
                        assert_eq!(chunked.unwrap().1.len(), 2 * 7, "{case}");
                    }
                }
            }
        }
    }
}

#[test]
fn values_past_a_megabyte_of_a_chunk_are_made_into_text_as_they_are_handed_on() {
    // 600-byte lines: a 4096-offset chunk holds 2.4 MB of them, so its
    // lines past the first MiB wait as records; bad lines on both sides.
    let partitions = numbered_lines(5_000, 600, &[100, 3_000], &[200, 3_500, 4_500]);
    for dead_letters in [false, true] {
        let chunked = parsed_by(
            &partitions,
            Path::Chunked,
            dead_letters,
            false,
            false,
            &executors()[1],
        );
        let taken = parsed_by(
            &partitions,
            Path::Taken,
            dead_letters,
            false,
            false,
            &executors()[1],
        );
        assert_eq!(chunked, taken, "dead letters {dead_letters}");
        if dead_letters {
            let (numbers, letters, ..) = chunked.unwrap();
            assert_eq!(numbers.concat().len(), 2 * (5_000 - 5));
            assert_eq!(letters.len(), 2 * 5);
        }
    }
}

#[test]
fn lent_chunked_and_taken_reads_count_the_same_records_and_timestamps_across_chunks() {
    let partitions: Vec<Vec<(i64, Vec<u8>)>> = (0..2)
        .map(|p| {
            (0..9_000)
                .map(|i| {
                    let value = if i % 4_000 == 3 {
                        vec![0xff]
                    } else {
                        format!("w{}", i % 7).into_bytes()
                    };
                    (1_000 + i * 3 + p, value)
                })
                .collect()
        })
        .collect();
    let outputs: Vec<_> = PATHS
        .into_iter()
        .map(|path| {
            let input =
                partitions
                    .iter()
                    .enumerate()
                    .fold(MemoryInput::new(), |input, (p, records)| {
                        input.with_timestamped_partition("t", p as i32, records.iter().cloned())
                    });
            let graph = StreamGraph::new();
            graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
            let lines = lines_by(&graph, path);
            let lines = match path {
                Path::Lent => lines,
                Path::Chunked | Path::Taken => lines.map(|line| line),
            };
            let counts = collect(&lines.count_keys(|line: &String, count| count(line.as_str())));
            let output = run(&graph, input, &executors()[1]).unwrap();
            let letters: Vec<_> = output
                .dead_letters
                .iter()
                .map(|l| (l.partition, l.offset))
                .collect();
            (
                sorted(only_batch(&counts).concat()),
                sorted(letters),
                output.records_read,
                output.min_timestamp,
                output.max_timestamp,
            )
        })
        .collect();
    assert_eq!(outputs[0], outputs[2], "lent");
    assert_eq!(outputs[1], outputs[2], "chunked");
    let (counts, letters, records_read, min, max) = &outputs[0];
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<i64>(),
        2 * 9_000 - 2 * 3
    );
    assert_eq!(letters.len(), 2 * 3);
    assert_eq!(records_read, &[9_000, 9_000]);
    assert_eq!((*min, *max), (Some(1_000), Some(1_000 + 8_999 * 3 + 1)));
}

#[test]
fn a_graph_run_twice_keeps_no_state_between_batches() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let words_stream = graph.input().values_utf8();
        words_stream.count_by_value().save_counts("words").unwrap();
        let counts = collect(&words_stream.count());

        let first = run(&graph, words(&[&["a", "a"], &["b"]]), &executor).unwrap();
        let second = run(&graph, words(&[&["a"]]), &executor).unwrap();

        assert_eq!(first.records_read, [2, 1]);
        assert_eq!(second.records_read, [1]);
        assert_eq!(
            counter_adds(&second),
            [("words".to_owned(), b"a".to_vec(), 1)]
        );
        let counts = counts.lock().unwrap();
        assert_eq!(counts[0].partitions(), [vec![3]]);
        assert_eq!(counts[1].partitions(), [vec![1]]);
    }
}

#[test]
fn a_failed_batch_leaves_nothing_for_the_next_one() {
    let graph = StreamGraph::new();
    let lines = graph.input().values_utf8();
    lines.count_by_value().save_counts("words").unwrap();
    lines
        .try_map(|line| line.parse::<i64>())
        .count()
        .print(1)
        .unwrap();
    let executor = &executors()[1];
    run(&graph, words(&[&["1", "x"]]), executor).unwrap_err();
    let output = run(&graph, words(&[&["2"]]), executor).unwrap();
    assert_eq!(
        counter_adds(&output),
        [("words".to_owned(), b"2".to_vec(), 1)]
    );
}

#[test]
fn a_shuffled_stream_feeds_two_outputs_in_one_batch() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let counts = graph.input().values_utf8().count_by_value();
        let seen = collect(&counts);
        counts.save_counts("words").unwrap();
        let output = run(&graph, words(&[&["a", "b"], &["a"]]), &executor).unwrap();
        assert_eq!(
            sorted(only_batch(&seen).concat()),
            [("a".to_owned(), 2), ("b".to_owned(), 1)]
        );
        assert_eq!(counter_adds(&output).len(), 2);
    }
}

#[test]
fn both_sides_of_a_union_may_read_one_shuffled_stream() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let counts = graph.input().values_utf8().count_by_value();
        let union = collect(
            &counts
                .filter(|(_, n)| *n > 1)
                .union(&counts.filter(|(_, n)| *n == 1)),
        );
        run(&graph, words(&[&["a", "b"], &["a"]]), &executor).unwrap();
        assert_eq!(
            sorted(only_batch(&union).concat()),
            [("a".to_owned(), 2), ("b".to_owned(), 1)]
        );
    }
}

#[test]
fn transform_read_twice_must_split_the_batch_the_same_way() {
    let graph = StreamGraph::new();
    let calls = AtomicUsize::new(0);
    let split = graph.input().transform(move |batch, _| {
        let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
        Batch::new(vec![batch.into_iter().collect(); n])
    });
    split.count().print(1).unwrap();
    split.count().print(1).unwrap();
    let message = run(&graph, words(&[&["a"]]), &executors()[0])
        .unwrap_err()
        .to_string();
    assert!(message.contains("deterministic"), "{message}");
}

#[test]
fn panic_in_transform_fails_the_batch_with_its_message() {
    let graph = StreamGraph::new();
    let _ = collect(
        &graph
            .input()
            .transform(|_, _| -> Batch<u8> { panic!("transform boom") }),
    );
    let message = run(&graph, words(&[&["a"]]), &executors()[0])
        .unwrap_err()
        .to_string();
    assert!(message.contains("transform boom"), "{message}");
}

#[test]
fn print_of_a_batch_longer_than_n_does_not_fail() {
    let graph = StreamGraph::new();
    graph.input().values_utf8().print(2).unwrap();
    let output = run(&graph, words(&[&["a", "b", "c"]]), &executors()[0]).unwrap();
    assert_eq!(output.records_read, [3]);
}

/// A job whose `try_map` rejects values starting with "bad".
fn rejecting(graph: &Arc<StreamGraph>) -> DStream<String> {
    graph.input().values_utf8().try_map(|line: String| {
        if line.starts_with("bad") {
            Err(format!("cannot parse '{line}'"))
        } else {
            Ok(line)
        }
    })
}

#[test]
fn by_default_a_rejected_record_fails_the_batch_naming_it() {
    for executor in executors() {
        let graph = StreamGraph::new();
        collect(&rejecting(&graph));
        let err = run(&graph, words(&[&["ok"], &["ok", "bad one"]]), &executor).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("record t-1@1") && message.contains("cannot parse 'bad one'"),
            "{message}"
        );
    }
}

#[test]
fn dead_letters_name_each_rejected_record_once_however_many_outputs_meet_it() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
        assert!(graph.families().contains(&"dead".to_owned()));
        let parsed = rejecting(&graph);
        let first = collect(&parsed);
        let second = collect(&parsed.map(|line| line.len()));
        let output = run(
            &graph,
            words(&[&["bad a", "ok"], &["ok", "ok", "bad b"]]),
            &executor,
        )
        .unwrap();

        assert_eq!(only_batch(&first), [vec!["ok"], vec!["ok", "ok"]]);
        assert_eq!(only_batch(&second), [vec![2], vec![2, 2]]);
        let letters: Vec<_> = output
            .dead_letters
            .iter()
            .map(|l| (l.topic.to_string(), l.partition, l.offset, l.error.clone()))
            .collect();
        assert_eq!(
            letters,
            [
                ("t".into(), 0, 0, "cannot parse 'bad a'".into()),
                ("t".into(), 1, 2, "cannot parse 'bad b'".into())
            ]
        );
    }
}

#[test]
fn a_rejection_that_follows_no_single_record_fails_even_with_dead_letters() {
    let graph = StreamGraph::new();
    graph.set_poison_policy(PoisonPolicy::dead_letter("dead"));
    let regrouped = graph
        .input()
        .values_utf8()
        .map_partitions(|lines| vec![lines.concat()])
        .try_map(|all: String| {
            if all.contains("bad") {
                Err("a bad line somewhere")
            } else {
                Ok(all)
            }
        });
    collect(&regrouped);
    let inline: Arc<dyn Executor> = Arc::new(InlineExecutor);
    let err = run(&graph, words(&[&["ok", "bad"]]), &inline).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("a bad line somewhere") && !message.contains("record t-"),
        "{message}"
    );
}

#[test]
fn outputs_registered_after_the_graph_is_sealed_are_refused_naming_them() {
    let graph = StreamGraph::new();
    let lines = graph.input().values_utf8();
    lines.count_by_value().save_counts("words").unwrap();
    graph.seal();
    let late = [
        (
            "foreach_batch",
            lines.foreach_batch(|_, _| Ok::<_, Error>(())),
        ),
        ("print", lines.print(1)),
        (
            "sink to \"latest\"",
            lines
                .map(|v| (v.clone(), v))
                .checkpoint_sink(LatestValueSink::new("latest")),
        ),
        (
            "save_counts(\"late_words\")",
            lines.count_by_value().save_counts("late_words"),
        ),
    ];
    for (name, result) in late {
        match result {
            Err(Error::RegisteredAfterStart { output }) => assert_eq!(output, name),
            other => panic!("{name} after the seal: expected a refusal, got {other:?}"),
        }
    }
    // Nothing of the refused outputs joined the graph: the batch runs the
    // one output registered before the seal, and no family was added.
    assert_eq!(graph.output_count(), 1);
    assert_eq!(graph.families(), ["words"]);
    let output = run(&graph, words(&[&["a", "b"]]), &executors()[0]).unwrap();
    assert_eq!(output.writes.len(), 2);
}

#[test]
fn shuffle_partitions_fix_which_keys_each_reduce_partition_holds_whatever_the_executor() {
    let partitions: Vec<Vec<(u8, u8)>> = (0..4)
        .map(|p| (0..50).map(|i| ((i % 20) as u8, p)).collect())
        .collect();
    let mut seen_by_executor = Vec::new();
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.set_shuffle_partitions(std::num::NonZeroUsize::new(5).unwrap());
        let seen = sum_by_key(&graph);
        run(&graph, keyed_input(&partitions), &executor).unwrap();
        let keys: Vec<Vec<u8>> = only_batch(&seen)
            .into_iter()
            .map(|part| sorted(part.into_iter().map(|(k, _)| k).collect()))
            .collect();
        assert_eq!(keys.len(), 5, "parallelism {}", executor.parallelism());
        seen_by_executor.push(keys);
    }
    assert_eq!(
        seen_by_executor[0], seen_by_executor[1],
        "one executor runs 1 task at a time, the other 3"
    );
}

/// Counts the reads that reach the input.
struct CountingInput {
    input: MemoryInput,
    reads: AtomicUsize,
}

impl InputReader for CountingInput {
    fn read(&self, range: &OffsetRange) -> Result<Vec<sluice_core::Record>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.input.read(range)
    }
}

/// With no room to keep the input for later outputs, each output reads it
/// itself, and every output still sees all of it.
#[test]
fn outputs_read_the_input_again_once_the_shared_input_bytes_are_used_up() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.set_shared_input_bytes(0);
        let lines = graph.input().values_utf8();
        let counted = collect(&lines.count());
        let upper = collect(&lines.map(|l| l.to_uppercase()));
        let input = words(&[&["a b", "c"], &["d"]]);
        let info = info_for(&input);
        let ranges = info.ranges.len();
        let counting = Arc::new(CountingInput {
            input,
            reads: AtomicUsize::new(0),
        });
        let output = graph
            .run_batch(info, counting.clone(), Arc::clone(&executor))
            .unwrap();
        assert_eq!(counting.reads.load(Ordering::Relaxed), 2 * ranges);
        assert_eq!(output.records_read, [2, 1]);
        assert_eq!(output.records_fetched, 2 * 3, "each output fetched all");
        assert_eq!(only_batch(&counted).concat().iter().sum::<i64>(), 3);
        assert_eq!(
            sorted(only_batch(&upper).concat()),
            ["A B", "C", "D"].map(String::from)
        );
    }
}

#[test]
fn an_input_used_by_three_outputs_is_read_once_per_batch() {
    for executor in executors() {
        let graph = StreamGraph::new();
        let lines = graph.input().values_utf8();
        let counted = collect(&lines.count());
        let upper = collect(&lines.map(|l| l.to_uppercase()));
        let records = collect(&graph.input());
        let input = words(&[&["a b", "c"], &["d"]]);
        let info = info_for(&input);
        let ranges = info.ranges.len();
        let counting = Arc::new(CountingInput {
            input,
            reads: AtomicUsize::new(0),
        });
        let output = graph
            .run_batch(info, counting.clone(), Arc::clone(&executor))
            .unwrap();
        assert_eq!(counting.reads.load(Ordering::Relaxed), ranges);
        assert_eq!(output.records_read, [2, 1]);
        assert_eq!(output.records_fetched, 3);
        assert_eq!(only_batch(&counted).concat().iter().sum::<i64>(), 3);
        assert_eq!(
            sorted(only_batch(&upper).concat()),
            ["A B", "C", "D"].map(String::from)
        );
        assert_eq!(only_batch(&records).concat().len(), 3);
    }
}

/// A cached stream is computed once a batch for every stream and output
/// derived from it, and the input is read once for it.
#[test]
fn a_cached_stream_is_computed_once_a_batch_for_all_its_users() {
    // `persist` is `cache` by Spark's other name.
    type Keep = fn(&DStream<String>) -> DStream<String>;
    let keeps: [Keep; 2] = [DStream::cache, DStream::persist];
    for (executor, keep) in executors()
        .into_iter()
        .flat_map(|e| keeps.map(|k| (e.clone(), k)))
    {
        let graph = StreamGraph::new();
        let parsed = Arc::new(AtomicUsize::new(0));
        let calls = Arc::clone(&parsed);
        let upper = keep(&graph.input().values_utf8().map(move |line| {
            calls.fetch_add(1, Ordering::Relaxed);
            line.to_uppercase()
        }));
        let counted = collect(&upper.count());
        let values = collect(&upper);
        let twice = collect(&upper.union(&upper));
        let input = words(&[&["a b", "c"], &["d"]]);
        let info = info_for(&input);
        let ranges = info.ranges.len();
        let counting = Arc::new(CountingInput {
            input,
            reads: AtomicUsize::new(0),
        });
        let output = graph
            .run_batch(info, counting.clone(), Arc::clone(&executor))
            .unwrap();
        assert_eq!(parsed.load(Ordering::Relaxed), 3, "one call per record");
        assert_eq!(counting.reads.load(Ordering::Relaxed), ranges);
        assert_eq!(output.records_read, [2, 1]);
        assert_eq!(output.records_fetched, 3);
        assert_eq!(only_batch(&counted).concat().iter().sum::<i64>(), 3);
        let upper = ["A B", "C", "D"].map(String::from);
        assert_eq!(
            only_batch(&values),
            [
                vec![upper[0].clone(), upper[1].clone()],
                vec![upper[2].clone()]
            ],
            "the same partitions, in the same order"
        );
        let mut doubled = [upper.clone(), upper].concat();
        doubled.sort();
        assert_eq!(sorted(only_batch(&twice).concat()), doubled);
    }
}

/// Values of a cached stream keep the coordinates of their records: a
/// record rejected after the cache is set aside under its own topic,
/// partition and offset, as it would be without the cache.
#[test]
fn a_value_rejected_after_cache_names_the_record_it_comes_from() {
    for executor in executors() {
        let graph = StreamGraph::new();
        graph.set_poison_policy(PoisonPolicy::dead_letter("bad"));
        let numbers = graph
            .input()
            .values_utf8()
            .flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .cache()
            .try_map(|word| word.parse::<i64>());
        let sum = collect(&numbers.map(|n| ((), n)).reduce_by_key(|a, b| a + b));
        // Each rejected word is the first value of its record.
        let input = words(&[&["1", "x 2"], &["3", "two 4 5", "6"]]);
        let output = run(&graph, input, &executor).unwrap();
        let letters: Vec<_> = output
            .dead_letters
            .iter()
            .map(|l| (l.topic.to_string(), l.partition, l.offset))
            .collect();
        assert_eq!(letters, [("t".to_owned(), 0, 1), ("t".to_owned(), 1, 1)]);
        assert_eq!(only_batch(&sum).concat(), [((), 21)]);
        assert!(
            output.dead_letters[0].error.contains("invalid digit"),
            "{}",
            output.dead_letters[0].error
        );
    }
}
