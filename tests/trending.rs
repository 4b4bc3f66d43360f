//! The trending example (a batch-time sliding window kept incrementally
//! with an inverse function) killed with SIGKILL at random moments on a
//! tansu broker, while lines keep coming: every window it committed equals
//! the brute force over the batches the checkpoint says it committed, and
//! none was emitted twice (the committed counts would be doubled).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::checkpoint::{CheckpointStore, RocksCheckpoint};

use crate::util::job::{self, WAIT};
use crate::util::kafka;
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, Wordcount};

const APP_ID: &str = "trending";
const TOPIC: &str = "lines";
const PARTITIONS: i32 = 3;
const BATCH_MS: i64 = 100;
const WINDOW_MS: i64 = 1_000;
const SLIDE_MS: i64 = 200;

fn start(bootstrap: &str, dir: &Path, log: &Path) -> Wordcount {
    Wordcount::start_example(
        "trending",
        bootstrap,
        TOPIC,
        dir,
        log,
        BATCH_MS as u64,
        &[
            "--window-ms",
            &WINDOW_MS.to_string(),
            "--slide-ms",
            &SLIDE_MS.to_string(),
        ],
    )
}

fn last_batch(dir: &Path) -> Option<u64> {
    wordcount::committed_by(dir, APP_ID).map(|(id, _)| id)
}

/// The committed next offset of every partition.
fn committed(dir: &Path) -> BTreeMap<i32, i64> {
    wordcount::committed_by(dir, APP_ID)
        .map(|(_, offsets)| {
            offsets
                .into_iter()
                .map(|(tp, offset)| (tp.partition, offset))
                .collect()
        })
        .unwrap_or_default()
}

/// What `trending --totals` prints: (batch time, word) → count.
fn totals(dir: &Path) -> BTreeMap<i64, BTreeMap<String, i64>> {
    let out = Command::new(wordcount::example("trending"))
        .args(["--totals", "--checkpoint-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running trending --totals");
    assert!(
        out.status.success(),
        "trending --totals exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut windows: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            f.len(),
            3,
            "a totals line is time<TAB>word<TAB>count: {line:?}"
        );
        let time = f[0].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let count = f[2].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        windows
            .entry(time)
            .or_default()
            .insert(f[1].to_owned(), count);
    }
    windows
}

fn seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64;
    std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .map_or(now, |s| s.parse().expect("SLUICE_CRASH_SEED is a number"))
}

#[test]
fn trending_killed_at_random_moments_emits_every_batch_time_window_once_and_exactly() {
    const KILLS: usize = 10;
    const LINES_PER_RUN: usize = 40;
    let seed = seed();
    eprintln!("trending crash loop seed: {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    wordcount::example("trending");
    let broker = Tansu::start();
    broker.create_topic(TOPIC, PARTITIONS);
    let bootstrap = broker.bootstrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("trending.log");

    // What each partition holds, by offset.
    let mut produced: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    let mut produce = |n: usize| {
        for p in 0..PARTITIONS {
            let held = &mut produced[p as usize];
            let lines: Vec<String> = (held.len()..held.len() + n)
                .map(|i| job::line(i * 3 + p as usize))
                .collect();
            kafka::produce(&bootstrap, TOPIC, Some(p), &lines);
            held.extend(lines);
        }
    };
    // The first batch of every run after the first.
    let mut restarts = Vec::new();
    for run in 0..KILLS {
        let before = last_batch(&dir);
        if let Some(id) = before {
            restarts.push(id + 1);
        }
        let mut child = start(&bootstrap, &dir, &log);
        job::poll(
            &format!("a batch committed by run {run} (seed {seed})"),
            WAIT,
            || {
                child.assert_running();
                (last_batch(&dir) > before).then_some(())
            },
            || format!("seed {seed}: last batch {:?}", last_batch(&dir)),
        );
        produce(rng.random_range(1..LINES_PER_RUN));
        thread::sleep(Duration::from_millis(rng.random_range(0..600)));
        child.kill();
    }
    restarts.extend(last_batch(&dir).map(|id| id + 1));
    let mut child = start(&bootstrap, &dir, &log);
    produce(LINES_PER_RUN);
    let want: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, produced[p as usize].len() as i64))
        .collect();
    let read_all = job::poll(
        "every line committed",
        WAIT,
        || {
            child.assert_running();
            (committed(&dir) == want).then(|| last_batch(&dir).unwrap())
        },
        || {
            format!(
                "seed {seed}: committed {:?}, want {want:?}",
                committed(&dir)
            )
        },
    );
    // Let the last lines leave the window, so every pane is checked.
    job::poll(
        "a window after the last lines",
        WAIT,
        || {
            child.assert_running();
            (last_batch(&dir)? > read_all + (WINDOW_MS / BATCH_MS) as u64 + 1).then_some(())
        },
        || format!("seed {seed}: last batch {:?}", last_batch(&dir)),
    );
    let status = child.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "seed {seed}: the last run exited with {status}"
    );

    // The brute force: each committed batch's word counts from the lines
    // its ranges hold, summed over the batches of each window.
    let store = RocksCheckpoint::open_read_only(&dir, APP_ID).unwrap();
    let batches = store.batches().unwrap();
    assert_eq!(
        batches[0].id, 0,
        "seed {seed}: the batch history is complete"
    );
    let per_batch: Vec<(u64, i64, BTreeMap<String, i64>)> = batches
        .iter()
        .map(|b| {
            let lines = b.ranges.iter().flat_map(|r| {
                produced[r.partition as usize][r.from as usize..r.until as usize].iter()
            });
            (b.id, b.time_ms, job::word_counts(lines))
        })
        .collect();
    let mut got = totals(&dir);
    let mut windows = 0;
    let mut across_a_kill = 0;
    for batch in &batches {
        let emitted = got.remove(&batch.time_ms).unwrap_or_default();
        if batch.time_ms % SLIDE_MS != 0 {
            assert!(
                emitted.is_empty(),
                "seed {seed}: batch {} at {} is not at a slide and emitted {emitted:?}",
                batch.id,
                batch.time_ms
            );
            continue;
        }
        let inside: Vec<&(u64, i64, BTreeMap<String, i64>)> = per_batch
            .iter()
            .filter(|(_, t, _)| batch.time_ms - WINDOW_MS < *t && *t <= batch.time_ms)
            .collect();
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for (_, _, counts) in &inside {
            for (word, n) in counts {
                *want.entry(word.clone()).or_default() += n;
            }
        }
        assert_eq!(
            emitted, want,
            "seed {seed}: the window ending at batch {} ({})",
            batch.id, batch.time_ms
        );
        windows += 1;
        across_a_kill += usize::from(restarts.iter().any(|&first| {
            batch.id >= first
                && inside
                    .iter()
                    .any(|(id, _, counts)| *id < first && !counts.is_empty())
        }));
    }
    assert!(
        got.is_empty(),
        "seed {seed}: windows of batches the checkpoint does not hold: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    assert!(windows > 20, "seed {seed}: only {windows} windows");
    assert!(
        across_a_kill > 0,
        "seed {seed}: no window held records read before a kill and was emitted after it"
    );
}
