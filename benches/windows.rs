//! Windows on a real checkpoint.
//!
//! 1. A windowed wordcount (10 s window, 1 s slide, 1 s batches on the
//!    batch-time grid) kept incrementally with an inverse function
//!    (`reduce_by_key_and_window_inv`), against the stateless `count_keys`
//!    wordcount on the same input, side by side: records/s and the ratio.
//! 2. An event-time tumbling count with `SLUICE_BENCH_WINDOW_KEYS` (1M)
//!    keys per window: records/s and the peak RSS, measured in a child
//!    process of its own so the first case's memory does not count.
//!
//! Every batch runs on a 2-thread worker pool over in-memory records and is
//! committed to a RocksDB checkpoint in a temporary directory (unsynced),
//! so the figures include reading and writing state and the commit.
//!
//! ```text
//! cargo bench --bench windows
//! SLUICE_BENCH_LINES=50000 SLUICE_BENCH_WORDS=100000 cargo bench --bench windows
//! ```
//!
//! Under `cargo test` it runs once on small inputs, as a check that it
//! works; those figures are not measurements.

use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use sluice::__private::{BatchEnv, MemoryInput, StreamGraph, WorkerPool};
use sluice::checkpoint::{BatchRecord, CheckpointStore, Commit, RocksCheckpoint, StateChanges};
use sluice::stream::BatchInfo;
use sluice::window::{EventTimeSpec, InverseReduce, Window};

const PARTITIONS: usize = 4;
const WORKERS: usize = 2;
/// Batch time of batch 0, in seconds since the epoch (on the 1 s grid).
const EPOCH_S: u64 = 1_700_000_000;
const LEN: Duration = Duration::from_secs(10);
const SLIDE: Duration = Duration::from_secs(1);

fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fixed-seed xorshift.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Batch `batch`: `lines` lines of 1–10 words drawn from `words` distinct
/// ones, spread over the partitions.
fn lines(batch: u64, lines: u64, words: u64) -> MemoryInput {
    let mut rng = Rng::new(batch);
    let mut partitions: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS];
    for i in 0..lines {
        let n = 1 + rng.next() % 10;
        let line: Vec<String> = (0..n).map(|_| format!("w{}", rng.next() % words)).collect();
        partitions[i as usize % PARTITIONS].push(line.join(" "));
    }
    partitions
        .into_iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, values)| {
            input.with_partition("lines", p as i32, values)
        })
}

/// Runs `count` batches of `graph` on a fresh checkpoint, batch `id` at
/// batch time `EPOCH_S + id` seconds, committing each; returns the time per
/// batch, input reading and commit included (building the input not).
fn run(graph: &Arc<StreamGraph>, input: impl Fn(u64) -> MemoryInput, count: u64) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = RocksCheckpoint::builder(dir.path())
        .app_id("bench")
        .sync(false)
        .open()
        .expect("a checkpoint");
    graph.set_shuffle_partitions(NonZeroUsize::new(WORKERS).expect("two"));
    graph
        .check_batch_interval(SLIDE)
        .expect("windows on the 1 s grid");
    store
        .open_states(&graph.states(), &StateChanges::default())
        .expect("the bench's states");
    for family in graph.families() {
        store.ensure_family(&family).expect("a family");
    }
    let pool = Arc::new(WorkerPool::new(WORKERS, 1).expect("a pool"));
    let mut times = Vec::new();
    for id in 0..count {
        let input = input(id);
        let time = UNIX_EPOCH + Duration::from_secs(EPOCH_S + id);
        let info = BatchInfo::new(id, time, input.full_ranges());
        let started = Instant::now();
        let env =
            BatchEnv::new(info, Arc::new(input), pool.clone()).with_state(store.state_store());
        let output = graph.run(env).expect("the batch");
        store
            .commit(Commit {
                record: BatchRecord::new(id, ((EPOCH_S + id) * 1000) as i64),
                next_offsets: Vec::new(),
                writes: output.writes,
            })
            .expect("the commit");
        times.push(started.elapsed());
    }
    times
}

fn count_keys_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
        .save_counts("counts")
        .expect("an output");
    graph
}

/// Keys emitted by the last window, to check the windowed job's output.
static EMITTED: AtomicU64 = AtomicU64::new(0);

fn windowed_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .flat_map(|line| {
            line.split_ascii_whitespace()
                .map(|w| (w.to_owned(), 1i64))
                .collect::<Vec<_>>()
        })
        .reduce_by_key_and_window_inv(
            "words_10s",
            InverseReduce::new(|a, b| a + b, |a, b| a - b).filter(|_, n| *n != 0),
            LEN,
            SLIDE,
        )
        .foreach_batch(|batch, _| {
            EMITTED.store(batch.into_iter().count() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(())
        })
        .expect("an output");
    graph
}

/// Records per second over `times[skip..]`.
fn rate(times: &[Duration], skip: usize, records: u64) -> f64 {
    let steady = &times[skip.min(times.len() - 1)..];
    let total: Duration = steady.iter().sum();
    records as f64 * steady.len() as f64 / total.as_secs_f64()
}

fn windowed_wordcount() {
    let (per_batch, words, batches) = if measuring() {
        (
            env("SLUICE_BENCH_LINES", 100_000),
            env("SLUICE_BENCH_WORDS", 100_000),
            env("SLUICE_BENCH_BATCHES", 25),
        )
    } else {
        (1_000, 500, 12)
    };
    println!(
        "windowed wordcount: {per_batch} lines (1-10 words, {words} distinct) per 1 s batch, \
         {batches} batches, 10 s window, 1 s slide, {WORKERS} workers"
    );
    let input = |id| lines(id, per_batch, words);
    // The window is full from batch 10 on: measure both from there.
    let skip = 10;
    let stateless = rate(&run(&count_keys_graph(), input, batches), skip, per_batch);
    let windowed = rate(&run(&windowed_graph(), input, batches), skip, per_batch);
    println!("count_keys + save_counts:               {stateless:>12.0} records/s");
    println!(
        "reduce_by_key_and_window_inv (10 s/1 s): {windowed:>12.0} records/s  ({:.2}x; {} keys in the last window)",
        windowed / stateless,
        EMITTED.load(Ordering::Relaxed)
    );
}

/// The child's case: the event-time tumbling count.
fn event_time_count() {
    let (keys, per_batch) = if measuring() {
        (
            env("SLUICE_BENCH_WINDOW_KEYS", 1_000_000),
            env("SLUICE_BENCH_EVENT_RECORDS", 250_000),
        )
    } else {
        (2_000, 500)
    };
    // Two windows of `keys` keys each, then a batch that closes the second.
    let per_window = keys.div_ceil(per_batch);
    let batches = 2 * per_window + 1;
    let window_ms: i64 = 10_000;
    let base_ms = (EPOCH_S * 1000) as i64;
    let input = move |id: u64| {
        let window = (id / per_window) as i64;
        let first = (id % per_window) * per_batch;
        let count = if id == batches - 1 {
            PARTITIONS as u64
        } else {
            per_batch.min(keys - first)
        };
        let mut partitions: Vec<Vec<(i64, String)>> = vec![Vec::new(); PARTITIONS];
        for k in first..first + count {
            // Event time inside the batch's window, moving forward.
            let time = base_ms + window * window_ms + (k * (window_ms as u64 - 1) / keys) as i64;
            partitions[k as usize % PARTITIONS].push((time, format!("key{k:08}")));
        }
        partitions
            .into_iter()
            .enumerate()
            .fold(MemoryInput::new(), |input, (p, records)| {
                input.with_timestamped_partition("keys", p as i32, records)
            })
    };
    let graph = StreamGraph::new();
    let closed = Arc::new(AtomicU64::new(0));
    let out = Arc::clone(&closed);
    graph
        .input()
        .values_utf8()
        .map(|key| (key, ()))
        .event_time_window(
            "keys_10s",
            EventTimeSpec::count(Window::tumbling(Duration::from_millis(window_ms as u64))),
        )
        .foreach_batch(move |batch, _| {
            out.fetch_add(batch.into_iter().count() as u64, Ordering::Relaxed);
            Ok::<_, std::io::Error>(())
        })
        .expect("an output");
    let times = run(&graph, input, batches);
    let records = (batches - 1) * per_batch + PARTITIONS as u64;
    let total: Duration = times.iter().sum();
    let closed = closed.load(Ordering::Relaxed);
    assert_eq!(closed, 2 * keys, "every key of both windows emitted once");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "event-time tumbling count, {keys} keys per window, {per_batch} records per batch, \
         {batches} batches: {:>10.0} records/s, {closed} window results, peak RSS {:.0} MiB",
        records as f64 / total.as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
}

fn main() {
    if std::env::var("SLUICE_BENCH_CASE").as_deref() == Ok("event_time") {
        event_time_count();
        return;
    }
    windowed_wordcount();
    // A process of its own, so its peak RSS is its own.
    let mut child = Command::new(std::env::current_exe().expect("the bench binary"));
    if measuring() {
        child.arg("--bench");
    }
    let status = child
        .env("SLUICE_BENCH_CASE", "event_time")
        .stdin(Stdio::null())
        .status()
        .expect("running the event-time case");
    assert!(status.success(), "the event-time case failed: {status}");
}
