//! Keyed state end to end: the sessions example killed and restarted, and
//! a job whose stateful operators changed between runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;

use crate::util::job::{self, RunningJob, WAIT};
use crate::util::kafka::{self, BackgroundProducer};
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, Wordcount};

/// The sessions example's app id.
const SESSIONS: &str = "sessions";

/// The last batch the sessions example committed, read while it runs.
fn committed_batch(checkpoint: &Path) -> Option<u64> {
    let store = RocksCheckpoint::open_read_only(checkpoint, SESSIONS).ok()?;
    Some(store.last_batch().ok()??.id)
}

/// What `sessions --totals` prints: user → (closed sessions, clicks).
fn session_totals(checkpoint: &Path) -> BTreeMap<String, (u64, u64)> {
    let out = Command::new(wordcount::example("sessions"))
        .args(["--totals", "--checkpoint-dir"])
        .arg(checkpoint)
        .stdin(Stdio::null())
        .output()
        .expect("running sessions --totals");
    assert!(
        out.status.success(),
        "sessions --totals exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("the totals are UTF-8")
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                fields.len(),
                3,
                "a totals line is user, sessions, clicks: {line:?}"
            );
            let number = |s: &str| s.parse::<u64>().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            (fields[0].to_owned(), (number(fields[1]), number(fields[2])))
        })
        .collect()
}

#[test]
fn sessions_killed_twenty_times_count_every_click_exactly_once() {
    const CLICKS: usize = 3000;
    const KILLS: usize = 20;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64;
    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .map_or(seed, |s| s.parse().expect("SLUICE_CRASH_SEED is a number"));
    eprintln!("sessions crash loop seed: {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    wordcount::example("sessions");

    let broker = Tansu::start();
    broker.create_topic("clicks", 3);
    let bootstrap = broker.bootstrap();
    let clicks: Vec<String> = (0..CLICKS)
        .map(|i| format!("user{} page{}", (i * 7 + i / 50) % 9, i % 4))
        .collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for click in &clicks {
        let user = click.split(' ').next().expect("a click names its user");
        *expected.entry(user.to_owned()).or_default() += 1;
    }
    let producer = BackgroundProducer::start(
        &bootstrap,
        "clicks",
        &clicks,
        0,
        40,
        Duration::from_millis(60),
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("sessions.log");
    let start = || {
        Wordcount::start_example(
            "sessions",
            &bootstrap,
            "clicks",
            &dir,
            &log,
            40,
            &["--idle-timeout-ms", "200"],
        )
    };
    for run in 0..KILLS {
        let before = committed_batch(&dir);
        let mut child = start();
        job::poll(
            &format!("a batch committed by run {run} (seed {seed})"),
            WAIT,
            || {
                child.assert_running();
                (committed_batch(&dir) > before).then_some(())
            },
            || format!("seed {seed}: last batch {:?}", committed_batch(&dir)),
        );
        thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        child.kill();
    }
    producer.finish();

    // The last run reads the rest; once every user is idle, every session
    // closes and its clicks reach the totals.
    let before = committed_batch(&dir);
    let mut child = start();
    job::poll(
        &format!("a batch committed by the last run (seed {seed})"),
        WAIT,
        || {
            child.assert_running();
            (committed_batch(&dir) > before).then_some(())
        },
        || format!("seed {seed}: last batch {:?}", committed_batch(&dir)),
    );
    let deadline = Instant::now() + WAIT;
    let totals = loop {
        let totals = session_totals(&dir);
        let clicks: u64 = totals.values().map(|(_, clicks)| clicks).sum();
        if clicks >= CLICKS as u64 {
            break totals;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {clicks} of {CLICKS} clicks in closed sessions after {WAIT:?}: {totals:?}\n{}",
            child.log_tail()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let status = child.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "seed {seed}: the last run exited with {status}"
    );

    let clicks: BTreeMap<String, u64> = totals.iter().map(|(u, (_, c))| (u.clone(), *c)).collect();
    assert_eq!(clicks, expected, "seed {seed}: clicks per user");
    for (user, (sessions, clicks)) in &totals {
        assert!(
            (1..=*clicks).contains(sessions),
            "seed {seed}: {user} has {sessions} sessions for {clicks} clicks"
        );
    }
}

/// A job counting clicks per user in `map_with_state(name)`.
fn count_clicks(dir: &Path, bootstrap: &str, name: &str) -> StreamingContext {
    let ctx = job::context(dir).build().unwrap();
    let source = job::source(bootstrap)
        .subscribe(["clicks"])
        .build()
        .unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .map(|user| (user, ()))
        .map_with_state(
            name,
            StateSpec::function(
                |_user: &String, _click: Option<()>, count: &mut State<u64>| {
                    count.update(count.get().copied().unwrap_or(0) + 1);
                },
            ),
        )
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .unwrap();
    ctx
}

fn read_counts(dir: &Path, name: &str) -> BTreeMap<String, u64> {
    job::open_checkpoint(dir, job::APP_ID)
        .read_state::<String, u64>(name)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn a_stateful_operator_renamed_without_declaring_it_stops_the_start_and_changes_nothing() {
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "clicks", 2);
    let bootstrap = cluster.bootstrap_servers();
    let clicks: Vec<String> = ["ann", "bob", "ann"].map(String::from).to_vec();
    kafka::produce(&bootstrap, "clicks", None, &clicks);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");

    let mut running = RunningJob::start(count_clicks(&dir, &bootstrap, "clicks_by_user"));
    running.wait_for_records(3, "the three clicks");
    running.stop();
    let counts = read_counts(&dir, "clicks_by_user");
    assert_eq!(counts, [("ann".into(), 2), ("bob".into(), 1)].into());
    let before = job::open_checkpoint(&dir, job::APP_ID).states().unwrap();

    // Renamed in the code, not declared: refused, nothing written.
    let renamed = count_clicks(&dir, &bootstrap, "user_clicks");
    let error = renamed.start().unwrap_err().to_string();
    assert!(error.contains("state 'clicks_by_user'"), "{error}");
    assert!(error.contains("rename_state(\"clicks_by_user\""), "{error}");
    drop(renamed);
    let store = job::open_checkpoint(&dir, job::APP_ID);
    assert_eq!(store.states().unwrap(), before);
    drop(store);
    assert_eq!(read_counts(&dir, "clicks_by_user"), counts);

    // Declared: the counts go on under the new name.
    let renamed = count_clicks(&dir, &bootstrap, "user_clicks");
    renamed
        .rename_state("clicks_by_user", "user_clicks")
        .unwrap();
    let mut running = RunningJob::start(renamed);
    kafka::produce(&bootstrap, "clicks", None, &["bob".to_owned()]);
    running.wait_for_records(1, "one more click");
    running.stop();
    assert_eq!(
        read_counts(&dir, "user_clicks"),
        [("ann".into(), 2), ("bob".into(), 2)].into()
    );
    let error = job::open_checkpoint(&dir, job::APP_ID)
        .read_state::<String, u64>("clicks_by_user")
        .unwrap_err();
    assert!(
        error.to_string().contains("not in the checkpoint"),
        "{error}"
    );
}

/// The child of [`state_larger_than_the_cache_stays_on_disk`]: writes
/// `SLUICE_STATE_MEMORY_KEYS` distinct keys, with a 100-byte state each,
/// into `map_with_state` on a checkpoint with an 8 MiB cache, then prints
/// its peak resident memory.
/// Does nothing unless the parent started it.
#[test]
#[ignore = "run by state_larger_than_the_cache_stays_on_disk in a process of its own"]
fn state_memory_child() {
    use std::num::NonZeroUsize;
    use std::sync::Arc;

    use sluice::__private::{BatchEnv, MemoryInput, StreamGraph, WorkerPool};
    use sluice::checkpoint::{BatchRecord, Commit, StateChanges};
    use sluice::stream::BatchInfo;

    const PER_BATCH: u64 = 100_000;
    let Some(keys) = std::env::var("SLUICE_STATE_MEMORY_KEYS")
        .ok()
        .and_then(|k| k.parse::<u64>().ok())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = RocksCheckpoint::builder(dir.path())
        .app_id("memory")
        .sync(false)
        .cache_bytes(8 << 20)
        .open()
        .unwrap();
    let graph = StreamGraph::new();
    graph.set_shuffle_partitions(NonZeroUsize::new(2).unwrap());
    graph
        .input()
        .values_utf8()
        .map(|key| (key, ()))
        .map_with_state(
            "counts",
            StateSpec::function(|key: &String, _: Option<()>, page: &mut State<String>| {
                // A 100-byte state per key.
                page.update(format!("{key:>100}"));
            }),
        )
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .unwrap();
    store
        .open_states(&graph.states(), &StateChanges::default())
        .unwrap();
    let pool = Arc::new(WorkerPool::new(2, 1).unwrap());
    for (id, from) in (0..keys).step_by(PER_BATCH as usize).enumerate() {
        let until = (from + PER_BATCH).min(keys);
        let input = MemoryInput::new()
            .with_partition(
                "keys",
                0,
                (from..until).step_by(2).map(|k| format!("key{k:09}")),
            )
            .with_partition(
                "keys",
                1,
                (from + 1..until).step_by(2).map(|k| format!("key{k:09}")),
            );
        let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
        let env =
            BatchEnv::new(info, Arc::new(input), pool.clone()).with_state(store.state_store());
        let output = graph.run(env).unwrap();
        store
            .commit(Commit {
                record: BatchRecord::new(id as u64, 0),
                next_offsets: Vec::new(),
                writes: output.writes,
            })
            .unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    println!("\nPEAK_RSS_BYTES={}", peak * 1024);
}

/// The peak resident memory of a child writing `keys` keys of state.
fn state_memory_peak(keys: u64) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "state::state_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_STATE_MEMORY_KEYS", keys.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("running the state memory child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child with {keys} keys failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_BYTES="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak in the child's output:\n{stdout}"))
}

#[test]
fn state_larger_than_the_cache_stays_on_disk() {
    // A million more keys: a state kept in a hash map of its 13-byte string
    // keys and 100-byte states would add about 200 bytes per key (190 MiB);
    // the cache (8 MiB, memtables included) bounds what RocksDB holds, so
    // the peaks differ by what flushes and compactions hold at the moment
    // and allocator noise (12 to 34 MiB seen).
    // SLUICE_STATE_MEMORY_BIG_KEYS=10000000 checks 10M keys (minutes in a
    // debug build).
    const SMALL: u64 = 300_000;
    let big = std::env::var("SLUICE_STATE_MEMORY_BIG_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(SMALL + 1_000_000);
    let (small_peak, big_peak) = (state_memory_peak(SMALL), state_memory_peak(big));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "peak RSS: {:.0} MiB with {SMALL} keys, {:.0} MiB with {big} keys",
        mib(small_peak),
        mib(big_peak)
    );
    assert!(
        big_peak <= small_peak + (64 << 20),
        "{big} keys peaked at {:.0} MiB against {:.0} MiB for {SMALL}: state is held in memory",
        mib(big_peak),
        mib(small_peak)
    );
}
