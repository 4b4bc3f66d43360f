//! Windows end to end: the window_counts example (event-time tumbling
//! windows, late records to dead letters) killed, stopped and restarted on
//! a tansu broker; a batch-time window restarted mid-window; and the
//! upgrade checks that refuse a changed window.
//!
//! The event-time input is built so that which records are late does not
//! depend on how the job cuts it into batches: an on-time record is at
//! most [`JITTER_MS`] (< the allowed lateness) behind the records before
//! it, and a late record ([`LATE_BY_MS`] behind) is produced only once the
//! committed watermark has passed its window, as read back from the
//! committed offsets. So the brute force below knows every result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;

use crate::util::job::{self, RunningJob, WAIT};
use crate::util::kafka;
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, Wordcount};

/// The example's app id, window name and dead-letter family.
const APP_ID: &str = "window_counts";
const WINDOW: &str = "word_windows";
const LATE: &str = "late_words";
const TOPIC: &str = "lines";
const PARTITIONS: i32 = 3;

/// Event time of record 0 of the sequence.
const BASE_MS: i64 = 1_700_000_000_000;
/// Event time between two consecutive records of the sequence.
const STEP_MS: i64 = 10;
const WINDOW_MS: i64 = 500;
const LATENESS_MS: i64 = 300;
/// How far an on-time record may be behind its place (< [`LATENESS_MS`]).
const JITTER_MS: i64 = 190;
/// How far a late record is behind its place.
const LATE_BY_MS: i64 = 2_500;
/// Records produced at a time.
const CHUNK: usize = 30;

/// Record `i` of the sequence: on partition `i % 3` at offset `i / 3`.
#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    time: i64,
    line: String,
    late: bool,
}

fn sequence(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let late = i >= 300 && i % 23 == 11;
            let jitter = (i as i64 * 7 % 20) * 10;
            let on_time = BASE_MS + i as i64 * STEP_MS - jitter.min(JITTER_MS);
            Rec {
                partition: i as i32 % PARTITIONS,
                offset: i as i64 / i64::from(PARTITIONS),
                time: if late { on_time - LATE_BY_MS } else { on_time },
                line: job::line(i),
                late,
            }
        })
        .collect()
}

fn window_end(time: i64) -> i64 {
    time - time.rem_euclid(WINDOW_MS) + WINDOW_MS
}

/// The watermark after a job read the first `read[p]` records of each
/// partition: the least greatest event time, minus the lateness; `None`
/// until every partition brought a record.
fn watermark(recs: &[Rec], read: &BTreeMap<i32, i64>) -> Option<i64> {
    let mut max: BTreeMap<i32, i64> = BTreeMap::new();
    for r in recs {
        if r.offset < read.get(&r.partition).copied().unwrap_or(0) {
            let m = max.entry(r.partition).or_insert(i64::MIN);
            *m = (*m).max(r.time);
        }
    }
    (max.len() == PARTITIONS as usize)
        .then(|| max.values().min().copied().unwrap_or(i64::MIN) - LATENESS_MS)
}

/// The next offset of every partition after the first `n` records.
fn ends(recs: &[Rec]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for r in recs {
        ends.insert(r.partition, r.offset + 1);
    }
    ends
}

/// What `window_counts --totals` must print once the job read `recs`:
/// every closed window's word counts over its on-time records, and the late
/// count.
fn expected_totals(recs: &[Rec]) -> (BTreeMap<(i64, String), i64>, u64) {
    let closed_until = watermark(recs, &ends(recs)).expect("every partition has records");
    let mut counts = BTreeMap::new();
    for r in recs.iter().filter(|r| !r.late) {
        let end = window_end(r.time);
        if end <= closed_until {
            for word in r.line.split_ascii_whitespace() {
                *counts
                    .entry((end - WINDOW_MS, word.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    let late = recs.iter().filter(|r| r.late).count() as u64;
    (counts, late)
}

/// What `window_counts --totals` prints, parsed.
fn totals(dir: &Path) -> (BTreeMap<(i64, String), i64>, u64) {
    let out = Command::new(wordcount::example("window_counts"))
        .args(["--totals", "--checkpoint-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running window_counts --totals");
    assert!(
        out.status.success(),
        "window_counts --totals exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("the totals are UTF-8");
    let mut lines: Vec<&str> = text.lines().collect();
    let late = lines
        .pop()
        .and_then(|l| l.strip_prefix("late\t"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the totals do not end with late<TAB>N:\n{text}"));
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| {
        let mut f = l.split('\t');
        (
            f.next().and_then(|s| s.parse::<i64>().ok()),
            f.next().map(str::to_owned),
        )
    });
    assert_eq!(lines, sorted, "the totals are sorted by start, then word");
    let counts = lines
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 3, "a totals line is start, word, count: {line:?}");
            let start = f[0].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let count = f[2].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
            ((start, f[1].to_owned()), count)
        })
        .collect();
    (counts, late)
}

/// The committed next offsets per partition, read while the job may run.
fn committed(dir: &Path) -> BTreeMap<i32, i64> {
    let Ok(store) = RocksCheckpoint::open_read_only(dir, APP_ID) else {
        return BTreeMap::new();
    };
    store
        .offsets()
        .unwrap_or_default()
        .into_iter()
        .map(|(tp, offset)| (tp.partition, offset))
        .collect()
}

fn last_batch(dir: &Path) -> Option<u64> {
    let store = RocksCheckpoint::open_read_only(dir, APP_ID).ok()?;
    Some(store.last_batch().ok()??.id)
}

/// Produces `recs[range]` in chunks, holding each chunk with a late record
/// until the committed watermark has passed that record's window, so it is
/// late whatever the batches look like.
fn produce_gated(bootstrap: &str, dir: &Path, recs: &[Rec], range: std::ops::Range<usize>) {
    for from in range.clone().step_by(CHUNK) {
        let chunk = &recs[from..(from + CHUNK).min(range.end)];
        if let Some(need) = chunk
            .iter()
            .filter(|r| r.late)
            .map(|r| window_end(r.time))
            .max()
        {
            job::poll(
                &format!("a committed watermark at {need} for record {from}"),
                WAIT,
                || (watermark(&recs[..from], &committed(dir)) >= Some(need)).then_some(()),
                || format!("committed offsets {:?}", committed(dir)),
            );
        }
        let records: Vec<(i32, i64, String)> = chunk
            .iter()
            .map(|r| (r.partition, r.time, r.line.clone()))
            .collect();
        kafka::produce_timed(bootstrap, TOPIC, &records);
        thread::sleep(Duration::from_millis(20));
    }
}

/// A tansu broker with the 3-partition topic.
fn broker() -> Tansu {
    let broker = Tansu::start();
    broker.create_topic(TOPIC, PARTITIONS);
    broker
}

fn start(bootstrap: &str, dir: &Path, log: &Path, window_ms: i64) -> Wordcount {
    Wordcount::start_example(
        "window_counts",
        bootstrap,
        TOPIC,
        dir,
        log,
        50,
        &[
            "--window-ms",
            &window_ms.to_string(),
            "--allowed-lateness-ms",
            &LATENESS_MS.to_string(),
        ],
    )
}

/// Waits until the job committed every record of `recs`.
fn wait_for_all(dir: &Path, recs: &[Rec], child: &mut Wordcount) {
    let want = ends(recs);
    job::poll(
        "every record committed",
        WAIT,
        || {
            child.assert_running();
            (committed(dir) == want).then_some(())
        },
        || format!("committed {:?}, want {want:?}", committed(dir)),
    );
}

/// The totals equal the brute force over `recs`; the dead letters are
/// exactly the late records, and the batch records count them.
fn assert_exact(dir: &Path, recs: &[Rec], context: &str) {
    let (want, want_late) = expected_totals(recs);
    let (got, late) = totals(dir);
    assert!(want.len() > 20, "{context}: too few closed windows to test");
    if got != want {
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        panic!("{context}: totals differ; expected but not got {missing:?}; got but not expected {extra:?}");
    }
    assert_eq!(late, want_late, "{context}: late count");

    let store = job::open_checkpoint(dir, APP_ID);
    let counted: u64 = store
        .batches()
        .unwrap()
        .iter()
        .flat_map(|b| b.late_records.clone())
        .map(|l| {
            assert_eq!(l.window, WINDOW, "{context}");
            assert_eq!(l.topic, TOPIC, "{context}");
            l.count
        })
        .sum();
    assert_eq!(
        counted, want_late,
        "{context}: late records in the batch records"
    );
    let letters = store.dead_letters(LATE).unwrap();
    let kept: BTreeSet<(i32, i64)> = letters.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(kept.len(), letters.len(), "{context}: a dead letter twice");
    let late: BTreeMap<(i32, i64), &Rec> = recs
        .iter()
        .filter(|r| r.late)
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    assert_eq!(
        kept,
        late.keys().copied().collect(),
        "{context}: dead-letter coordinates"
    );
    for d in &letters {
        let r = late[&(d.partition, d.offset)];
        assert_eq!(d.topic, TOPIC);
        assert_eq!(d.timestamp, Some(r.time), "{context}: {d:?}");
        assert!(
            d.error
                .starts_with("late record in event_time_window(\"word_windows\")"),
            "{context}: {}",
            d.error
        );
    }
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
fn window_counts_killed_at_random_moments_closes_every_window_once_and_exactly() {
    const RECORDS: usize = 3000;
    const KILLS: usize = 10;
    let seed = seed();
    eprintln!("window_counts crash loop seed: {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    wordcount::example("window_counts");
    let broker = broker();
    let bootstrap = broker.bootstrap();
    let recs = sequence(RECORDS);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("window_counts.log");

    // The first chunk before the job starts: its first batch sees every
    // partition, so none starts behind a watermark set by the others.
    produce_gated(&bootstrap, &dir, &recs, 0..CHUNK);
    let producer = {
        let (bootstrap, dir, recs) = (bootstrap.clone(), dir.clone(), recs.clone());
        thread::spawn(move || produce_gated(&bootstrap, &dir, &recs, CHUNK..RECORDS))
    };
    for run in 0..KILLS {
        let before = last_batch(&dir);
        let mut child = start(&bootstrap, &dir, &log, WINDOW_MS);
        job::poll(
            &format!("a batch committed by run {run} (seed {seed})"),
            WAIT,
            || {
                child.assert_running();
                (last_batch(&dir) > before).then_some(())
            },
            || format!("seed {seed}: last batch {:?}", last_batch(&dir)),
        );
        thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        child.kill();
    }
    let mut child = start(&bootstrap, &dir, &log, WINDOW_MS);
    producer.join().expect("the producer thread panicked");
    wait_for_all(&dir, &recs, &mut child);
    let status = child.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "seed {seed}: the last run exited with {status}"
    );
    assert_exact(&dir, &recs, &format!("seed {seed}"));
}

#[test]
fn window_counts_stopped_mid_window_and_restarted_continues_the_window_exactly() {
    const RECORDS: usize = 2400;
    // Mid-window: record MID - 1 and MID share a window.
    const MID: usize = 1225;
    wordcount::example("window_counts");
    let broker = broker();
    let bootstrap = broker.bootstrap();
    let recs = sequence(RECORDS);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("window_counts.log");

    produce_gated(&bootstrap, &dir, &recs, 0..CHUNK);
    let mut child = start(&bootstrap, &dir, &log, WINDOW_MS);
    produce_gated(&bootstrap, &dir, &recs, CHUNK..MID);
    wait_for_all(&dir, &recs[..MID], &mut child);
    let status = child.terminate(Duration::from_secs(30));
    assert!(status.success(), "the first run exited with {status}");

    // Exact so far, and the window of the last record read is open, with
    // records in it on both sides of the stop.
    assert_exact(&dir, &recs[..MID], "after the stop");
    let open = window_end(recs[MID - 1].time) - WINDOW_MS;
    assert_eq!(open, window_end(recs[MID].time) - WINDOW_MS);
    let (at_stop, _) = totals(&dir);
    assert!(
        !at_stop.keys().any(|(start, _)| *start == open),
        "window {open} closed before its records were all read"
    );

    let mut child = start(&bootstrap, &dir, &log, WINDOW_MS);
    produce_gated(&bootstrap, &dir, &recs, MID..RECORDS);
    wait_for_all(&dir, &recs, &mut child);
    let status = child.terminate(Duration::from_secs(30));
    assert!(status.success(), "the second run exited with {status}");
    assert_exact(&dir, &recs, "after the restart");
    let (done, _) = totals(&dir);
    assert!(done.keys().any(|(start, _)| *start == open));
}

#[test]
fn window_counts_refuses_a_changed_window_length_and_leaves_the_checkpoint_alone() {
    wordcount::example("window_counts");
    let broker = broker();
    let bootstrap = broker.bootstrap();
    let recs = sequence(300);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let log = tmp.path().join("window_counts.log");
    produce_gated(&bootstrap, &dir, &recs, 0..recs.len());
    let mut child = start(&bootstrap, &dir, &log, WINDOW_MS);
    wait_for_all(&dir, &recs, &mut child);
    assert!(child.terminate(Duration::from_secs(30)).success());

    let snapshot = |dir: &Path| {
        let store = job::open_checkpoint(dir, APP_ID);
        (
            store.states().unwrap(),
            store.last_batch().unwrap().map(|b| b.id),
            store.offsets().unwrap(),
        )
    };
    let before = (snapshot(&dir), totals(&dir));
    let changed_log = tmp.path().join("changed.log");
    let child = start(&bootstrap, &dir, &changed_log, 2 * WINDOW_MS);
    let status = child.wait_for_exit(WAIT);
    let output = std::fs::read_to_string(&changed_log).unwrap();
    assert!(!status.success(), "a changed window started:\n{output}");
    for needle in [WINDOW, "size_ms=500", "size_ms=1000"] {
        assert!(
            output.contains(needle),
            "no {needle:?} in the error:\n{output}"
        );
    }
    assert_eq!((snapshot(&dir), totals(&dir)), before);
}

/// Lines of `words` words drawn from a few, per partition.
fn batch_time_lines(partition: i32, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| job::line(i * 3 + partition as usize))
        .collect()
}

#[test]
fn a_batch_time_window_restarted_mid_window_is_exact() {
    // Long enough that the windows after the restart still hold the
    // batches of the first run, on a loaded machine too: a stop and a
    // start took over 3 s on a busy CI machine.
    const LEN: Duration = Duration::from_millis(10_000);
    const SLIDE: Duration = Duration::from_millis(200);
    const PARTS: i32 = 2;
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "words", PARTS);
    let bootstrap = cluster.bootstrap_servers();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    // Batch id → (batch time ms, the window it emitted).
    type Emitted = Arc<Mutex<BTreeMap<u64, (i64, BTreeMap<String, i64>)>>>;
    let emitted: Emitted = Arc::default();
    let run = |emitted: &Emitted| {
        let ctx = job::context(&dir).build().unwrap();
        let source = job::source(&bootstrap)
            .subscribe(["words"])
            .build()
            .unwrap();
        let out = Arc::clone(emitted);
        ctx.kafka_stream(source)
            .unwrap()
            .values_utf8()
            .flat_map(|line| {
                line.split_ascii_whitespace()
                    .map(|w| (w.to_owned(), 1i64))
                    .collect::<Vec<_>>()
            })
            .reduce_by_key_and_window("words_10s", |a, b| a + b, LEN, SLIDE)
            .foreach_batch(move |batch, info| {
                let time = info.time.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
                let counts: BTreeMap<String, i64> = batch.into_iter().collect();
                let previous = out.lock().unwrap().insert(info.id, (time, counts));
                assert!(previous.is_none(), "batch {} ran twice", info.id);
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        RunningJob::start(ctx)
    };
    // What each partition holds, by offset.
    let mut produced: Vec<Vec<String>> = vec![Vec::new(); PARTS as usize];
    // `read`: records this run read so far.
    let mut produce = |running: &mut RunningJob, read: &mut u64, n: usize| {
        for p in 0..PARTS {
            let lines = batch_time_lines(p, produced[p as usize].len(), n);
            kafka::produce(&bootstrap, "words", Some(p), &lines);
            produced[p as usize].extend(lines);
        }
        *read += (n * PARTS as usize) as u64;
        running.wait_for_records(*read, "the lines just produced");
    };

    let mut first = run(&emitted);
    let mut read = 0;
    for _ in 0..6 {
        produce(&mut first, &mut read, 10);
    }
    let restart_id = first.stop().batches.last().map(|b| b.info.id + 1);
    let mut second = run(&emitted);
    let mut read = 0;
    for _ in 0..6 {
        produce(&mut second, &mut read, 10);
    }
    // Let the last lines leave the window, so every pane is checked.
    let last = second.batches().last().map(|b| b.info.id).unwrap_or(0);
    second.wait_for("a batch a window after the last records", |p| {
        let t = |b: &BatchCompleted| b.info.time;
        let end = p.batches.iter().find(|b| b.info.id == last).map(t)?;
        p.batches.iter().any(|b| t(b) > end + LEN).then_some(())
    });
    second.stop();

    // The brute force: each batch's word counts from what its committed
    // ranges hold, summed over the batches of each emitted window.
    let store = job::open_checkpoint(&dir, job::APP_ID);
    let batches = store.batches().unwrap();
    let per_batch: Vec<(i64, BTreeMap<String, i64>)> = batches
        .iter()
        .map(|b| {
            let lines = b.ranges.iter().flat_map(|r| {
                produced[r.partition as usize][r.from as usize..r.until as usize].iter()
            });
            (b.time_ms, job::word_counts(lines))
        })
        .collect();
    let emitted = emitted.lock().unwrap();
    let (len, slide) = (LEN.as_millis() as i64, SLIDE.as_millis() as i64);
    let mut windows = 0;
    let mut across_the_restart = false;
    for batch in &batches {
        let (time, got) = emitted
            .get(&batch.id)
            .unwrap_or_else(|| panic!("batch {} committed without its output", batch.id));
        assert_eq!(*time, batch.time_ms);
        if time % slide != 0 {
            assert!(
                got.is_empty(),
                "batch {} at {time} emitted {got:?}",
                batch.id
            );
            continue;
        }
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for (t, counts) in &per_batch {
            if time - len < *t && t <= time {
                for (word, n) in counts {
                    *want.entry(word.clone()).or_default() += n;
                }
            }
        }
        assert_eq!(got, &want, "window ending at batch {} ({time})", batch.id);
        windows += 1;
        if let Some(restart) = restart_id {
            let before_restart = batches
                .iter()
                .any(|b| b.id < restart && b.records > 0 && time - len < b.time_ms);
            across_the_restart |= batch.id >= restart && before_restart;
        }
    }
    assert!(windows > 10, "only {windows} windows");
    assert!(
        across_the_restart,
        "no window after the restart held records read before it (restart at {restart_id:?})"
    );
}

#[test]
fn a_batch_interval_the_window_is_not_a_multiple_of_is_refused_at_start() {
    let cluster = kafka::mock_cluster();
    kafka::create_mock_topic(&cluster, "words", 1);
    let bootstrap = cluster.bootstrap_servers();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let ctx = job::context(&dir)
        .batch_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let source = job::source(&bootstrap)
        .subscribe(["words"])
        .build()
        .unwrap();
    ctx.kafka_stream(source)
        .unwrap()
        .values_utf8()
        .map(|w| (w, 1i64))
        .reduce_by_key_and_window(
            "words_1s",
            |a, b| a + b,
            Duration::from_millis(1000),
            Duration::from_millis(600),
        )
        .foreach_batch(|_, _| Ok::<_, std::io::Error>(()))
        .unwrap();
    let error = ctx.start().unwrap_err().to_string();
    assert!(
        error.contains("reduce_by_key_and_window(\"words_1s\")")
            && error.contains("window length (1s) is not a multiple of the batch interval (300ms)"),
        "{error}"
    );
    drop(ctx);
    if dir.exists() {
        let store = job::open_checkpoint(&dir, job::APP_ID);
        assert_eq!(store.last_batch().unwrap(), None, "a batch was committed");
    }
}
