//! The bundled examples as a new user runs them: on their embedded broker,
//! with bad values, piped into `head`, with the log going to a file. Each
//! test is named after the fault it pins.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::wordcount::{example, totals};

/// How long an example may take to do what a test waits for.
const WAIT: Duration = Duration::from_secs(90);

/// Waits up to [`WAIT`] for `child` to exit; fails the test with `log`
/// (its stderr) if it still runs.
fn wait_for_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("polling the example") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the example still ran after {WAIT:?}; stderr:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The total of the `word<TAB>count` lines `--totals` printed, and the
/// count of `word`.
fn sum_and_count(totals: &str, word: &str) -> (i64, i64) {
    let mut sum = 0;
    let mut of_word = 0;
    for line in totals.lines() {
        let (w, n) = line.split_once('\t').expect("word<TAB>count");
        let n: i64 = n.parse().expect("a count");
        sum += n;
        if w == word {
            of_word = n;
        }
    }
    (sum, of_word)
}

/// `wordcount --until-caught-up` without `--brokers` read 0 records: the
/// embedded broker started empty, or held only what earlier runs read.
/// Also pins that its log has no colour codes when stderr is a file.
#[test]
fn wordcount_until_caught_up_on_its_embedded_broker_counts_new_lines_each_run() {
    let dir = TempDir::new().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let run = || {
        let out = Command::new(example("wordcount"))
            .arg("--checkpoint-dir")
            .arg(&checkpoint)
            .args(["--until-caught-up", "--batch-interval-ms", "50"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("running the wordcount");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{}: {stderr}", out.status);
        assert!(
            !stderr.contains('\x1b'),
            "colour codes in a file:\n{stderr}"
        );
        assert!(!stderr.contains(" ERROR "), "{stderr}");
    };

    // 4000 lines of the example's sample text, 1000 a partition: each
    // partition cycles through the five sample lines 200 times (56 words,
    // 6 of them `the`).
    run();
    assert_eq!(sum_and_count(&totals(&checkpoint), "the"), (44_800, 4_800));
    // A restart refills the broker up to the stored offsets and adds 4000
    // new lines, which this run reads.
    run();
    assert_eq!(sum_and_count(&totals(&checkpoint), "the"), (89_600, 9_600));
}

/// The wordcount had no way to choose where a first start begins.
/// `--start-from latest` skips what the topic held at the start (the 4000
/// lines a bounded run on the embedded broker writes first); a bad value
/// is refused naming the option.
#[test]
fn wordcount_start_from_latest_skips_what_the_topic_held_at_the_first_start() {
    let dir = TempDir::new().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let out = Command::new(example("wordcount"))
        .arg("--checkpoint-dir")
        .arg(&checkpoint)
        .args(["--until-caught-up", "--start-from", "latest"])
        .stdin(Stdio::null())
        .output()
        .expect("running the wordcount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert_eq!(sum_and_count(&totals(&checkpoint), "the"), (0, 0));

    let out = Command::new(example("wordcount"))
        .args(["--start-from", "yesterday"])
        .stdin(Stdio::null())
        .output()
        .expect("running the wordcount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--start-from <WHERE>'"), "{stderr}");
}

/// `--batch-interval-ms -5` was reported as "unexpected argument '-5'
/// found", naming no option.
#[test]
fn a_negative_number_for_a_numeric_option_is_reported_naming_the_option() {
    for name in [
        "wordcount",
        "clicks",
        "sessions",
        "window_counts",
        "trending",
        "pipe",
    ] {
        let out = Command::new(example(name))
            .args(["--batch-interval-ms", "-5"])
            .stdin(Stdio::null())
            .output()
            .expect("running the example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("invalid value '-5' for '--batch-interval-ms <N>'"),
            "{name}: {stderr}"
        );
    }
}

/// A bad Kafka setting was refused only after the context had created an
/// empty checkpoint, against "checked before anything is written".
#[test]
fn a_bad_kafka_setting_is_refused_before_the_checkpoint_is_created() {
    for name in ["wordcount", "pipe"] {
        let dir = TempDir::new().unwrap();
        let checkpoint = dir.path().join("checkpoint");
        let out = Command::new(example(name))
            .args(["--set", "no.such.setting=1", "--checkpoint-dir"])
            .arg(&checkpoint)
            .stdin(Stdio::null())
            .output()
            .expect("running the example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("`no.such.setting`"), "{name}: {stderr}");
        assert!(
            !checkpoint.exists(),
            "{name} created {} before refusing the setting",
            checkpoint.display()
        );
    }
}

/// `clicks | head` panicked with "failed printing to stdout: Broken pipe"
/// once `head` had its lines.
#[test]
fn the_clicks_example_ends_quietly_when_its_stdout_is_closed() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(example("clicks"))
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoint"))
        .args(["--batch-interval-ms", "50"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting the clicks example");
    // Read a line, as `head -1` does, then go away.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("batch "), "{first:?}");
    drop(stdout);

    let status = wait_for_exit(&mut child, &log);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A stop of the wordcount on its embedded broker sometimes logged
/// librdkafka's "Connect ... failed: Connection refused" errors: the
/// broker went before the job's consumers.
#[test]
fn a_stopped_wordcount_on_its_embedded_broker_logs_no_errors() {
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(example("wordcount"))
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoint"))
        .args(["--batch-interval-ms", "50", "--rate", "2000"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting the wordcount");
    // Stop it once batches that read records have committed.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("records") || line.contains(" 0 records") {
        line.clear();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "stdout closed");
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill -TERM");
    assert!(sent.success());
    // Keep reading, so the example never blocks on a full pipe.
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();

    let status = wait_for_exit(&mut child, &log);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(!stderr.contains(" ERROR "), "{stderr}");
    assert!(stderr.contains("streaming context stopped"), "{stderr}");
}

/// The wordcount serves its web UI and API with `--http`, and says where:
/// the operations guide shows that UI, and no example served it.
#[test]
fn wordcount_with_http_serves_its_ui_and_api_while_it_runs() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(example("wordcount"))
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoint"))
        .args(["--batch-interval-ms", "50", "--http", "127.0.0.1:0"])
        .env_remove("SLUICE_HTTP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the wordcount");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("web UI at ") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "stderr closed");
    }
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    // Keep reading, so the example never blocks on a full pipe.
    let drain = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let overview = ureq::get(format!("{url}/api/overview"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["app_id"], "wordcount", "{overview}");
    let page = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(page.contains("sluice · wordcount"), "{page}");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill -TERM");
    assert!(sent.success());
    assert!(child.wait().unwrap().success());
    drain.join().unwrap().unwrap();
}
