//! Throughput of a batch through the operator graph, against a hand-written
//! loop doing the same work, on the global allocator sluice's features
//! choose: mimalloc by default, the system's (glibc) without the
//! `mimalloc` feature. The group names say which.
//!
//! ```text
//! cargo bench --bench pipeline                                       # mimalloc
//! cargo bench --bench pipeline --no-default-features --features cli  # glibc
//! ```
//!
//! `wordcount` counts the words of 200k in-memory lines (8 words each, from
//! a 1000-word vocabulary, 4 partitions): three single-threaded loops (a
//! fast hash with keys borrowed from the text; std's `HashMap` with owned
//! keys; and a fast hash fed what the `flat_map` closure below allocates, a
//! `Vec` of owned words per line), then three sluice graphs — `flat_map` +
//! `count_by_value`, `flat_map` + `map` + `reduce_by_key`, and `count_keys`
//! — each on [`InlineExecutor`] and on a 2-thread [`WorkerPool`]. `shared_stream` runs
//! two outputs of one derived stream, with and without `cache()`: a stream
//! cheap to compute (owned words) and one costlier to compute than to copy.
//! `distinct_keys` counts 1M words that are all distinct (a table insert
//! per word, on both sides of the shuffle). `empty_batch` is the fixed cost
//! of `run_batch` for a batch without ranges.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, SamplingMode, Throughput};
use sluice::__private::{Executor, InlineExecutor, MemoryInput, StreamGraph, WorkerPool};
use sluice::sink::Write;
use sluice::source::InputReader;
use sluice::stream::{BatchInfo, DStream};

const LINES: usize = 200_000;
const WORDS_PER_LINE: usize = 8;
const VOCABULARY: usize = 1000;
const PARTITIONS: usize = 4;

/// Word `i` of the vocabulary: three syllables, six letters.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 10] = ["ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "pu"];
    [i / 100, i / 10 % 10, i % 10]
        .map(|d| SYLLABLES[d])
        .concat()
}

/// The lines of each partition, drawn with a fixed-seed xorshift so every
/// run measures the same text.
fn lines() -> Vec<Vec<String>> {
    let vocabulary: Vec<String> = (0..VOCABULARY).map(word).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_word = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        vocabulary[(state % VOCABULARY as u64) as usize].as_str()
    };
    let mut partitions: Vec<Vec<String>> = (0..PARTITIONS)
        .map(|_| Vec::with_capacity(LINES / PARTITIONS))
        .collect();
    for line in 0..LINES {
        let words: Vec<&str> = (0..WORDS_PER_LINE).map(|_| next_word()).collect();
        partitions[line % PARTITIONS].push(words.join(" "));
    }
    partitions
}

/// The loop a performance-minded user writes: one thread, a fast
/// non-cryptographic hash (foldhash), keys borrowed from the text.
fn count_fast_by_hand(
    partitions: &[Vec<String>],
) -> HashMap<&str, i64, foldhash::fast::RandomState> {
    let mut counts: HashMap<&str, i64, foldhash::fast::RandomState> = HashMap::default();
    for line in partitions.iter().flatten() {
        for word in line.split_ascii_whitespace() {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

/// The fast loop on two threads, each counting half the partitions, then
/// the two tables merged: what two cores can give this work at best on
/// this machine, the ceiling for sluice on 2 workers.
fn count_fast_by_hand_2_threads(
    partitions: &[Vec<String>],
) -> HashMap<&str, i64, foldhash::fast::RandomState> {
    let (first, second) = partitions.split_at(partitions.len() / 2);
    let (mut counts, other) = std::thread::scope(|s| {
        let other = s.spawn(|| count_fast_by_hand(second));
        (
            count_fast_by_hand(first),
            other.join().expect("counting thread"),
        )
    });
    for (word, n) in other {
        *counts.entry(word).or_insert(0) += n;
    }
    counts
}

/// The fast loop doing the allocations the `flat_map` closure of
/// [`wordcount_graph`] does: a `Vec` of owned words per line, each word
/// moved into the map or dropped. What a job written that way costs at
/// least, on one thread.
fn count_owned_by_hand(
    partitions: &[Vec<String>],
) -> HashMap<String, i64, foldhash::fast::RandomState> {
    let mut counts: HashMap<String, i64, foldhash::fast::RandomState> = HashMap::default();
    for line in partitions.iter().flatten() {
        let words: Vec<String> = line.split_ascii_whitespace().map(str::to_owned).collect();
        for word in words {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

/// A second reference: std's `HashMap` (SipHash), one allocation per
/// distinct word.
fn count_by_hand(partitions: &[Vec<String>]) -> HashMap<String, i64> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for line in partitions.iter().flatten() {
        for word in line.split_ascii_whitespace() {
            match counts.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(word.to_owned(), 1);
                }
            }
        }
    }
    counts
}

fn wordcount_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .flat_map(|line| {
            line.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .count_by_value()
        .save_counts("words")
        .expect("a new graph takes outputs");
    graph
}

/// The same job in the other general form: each word paired with 1, then
/// `reduce_by_key`.
fn reduce_by_key_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .flat_map(|line| {
            line.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word| (word, 1i64))
        .reduce_by_key(|a, b| a + b)
        .save_counts("words")
        .expect("a new graph takes outputs");
    graph
}

/// The same job with `count_keys`: words are borrowed from the line and
/// copied only the first time a task meets them.
fn count_keys_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        .save_counts("words")
        .expect("a new graph takes outputs");
    graph
}

fn memory_input(partitions: &[Vec<String>]) -> MemoryInput {
    partitions
        .iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, lines)| {
            input.with_partition("lines", p as i32, lines.iter().map(String::as_bytes))
        })
}

fn run(
    graph: &StreamGraph,
    info: &BatchInfo,
    input: &Arc<dyn InputReader>,
    executor: &Arc<dyn Executor>,
) -> usize {
    graph
        .run_batch(info.clone(), Arc::clone(input), Arc::clone(executor))
        .expect("batch succeeds")
        .writes
        .len()
}

fn wordcount(c: &mut Criterion, name: &str) {
    let partitions = lines();
    let memory = memory_input(&partitions);
    let info = BatchInfo::new(0, SystemTime::UNIX_EPOCH, memory.full_ranges());
    let input: Arc<dyn InputReader> = Arc::new(memory);
    let graph = wordcount_graph();
    let pairs = reduce_by_key_graph();
    let borrowing = count_keys_graph();
    let inline: Arc<dyn Executor> = Arc::new(InlineExecutor);
    let pool: Arc<dyn Executor> = Arc::new(WorkerPool::new(2, 1).expect("spawn workers"));

    // Every variant must agree before any is timed.
    let expected = count_by_hand(&partitions);
    assert_eq!(expected.len(), VOCABULARY);
    let fast = count_fast_by_hand(&partitions);
    assert_eq!(fast.len(), expected.len());
    assert!(fast.iter().all(|(word, n)| expected.get(*word) == Some(n)));
    assert_eq!(count_fast_by_hand_2_threads(&partitions), fast);
    let owned = count_owned_by_hand(&partitions);
    assert_eq!(owned.len(), expected.len());
    assert!(owned.iter().all(|(word, n)| expected.get(word) == Some(n)));
    for graph in [&graph, &pairs, &borrowing] {
        for executor in [&inline, &pool] {
            assert_eq!(counts(graph, &info, &input, executor), expected);
        }
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(LINES as u64));
    // Each iteration takes tens of milliseconds: a fixed count per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("hand_loop_fast_hash", |b| {
        b.iter(|| count_fast_by_hand(black_box(&partitions)).len())
    });
    group.bench_function("hand_loop_fast_hash_2_threads", |b| {
        b.iter(|| count_fast_by_hand_2_threads(black_box(&partitions)).len())
    });
    group.bench_function("hand_loop_std_hashmap", |b| {
        b.iter(|| count_by_hand(black_box(&partitions)).len())
    });
    group.bench_function("hand_loop_fast_hash_owned_words", |b| {
        b.iter(|| count_owned_by_hand(black_box(&partitions)).len())
    });
    group.bench_function("sluice_inline", |b| {
        b.iter(|| run(&graph, &info, &input, &inline))
    });
    group.bench_function("sluice_pool_2_threads", |b| {
        b.iter(|| run(&graph, &info, &input, &pool))
    });
    group.bench_function("sluice_reduce_by_key_inline", |b| {
        b.iter(|| run(&pairs, &info, &input, &inline))
    });
    group.bench_function("sluice_reduce_by_key_pool_2_threads", |b| {
        b.iter(|| run(&pairs, &info, &input, &pool))
    });
    group.bench_function("sluice_count_keys_inline", |b| {
        b.iter(|| run(&borrowing, &info, &input, &inline))
    });
    group.bench_function("sluice_count_keys_pool_2_threads", |b| {
        b.iter(|| run(&borrowing, &info, &input, &pool))
    });
    group.finish();
}

/// The counts a graph's batch stages for the checkpoint.
fn counts(
    graph: &StreamGraph,
    info: &BatchInfo,
    input: &Arc<dyn InputReader>,
    executor: &Arc<dyn Executor>,
) -> HashMap<String, i64> {
    let output = graph
        .run_batch(info.clone(), Arc::clone(input), Arc::clone(executor))
        .expect("batch succeeds");
    output
        .writes
        .iter()
        .map(|write| match write {
            Write::Add { key, delta, .. } => {
                (String::from_utf8(key.clone()).expect("utf-8"), *delta)
            }
            other => panic!("a wordcount stages only counter additions, got {other:?}"),
        })
        .collect()
}

/// A stream derived from the lines.
type Derive = fn(DStream<String>) -> DStream<String>;

/// Two outputs of one derived stream: the stream counted by value, and its
/// count. With `cache`, the stream is computed once a batch for both.
fn two_outputs_graph(
    derive: fn(DStream<String>) -> DStream<String>,
    cache: bool,
) -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    let derived = derive(graph.input().values_utf8());
    let derived = if cache { derived.cache() } else { derived };
    derived
        .count_by_value()
        .save_counts("counts")
        .expect("a new graph takes outputs");
    derived
        .count()
        .foreach_batch(|batch, _| {
            black_box(batch);
            Ok::<_, std::convert::Infallible>(())
        })
        .expect("a new graph takes outputs");
    graph
}

/// Cheap to compute, as costly to copy: each line split into owned words.
fn words(lines: DStream<String>) -> DStream<String> {
    lines.flat_map(|line| {
        line.split_ascii_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

/// Costlier to compute than to copy: each line's words spelt backwards (a
/// `String` per word), joined, and the first two letters of that kept.
fn first_letters(lines: DStream<String>) -> DStream<String> {
    lines.map(|line| {
        let backwards: Vec<String> = line
            .split_ascii_whitespace()
            .map(|w| w.chars().rev().collect())
            .collect();
        backwards.join(" ")[..2].to_owned()
    })
}

/// `cache()` against computing a stream shared by two outputs once per
/// output, on 2 workers.
fn shared_stream(c: &mut Criterion, name: &str) {
    let partitions = lines();
    let memory = memory_input(&partitions);
    let info = BatchInfo::new(0, SystemTime::UNIX_EPOCH, memory.full_ranges());
    let input: Arc<dyn InputReader> = Arc::new(memory);
    let pool: Arc<dyn Executor> = Arc::new(WorkerPool::new(2, 1).expect("spawn workers"));
    let expected_words = counts(&wordcount_graph(), &info, &input, &pool);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(LINES as u64));
    group.sampling_mode(SamplingMode::Flat);
    let streams: [(&str, Derive); 2] = [("words", words), ("first_letters", first_letters)];
    for (stream, derive) in streams {
        let twice = two_outputs_graph(derive, false);
        let cached = two_outputs_graph(derive, true);
        let expected = counts(&twice, &info, &input, &pool);
        assert_eq!(counts(&cached, &info, &input, &pool), expected);
        if stream == "words" {
            assert_eq!(expected, expected_words);
        } else {
            assert_eq!(expected.values().sum::<i64>(), LINES as i64);
        }
        group.bench_function(format!("{stream}_two_outputs"), |b| {
            b.iter(|| run(&twice, &info, &input, &pool))
        });
        group.bench_function(format!("{stream}_two_outputs_cached"), |b| {
            b.iter(|| run(&cached, &info, &input, &pool))
        });
    }
    group.finish();
}

/// Lines whose words are all distinct: `partitions` partitions of
/// `lines_each` lines of 4 words.
fn distinct_lines(partitions: usize, lines_each: usize) -> Vec<Vec<String>> {
    (0..partitions)
        .map(|p| {
            (0..lines_each)
                .map(|i| {
                    let first = (p * lines_each + i) * 4;
                    (first..first + 4)
                        .map(|w| format!("w{w}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        })
        .collect()
}

/// The wordcount where every word is new (1M distinct keys a batch): each
/// value inserts a key into its task's table, and the reduce side inserts
/// every key again. Where the `wordcount` group finds keys already there.
fn distinct_keys(c: &mut Criterion, name: &str) {
    const PARTITIONS: usize = 4;
    const LINES_EACH: usize = 62_500;
    let partitions = distinct_lines(PARTITIONS, LINES_EACH);
    let memory = memory_input(&partitions);
    let info = BatchInfo::new(0, SystemTime::UNIX_EPOCH, memory.full_ranges());
    let input: Arc<dyn InputReader> = Arc::new(memory);
    let graph = wordcount_graph();
    let borrowing = count_keys_graph();
    let inline: Arc<dyn Executor> = Arc::new(InlineExecutor);
    let keys = PARTITIONS * LINES_EACH * 4;
    for graph in [&graph, &borrowing] {
        let counts = counts(graph, &info, &input, &inline);
        assert_eq!(counts.len(), keys);
        assert!(counts.values().all(|&n| n == 1));
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(keys as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("sluice_inline", |b| {
        b.iter(|| run(&graph, &info, &input, &inline))
    });
    group.bench_function("sluice_count_keys_inline", |b| {
        b.iter(|| run(&borrowing, &info, &input, &inline))
    });
    group.finish();
}

fn empty_batch(c: &mut Criterion, name: &str) {
    let graph = wordcount_graph();
    let info = BatchInfo::new(0, SystemTime::UNIX_EPOCH, Vec::new());
    let input: Arc<dyn InputReader> = Arc::new(MemoryInput::new());
    let inline: Arc<dyn Executor> = Arc::new(InlineExecutor);
    let pool: Arc<dyn Executor> = Arc::new(WorkerPool::new(2, 1).expect("spawn workers"));

    let mut group = c.benchmark_group(name);
    group.bench_function("inline", |b| b.iter(|| run(&graph, &info, &input, &inline)));
    group.bench_function("pool_2_threads", |b| {
        b.iter(|| run(&graph, &info, &input, &pool))
    });
    group.finish();
}

fn config() -> Criterion {
    // Short enough for a full run in about a minute on two cores.
    Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
}

fn main() {
    // The global allocator is part of the group names, so that runs on
    // either keep apart in criterion's reports.
    let allocator = if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system"
    };
    let mut c = config();
    wordcount(&mut c, &format!("wordcount_{allocator}"));
    shared_stream(&mut c, &format!("shared_stream_{allocator}"));
    distinct_keys(&mut c, &format!("distinct_keys_{allocator}"));
    empty_batch(&mut c, &format!("empty_batch_{allocator}"));
    c.final_summary();
}
