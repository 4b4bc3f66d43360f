//! sluice-runtime: runs a job. A [`StreamingContext`] owns the job's
//! stream graph, its RocksDB checkpoint and, once started, the driver
//! thread and the worker pool.
//!
//! # One batch
//!
//! Every batch interval the driver (one thread):
//!
//! 1. asks the job's source — Kafka ([`StreamingContext::kafka_stream`]) or
//!    any `sluice_core::Source` ([`StreamingContext::stream`]) — for its
//!    partitions and their offsets (new partitions and, with a pattern, new
//!    topics are picked up while running);
//! 2. plans one offset range per partition from the stored positions
//!    (first start: the start policy; new partitions: earliest), through
//!    the source;
//! 3. runs the job's output operations; their tasks — one per partition —
//!    run on the worker pool, failed tasks are retried from the same range;
//! 4. commits the next offsets, the sinks' writes and a batch record in one
//!    atomic RocksDB write, only when all of the batch succeeded;
//! 5. logs one line and calls the [`BatchListener`]s, and, with an HTTP
//!    endpoint ([`StreamingContextBuilder::http`]), publishes the batch to
//!    its metrics and web UI and takes the control requests (pause,
//!    resume, rate limits) made since the last batch.
//!
//! See [`StreamingContext`] for a complete job.

mod batch_time;
mod bounded;
mod context;
mod crash_point;
mod dead_letters;
mod driver;
mod error;
mod http;
mod listener;
mod max_rate;
mod moved_offsets;
mod pool;
mod readable;
mod shuffle;
mod signals;
mod write_ahead;

// Shown to users by the facade at the root of `sluice`.
pub use context::{BatchFailurePolicy, StopHandle, StreamingContext, StreamingContextBuilder};
pub use error::{Error, Result};
pub use http::CheckpointUi;
pub use listener::{BatchCompleted, BatchListener};

// For the pipeline benchmark, through the facade's hidden `__private`.
pub use pool::WorkerPool;
