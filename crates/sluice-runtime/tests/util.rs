//! Running a counting job on a `MemorySource` and reading what it
//! committed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_checkpoint::{CheckpointStore, RocksCheckpoint};
use sluice_core::{MemorySource, TopicPartition};
use sluice_runtime::{BatchCompleted, StreamingContext, StreamingContextBuilder};

/// App id of the test jobs.
pub(crate) const APP_ID: &str = "memory-job";

/// Checkpoint family the jobs count their values into.
pub(crate) const COUNTS: &str = "counts";

/// How long a test waits for a condition before it fails.
const WAIT: Duration = Duration::from_secs(60);

/// A context builder for a job checkpointed in `dir`: short batches, two
/// workers, no signal handler (it would swallow the test runner's Ctrl-C).
pub(crate) fn context(dir: &Path) -> StreamingContextBuilder {
    StreamingContext::builder()
        .app_id(APP_ID)
        .batch_interval(Duration::from_millis(20))
        .checkpoint_dir(dir)
        .workers(2)
        .stop_on_signals(false)
}

type Batches = Arc<(Mutex<Vec<BatchCompleted>>, Condvar)>;

/// A job that counts every record value of its source into [`COUNTS`],
/// with the batches it committed as its listener saw them.
pub(crate) struct CountingJob {
    ctx: StreamingContext,
    batches: Batches,
}

impl CountingJob {
    /// Defines the job on `ctx` reading `source`, without starting it.
    pub(crate) fn new(ctx: StreamingContext, source: MemorySource) -> Self {
        ctx.stream(source)
            .unwrap()
            .values_utf8()
            .count_by_value()
            .save_counts(COUNTS)
            .unwrap();
        let batches: Batches = Arc::default();
        let seen = Arc::clone(&batches);
        ctx.add_listener(move |batch: &BatchCompleted, _: &dyn CheckpointStore| {
            let (lock, changed) = &*seen;
            lock.lock().unwrap().push(batch.clone());
            changed.notify_all();
        })
        .unwrap();
        Self { ctx, batches }
    }

    /// Starts the job.
    pub(crate) fn start(self) -> Self {
        self.ctx.start().unwrap();
        self
    }

    /// The context, to await or stop the job.
    pub(crate) fn context(&self) -> &StreamingContext {
        &self.ctx
    }

    /// Waits until the committed batches read `records` records in all;
    /// fails if they read more, or if none did in time.
    pub(crate) fn wait_for_records(&self, records: u64) {
        let deadline = Instant::now() + WAIT;
        let (lock, changed) = &*self.batches;
        let mut batches = lock.lock().unwrap();
        loop {
            let read: u64 = batches.iter().map(|b| b.records).sum();
            if read >= records {
                assert_eq!(read, records, "records read by the committed batches");
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{read} of {records} records read within {WAIT:?}"
            );
            batches = changed.wait_timeout(batches, deadline - now).unwrap().0;
        }
    }

    /// Stops the job gracefully and returns the batches it committed.
    pub(crate) fn stop(self) -> Vec<BatchCompleted> {
        self.ctx.stop(true).unwrap();
        self.batches()
    }

    /// The batches committed so far.
    pub(crate) fn batches(&self) -> Vec<BatchCompleted> {
        self.batches.0.lock().unwrap().clone()
    }
}

/// The checkpoint in `dir`, opened read-only.
pub(crate) fn checkpoint(dir: &Path) -> RocksCheckpoint {
    RocksCheckpoint::open_read_only(dir, APP_ID).unwrap()
}

/// The counts committed in `dir`; empty before the first commit.
pub(crate) fn committed_counts(dir: &Path) -> BTreeMap<String, i64> {
    let checkpoint = checkpoint(dir);
    if !checkpoint.families().any(|f| f == COUNTS) {
        return BTreeMap::new();
    }
    checkpoint
        .counters(COUNTS)
        .unwrap()
        .into_iter()
        .map(|(key, n)| (String::from_utf8(key).unwrap(), n))
        .collect()
}

/// The offsets committed in `dir`.
pub(crate) fn committed_offsets(dir: &Path) -> BTreeMap<TopicPartition, i64> {
    checkpoint(dir).offsets().unwrap()
}

/// Occurrences of every value of `values`.
pub(crate) fn counts_of<S: AsRef<str>>(
    values: impl IntoIterator<Item = S>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value.as_ref().to_owned()).or_default() += 1;
    }
    counts
}

/// Values `range` of a partition, distinct across partitions:
/// `"{tag}-{i % 7}"`, so counts add up over several records.
pub(crate) fn values(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{tag}-{}", i % 7)).collect()
}

/// Where each partition's first range in `batches` starts and ends.
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
