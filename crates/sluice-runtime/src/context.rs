//! [`StreamingContext`]: configure a job, define its streams, run it.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use sluice_checkpoint::{CheckpointStore, RocksCheckpoint, StateChanges, RESERVED_PREFIX};
use sluice_core::state::Migration;
use sluice_core::{
    DStream, PoisonPolicy, RateLimits, Record, Source, StreamGraph, MAX_SHUFFLE_PARTITIONS,
};
use sluice_kafka::{KafkaInput, KafkaReader, KafkaSource};

use crate::driver::{Driver, DriverSettings, StopRequest};
use crate::error::config;
use crate::http::monitor::{Monitor, Status};
use crate::http::{HttpServer, HttpSettings};
use crate::listener::BatchListener;
use crate::pool::WorkerPool;
use crate::{Error, Result};

/// What the driver does when a batch fails after its task retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchFailurePolicy {
    /// Stop the job with the batch's error (the default). Nothing of the
    /// batch is committed; a restart reads it again.
    #[default]
    Stop,
    /// Compute the same batch again after `backoff`, up to `max_attempts`
    /// attempts in all, then stop.
    Retry {
        /// Wait between attempts.
        backoff: Duration,
        /// Attempts in all, at least 1.
        max_attempts: u32,
    },
}

/// Builds a [`StreamingContext`]; every setting is checked by
/// [`StreamingContextBuilder::build`] before anything runs.
#[derive(Debug, Clone)]
pub struct StreamingContextBuilder {
    app_id: Option<String>,
    batch_interval: Option<Duration>,
    checkpoint_dir: Option<PathBuf>,
    workers: usize,
    shuffle_partitions: Option<usize>,
    shared_input_bytes: usize,
    task_attempts: u32,
    on_batch_failure: BatchFailurePolicy,
    checkpoint_sync: bool,
    checkpoint_cache_bytes: usize,
    checkpoint_restore_points: (u64, usize),
    stop_on_signals: bool,
    kafka_outage_timeout: Duration,
    rate_limits: RateLimits,
    poison: PoisonPolicy,
    http: Option<String>,
    http_token_file: Option<PathBuf>,
}

impl Default for StreamingContextBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamingContextBuilder {
    /// A builder with the defaults below; app id, batch interval and
    /// checkpoint directory must be set.
    pub fn new() -> Self {
        Self {
            app_id: None,
            batch_interval: None,
            checkpoint_dir: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shuffle_partitions: None,
            shared_input_bytes: sluice_core::DEFAULT_SHARED_INPUT_BYTES,
            task_attempts: 4,
            on_batch_failure: BatchFailurePolicy::Stop,
            checkpoint_sync: true,
            checkpoint_cache_bytes: sluice_checkpoint::DEFAULT_CACHE_BYTES,
            checkpoint_restore_points: (0, 0),
            stop_on_signals: true,
            kafka_outage_timeout: Duration::from_secs(300),
            rate_limits: RateLimits::new(),
            poison: PoisonPolicy::FailBatch,
            http: None,
            http_token_file: None,
        }
    }

    /// Names the job (required): letters, digits, `.`, `_`, `-`. The
    /// checkpoint remembers it and refuses to serve another job; it is also
    /// the default Kafka consumer group id.
    pub fn app_id(mut self, id: impl Into<String>) -> Self {
        self.app_id = Some(id.into());
        self
    }

    /// Time between batches (required, at least 1 ms).
    pub fn batch_interval(mut self, interval: Duration) -> Self {
        self.batch_interval = Some(interval);
        self
    }

    /// Directory of the RocksDB checkpoint (required); created if missing.
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self
    }

    /// Worker threads running tasks. Default: the number of CPUs.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Reduce partitions (tasks) of every shuffle without an explicit count
    /// (`reduce_by_key`, `count_by_value`, `count_keys`), from 1 to
    /// [`MAX_SHUFFLE_PARTITIONS`]. Default: the worker count of the job's
    /// first start.
    ///
    /// The checkpoint records the count at the job's first start and every
    /// later run uses the recorded count, whatever its worker count or this
    /// setting (a differing setting is ignored with a warning). A key's
    /// reduce partition depends only on the key and this count, so
    /// partition `i` of a batch, and its
    /// [`idempotency_key`](sluice_core::BatchInfo::idempotency_key), hold
    /// the same records on every attempt and after every restart, on any
    /// machine. Spark Structured Streaming keeps
    /// `spark.sql.shuffle.partitions` in its checkpoint the same way. To
    /// change the count, start a new checkpoint.
    pub fn shuffle_partitions(mut self, partitions: usize) -> Self {
        self.shuffle_partitions = Some(partitions);
        self
    }

    /// Bytes of a batch's input kept in memory for the job's later output
    /// operations. Default: 128 MiB
    /// ([`DEFAULT_SHARED_INPUT_BYTES`](sluice_core::DEFAULT_SHARED_INPUT_BYTES)).
    ///
    /// With several outputs on one input (a sink and a `foreach_batch`
    /// that logs each batch, say), the input is read from Kafka once per
    /// batch and kept for the outputs after the first. Chunks read once
    /// the kept ones reach this size are not kept: each later output reads
    /// them from Kafka again. A batch that reads a large backlog therefore
    /// holds at most about this much of its input for later outputs. `0`
    /// keeps nothing: every output reads the input itself. A job with one
    /// output keeps nothing whatever this says.
    pub fn shared_input_bytes(mut self, bytes: usize) -> Self {
        self.shared_input_bytes = bytes;
        self
    }

    /// Attempts a task gets before its batch fails. Default: 4.
    pub fn task_attempts(mut self, attempts: u32) -> Self {
        self.task_attempts = attempts;
        self
    }

    /// What happens when a batch fails. Default: [`BatchFailurePolicy::Stop`].
    pub fn on_batch_failure(mut self, policy: BatchFailurePolicy) -> Self {
        self.on_batch_failure = policy;
        self
    }

    /// Whether each commit waits for the checkpoint to reach the disk
    /// (fsync). Default: true. Turning it off trades durability of the last
    /// batches on power loss for latency; a process crash loses nothing.
    pub fn checkpoint_sync(mut self, sync: bool) -> Self {
        self.checkpoint_sync = sync;
        self
    }

    /// The memory RocksDB may use for the checkpoint — keyed state,
    /// results and offsets — in bytes (default 128 MiB, at least 4 MiB; see
    /// `RocksCheckpointBuilder::cache_bytes`). State larger than this stays
    /// on disk, so the job's memory does not grow with its number of keys.
    pub fn checkpoint_cache_bytes(mut self, bytes: usize) -> Self {
        self.checkpoint_cache_bytes = bytes;
        self
    }

    /// Takes a restore point of the checkpoint after every batch whose id
    /// is a multiple of `every`, keeping the newest `keep` (at least 1);
    /// default off. `sluice rewind DIR --to-batch N` brings offsets,
    /// results and state back to the end of a batch that has one (see
    /// `RocksCheckpointBuilder::restore_points` and `docs/operations.md`).
    pub fn checkpoint_restore_points(mut self, every: u64, keep: usize) -> Self {
        self.checkpoint_restore_points = (every, keep);
        self
    }

    /// Whether SIGINT/SIGTERM stop the job: the first finishes and commits
    /// the batch in flight, then stops; a second exits the process at once
    /// with status 130, committing nothing more. Default: true.
    pub fn stop_on_signals(mut self, enabled: bool) -> Self {
        self.stop_on_signals = enabled;
        self
    }

    /// How long the driver keeps retrying when Kafka (or the job's other
    /// [`Source`]) cannot be reached to plan a batch, before the job stops.
    /// Only failures that may pass are retried
    /// ([`sluice_core::Error::is_transient`]). Default: 5 minutes.
    pub fn kafka_outage_timeout(mut self, timeout: Duration) -> Self {
        self.kafka_outage_timeout = timeout;
        self
    }

    /// How fast the job takes in records: per-partition and job-wide
    /// maximums, a per-partition minimum, backpressure (a PID estimator fed
    /// by every batch) and an initial rate for the first batch after a
    /// start. Default: no limit. See [`RateLimits`].
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// What a batch does with a record an operator's closure returns an
    /// error for (`try_map`, `try_flat_map`, `values_utf8`, …). Default:
    /// [`PoisonPolicy::FailBatch`], the error naming the record. With
    /// [`PoisonPolicy::dead_letter`], the record is set aside in a
    /// checkpoint family, with its key, value and the error, committed
    /// atomically with the batch, and counted in the batch record.
    pub fn poison_records(mut self, policy: PoisonPolicy) -> Self {
        self.poison = policy;
        self
    }

    /// Serves the job's web UI, JSON API, Prometheus `/metrics` and
    /// runtime control (pause, resume, rate limits) on `addr`, a
    /// `host:port` such as `127.0.0.1:4040` (port 0 picks a free port; see
    /// [`StreamingContext::http_addr`]). Default: no endpoint.
    ///
    /// An address reachable beyond this machine (not loopback) needs an
    /// access token, from [`http_token_file`](Self::http_token_file) or
    /// the `SLUICE_HTTP_TOKEN` environment variable; requests that change
    /// the job must then carry it as `Authorization: Bearer <token>`.
    /// `docs/operations.md` describes the endpoint.
    pub fn http(mut self, addr: impl Into<String>) -> Self {
        self.http = Some(addr.into());
        self
    }

    /// A file whose content (trimmed) is the access token of the HTTP
    /// endpoint's control requests; it replaces `SLUICE_HTTP_TOKEN`.
    /// Default: none.
    pub fn http_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.http_token_file = Some(path.into());
        self
    }

    /// Checks every setting and opens the checkpoint.
    pub fn build(self) -> Result<StreamingContext> {
        let app_id = self
            .app_id
            .ok_or_else(|| config("app_id", "required: name the job with .app_id(..)"))?;
        if app_id.is_empty()
            || app_id.len() > 200
            || !app_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(config(
                "app_id",
                format!("'{app_id}' must be 1 to 200 letters, digits, '.', '_' or '-'"),
            ));
        }
        let batch_interval = self.batch_interval.ok_or_else(|| {
            config(
                "batch_interval",
                "required: set it with .batch_interval(..)",
            )
        })?;
        if batch_interval < Duration::from_millis(1) {
            return Err(config(
                "batch_interval",
                format!(
                    "{} ms is too short; the minimum is 1 ms",
                    batch_interval.as_secs_f64() * 1e3
                ),
            ));
        }
        let checkpoint_dir = self.checkpoint_dir.ok_or_else(|| {
            config(
                "checkpoint_dir",
                "required: set it with .checkpoint_dir(..)",
            )
        })?;
        if self.workers == 0 {
            return Err(config("workers", "must be at least 1"));
        }
        let shuffle_partitions = match self.shuffle_partitions {
            Some(n) if !(1..=MAX_SHUFFLE_PARTITIONS).contains(&n) => {
                return Err(config(
                    "shuffle_partitions",
                    format!("{n} is not between 1 and {MAX_SHUFFLE_PARTITIONS}"),
                ))
            }
            n => n.and_then(NonZeroUsize::new),
        };
        if self.task_attempts == 0 {
            return Err(config("task_attempts", "must be at least 1"));
        }
        if let BatchFailurePolicy::Retry {
            max_attempts: 0, ..
        } = self.on_batch_failure
        {
            return Err(config(
                "on_batch_failure",
                "Retry needs max_attempts of at least 1",
            ));
        }
        self.rate_limits
            .validate()
            .map_err(|e| config("rate_limits", e.to_string()))?;
        if let Some(family) = self.poison.family() {
            if family.is_empty() || family.starts_with(RESERVED_PREFIX) {
                return Err(config(
                    "poison_records",
                    format!(
                        "dead-letter family '{family}' must be a non-empty name not starting \
                         with '{RESERVED_PREFIX}'"
                    ),
                ));
            }
        }
        let http = self
            .http
            .as_deref()
            .map(|addr| HttpSettings::resolve(addr, self.http_token_file.as_ref()))
            .transpose()?;
        if self.http_token_file.is_some() && http.is_none() {
            return Err(config(
                "http_token_file",
                "set without an HTTP endpoint: add .http(\"127.0.0.1:4040\") or drop the token file",
            ));
        }
        let store = RocksCheckpoint::builder(&checkpoint_dir)
            .app_id(&app_id)
            .sync(self.checkpoint_sync)
            .cache_bytes(self.checkpoint_cache_bytes)
            .restore_points(
                self.checkpoint_restore_points.0,
                self.checkpoint_restore_points.1,
            )
            .open()?;
        let graph = StreamGraph::new();
        graph.set_poison_policy(self.poison);
        graph.set_shared_input_bytes(self.shared_input_bytes);
        Ok(StreamingContext {
            graph,
            app_id: app_id.clone(),
            workers: self.workers,
            shuffle_partitions,
            task_attempts: self.task_attempts,
            stop_on_signals: self.stop_on_signals,
            http,
            http_addr: OnceLock::new(),
            driver: DriverSettings {
                app_id,
                batch_interval,
                on_batch_failure: self.on_batch_failure,
                kafka_outage_timeout: self.kafka_outage_timeout,
                rate_limits: self.rate_limits,
                bounded: false,
                checkpoint_dir,
            },
            state: Mutex::new(State::Created {
                store: Box::new(store),
                input: None,
                listeners: Vec::new(),
            }),
            state_changes: Mutex::new(StateChanges::default()),
        })
    }
}

/// Stops a running context from anywhere (another thread, a signal).
#[derive(Debug, Clone)]
pub struct StopHandle {
    requests: Sender<StopRequest>,
    cancel: Arc<AtomicBool>,
}

impl StopHandle {
    /// Asks the job to stop. Graceful: the batch in flight finishes and
    /// commits first. Not graceful: the batch in flight is cancelled and not
    /// committed. Returns at once; use
    /// [`StreamingContext::await_termination`] to wait.
    pub fn stop(&self, graceful: bool) {
        if !graceful {
            self.cancel.store(true, Ordering::SeqCst);
        }
        // The driver may have ended already; then there is nothing to stop.
        let _ = self.requests.send(StopRequest);
    }
}

/// The job's input as registered; a Kafka source connects at start.
enum Input {
    Kafka(KafkaSource),
    Source(Box<dyn Source>),
}

enum State {
    Created {
        store: Box<dyn CheckpointStore>,
        input: Option<Input>,
        listeners: Vec<Box<dyn BatchListener>>,
    },
    Running {
        driver: JoinHandle<Result<()>>,
        stop: StopHandle,
        /// The reader of a Kafka input, for tests.
        kafka_reader: Option<Arc<KafkaReader>>,
        signals: Option<signal_hook::iterator::Handle>,
        http: Option<HttpServer>,
    },
    /// `start` failed; its error was returned then.
    StartFailed,
    Terminated,
}

/// A streaming job: its stream definitions, its checkpoint and, once
/// started, its driver.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_kafka::{KafkaReader, KafkaSource};
/// use sluice_runtime::StreamingContext;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ctx = StreamingContext::builder()
///     .app_id("wordcount")
///     .batch_interval(Duration::from_secs(1))
///     .checkpoint_dir("checkpoints/wordcount")
///     .build()?;
/// let source = KafkaSource::builder().brokers("127.0.0.1:9092").subscribe(["lines"]).build()?;
/// ctx.kafka_stream(source)?
///     .values_utf8()
///     .flat_map(|line| line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>())
///     .count_by_value()
///     .save_counts("word_counts")?;
/// ctx.start()?;
/// ctx.await_termination()?;
/// # Ok(())
/// # }
/// ```
pub struct StreamingContext {
    graph: Arc<StreamGraph>,
    app_id: String,
    workers: usize,
    /// As configured; the checkpoint's recorded count wins at start.
    shuffle_partitions: Option<NonZeroUsize>,
    task_attempts: u32,
    stop_on_signals: bool,
    http: Option<HttpSettings>,
    http_addr: OnceLock<SocketAddr>,
    driver: DriverSettings,
    state: Mutex<State>,
    /// States the job renames or drops, applied at start.
    state_changes: Mutex<StateChanges>,
}

impl std::fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("app_id", &self.app_id)
            .field("batch_interval", &self.driver.batch_interval)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl StreamingContext {
    /// Starts configuring a context.
    pub fn builder() -> StreamingContextBuilder {
        StreamingContextBuilder::new()
    }

    /// The job's name.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The Direct Kafka stream read by `source`: partition `i` of each batch
    /// holds the records of the batch's `i`-th offset range. The consumer
    /// group id defaults to the app id.
    ///
    /// A context reads one input: a second call, of this or of
    /// [`stream`](Self::stream), fails with [`Error::Config`] (subscribe the
    /// source to several topics, or clone the stream, instead). After
    /// [`start`](Self::start) it fails with [`Error::RegisteredAfterStart`],
    /// and so do outputs registered then on any stream of the context
    /// (`foreach_batch`, `print`, sinks return
    /// `sluice_core::Error::RegisteredAfterStart`).
    pub fn kafka_stream(&self, source: KafkaSource) -> Result<DStream<Record>> {
        let source = source.with_default_group_id(&self.app_id);
        self.set_input(Input::Kafka(source), "kafka_stream", "a Kafka stream")
    }

    /// The stream of any [`Source`]: the driver plans every batch through
    /// `source` (see the trait for when it calls what) and its tasks read
    /// with the source's reader; partition `i` of each batch holds the
    /// records of the batch's `i`-th range. Offsets, the write-ahead plan,
    /// rate limits and the data-loss decisions work as for Kafka, whose
    /// [`kafka_stream`](Self::kafka_stream) is this with the Kafka input.
    ///
    /// An in-memory job, for a test or an example:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use sluice_checkpoint::CheckpointStore;
    /// use sluice_core::MemorySource;
    /// use sluice_runtime::StreamingContext;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ctx = StreamingContext::builder()
    ///     .app_id("words")
    ///     .batch_interval(Duration::from_millis(20))
    ///     .checkpoint_dir(dir.path())
    ///     .stop_on_signals(false)
    ///     .build()?;
    /// let source = MemorySource::new();
    /// source.append("lines", 0, ["to be or", "not to be"]);
    /// ctx.stream(source.clone())?
    ///     .values_utf8()
    ///     .flat_map(|line| line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>())
    ///     .count_by_value()
    ///     .save_counts("word_counts")?;
    /// // Reads what the source holds now, then stops.
    /// ctx.run_until_caught_up()?;
    /// # drop(ctx);
    /// # let checkpoint = sluice_checkpoint::RocksCheckpoint::open_read_only(dir.path(), "words")?;
    /// # assert_eq!(checkpoint.offsets()?.values().copied().collect::<Vec<_>>(), [2]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A context reads one input: a second call, of this or of
    /// [`kafka_stream`](Self::kafka_stream), fails with [`Error::Config`];
    /// after [`start`](Self::start) it fails with
    /// [`Error::RegisteredAfterStart`].
    pub fn stream(&self, source: impl Source + 'static) -> Result<DStream<Record>> {
        self.set_input(Input::Source(Box::new(source)), "stream", "a stream")
    }

    fn set_input(
        &self,
        input: Input,
        setting: &'static str,
        what: &'static str,
    ) -> Result<DStream<Record>> {
        let State::Created { input: slot, .. } = &mut *self.lock_state() else {
            return Err(Error::RegisteredAfterStart { what });
        };
        if slot.is_some() {
            return Err(config(
                setting,
                "called twice; a context reads exactly one input: subscribe a Kafka source \
                 to several topics (or a pattern) instead, and clone the stream to use it twice",
            ));
        }
        *slot = Some(input);
        Ok(self.graph.input())
    }

    /// Calls `listener` on the driver after every committed batch.
    ///
    /// Fails with [`Error::RegisteredAfterStart`] after
    /// [`start`](Self::start).
    #[must_use = "a listener added after the start is refused with this error"]
    pub fn add_listener(&self, listener: impl BatchListener + 'static) -> Result<()> {
        let State::Created { listeners, .. } = &mut *self.lock_state() else {
            return Err(Error::RegisteredAfterStart { what: "a listener" });
        };
        listeners.push(Box::new(listener));
        Ok(())
    }

    /// Deletes the keyed state named `name` from the checkpoint when the job
    /// starts, for an operator the job no longer has. Without it, a state in
    /// the checkpoint that no operator declares stops the start with an
    /// error, so state is never lost by mistake. Does nothing when the
    /// checkpoint has no such state (a later start).
    ///
    /// Fails with [`Error::RegisteredAfterStart`] after [`start`](Self::start).
    #[must_use = "a change declared after the start is refused with this error"]
    pub fn drop_state(&self, name: &str) -> Result<()> {
        self.change_states("a drop_state", |changes| {
            changes.drop.insert(name.to_owned());
        })
    }

    /// Keeps the keyed state named `old` under `new`, the name a stateful
    /// operator of this job now has: at start, its data is copied to the
    /// new name (once; later starts find it done) and the old name deleted.
    /// Key and state types must not change.
    ///
    /// Fails with [`Error::RegisteredAfterStart`] after [`start`](Self::start).
    #[must_use = "a change declared after the start is refused with this error"]
    pub fn rename_state(&self, old: &str, new: &str) -> Result<()> {
        self.change_states("a rename_state", |changes| {
            changes.rename.insert(old.to_owned(), new.to_owned());
        })
    }

    /// Converts the keyed state named `name` to the type its operator now
    /// declares, with `migration`: at start, when the checkpoint holds the
    /// migration's old type, every stored state is converted in one atomic
    /// write (so the converted state is held in memory once), and the
    /// operator starts on the new type; later starts find it done. The key
    /// type must not change.
    ///
    /// The migration's new type must be the state type the job declares
    /// for `name`, and, when the checkpoint holds another type than that,
    /// its old type must be the one the checkpoint holds: otherwise the
    /// start is refused with an error naming the state, the migration's
    /// old and new shapes, the checkpoint's and the job's, and nothing is
    /// written. When the checkpoint already holds the declared type (the
    /// migration ran on an earlier start, or the state is new), a
    /// migration to it is accepted and does nothing, so a job may keep
    /// declaring it across restarts.
    ///
    /// ```no_run
    /// # fn main() -> sluice_runtime::Result<()> {
    /// use serde::{Deserialize, Serialize};
    /// use sluice_core::state::Migration;
    ///
    /// #[derive(Clone, Serialize, Deserialize)]
    /// struct Visits { count: u64, last_page: String }
    ///
    /// let ctx = sluice_runtime::StreamingContext::builder()
    ///     .app_id("visits")
    ///     .checkpoint_dir("checkpoints/visits")
    ///     .build()?;
    /// // The "visits" state used to be a bare count.
    /// ctx.migrate_state("visits", Migration::new(|count: u64| Visits { count, last_page: String::new() }))?;
    /// # Ok(()) }
    /// ```
    ///
    /// Fails with [`Error::RegisteredAfterStart`] after [`start`](Self::start).
    #[must_use = "a change declared after the start is refused with this error"]
    pub fn migrate_state(&self, name: &str, migration: Migration) -> Result<()> {
        self.change_states("a migrate_state", |changes| {
            changes.migrate.insert(name.to_owned(), migration);
        })
    }

    fn change_states(
        &self,
        what: &'static str,
        change: impl FnOnce(&mut StateChanges),
    ) -> Result<()> {
        if !matches!(&*self.lock_state(), State::Created { .. }) {
            return Err(Error::RegisteredAfterStart { what });
        }
        change(
            &mut self
                .state_changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        Ok(())
    }

    /// Checks the job, connects to its source (Kafka) and starts the driver.
    pub fn start(&self) -> Result<()> {
        self.start_with(false)
    }

    /// Runs the job until it has read what its topics held when it started,
    /// then stops it and returns — Structured Streaming's
    /// `Trigger.AvailableNow`, Flink's bounded mode. For backfills, jobs run
    /// from cron, and tests.
    ///
    /// The latest offsets of the first planning are the end: batches run on
    /// the batch interval as usual, each within the rate limits, until every
    /// partition's committed offset reached its end; records produced after
    /// the start, and partitions added after it, are left for the next run.
    /// A run that finds nothing after the stored offsets (no record, no new
    /// partition, no position to reset) runs no batch; a first start commits
    /// one, keeping the start positions it resolved.
    /// A batch left planned by a crash is redone first. Returns `Ok` once
    /// the last batch is committed (or on a requested stop), and the error
    /// that stopped the job otherwise, as
    /// [`await_termination`](Self::await_termination).
    pub fn run_until_caught_up(&self) -> Result<()> {
        self.start_with(true)?;
        self.await_termination()
    }

    fn start_with(&self, bounded: bool) -> Result<()> {
        let mut state = self.lock_state();
        let State::Created {
            store,
            input,
            listeners,
        } = std::mem::replace(&mut *state, State::StartFailed)
        else {
            return Err(Error::AlreadyStarted);
        };
        // From here on the outputs and their families are what the job
        // runs with; later registrations fail at their call.
        self.graph.seal();
        let (mut driver, requests, kafka_reader) = self.prepare(store, input, listeners)?;
        driver.settings.bounded = bounded;
        let http = match &self.http {
            Some(settings) => {
                let monitor = Arc::new(Monitor::new(
                    &self.app_id,
                    self.driver.batch_interval,
                    self.driver.rate_limits.clone(),
                    settings.token.is_some(),
                ));
                driver.monitor = Some(Arc::clone(&monitor));
                let server = HttpServer::start(settings, monitor)?;
                let _ = self.http_addr.set(server.addr);
                Some(server)
            }
            None => None,
        };
        let stop = StopHandle {
            requests,
            cancel: driver.cancel.clone(),
        };
        let signals = if self.stop_on_signals {
            Some(crate::signals::install(stop.clone())?)
        } else {
            None
        };
        let driver = std::thread::Builder::new()
            .name("sluice-driver".into())
            .spawn(move || {
                let monitor = driver.monitor.clone();
                let result = driver.run();
                if let Some(monitor) = monitor {
                    monitor.set_status(match &result {
                        Ok(()) => Status::Stopped,
                        Err(error) => Status::Failed(error.to_string()),
                    });
                }
                result
            })
            .map_err(|source| Error::Io {
                what: "start the driver thread",
                source,
            })?;
        *state = State::Running {
            driver,
            stop,
            kafka_reader,
            signals,
            http,
        };
        Ok(())
    }

    /// The driver of the job, the sender of its stop requests, and the
    /// reader of a Kafka input.
    fn prepare(
        &self,
        mut store: Box<dyn CheckpointStore>,
        input: Option<Input>,
        listeners: Vec<Box<dyn BatchListener>>,
    ) -> Result<(Driver, Sender<StopRequest>, Option<Arc<KafkaReader>>)> {
        let input = input.ok_or_else(|| {
            config(
                "kafka_stream",
                "no input: create the job's stream with ctx.kafka_stream(..) (or ctx.stream(..) \
                 for another source)",
            )
        })?;
        if self.graph.output_count() == 0 {
            return Err(config(
                "outputs",
                "no output operation registered: add foreach_batch, print or a sink such as save_counts",
            ));
        }
        // States first: a mismatch stops the start before anything is
        // written.
        self.graph.check_states()?;
        self.graph
            .check_batch_interval(self.driver.batch_interval)?;
        let changes = self
            .state_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        store.open_states(&self.graph.states(), &changes)?;
        for family in self.graph.families() {
            store.ensure_family(&family)?;
        }
        // Before any batch, a redone one included, runs.
        let default = NonZeroUsize::new(self.workers.min(MAX_SHUFFLE_PARTITIONS))
            .unwrap_or(NonZeroUsize::MIN);
        let shuffle = crate::shuffle::settle(store.as_mut(), self.shuffle_partitions, default)?;
        self.graph.set_shuffle_partitions(shuffle);
        let (source, kafka_reader): (Box<dyn Source>, _) = match input {
            Input::Kafka(source) => {
                let input = KafkaInput::new(source.connect()?);
                let reader = input.kafka_reader();
                (Box::new(input), Some(reader))
            }
            Input::Source(source) => (source, None),
        };
        let reader = source.reader();
        let pool = WorkerPool::new(self.workers, self.task_attempts)?;
        let (requests, stop) = unbounded();
        let driver = Driver {
            settings: self.driver.clone(),
            graph: Arc::clone(&self.graph),
            store,
            source,
            reader,
            pool: Arc::new(pool),
            listeners,
            stop,
            cancel: Arc::new(AtomicBool::new(false)),
            monitor: None,
        };
        Ok((driver, requests, kafka_reader))
    }

    /// A handle that stops the running context from another thread.
    pub fn stop_handle(&self) -> Result<StopHandle> {
        match &*self.lock_state() {
            State::Running { stop, .. } => Ok(stop.clone()),
            _ => Err(Error::NotStarted),
        }
    }

    /// The reader of the running job's source tasks, to observe its
    /// consumers in tests; `None` unless the job reads Kafka, runs, and
    /// nobody awaits its termination yet.
    #[doc(hidden)]
    pub fn kafka_reader(&self) -> Option<Arc<KafkaReader>> {
        match &*self.lock_state() {
            State::Running { kafka_reader, .. } => kafka_reader.clone(),
            _ => None,
        }
    }

    /// Where the HTTP endpoint listens (see [`StreamingContextBuilder::http`])
    /// from [`start`](Self::start) on; `None` without one or before the
    /// start. The endpoint stops when the job ends.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.get().copied()
    }

    /// Stops the job (see [`StopHandle::stop`]) and waits until it ended.
    pub fn stop(&self, graceful: bool) -> Result<()> {
        self.stop_handle()?.stop(graceful);
        self.await_termination()
    }

    /// Blocks until the job stops: `Ok` after a requested stop, the error
    /// that stopped it otherwise.
    pub fn await_termination(&self) -> Result<()> {
        // The stop handle lives until the driver ends: the driver takes a
        // closed stop channel for a stop request.
        let (driver, _stop, signals, http) =
            match std::mem::replace(&mut *self.lock_state(), State::Terminated) {
                State::Running {
                    driver,
                    stop,
                    signals,
                    http,
                    ..
                } => (driver, stop, signals, http),
                State::Created { .. } | State::StartFailed => return Err(Error::NotStarted),
                State::Terminated => return Ok(()),
            };
        let result = driver.join().unwrap_or_else(|panic| {
            std::panic::resume_unwind(panic);
        });
        if let Some(signals) = signals {
            signals.close();
        }
        if let Some(mut http) = http {
            http.stop();
        }
        match &result {
            Ok(()) => tracing::info!(app_id = %self.app_id, "streaming context stopped"),
            Err(error) => {
                tracing::error!(app_id = %self.app_id, %error, "streaming context stopped by an error")
            }
        }
        result
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
