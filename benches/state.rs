//! Keyed state on a real checkpoint: what a batch costs with
//! `map_with_state`, against `count_keys` + `save_counts` doing the same
//! count, and `update_state_by_key` against `map_with_state` when few keys
//! get data.
//!
//! Every batch runs on a 2-thread worker pool over in-memory records and is
//! committed to a RocksDB checkpoint in a temporary directory (unsynced, as
//! `checkpoint_sync(false)`), so the figures include reading state and the
//! commit.
//!
//! ```text
//! cargo bench --bench state                 # full sizes
//! SLUICE_BENCH_KEYS=10000000 SLUICE_BENCH_RECORDS=1000000 SLUICE_BENCH_BATCHES=12 \
//!     SLUICE_BENCH_ONLY=count cargo bench --bench state   # 10M keys, state mostly on disk
//! SLUICE_BENCH_ONLY=few cargo bench --bench state    # only the 1 % case
//! SLUICE_BENCH_SETTLE=0 ...   # 1 % case: measure while the fill's flush runs
//! SLUICE_BENCH_ONLY=few_map cargo bench --bench state   # its map_with_state alone (for profiling)
//! SLUICE_BENCH_ONLY=few_update cargo bench --bench state   # its update_state_by_key alone
//! ```
//!
//! `SLUICE_BENCH_TIMES=1` prints every batch's time (ms) on stderr.
//!
//! Peak RSS is the process's `VmHWM`: the count_keys case runs first, so
//! the figure after map_with_state is the larger of the two.
//!
//! Under `cargo test` it runs once on small inputs, as a check that it
//! works; those figures are not measurements.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice::__private::{BatchEnv, MemoryInput, StreamGraph, WorkerPool};
use sluice::checkpoint::{BatchRecord, CheckpointStore, Commit, RocksCheckpoint, StateChanges};
use sluice::state::{State, StateSpec};
use sluice::stream::BatchInfo;

const PARTITIONS: usize = 4;
const WORKERS: usize = 2;

struct Sizes {
    /// Distinct keys.
    keys: u64,
    /// Records per batch.
    records: u64,
    batches: u64,
}

fn sizes() -> Sizes {
    let measuring = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if measuring {
        Sizes {
            keys: env("SLUICE_BENCH_KEYS", 1_000_000),
            records: env("SLUICE_BENCH_RECORDS", 500_000),
            batches: env("SLUICE_BENCH_BATCHES", 6),
        }
    } else {
        Sizes {
            keys: 1_000,
            records: 2_000,
            batches: 2,
        }
    }
}

/// Batch `batch` of `records` keys drawn with a fixed-seed xorshift from
/// `keys` distinct ones.
fn input(batch: u64, records: u64, keys: u64) -> MemoryInput {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (batch + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut partitions: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS];
    for i in 0..records {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        partitions[i as usize % PARTITIONS].push(format!("key{}", state % keys));
    }
    partitions
        .into_iter()
        .enumerate()
        .fold(MemoryInput::new(), |input, (p, values)| {
            input.with_partition("keys", p as i32, values)
        })
}

/// Runs `batches` batches of `graph` on a fresh checkpoint, committing each;
/// returns the time per batch, input reading and commit included.
fn run(
    graph: &Arc<StreamGraph>,
    batches: impl Fn(u64) -> MemoryInput,
    count: u64,
    settle: bool,
) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = RocksCheckpoint::builder(dir.path())
        .app_id("bench")
        .sync(false)
        .open()
        .expect("a checkpoint");
    graph.set_shuffle_partitions(NonZeroUsize::new(WORKERS).expect("two"));
    store
        .open_states(&graph.states(), &StateChanges::default())
        .expect("the bench's states");
    for family in graph.families() {
        store.ensure_family(&family).expect("a family");
    }
    let pool: Arc<WorkerPool> = Arc::new(WorkerPool::new(WORKERS, 1).expect("a pool"));
    let mut times = Vec::new();
    for id in 0..count {
        let input = batches(id);
        let started = Instant::now();
        if id == 0 {
            first_batch(graph, &mut store, &pool, input);
        } else {
            later_batch(graph, &mut store, &pool, input, id);
            if id == 1 && settle {
                wait_for_flush(&store);
            }
        }
        times.push(started.elapsed());
    }
    if std::env::var_os("SLUICE_BENCH_TIMES").is_some() {
        let ms: Vec<String> = times
            .iter()
            .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
            .collect();
        eprintln!("ms per batch: {}", ms.join(" "));
    }
    times
}

/// Waits until the state's memtables are flushed. A first batch writing
/// every key leaves them all in one memtable, which the second batch's
/// commit switches out; its flush (a second or so of one core) would
/// otherwise run during the batches measured after it, and their reads
/// would search that memtable instead of the table files a running job
/// reads most state from.
fn wait_for_flush(store: &RocksCheckpoint) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let pending: u64 = store
            .family_stats()
            .expect("the checkpoint's statistics")
            .iter()
            .filter(|f| f.name.starts_with("sluice_state."))
            .map(|f| f.memtable_bytes)
            .sum();
        if pending < 8 << 20 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first batch, which creates the state. Kept apart from the later
/// ones so a profile can tell them apart. Callgrind's
/// `--toggle-collect='*later_batch*'` counts only the driver's thread (the
/// commit); to count the workers' reads too, subtract a
/// `SLUICE_BENCH_BATCHES=1` run from a longer one.
#[inline(never)]
fn first_batch(
    graph: &StreamGraph,
    store: &mut RocksCheckpoint,
    pool: &Arc<WorkerPool>,
    input: MemoryInput,
) {
    one_batch(graph, store, pool, input, 0);
}

#[inline(never)]
fn later_batch(
    graph: &StreamGraph,
    store: &mut RocksCheckpoint,
    pool: &Arc<WorkerPool>,
    input: MemoryInput,
    id: u64,
) {
    one_batch(graph, store, pool, input, id);
}

/// Runs batch `id` of `graph` and commits it.
fn one_batch(
    graph: &StreamGraph,
    store: &mut RocksCheckpoint,
    pool: &Arc<WorkerPool>,
    input: MemoryInput,
    id: u64,
) {
    let info = BatchInfo::new(id, SystemTime::now(), input.full_ranges());
    let env = BatchEnv::new(info, Arc::new(input), pool.clone()).with_state(store.state_store());
    let output = graph.run(env).expect("the batch");
    store
        .commit(Commit {
            record: BatchRecord::new(id, 0),
            next_offsets: Vec::new(),
            writes: output.writes,
        })
        .expect("the commit");
}

fn count_keys_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .count_keys(|key: &String, count| count(key.as_str()))
        .save_counts("counts")
        .expect("an output");
    graph
}

fn map_with_state_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .map(|key| (key, ()))
        .map_with_state(
            "counts",
            StateSpec::function(|_key: &String, _v: Option<()>, count: &mut State<u64>| {
                count.update(count.get().copied().unwrap_or(0) + 1);
            }),
        )
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .expect("an output");
    graph
}

fn update_state_graph() -> Arc<StreamGraph> {
    let graph = StreamGraph::new();
    graph
        .input()
        .values_utf8()
        .map(|key| (key, 1u64))
        .update_state_by_key("counts", |new: Vec<u64>, old: Option<u64>| {
            Some(old.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .expect("an output");
    graph
}

/// Records per second over the batches after the first (which only creates
/// state).
fn rate(times: &[Duration], records: u64) -> f64 {
    let steady = &times[1.min(times.len() - 1)..];
    let total: Duration = steady.iter().sum();
    records as f64 * steady.len() as f64 / total.as_secs_f64()
}

fn median_ms(times: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// The process's peak resident set so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let Sizes {
        keys,
        records,
        batches,
    } = sizes();
    println!("{records} records per batch over {keys} distinct keys, {batches} batches, {WORKERS} workers");

    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    // Running count per key: the same result two ways, side by side.
    let every = |id| input(id, records, keys);
    if only.is_empty() || only == "count" {
        let counted = rate(&run(&count_keys_graph(), every, batches, false), records);
        let counted_rss = peak_rss_mib();
        let mapped = rate(
            &run(&map_with_state_graph(), every, batches, false),
            records,
        );
        println!(
            "count_keys + save_counts: {counted:>12.0} records/s  (peak RSS {counted_rss:.0} MiB)"
        );
        println!(
            "map_with_state:           {mapped:>12.0} records/s  ({:.2}x; peak RSS {:.0} MiB, both cases)",
            mapped / counted,
            peak_rss_mib()
        );
    }
    if !(only.is_empty() || only.starts_with("few")) {
        return;
    }

    // 1 % of the keys get data: the first batch fills the state with every
    // key, the later ones touch 1 %.
    let few = keys.div_ceil(100);
    let fill_then_few = |id| {
        if id == 0 {
            MemoryInput::new().with_partition("keys", 0, (0..keys).map(|k| format!("key{k}")))
        } else {
            input(id, few, keys)
        }
    };
    // Measured from the batch after the one whose commit starts the fill's
    // flush, once that flush is done; SLUICE_BENCH_SETTLE=0 measures from
    // the second batch without waiting, the fill's flush running meanwhile.
    let settle = std::env::var("SLUICE_BENCH_SETTLE")
        .ok()
        .is_none_or(|v| v != "0");
    let from = if settle { 2 } else { 1 };
    let measured = |times: &[Duration]| median_ms(&times[from.min(times.len() - 1)..]);
    if only == "few_map" {
        // For a profiler: map_with_state alone.
        let mapped = run(&map_with_state_graph(), fill_then_few, batches, settle);
        println!(
            "1% of {keys} keys per batch: map_with_state {:.1} ms per batch",
            measured(&mapped)
        );
        return;
    }
    if only == "few_update" {
        // For a profiler: update_state_by_key alone.
        let updated = run(&update_state_graph(), fill_then_few, batches, settle);
        println!(
            "1% of {keys} keys per batch: update_state_by_key {:.1} ms per batch",
            measured(&updated)
        );
        return;
    }
    let updated = run(&update_state_graph(), fill_then_few, batches, settle);
    let mapped = run(&map_with_state_graph(), fill_then_few, batches, settle);
    let (updated, mapped) = (measured(&updated), measured(&mapped));
    println!(
        "1% of {keys} keys per batch: update_state_by_key {updated:.1} ms, map_with_state {mapped:.1} ms per batch ({:.1}x faster)",
        updated / mapped
    );
}
