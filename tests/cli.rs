//! The `sluice` command-line tool, run as a process against checkpoints
//! written by the real wordcount and sessions examples on a tansu broker.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use sluice::checkpoint::{BatchRecord, CheckpointStore, Commit, RocksCheckpoint};
use sluice::kafka::TopicPartition;
use sluice::sink::WriteSet;

use crate::util::job::{self, WAIT};
use crate::util::kafka;
use crate::util::tansu::Tansu;
use crate::util::wordcount::{self, Wordcount, APP_ID};

/// Runs `sluice ARGS`; returns its output.
fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the sluice binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `sluice ARGS`, fails the test unless it exits 0, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "sluice {args:?} exited with {}:\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `sluice ARGS`, fails the test unless it exits with `code`, returns
/// stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = sluice(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "sluice {args:?}: expected exit {code}:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("panicked"),
        "sluice {args:?} panicked:\n{}",
        stderr(&out)
    );
    stderr(&out)
}

/// Waits until the wordcount checkpoint in `dir` has read `records` records.
fn wait_for_offsets(dir: &Path, records: i64, child: &mut Wordcount) -> u64 {
    job::poll(
        &format!("{records} records committed"),
        WAIT,
        || {
            child.assert_running();
            let (id, offsets) = wordcount::committed(dir)?;
            (offsets.values().sum::<i64>() == records).then_some(id)
        },
        || wordcount::describe(dir),
    )
}

/// Copies a checkpoint directory that no process has open.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue; // restore points
        }
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Writes a wordcount checkpoint as a job leaves it after `batches` batches
/// that each read 10 records from every one of `lines:0..partitions`,
/// through the RocksDB store a job commits to (no restore points). For the
/// commands that need no broker; returns the stored offsets.
fn committed_checkpoint(dir: &Path, batches: u64, partitions: i32) -> Vec<(TopicPartition, i64)> {
    let mut store = RocksCheckpoint::builder(dir).app_id(APP_ID).open().unwrap();
    let mut next = Vec::new();
    for id in 0..batches {
        let mut record = BatchRecord::new(id, 1_700_000_000_000 + id as i64 * 100);
        record.records = 10 * partitions as u64;
        record.processing_ms = 5;
        next = (0..partitions)
            .map(|p| (TopicPartition::new("lines", p), (id as i64 + 1) * 10))
            .collect();
        store
            .commit(Commit {
                record,
                next_offsets: next.clone(),
                writes: WriteSet::new(),
            })
            .unwrap();
    }
    next
}

/// The stored offsets of the wordcount checkpoint in `dir`.
fn stored_offsets(dir: &Path) -> Vec<(TopicPartition, i64)> {
    RocksCheckpoint::open_read_only(dir, APP_ID)
        .unwrap()
        .offsets()
        .unwrap()
        .into_iter()
        .collect()
}

/// A running `sluice ui --listen 127.0.0.1:0 DIR`, killed when dropped (so
/// also when a test fails).
struct UiProcess {
    child: std::process::Child,
    /// The base URL it printed, without the trailing `/`.
    url: String,
}

impl UiProcess {
    fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1:0")
    }

    /// `sluice ui --listen LISTEN DIR`, reached through 127.0.0.1.
    fn start_on(dir: &Path, listen: &str) -> Self {
        use std::io::{BufRead, BufReader};

        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["ui", "--listen", listen])
            .arg(dir)
            .env_remove("SLUICE_HTTP_TOKEN")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .trim_end_matches('/')
            .replace("0.0.0.0", "127.0.0.1");
        Self { child, url }
    }

    /// GET `path`: status and body, whatever the status.
    fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("{}{path}", self.url))
    }
}

impl Drop for UiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url`: status and body, whatever the status.
fn http_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn cli_rewind_then_restart_gives_the_results_of_a_run_stopped_at_that_batch() {
    wordcount::binary();
    let broker = Tansu::start();
    broker.create_topic("lines", 3);
    let bootstrap = broker.bootstrap();
    let lines: Vec<String> = (0..600).map(job::line).collect();
    let (first, second) = lines.split_at(300);
    kafka::produce(&bootstrap, "lines", None, first);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let d = dir.to_str().unwrap();
    let log = tmp.path().join("wordcount.log");
    let start = || {
        Wordcount::start_with_args(
            &bootstrap,
            "lines",
            &dir,
            &log,
            100,
            &["--restore-points", "1"],
        )
    };

    // Run 1 reads the first half and stops: batch N is its last.
    let mut child = start();
    wait_for_offsets(&dir, 300, &mut child);
    assert!(child.terminate(WAIT).success());
    let (n, offsets_at_n) = wordcount::committed(&dir).unwrap();
    let at_n = tmp.path().join("at-n");
    copy_dir(&dir, &at_n);
    let totals_at_n = wordcount::totals(&at_n);
    assert!(!totals_at_n.is_empty());

    // Run 2 reads the second half; read commands work while it runs, and
    // a change is refused because the job holds the checkpoint.
    kafka::produce(&bootstrap, "lines", None, second);
    let mut child = start();
    wait_for_offsets(&dir, 600, &mut child);
    let info = ok(&["checkpoint", "info", d]);
    assert!(info.contains("app id          wordcount"), "{info}");
    let refused = fails(&["offsets", "set", d, "lines:0=0"], 3);
    assert!(refused.contains("held by a running job"), "{refused}");
    assert!(refused.contains(d), "{refused}");
    let refused = fails(&["rewind", d, "--to-batch", &n.to_string()], 3);
    assert!(refused.contains("held by a running job"), "{refused}");
    assert!(child.terminate(WAIT).success());
    let totals_full = wordcount::totals(&dir);
    assert_ne!(totals_full, totals_at_n);

    // info: app id, schema, offsets, families with sizes, restore points.
    let info = ok(&["checkpoint", "info", d]);
    for expected in [
        "schema version  1",
        "lines:0",
        "word_counts",
        "restore points  batches",
    ] {
        assert!(info.contains(expected), "{expected:?} missing:\n{info}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["checkpoint", "info", d, "--json"])).unwrap();
    assert_eq!(json["app_id"], APP_ID);
    let next: i64 = json["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["next_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(next, 600);
    assert!(json["restore_points"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(n)));

    // batches: every committed batch, in order; --since filters by time.
    let history: Vec<serde_json::Value> = ok(&["batches", d, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = history.iter().map(|b| b["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids.contains(&n),
        "{ids:?}"
    );
    let records: u64 = history.iter().map(|b| b["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 600);
    // Each batch fetched its records from Kafka once.
    for batch in &history {
        assert_eq!(batch["records_fetched"], batch["records"], "{batch}");
    }
    assert!(ok(&["batches", d, "--since", "2999-01-01T00:00:00Z", "--json"]).is_empty());
    let table = ok(&["batches", d]);
    assert!(
        table.contains("processing ms") && table.contains("fetched"),
        "{table}"
    );

    // lag: nothing behind.
    let lag = ok(&["lag", d, "--brokers", &bootstrap]);
    assert!(
        lag.lines().last().unwrap().trim_end().ends_with(" 0"),
        "{lag}"
    );

    // Dry runs change nothing.
    let before = wordcount::committed(&dir).unwrap();
    let dry = ok(&["rewind", d, "--to-batch", &n.to_string(), "--dry-run"]);
    assert!(
        dry.contains("would rewind") && dry.contains("nothing was changed"),
        "{dry}"
    );
    let dry = ok(&["offsets", "set", d, "lines:0=0", "--dry-run"]);
    assert!(dry.contains("would set lines:0"), "{dry}");
    assert_eq!(wordcount::committed(&dir).unwrap(), before);
    assert_eq!(wordcount::totals(&dir), totals_full);

    // A batch without a restore point is refused, listing those there are.
    let refused = fails(&["rewind", d, "--to-batch", "99999999"], 1);
    assert!(
        refused.contains("no restore point for batch 99999999")
            && refused.contains(&format!("{n}")),
        "{refused}"
    );

    // Write commands leave restore points as they were taken (regression:
    // `offsets set` on `DIR/restore/N` changed what a rewind restores).
    let point = dir.join("restore").join(n.to_string());
    let point = point.to_str().unwrap();
    for args in [
        vec!["offsets", "set", point, "lines:0=5"],
        vec!["rewind", point, "--to-batch", "0"],
    ] {
        let refused = fails(&args, 1);
        assert!(
            refused.contains(&format!("is the restore point of batch {n} of checkpoint")),
            "{args:?}: {refused}"
        );
    }
    assert!(ok(&["checkpoint", "info", point]).contains("offsets"));

    // The rewind: offsets, results and history are those right after N.
    let rewound = ok(&["rewind", d, "--to-batch", &n.to_string()]);
    assert!(rewound.contains("rewound checkpoint"), "{rewound}");
    assert_eq!(wordcount::committed(&dir).unwrap(), (n, offsets_at_n));
    assert_eq!(wordcount::totals(&dir), totals_at_n);
    let lag = ok(&["lag", d, "--brokers", &bootstrap, "--json"]);
    let behind: i64 = lag
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lag"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(behind, 300, "{lag}");
    {
        let store = RocksCheckpoint::open_read_only(&dir, APP_ID).unwrap();
        assert!(store.batches().unwrap().iter().all(|b| b.id <= n));
        // The history says so (regression: a rewind left no trace).
        let last = store.last_batch().unwrap().unwrap();
        assert_eq!(last.id, n);
        let notes: Vec<&str> = last.control.iter().map(|c| c.change.as_str()).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("rewound to this batch from batch ")
                && notes[0].contains("(sluice rewind)"),
            "{notes:?}"
        );
        assert!(store.restore_points().unwrap().iter().all(|&p| p <= n));
    }

    // Restarted, the job replays the second half exactly once.
    let mut child = start();
    wait_for_offsets(&dir, 600, &mut child);
    assert!(child.terminate(WAIT).success());
    assert_eq!(wordcount::totals(&dir), totals_full);

    // counts: the job's results, largest first (regression: the tool had no
    // way to show them); the same totals as the example's own --totals.
    let counts = ok(&["counts", d, "word_counts"]);
    let mut by_key: Vec<&str> = counts.lines().collect();
    let values: Vec<i64> = by_key
        .iter()
        .map(|l| l.rsplit('\t').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {counts}"
    );
    by_key.sort_unstable();
    let mut expected: Vec<&str> = totals_full.lines().collect();
    expected.sort_unstable();
    assert_eq!(by_key, expected);
    let top = ok(&["counts", d, "word_counts", "--top", "2", "--json"]);
    assert_eq!(top.lines().count(), 2, "{top}");
    let first: serde_json::Value = serde_json::from_str(top.lines().next().unwrap()).unwrap();
    assert_eq!(first["count"], values[0], "{top}");
    let error = fails(&["counts", d, "nope"], 1);
    assert!(
        error.contains("no family 'nope'") && error.contains("word_counts"),
        "{error}"
    );

    // offsets set: one write, read back; the job would resume there.
    ok(&["offsets", "set", d, "lines:0=0", "lines:1=5"]);
    let offsets = RocksCheckpoint::open_read_only(&dir, APP_ID)
        .unwrap()
        .offsets()
        .unwrap();
    let of = |p| offsets[&sluice::kafka::TopicPartition::new("lines", p)];
    assert_eq!((of(0), of(1)), (0, 5));
}

#[test]
fn cli_refuses_bad_input_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["checkpoint", "info", m],
        vec!["batches", m],
        vec!["state", "dump", m, "x"],
        vec!["rewind", m, "--to-batch", "1"],
        vec!["offsets", "set", m, "t:0=1"],
    ] {
        let error = fails(&args, 1);
        assert!(
            error.contains("no checkpoint at") && error.contains(m),
            "{args:?}: {error}"
        );
    }
    assert!(!missing.exists(), "a command created the checkpoint");
    for bad in ["t0=1", "t:x=1", "t:0=-1", ":0=1"] {
        let error = fails(&["offsets", "set", m, bad], 2);
        assert!(error.contains("TOPIC:PARTITION=OFFSET"), "{bad}: {error}");
    }
    fails(&["batches", m, "--since", "last tuesday"], 2);
    fails(&["frobnicate"], 2);
    // A directory that is not a checkpoint (an app.log in it does not make
    // it a damaged one), named as such, with advice for the command.
    std::fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    std::fs::write(tmp.path().join("app.log"), "started").unwrap();
    let error = fails(&["checkpoint", "info", tmp.path().to_str().unwrap()], 1);
    assert!(
        error.contains("is not a sluice checkpoint")
            && error.contains("point the command at a job's checkpoint directory")
            && !error.contains("corrupt"),
        "{error}"
    );
}

#[test]
fn cli_dumps_state_by_its_recorded_shapes_and_exports_dead_letters() {
    wordcount::example("sessions");
    let broker = Tansu::start();
    broker.create_topic("clicks", 2);
    let bootstrap = broker.bootstrap();
    let mut clicks: Vec<String> = (0..200)
        .map(|i| format!("user{} page{}", i % 5, i % 3))
        .collect();
    clicks.extend(["not a click at all".to_owned(), "lonely".to_owned()]);
    kafka::produce(&bootstrap, "clicks", None, &clicks);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let d = dir.to_str().unwrap();
    let log = tmp.path().join("sessions.log");
    let mut child = Wordcount::start_example(
        "sessions",
        &bootstrap,
        "clicks",
        &dir,
        &log,
        50,
        &["--idle-timeout-ms", "100000"],
    );
    job::poll(
        "every click committed",
        WAIT,
        || {
            child.assert_running();
            let store = RocksCheckpoint::open_read_only(&dir, "sessions").ok()?;
            (store.offsets().ok()?.values().sum::<i64>() == clicks.len() as i64).then_some(())
        },
        || format!("log {}", log.display()),
    );
    // Read-only commands work while the job runs.
    let dump = ok(&["state", "dump", d, "sessions", "--json"]);
    assert!(child.terminate(WAIT).success());

    let entries: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 5, "{dump}");
    let mut total = 0;
    for entry in &entries {
        assert!(
            entry["key"].as_str().unwrap().starts_with("user"),
            "{entry}"
        );
        total += entry["state"]["clicks"]
            .as_u64()
            .unwrap_or_else(|| panic!("{entry}"));
        assert!(entry["timeout_at"].is_i64(), "{entry}");
    }
    assert_eq!(total, 200);
    let text = ok(&["state", "dump", d, "sessions"]);
    assert!(text.contains("\"user0\"\t{"), "{text}");

    let error = fails(&["state", "dump", d, "no_such_state"], 1);
    assert!(
        error.contains("no state named 'no_such_state'") && error.contains("sessions"),
        "{error}"
    );

    let listed = ok(&["dead-letters", d]);
    assert!(
        listed.contains("2 dead letters in family 'bad_clicks'")
            // Records are named topic-partition@offset, as in errors and logs.
            && listed.contains("\n  clicks-"),
        "{listed}"
    );
    let file = tmp.path().join("dead.jsonl");
    ok(&["dead-letters", d, "--export", file.to_str().unwrap()]);
    let exported: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert!(exported.iter().all(|l| l["topic"] == "clicks"));
    let error = fails(&["dead-letters", d, "--family", "nope"], 1);
    assert!(error.contains("no family 'nope'"), "{error}");
    // Regression: a family of something else failed with a bare JSON error.
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id("sessions")
            .open()
            .unwrap();
        store.ensure_family("click_counts").unwrap();
        let last = store.last_batch().unwrap().unwrap();
        let mut writes = WriteSet::new();
        writes.add("click_counts", b"user0".to_vec(), 3);
        store
            .commit(Commit {
                record: BatchRecord::new(last.id + 1, last.time_ms + 1),
                next_offsets: store.offsets().unwrap().into_iter().collect(),
                writes,
            })
            .unwrap();
    }
    let error = fails(&["dead-letters", d, "--family", "click_counts"], 1);
    assert!(
        error.contains("family 'click_counts' of checkpoint")
            && error.contains("holds no dead letters")
            && error.contains("[\"bad_clicks\"]"),
        "{error}"
    );
}

#[test]
fn cli_ui_serves_a_stopped_jobs_batches_read_only() {
    // A checkpoint written by a real run: the wordcount reading 300 lines.
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "lines", 2);
    let lines: Vec<String> = (0..300).map(job::line).collect();
    kafka::produce(&bootstrap, "lines", None, &lines);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let run = Command::new(wordcount::binary())
        .args([
            "--brokers",
            &bootstrap,
            "--topic",
            "lines",
            "--until-caught-up",
        ])
        .args([
            "--batch-interval-ms",
            "50",
            "--max-rate-per-partition",
            "1000",
        ])
        .arg("--checkpoint-dir")
        .arg(&checkpoint)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let batches = RocksCheckpoint::open_read_only(&checkpoint, APP_ID)
        .unwrap()
        .batches()
        .unwrap();
    assert!(batches.len() > 1, "{batches:?}");

    let ui = UiProcess::start(&checkpoint);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();

    let (status, body) = ui.get("/api/batches?limit=1000");
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = listed["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = batches.iter().map(|b| b.id).collect();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids_sorted, expected);
    let last = batches.last().unwrap();
    let (status, body) = ui.get(&format!("/api/batches/{}", last.id));
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["records"], last.records);
    let (status, body) = ui.get("/api/overview");
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["status"]["state"], "checkpoint", "{body}");
    assert_eq!(overview["records_read"], lines.len(), "{body}");
    assert_eq!(overview["batches_committed"], last.id + 1, "{body}");
    // The job's settings are not in the checkpoint: unknown, not "none".
    assert!(overview["rate_limits"].is_null(), "{body}");
    assert!(view["commit_seconds"].is_null(), "{view}");
    // The processing rate from the batch's processing time in µs.
    let rate = last.records as f64 / (last.processing_us as f64 / 1e6);
    assert!(last.processing_us > 0, "{last:?}");
    assert!(
        (view["processing_rate"].as_f64().unwrap() - rate).abs() < 1e-6 * rate,
        "{view}"
    );
    // The input rate since the batch before started, as the records say.
    let before = &batches[batches.len() - 2];
    let gap_ms = last.processing_start_ms() - before.processing_start_ms();
    let rate = last.records as f64 / (gap_ms as f64 / 1e3);
    assert!(last.processed_at_ms.is_some(), "{last:?}");
    // A job with one output fetched each record once.
    assert_eq!(last.records_fetched, Some(last.records), "{last:?}");
    assert!(
        (view["input_rate"].as_f64().unwrap() - rate).abs() < 1e-6 * rate.max(1.0),
        "{view} after {gap_ms} ms"
    );

    // Nothing to control.
    let mut response = agent
        .post(format!("{}/api/control/pause", ui.url))
        .content_type("application/json")
        .send("{}")
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(body.contains("serves a checkpoint"), "{body}");
}

/// Regression: a mistyped topic or partition (`nosuch:0`, `lines:9`) was
/// written as a new position no job reads, with exit 0.
#[test]
fn cli_offsets_set_refuses_a_partition_the_checkpoint_does_not_hold_unless_new_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let d = dir.to_str().unwrap();
    committed_checkpoint(&dir, 3, 3);
    let before = stored_offsets(&dir);

    for args in [
        vec!["offsets", "set", d, "nosuch:0=5", "--dry-run"],
        vec!["offsets", "set", d, "nosuch:0=5"],
        vec!["offsets", "set", d, "lines:9=5"],
        // One refused argument refuses them all: lines:0 is not written.
        vec!["offsets", "set", d, "lines:0=7", "lines:9=5", "nosuch:0=1"],
    ] {
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        let error = stderr(&out);
        let refused: Vec<&str> = args[3..]
            .iter()
            .filter(|a| !a.starts_with("lines:0") && !a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap())
            .collect();
        let named = format!("holds no position for {}; ", refused.join(", "));
        for expected in [
            named.as_str(),
            "it holds lines:0, lines:1, lines:2",
            "--new-partition",
            "nothing was changed",
            d,
        ] {
            assert!(
                error.contains(expected),
                "{args:?}: {expected:?} missing: {error}"
            );
        }
        assert_eq!(stored_offsets(&dir), before, "{args:?} wrote");
    }

    // Known partitions: shown as the command line takes them.
    let dry = ok(&["offsets", "set", d, "lines:0=7", "--dry-run"]);
    assert_eq!(
        dry,
        "would set lines:0: 30 -> 7\ndry run: nothing was changed\n"
    );
    assert_eq!(stored_offsets(&dir), before);

    // --new-partition adds a position for a partition not read yet.
    let set = ok(&[
        "offsets",
        "set",
        d,
        "lines:0=7",
        "lines:3=5",
        "--new-partition",
    ]);
    assert_eq!(set, "set lines:0: 30 -> 7\nset lines:3: (none) -> 5\n");
    let after = stored_offsets(&dir);
    let of = |p| {
        after
            .iter()
            .find(|(tp, _)| *tp == TopicPartition::new("lines", p))
            .map(|o| o.1)
    };
    assert_eq!((of(0), of(1), of(3)), (Some(7), Some(30), Some(5)));

    // A checkpoint that has committed nothing holds no position at all.
    let empty = tmp.path().join("empty");
    committed_checkpoint(&empty, 0, 0);
    let e = empty.to_str().unwrap();
    let error = fails(&["offsets", "set", e, "lines:0=5"], 1);
    assert!(
        error.contains("no position for lines:0; it holds none yet"),
        "{error}"
    );
    assert!(stored_offsets(&empty).is_empty());
    ok(&["offsets", "set", e, "lines:0=5", "--new-partition"]);
    assert_eq!(
        stored_offsets(&empty),
        [(TopicPartition::new("lines", 0), 5)]
    );
}

/// Regression: `sluice ui` showed each partition's latest offset and log
/// start as its committed position with lag 0 (a rewound job looked caught
/// up), and a `/metrics` of zeros that contradicted `/api/overview`.
#[test]
fn cli_ui_shows_broker_figures_as_unknown_and_serves_no_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    committed_checkpoint(&dir, 4, 2);
    let ui = UiProcess::start(&dir);

    let (status, body) = ui.get("/api/partitions");
    assert_eq!(status, 200, "{body}");
    let partitions: serde_json::Value = serde_json::from_str(&body).unwrap();
    let partitions = partitions["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{body}");
    for p in partitions {
        assert_eq!(p["position"], 40, "{p}");
        for unknown in ["log_start", "latest", "lag"] {
            assert!(p[unknown].is_null(), "{unknown} should be null: {p}");
        }
    }

    let (status, page) = ui.get("/");
    assert_eq!(status, 200);
    let table = &page[page.find("<table id=partitions>").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let unknown_cells = table.matches("<td class=unknown").count();
    assert_eq!(unknown_cells, 2 * 3, "{table}");
    assert_eq!(table.matches("<td>40</td>").count(), 2, "{table}");
    assert!(page.contains("no broker was asked"), "{page}");
    assert!(!page.contains("href=\"/metrics\""), "{page}");
    // No pause or rate forms that could only be answered 409.
    assert!(page.contains("id=no-control"), "{page}");
    assert!(
        page.contains("– (read from a checkpoint)"),
        "no uptime for a checkpoint: {page}"
    );
    assert!(
        page.contains("a job may or may not be running on it"),
        "{page}"
    );
    assert!(!page.contains("max_rate none"), "no made-up limits: {page}");
    assert!(!page.contains("action=\"/control/"), "{page}");

    let (status, body) = ui.get("/metrics");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics come from a running job"), "{body}");
    assert!(!body.contains("sluice_batches_committed_total"), "{body}");
    let (_, overview) = ui.get("/api/overview");
    assert!(overview.contains("\"batches_committed\":4"), "{overview}");
    assert!(overview.contains("\"uptime_seconds\":null"), "{overview}");

    // Regression: beyond loopback it asked for a token for a control API it
    // does not have, naming a builder method. It serves reads only.
    drop(ui);
    let ui = UiProcess::start_on(&dir, "0.0.0.0:0");
    assert_eq!(ui.get("/api/overview").0, 200);
    let error = fails(&["ui", dir.to_str().unwrap(), "--listen", "nohost"], 1);
    assert!(
        error.contains("listen") && error.contains("'nohost'"),
        "{error}"
    );
}

/// Regression: `sluice ui` counted the batches and records of the retained
/// history as the job's, so a job with 14 117 batches showed 10 000.
#[test]
fn cli_ui_counts_batches_by_id_and_records_only_from_a_whole_history() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id(APP_ID)
            .retain_batches(2)
            .open()
            .unwrap();
        for id in 0..5 {
            let mut record = BatchRecord::new(id, 1_700_000_000_000 + id as i64 * 100);
            record.records = 10;
            store
                .commit(Commit {
                    record,
                    next_offsets: vec![(TopicPartition::new("lines", 0), (id as i64 + 1) * 10)],
                    writes: WriteSet::new(),
                })
                .unwrap();
        }
    }
    let ui = UiProcess::start(&dir);
    let (_, body) = ui.get("/api/overview");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(overview["batches_committed"], 5, "{body}");
    assert_eq!(overview["retained_batches"], 2, "{body}");
    assert!(overview["records_read"].is_null(), "{body}");
    let (_, page) = ui.get("/");
    assert!(
        page.contains("– (the history no longer holds the first batches)"),
        "{page}"
    );
}

/// Regression (newuser9): a window's `start<TAB>word` keys were printed
/// in hex, with `--json` too.
#[test]
fn cli_counts_prints_keys_with_tabs_as_text_and_others_as_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id(APP_ID)
            .open()
            .unwrap();
        store.ensure_family("windows").unwrap();
        let mut writes = WriteSet::new();
        writes.add("windows", b"1796484090000\tnew".to_vec(), 3);
        writes.add("windows", b"two\nlines".to_vec(), 2);
        writes.add("windows", vec![0xff, 0x00], 1);
        store
            .commit(Commit {
                record: BatchRecord::new(0, 1_700_000_000_000),
                next_offsets: vec![(TopicPartition::new("lines", 0), 1)],
                writes,
            })
            .unwrap();
    }
    let d = dir.to_str().unwrap();
    assert_eq!(
        ok(&["counts", d, "windows"]),
        "1796484090000\tnew\t3\n0x74776f0a6c696e6573\t2\n0xff00\t1\n"
    );
    let json: Vec<serde_json::Value> = ok(&["counts", d, "windows", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(json[0]["key"], "1796484090000\tnew");
    assert_eq!(json[1]["key"], "two\nlines");
    assert_eq!(json[2]["key_hex"], "ff00");
}

#[test]
fn cli_batches_skip_empty_keeps_batches_with_records_control_changes_or_resets() {
    use sluice::checkpoint::{ControlRecord, RangeRecord, ResetRecord, ResetRecordKind};
    use sluice::kafka::OffsetRange;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id(APP_ID)
            .open()
            .unwrap();
        let lines = TopicPartition::new("lines", 0);
        for id in 0..5 {
            let mut record = BatchRecord::new(id, 1_700_000_000_000 + id as i64 * 100);
            match id {
                0 => record.records = 5,
                2 => record.control = vec![ControlRecord::new(1_700_000_000_150, "pause")],
                // A recreated topic: reset, nothing read.
                3 => {
                    record.ranges =
                        vec![RangeRecord::from_range(&OffsetRange::new(&lines, 0, 0), 0)
                            .with_reset(ResetRecord::new(ResetRecordKind::PastLatest, 5), 5)]
                }
                _ => {}
            }
            store
                .commit(Commit {
                    record,
                    next_offsets: vec![(lines.clone(), 5)],
                    writes: WriteSet::new(),
                })
                .unwrap();
        }
    }
    let d = dir.to_str().unwrap();
    let ids = |text: String| -> Vec<String> {
        text.lines()
            .skip(1)
            .filter(|l| !l.trim_start().starts_with("control"))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(ok(&["batches", d])), ["0", "1", "2", "3", "4"]);
    assert_eq!(ids(ok(&["batches", d, "--skip-empty"])), ["0", "2", "3"]);
    let json = ok(&["batches", d, "--json", "--skip-empty"]);
    assert_eq!(json.lines().count(), 3, "{json}");
}

#[test]
fn cli_ui_shows_a_stored_batchs_latency_to_the_end_of_its_processing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id(APP_ID)
            .open()
            .unwrap();
        let mut timed = BatchRecord::new(0, 1_700_000_000_000);
        timed.records = 2;
        timed.scheduling_delay_ms = 5;
        timed.processing_ms = 20;
        timed.min_timestamp_ms = Some(1_699_999_998_500);
        timed.max_timestamp_ms = Some(1_699_999_999_900);
        let untimed = BatchRecord::new(1, 1_700_000_000_100);
        for (record, next) in [(timed, 2), (untimed, 2)] {
            store
                .commit(Commit {
                    record,
                    next_offsets: vec![(TopicPartition::new("lines", 0), next)],
                    writes: WriteSet::new(),
                })
                .unwrap();
        }
    }
    let ui = UiProcess::start(&dir);
    let batch = |id| {
        let (_, body) = ui.get(&format!("/api/batches/{id}"));
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    // 1.5 s before the batch time, then 5 ms of delay and 20 of processing.
    assert_eq!(batch(0)["max_latency_seconds"], 1.525);
    assert_eq!(batch(0)["min_timestamp_ms"], 1_699_999_998_500_i64);
    assert!(batch(1)["max_latency_seconds"].is_null());
    assert!(batch(1).get("min_timestamp_ms").is_none());
    let (_, page) = ui.get("/");
    assert!(page.contains("<td>1.52s</td></tr>"), "{page}");
}

/// Regression: with no restore points, the error named a builder method
/// that does not exist (`restore_points(every, keep)` on the job's
/// builder) and not the examples' flag.
#[test]
fn cli_rewind_without_restore_points_names_the_builder_method_and_the_examples_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let d = dir.to_str().unwrap();
    let before = committed_checkpoint(&dir, 3, 1);
    for args in [
        vec!["rewind", d, "--to-batch", "1", "--dry-run"],
        vec!["rewind", d, "--to-batch", "1"],
    ] {
        let error = fails(&args, 1);
        for expected in [
            "no restore point for batch 1; it has none",
            "StreamingContext::builder().checkpoint_restore_points(every, keep)",
            "--restore-points N",
        ] {
            assert!(
                error.contains(expected),
                "{args:?}: {expected:?} missing: {error}"
            );
        }
        assert!(!error.contains("opened with restore_points"), "{error}");
    }
    assert_eq!(stored_offsets(&dir), before);
}

/// Regression (newuser3 item 8): the text table of `sluice batches` showed
/// no resets, so a batch that skipped offsets looked like any other; only
/// `--json` had them.
#[test]
fn cli_batches_table_shows_each_batchs_resets_and_skipped_offsets() {
    use sluice::checkpoint::{RangeRecord, ResetRecord, ResetRecordKind};
    use sluice::kafka::OffsetRange;

    let dir = tempfile::tempdir().unwrap();
    committed_checkpoint(dir.path(), 2, 2);
    {
        let mut store = RocksCheckpoint::builder(dir.path())
            .app_id(APP_ID)
            .open()
            .unwrap();
        let lines = |p| TopicPartition::new("lines", p);
        let mut record = BatchRecord::new(2, 1_700_000_000_200);
        record.ranges = vec![
            RangeRecord::from_range(&OffsetRange::new(&lines(0), 0, 30), 30)
                .with_reset(ResetRecord::new(ResetRecordKind::PastLatest, 500), 470),
            RangeRecord::from_range(&OffsetRange::new(&lines(1), 25, 30), 5)
                .with_reset(ResetRecord::new(ResetRecordKind::BelowLogStart, 20), 5),
        ];
        record.records = 35;
        // Two outputs, one of them reading a chunk of 5 again.
        record.records_fetched = Some(40);
        record.processing_ms = 40;
        record.scheduling_delay_ms = 10;
        record.min_timestamp_ms = Some(1_700_000_000_000);
        record.max_timestamp_ms = Some(1_700_000_000_150);
        store
            .commit(Commit {
                record,
                next_offsets: vec![(lines(0), 30), (lines(1), 30)],
                writes: WriteSet::new(),
            })
            .unwrap();
    }
    fn cells(line: &str) -> Vec<&str> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }
    let table = ok(&["batches", dir.path().to_str().unwrap()]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].contains("  resets  "), "{table}");
    for quiet in &lines[1..3] {
        // Records written without the records fetched show none.
        assert_eq!(cells(quiet)[3], "-", "{table}");
        assert_eq!(cells(quiet)[8], "-", "{table}");
    }
    assert!(lines[0].contains("  fetched  "), "{table}");
    assert_eq!(cells(lines[3])[2..4], ["35", "40"], "{table}");
    // From the oldest record's timestamp to the end of processing: 200 ms
    // to the batch time, 10 ms of delay, 40 ms of processing.
    assert!(lines[0].contains("  max latency ms  "), "{table}");
    assert_eq!(cells(lines[3])[6], "250", "{table}");
    assert_eq!(
        cells(lines[3])[8],
        "1 past latest (470), 1 below log start (5)",
        "{table}"
    );
}

/// Regression: a checkpoint whose next batch was planned but never
/// committed (a crash, a failed first batch) showed nothing of that plan,
/// though the next start redoes it, ranges and all, whatever the job's
/// subscription says by then.
#[test]
fn cli_checkpoint_info_shows_the_pending_plan_the_next_start_redoes() {
    use sluice::checkpoint::RangeRecord;
    use sluice::kafka::OffsetRange;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let d = dir.to_str().unwrap();
    committed_checkpoint(&dir, 2, 2);
    assert!(!ok(&["checkpoint", "info", d]).contains("pending batch"));
    {
        let mut store = RocksCheckpoint::builder(&dir)
            .app_id(APP_ID)
            .open()
            .unwrap();
        let mut plan = BatchRecord::new(2, 1_700_000_000_200);
        plan.ranges = (0..2)
            .map(|p| {
                let range = OffsetRange::new(&TopicPartition::new("lines", p), 20, 35);
                RangeRecord::from_range(&range, 0)
            })
            .collect();
        store.write_plan(&plan).unwrap();
    }
    let info = ok(&["checkpoint", "info", d]);
    assert!(
        info.contains("pending batch   2 planned for ")
            && info.contains("not committed: the next start redoes these ranges"),
        "{info}"
    );
    for partition in ["lines:0", "lines:1"] {
        let line = info
            .lines()
            .find(|l| l.trim_start().starts_with(partition) && l.contains(".."))
            .unwrap_or_else(|| panic!("no range of {partition}: {info}"));
        assert!(line.ends_with("20 .. 35"), "{line}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["checkpoint", "info", d, "--json"])).unwrap();
    let pending = &json["pending_batch"];
    assert_eq!(pending["id"], 2, "{json}");
    assert_eq!(pending["ranges"][1]["partition"], 1);
    assert_eq!(pending["ranges"][1]["from"], 20);
    assert_eq!(pending["ranges"][1]["until"], 35);

    // Once batch 2 commits, its plan is done with.
    RocksCheckpoint::builder(&dir)
        .app_id(APP_ID)
        .open()
        .unwrap()
        .commit(Commit {
            record: BatchRecord::new(2, 1_700_000_000_200),
            next_offsets: (0..2)
                .map(|p| (TopicPartition::new("lines", p), 35))
                .collect(),
            writes: WriteSet::new(),
        })
        .unwrap();
    assert!(!ok(&["checkpoint", "info", d]).contains("pending batch"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["checkpoint", "info", d, "--json"])).unwrap();
    assert!(json["pending_batch"].is_null(), "{json}");
}

/// Regression: offsets moved with `sluice offsets set` left no trace: the
/// batch history showed a jump (or a replay) with no reset, no skipped
/// offsets and no control entry. The restart now warns and notes the move
/// in the first batch record after it.
#[test]
fn offsets_moved_while_stopped_are_noted_in_the_next_batch_record() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "lines", 2);
    let lines: Vec<String> = (0..200).map(job::line).collect();
    kafka::produce(&bootstrap, "lines", Some(0), &lines[..100]);
    kafka::produce(&bootstrap, "lines", Some(1), &lines[100..]);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let d = checkpoint.to_str().unwrap();
    let run = || {
        let out = Command::new(wordcount::binary())
            .args([
                "--brokers",
                &bootstrap,
                "--topic",
                "lines",
                "--until-caught-up",
            ])
            .args(["--batch-interval-ms", "50", "--checkpoint-dir", d])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = run();
    assert!(
        !first.contains("not where the last batch left them"),
        "{first}"
    );
    ok(&["offsets", "set", d, "lines:0=60", "lines:1=100"]);
    kafka::produce(&bootstrap, "lines", Some(1), &lines[..10]);
    let second = run();
    assert!(
        second.contains("not where the last batch left them")
            && second.contains("lines:0 100 -> 60 (reads again 40 offsets)"),
        "{second}"
    );
    let batches = RocksCheckpoint::open_read_only(&checkpoint, APP_ID)
        .unwrap()
        .batches()
        .unwrap();
    let noted: Vec<_> = batches
        .iter()
        .flat_map(|b| b.control.iter().map(move |c| (b.id, c.change.clone())))
        .collect();
    assert_eq!(noted.len(), 1, "{noted:?}");
    let (id, change) = &noted[0];
    assert_eq!(
        change,
        "offsets moved while stopped: lines:0 100 -> 60 (reads again 40 offsets)"
    );
    let after = batches.iter().find(|b| b.id == *id).unwrap();
    let range = after.ranges.iter().find(|r| r.partition == 0).unwrap();
    assert_eq!(range.from, 60, "{after:?}");
    // The batch table shows it under its batch.
    let table = ok(&["batches", d]);
    assert!(
        table.contains("control at ") && table.contains("offsets moved while stopped: lines:0"),
        "{table}"
    );
}

/// `sluice pause` keeps a stopped job paused: a start without an HTTP
/// endpoint (nothing could resume it) is refused, naming `sluice resume`;
/// after `sluice resume` it reads again.
#[test]
fn cli_pause_keeps_a_stopped_job_paused_until_resume() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "lines", 1);
    let lines: Vec<String> = (0..50).map(job::line).collect();
    kafka::produce(&bootstrap, "lines", Some(0), &lines);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let d = checkpoint.to_str().unwrap();
    let run = || {
        Command::new(wordcount::binary())
            .args([
                "--brokers",
                &bootstrap,
                "--topic",
                "lines",
                "--until-caught-up",
            ])
            .args(["--batch-interval-ms", "50", "--checkpoint-dir", d])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    kafka::produce(&bootstrap, "lines", Some(0), &lines[..10]);

    assert!(ok(&["pause", d]).starts_with("paused"));
    assert!(ok(&["pause", d]).starts_with("already paused since "));
    assert!(ok(&["checkpoint", "info", d]).contains("paused          since "));
    {
        let ui = UiProcess::start(&checkpoint);
        let (_, overview) = ui.get("/api/overview");
        assert!(overview.contains("\"paused\":true"), "{overview}");
        let (_, page) = ui.get("/");
        assert!(
            page.contains("it keeps the job paused until a resume"),
            "{page}"
        );
    }
    let refused = run();
    assert!(!refused.status.success());
    let error = stderr(&refused);
    assert!(
        error.contains("stays paused until resumed")
            && error.contains(&format!("sluice resume {d}"))
            // The time of the pause in RFC 3339 UTC, not epoch milliseconds.
            && error.contains("Z and stays paused"),
        "{error}"
    );
    let stored = || stored_offsets(&checkpoint);
    assert_eq!(
        stored(),
        [(TopicPartition::new("lines", 0), 50)],
        "read while paused"
    );

    assert!(ok(&["resume", d]).starts_with("resumed (paused since "));
    assert_eq!(ok(&["resume", d]), "not paused\n");
    assert!(run().status.success());
    assert_eq!(stored(), [(TopicPartition::new("lines", 0), 60)]);
}
