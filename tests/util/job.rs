//! Building, running and watching sluice jobs from a test.
//!
//! ```ignore
//! let dir = tempfile::tempdir().unwrap();
//! let source = job::source(&bootstrap).subscribe(["events"]).build().unwrap();
//! let mut job = job::count_values(job::context(dir.path()).build().unwrap(), source);
//! job.wait_for_records(300, "all 300 records");
//! job.stop();
//! assert_eq!(job::committed_counts(dir.path()), expected);
//! ```
//!
//! Every job counts strings into the checkpoint family [`COUNTS`], so the
//! committed totals are the test's evidence of what was read, how often.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sluice::__private::KafkaReader;
use sluice::checkpoint::{BatchRecord, RocksCheckpoint};
use sluice::prelude::*;
use sluice::{Error as RuntimeError, StopHandle, StreamingContextBuilder};

/// App id of the jobs the tests build unless they need another.
pub(crate) const APP_ID: &str = "it-job";

/// Checkpoint family where jobs keep their counts.
pub(crate) const COUNTS: &str = "counts";

/// Short, so tests see many batches in little time.
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a test waits for a condition before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// Pause between two looks at a polled condition.
const POLL: Duration = Duration::from_millis(20);

/// A context builder with the test defaults: [`APP_ID`], [`BATCH_INTERVAL`],
/// two workers, and no signal handler (it would swallow the test runner's
/// Ctrl-C).
pub(crate) fn context(dir: &Path) -> StreamingContextBuilder {
    StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(BATCH_INTERVAL)
        .checkpoint_dir(dir)
        .workers(2)
        .stop_on_signals(false)
}

/// A source builder aimed at `bootstrap`; the test picks the strategy.
pub(crate) fn source(bootstrap: &str) -> sluice::kafka::KafkaSourceBuilder {
    KafkaSource::builder().brokers(bootstrap)
}

/// Starts a job that counts every record value (UTF-8) into [`COUNTS`].
pub(crate) fn count_values(ctx: StreamingContext, source: KafkaSource) -> RunningJob {
    count_with(ctx, source, |values| values)
}

/// Starts a job that counts the whitespace-separated words of every record
/// value into [`COUNTS`].
pub(crate) fn count_words(ctx: StreamingContext, source: KafkaSource) -> RunningJob {
    count_with(ctx, source, |lines| {
        lines.flat_map(|line| {
            line.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    })
}

/// Starts a job that counts what `shape` makes of the record values into
/// [`COUNTS`].
pub(crate) fn count_with(
    ctx: StreamingContext,
    source: KafkaSource,
    shape: impl FnOnce(DStream<String>) -> DStream<String>,
) -> RunningJob {
    shape(ctx.kafka_stream(source).unwrap().values_utf8())
        .count_by_value()
        .save_counts(COUNTS)
        .unwrap();
    RunningJob::start(ctx)
}

/// What a running job committed so far, as its listener saw it.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Every batch committed by this run, in order.
    pub(crate) batches: Vec<BatchCompleted>,
    /// Records read by the committed batches of this run.
    pub(crate) records: u64,
}

impl Progress {
    fn summary(&self) -> String {
        match self.batches.last() {
            Some(last) => format!(
                "{} batches committed (last id {}), {} records",
                self.batches.len(),
                last.info.id,
                self.records
            ),
            None => "no batch committed".to_owned(),
        }
    }
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// A started context, watched by a listener. Dropping it stops the job
/// without committing more, so a failing test does not leave a driver
/// running against a broker that is gone.
pub(crate) struct RunningJob {
    stop: StopHandle,
    reader: Arc<KafkaReader>,
    progress: Shared,
    /// Where the waiter thread sends what `await_termination` returned.
    ended: Receiver<sluice::Result<()>>,
    /// How the job ended, once received.
    end: Option<Result<(), String>>,
}

impl RunningJob {
    /// Adds the progress listener to `ctx` and starts it.
    pub(crate) fn start(ctx: StreamingContext) -> Self {
        Self::start_shared(Arc::new(ctx))
    }

    /// Like [`RunningJob::start`], for a context the test keeps using
    /// while the job runs.
    pub(crate) fn start_shared(ctx: Arc<StreamingContext>) -> Self {
        let progress: Shared = Arc::default();
        let shared = Arc::clone(&progress);
        ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
            let (lock, changed) = &*shared;
            let mut p = lock.lock().unwrap();
            p.records += batch.records;
            p.batches.push(batch.clone());
            changed.notify_all();
        })
        .expect("a context not started yet takes listeners");
        ctx.start()
            .unwrap_or_else(|e| panic!("starting the job: {e}"));
        let stop = ctx
            .stop_handle()
            .expect("a started context has a stop handle");
        let reader = ctx
            .kafka_reader()
            .expect("a started context has a Kafka reader");
        let (done, ended) = sync_channel(1);
        thread::Builder::new()
            .name("await-termination".into())
            .spawn(move || {
                let _ = done.send(ctx.await_termination());
            })
            .expect("spawning the thread that awaits the job");
        Self {
            stop,
            reader,
            progress,
            ended,
            end: None,
        }
    }

    /// Waits until `done` holds for the job's progress and returns what
    /// `done` returned. Fails the test if the job stops first or `done`
    /// still does not hold after [`WAIT`]; `what` names the condition.
    pub(crate) fn wait_for<T>(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Progress) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        let (lock, changed) = &*self.progress;
        let mut p = lock.lock().unwrap();
        loop {
            if let Some(value) = done(&p) {
                return value;
            }
            // The job may have died: say why instead of timing out.
            if let Ok(result) = self.ended.try_recv() {
                let result = result.map_err(|e| e.to_string());
                self.end = Some(result.clone());
                panic!(
                    "the job stopped before {what} ({}): {result:?}",
                    p.summary()
                );
            }
            let now = Instant::now();
            assert!(now < deadline, "no {what} within {WAIT:?}: {}", p.summary());
            let wait = (deadline - now).min(Duration::from_millis(200));
            p = changed.wait_timeout(p, wait).unwrap().0;
        }
    }

    /// Waits until this run's committed batches read `records` records in
    /// all; fails if they read more.
    pub(crate) fn wait_for_records(&mut self, records: u64, what: &str) {
        let read = self.wait_for(what, |p| (p.records >= records).then_some(p.records));
        assert_eq!(
            read, records,
            "records read by the committed batches, waiting for {what}"
        );
    }

    /// Waits until this run committed its first batch (empty or not) and
    /// returns it.
    pub(crate) fn wait_for_first_batch(&mut self) -> BatchCompleted {
        self.wait_for("a first committed batch", |p| p.batches.first().cloned())
    }

    /// The reader of the job's source tasks, to observe its consumers.
    pub(crate) fn reader(&self) -> &KafkaReader {
        &self.reader
    }

    /// A copy of the batches this run committed so far.
    pub(crate) fn batches(&self) -> Vec<BatchCompleted> {
        self.progress.0.lock().unwrap().batches.clone()
    }

    /// Stops the job gracefully (the batch in flight commits), waits until
    /// it ended, and returns all it committed; fails the test if it ended
    /// with an error.
    pub(crate) fn stop(mut self) -> Progress {
        self.stop.stop(true);
        if let Err(e) = self.wait_for_end(WAIT) {
            panic!("the job failed instead of stopping gracefully: {e}");
        }
        std::mem::take(&mut *self.progress.0.lock().unwrap())
    }

    /// Stops the job without committing the batch in flight
    /// (`StopHandle::stop(false)`), runs `unblock` (to release an output
    /// the test holds up), waits until the job ended, and returns the
    /// error it ended with.
    pub(crate) fn cancel(mut self, unblock: impl FnOnce()) -> RuntimeError {
        self.stop.stop(false);
        unblock();
        match self.wait_for_end(WAIT) {
            Err(e) => e,
            Ok(()) => panic!("the cancelled job stopped without an error"),
        }
    }

    /// Waits until the job ends by itself and returns the runtime's error;
    /// fails the test if it still runs after [`WAIT`] or ends without one.
    pub(crate) fn wait_for_error(&mut self) -> RuntimeError {
        match self.wait_for_end(WAIT) {
            Err(e) => e,
            Ok(()) => panic!("the job stopped without an error"),
        }
    }

    fn wait_for_end(&mut self, timeout: Duration) -> sluice::Result<()> {
        assert!(self.end.is_none(), "the job's end was taken already");
        let result = match self.ended.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => panic!("the job did not end within {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the job's waiter thread died"),
        };
        self.end = Some(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        result
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        if self.end.is_none() {
            self.stop.stop(false);
            // Best effort: the test is failing already.
            let _ = self.ended.recv_timeout(Duration::from_secs(30));
        }
    }
}

/// Polls `check` until it returns `Some`, and returns that. Fails the test
/// after `timeout`, with `what` and the last state `describe` gives.
pub(crate) fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; last state: {}",
            describe()
        );
        thread::sleep(POLL);
    }
}

/// The checkpoint in `dir`, opened read-only (works while a job writes it).
pub(crate) fn open_checkpoint(dir: &Path, app_id: &str) -> RocksCheckpoint {
    RocksCheckpoint::open_read_only(dir, app_id)
        .unwrap_or_else(|e| panic!("opening the checkpoint {} read-only: {e}", dir.display()))
}

/// The committed counts of the [`APP_ID`] job in `dir`.
pub(crate) fn committed_counts(dir: &Path) -> BTreeMap<String, i64> {
    counts_in(&open_checkpoint(dir, APP_ID))
}

/// The committed counts kept in `checkpoint`; empty before the first
/// commit created the family.
pub(crate) fn counts_in(checkpoint: &RocksCheckpoint) -> BTreeMap<String, i64> {
    family_counts(checkpoint, COUNTS)
}

/// The counters of `family` in `checkpoint`, keyed by UTF-8 strings; empty
/// before the first commit created the family.
pub(crate) fn family_counts(checkpoint: &RocksCheckpoint, family: &str) -> BTreeMap<String, i64> {
    if !checkpoint.families().any(|f| f == family) {
        return BTreeMap::new();
    }
    checkpoint
        .counters(family)
        .unwrap_or_else(|e| panic!("reading the counts: {e}"))
        .into_iter()
        .map(|(key, n)| {
            (
                String::from_utf8(key).expect("counted strings are UTF-8"),
                n,
            )
        })
        .collect()
}

/// Occurrences of every string of `values`.
pub(crate) fn counts_of<S: AsRef<str>>(
    values: impl IntoIterator<Item = S>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value.as_ref().to_owned()).or_default() += 1;
    }
    counts
}

/// Occurrences of every whitespace-separated word of `lines`.
pub(crate) fn word_counts<S: AsRef<str>>(
    lines: impl IntoIterator<Item = S>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        for word in line.as_ref().split_ascii_whitespace() {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Words the test texts are made of.
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "Zulu", "ZULU", "tango-2", "ümlaut",
];

/// Line `i` of the test text: 1 to 7 words, a pure function of `i`, so
/// expected counts are known without reading Kafka.
pub(crate) fn line(i: usize) -> String {
    let words = 1 + i % 7;
    (0..words)
        .map(|k| WORDS[(i * 31 + k * 17 + i / 7) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that the ranges of `batches` (oldest first, consecutive ids)
/// chain per partition: every range starts where the partition's previous
/// one ended, or at `start` for its first. Returns where each partition
/// ended, and fails the test on a gap, an overlap, or records read that do
/// not match the range.
pub(crate) fn assert_ranges_chain(
    batches: &[BatchRecord],
    start: &BTreeMap<TopicPartition, i64>,
) -> BTreeMap<TopicPartition, i64> {
    let mut next = start.clone();
    let mut previous_id = None;
    for batch in batches {
        if let Some(previous) = previous_id {
            assert_eq!(
                batch.id,
                previous + 1,
                "batch ids have a gap after {previous}"
            );
        }
        previous_id = Some(batch.id);
        for range in &batch.ranges {
            let tp = TopicPartition::new(range.topic.as_str(), range.partition);
            let expected = *next.get(&tp).unwrap_or_else(|| {
                panic!("batch {} reads {tp}, which has no start position", batch.id)
            });
            assert_eq!(
                range.from,
                expected,
                "batch {} reads {tp} from {}, but the previous range ended at {expected} \
                 ({})",
                batch.id,
                range.from,
                if range.from < expected {
                    "overlap"
                } else {
                    "gap"
                },
            );
            assert!(range.until >= range.from, "batch {}: {range:?}", batch.id);
            assert_eq!(
                range.records,
                (range.until - range.from) as u64,
                "batch {} read a different number of records than its range {tp} [{}, {}) holds",
                batch.id,
                range.from,
                range.until
            );
            next.insert(tp, range.until);
        }
    }
    next
}

/// Values `"{topic}-{p}-{i}"` for `i` in `range`, produced partition by
/// partition so that value `i` of an empty partition lands at offset `i`.
pub(crate) fn produce_numbered(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut all = Vec::new();
    for p in 0..partitions {
        let values: Vec<String> = range.clone().map(|i| format!("{topic}-{p}-{i}")).collect();
        crate::util::kafka::produce(bootstrap, topic, Some(p), &values);
        all.extend(values);
    }
    all
}

/// `{topic}-p: offset` for partitions `0..partitions`.
pub(crate) fn offsets(topic: &str, partitions: i32, offset: i64) -> BTreeMap<TopicPartition, i64> {
    (0..partitions)
        .map(|p| (TopicPartition::new(topic, p), offset))
        .collect()
}

/// The first range of every partition across `batches`, as `(from, until)`.
pub(crate) fn first_ranges(batches: &[BatchCompleted]) -> BTreeMap<TopicPartition, (i64, i64)> {
    let mut first = BTreeMap::new();
    for batch in batches {
        for range in &batch.info.ranges {
            first
                .entry(range.topic_partition())
                .or_insert((range.from, range.until));
        }
    }
    first
}
