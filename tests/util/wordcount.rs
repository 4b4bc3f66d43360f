//! The bundled `wordcount` example as a child process, for crash tests.
//!
//! The binary is `target/<profile>/examples/wordcount`, next to the test
//! binary's `deps/` directory. `cargo build --example wordcount` and a plain
//! `cargo test` build it; `cargo test --all-targets` does not (it builds
//! examples as test harnesses) and neither does `cargo test --test
//! integration`, so [`binary`] refuses a missing or stale build.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sluice::checkpoint::RocksCheckpoint;
use sluice::prelude::*;

use crate::util::job;
use crate::util::kafka::{self, BackgroundProducer};
use crate::util::tansu::Tansu;

/// The example's app id, which names its checkpoint.
pub(crate) const APP_ID: &str = "wordcount";

/// The checkpoint family of the example's totals.
pub(crate) const FAMILY: &str = "word_counts";

/// The example binary built with the test binary; panics with how to
/// build it when it is missing.
pub(crate) fn binary() -> PathBuf {
    example("wordcount")
}

/// The bundled example `name` built with the test binary; panics with how
/// to build it when it is missing or stale.
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    let build = format!("run `cargo build --example {name}` first");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified());
    let built = modified(&bin).unwrap_or_else(|e| {
        panic!(
            "the {name} example is not built at {} ({e}): {build}",
            bin.display()
        )
    });
    // Sources edited after both builds affect neither; sources edited
    // between them mean the example lacks code the tests were built with.
    let tests_built = modified(&exe).expect("reading the test binary's mtime");
    let stale = sources(&bin).into_iter().find(|source| {
        modified(source).is_ok_and(|changed| built < changed && changed <= tests_built)
    });
    if let Some(source) = stale {
        panic!(
            "the {name} example at {} is older than {}, which the tests were built \
             with: {build}",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// The sources listed in the binary's dep-info file (`<bin>.d`, written by
/// cargo).
fn sources(bin: &Path) -> Vec<PathBuf> {
    let Ok(deps) = std::fs::read_to_string(bin.with_extension("d")) else {
        return Vec::new();
    };
    let Some((_, sources)) = deps.split_once(": ") else {
        return Vec::new();
    };
    // Paths are separated by spaces; a space inside a path is escaped.
    sources
        .replace("\\ ", "\0")
        .split_whitespace()
        .map(|p| PathBuf::from(p.replace("\0", " ")))
        .collect()
}

/// One run of the example, its output going to a log file.
pub(crate) struct Wordcount {
    child: Child,
    log: PathBuf,
}

impl Wordcount {
    /// Starts the example on `topic` at `brokers` with its checkpoint in
    /// `checkpoint` and 100 ms batches; stdout and stderr are appended to
    /// `log`.
    pub(crate) fn start(brokers: &str, topic: &str, checkpoint: &Path, log: &Path) -> Self {
        Self::start_with_interval(brokers, topic, checkpoint, log, 100)
    }

    /// Like [`start`](Self::start), with batches every `batch_interval_ms`
    /// (short intervals make commits frequent, for crash tests that aim at
    /// them).
    pub(crate) fn start_with_interval(
        brokers: &str,
        topic: &str,
        checkpoint: &Path,
        log: &Path,
        batch_interval_ms: u64,
    ) -> Self {
        Self::start_with_args(brokers, topic, checkpoint, log, batch_interval_ms, &[])
    }

    /// Like [`start_with_interval`](Self::start_with_interval), with more
    /// command-line arguments (rate limits, `--set` client settings).
    pub(crate) fn start_with_args(
        brokers: &str,
        topic: &str,
        checkpoint: &Path,
        log: &Path,
        batch_interval_ms: u64,
        extra: &[&str],
    ) -> Self {
        Self::start_example(
            "wordcount",
            brokers,
            topic,
            checkpoint,
            log,
            batch_interval_ms,
            extra,
        )
    }

    /// Starts the bundled example `name`, which takes the wordcount's
    /// command line (`--brokers`, `--topic`, `--checkpoint-dir`,
    /// `--batch-interval-ms`, `--workers`) and `extra` arguments.
    pub(crate) fn start_example(
        name: &str,
        brokers: &str,
        topic: &str,
        checkpoint: &Path,
        log: &Path,
        batch_interval_ms: u64,
        extra: &[&str],
    ) -> Self {
        Self::start_example_with_env(
            name,
            brokers,
            topic,
            checkpoint,
            log,
            batch_interval_ms,
            extra,
            &[],
        )
    }

    /// Like [`start_example`](Self::start_example), with environment
    /// variables set for the child (such as `SLUICE_CRASH_POINT`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_example_with_env(
        name: &str,
        brokers: &str,
        topic: &str,
        checkpoint: &Path,
        log: &Path,
        batch_interval_ms: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning the log handle");
        let child = Command::new(example(name))
            .args(["--brokers", brokers, "--topic", topic, "--checkpoint-dir"])
            .arg(checkpoint)
            .args(["--batch-interval-ms", &batch_interval_ms.to_string()])
            .args(["--workers", "2"])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {name} example: {e}"));
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// The child's peak resident memory so far (`VmHWM`), in bytes.
    pub(crate) fn peak_memory(&mut self) -> u64 {
        self.assert_running();
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()))
            .expect("reading the child's /proc status");
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no VmHWM in the child's status:\n{status}"));
        kib * 1024
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test, with the end of the child's log, if it exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling the child") {
            panic!(
                "wordcount exited with {status}; log {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }

    /// Kills the child with SIGKILL: no handler runs, nothing is flushed.
    pub(crate) fn kill(mut self) {
        self.assert_running();
        self.child.kill().expect("sending SIGKILL to wordcount");
        let status = self.child.wait().expect("reaping wordcount");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "wordcount was not killed by SIGKILL: {status}"
        );
    }

    /// Sends SIGTERM and waits up to `timeout` for the child to exit.
    pub(crate) fn terminate(mut self, timeout: Duration) -> ExitStatus {
        self.assert_running();
        // `kill(1)` rather than libc::kill: the workspace forbids unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed: {sent}", self.id());
        self.wait_for_exit(timeout)
    }

    /// Waits up to `timeout` for the child to exit by itself and returns
    /// its status; fails the test, with the log's tail, if it still runs.
    pub(crate) fn wait_for_exit(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wordcount still runs after {timeout:?}; log:\n{}",
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole log written so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Wordcount {
    fn drop(&mut self) {
        // A test that failed midway: leave no process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What `wordcount --totals --checkpoint-dir DIR` prints; fails the test
/// if it does not exit 0.
pub(crate) fn totals(checkpoint: &Path) -> String {
    let out = Command::new(binary())
        .args(["--totals", "--checkpoint-dir"])
        .arg(checkpoint)
        .stdin(Stdio::null())
        .output()
        .expect("running wordcount --totals");
    assert!(
        out.status.success(),
        "wordcount --totals exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the totals are UTF-8")
}

/// The id of the last committed batch and the stored next offsets, read
/// while a child may be writing; `None` while there is no checkpoint yet.
pub(crate) fn committed(checkpoint: &Path) -> Option<(u64, BTreeMap<TopicPartition, i64>)> {
    committed_by(checkpoint, APP_ID)
}

/// Like [`committed`], for the checkpoint of the job `app_id`.
pub(crate) fn committed_by(
    checkpoint: &Path,
    app_id: &str,
) -> Option<(u64, BTreeMap<TopicPartition, i64>)> {
    let store = RocksCheckpoint::open_read_only(checkpoint, app_id).ok()?;
    let last = store.last_batch().ok()??;
    Some((last.id, store.offsets().ok()?))
}

/// The input of the tests that restart or kill jobs: a tansu broker (sqlite)
/// whose 3-partition `lines` topic gets the first `prefilled` of `count`
/// test lines at once, then the rest from a [`BackgroundProducer`] in
/// chunks of `chunk` every `pause`, the last `held_back` only once
/// [`BackgroundProducer::finish`] is called.
pub(crate) struct LinesTopic {
    /// Kept alive for the test.
    _broker: Tansu,
    pub(crate) bootstrap: String,
    pub(crate) lines: Vec<String>,
    pub(crate) producer: BackgroundProducer,
}

impl LinesTopic {
    pub(crate) fn start(
        count: usize,
        prefilled: usize,
        held_back: usize,
        chunk: usize,
        pause: Duration,
    ) -> Self {
        let broker = Tansu::start();
        broker.create_topic("lines", 3);
        let bootstrap = broker.bootstrap();
        let lines: Vec<String> = (0..count).map(job::line).collect();
        kafka::produce(&bootstrap, "lines", None, &lines[..prefilled]);
        let producer = BackgroundProducer::start(
            &bootstrap,
            "lines",
            &lines[prefilled..],
            held_back,
            chunk,
            pause,
        );
        Self {
            _broker: broker,
            bootstrap,
            lines,
            producer,
        }
    }
}

/// The last batch and the offsets of the example's checkpoint in `dir`, for
/// failure messages.
pub(crate) fn describe(dir: &Path) -> String {
    describe_by(dir, APP_ID)
}

/// Like [`describe`], for the checkpoint of the job `app_id`.
pub(crate) fn describe_by(dir: &Path, app_id: &str) -> String {
    match RocksCheckpoint::open_read_only(dir, app_id) {
        Ok(store) => format!(
            "last batch {:?}, offsets {:?}",
            store.last_batch().map(|b| b.map(|b| b.id)),
            store.offsets()
        ),
        Err(e) => format!("checkpoint not readable: {e}"),
    }
}
