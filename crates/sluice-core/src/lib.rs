//! sluice-core: the vocabulary of the engine and the `DStream` operator
//! graph. No I/O lives here — no Kafka client, no RocksDB, no threads.
//!
//! # How a batch flows
//!
//! A job is a [`StreamGraph`]: its [`StreamGraph::input`] is a
//! [`DStream`] of Kafka [`Record`]s, and operators derive further streams
//! from it. Each batch is described by a [`BatchInfo`] (id, time, one
//! [`OffsetRange`] per partition). [`StreamGraph::run_batch`] runs every
//! output operation over the batch:
//!
//! 1. one *source task* per offset range reads its records through an
//!    [`InputReader`] and pushes them through the fused narrow operators
//!    (`map`, `flat_map`, `filter`, …);
//! 2. keyed aggregations combine inside each task, shuffle by key hash and
//!    reduce in reduce tasks; joins shuffle both streams by key hash and
//!    pair each key's values in the reduce tasks;
//! 3. output operations (`foreach_batch`, `print`, sinks) consume the
//!    result; [`CheckpointSink`]s stage [`Write`]s into a [`WriteSet`] that
//!    the runtime commits atomically with the batch's next offsets, and
//!    outside [`Sink`]s write to another system in a transaction the
//!    runtime commits just before (see [`OutsideSink`]).
//!
//! Tasks run on an [`Executor`]: the runtime's worker pool, or
//! [`InlineExecutor`] on the calling thread.
//!
//! The ranges come from the job's [`Source`]: before every batch the
//! runtime's driver asks it for its partitions and their offsets
//! ([`PartitionOffsets`]), has it plan the ranges from the stored positions
//! ([`plan_ranges`], a pure function, gives the [`Plan`]), and its tasks
//! read them through the source's [`InputReader`]. `sluice-kafka` implements
//! it for Kafka; [`MemorySource`] keeps partitions in memory that can grow
//! while a job runs.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::SystemTime;
//! use sluice_core::{BatchInfo, InlineExecutor, MemoryInput, StreamGraph};
//!
//! let graph = StreamGraph::new();
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&seen);
//! graph
//!     .input()
//!     .values_utf8()
//!     .flat_map(|line| line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     .count_by_value()
//!     .foreach_batch(move |batch, _info| {
//!         sink.lock().unwrap().extend(batch);
//!         Ok::<_, std::io::Error>(())
//!     })?;
//!
//! let input = MemoryInput::new().with_partition("lines", 0, ["to be or", "not to be"]);
//! let info = BatchInfo::new(0, SystemTime::now(), input.full_ranges());
//! graph.run_batch(info, Arc::new(input), Arc::new(InlineExecutor))?;
//!
//! let mut counts = seen.lock().unwrap().clone();
//! counts.sort();
//! assert_eq!(counts, [("be".into(), 2), ("not".into(), 1), ("or".into(), 1), ("to".into(), 2)]);
//! # Ok::<(), sluice_core::Error>(())
//! ```

mod batch;
mod env;
mod error;
mod exec;
mod input;
mod lineage;
mod offset;
mod ops;
mod poison;
mod rate;
mod record;
mod scope;
mod shared_reads;
mod sink;
mod source;
pub mod state;
mod stream;
pub mod window;
mod writes;

// Shown to users by the facade (`sluice::stream`, `sink`, `source`,
// `kafka`, `rate` and the root).
pub use batch::{Batch, BatchInfo};
pub use bytes::Bytes;
pub use env::BatchEnv;
#[doc(hidden)]
pub use error::write_report;
pub use error::{BoxError, Error, Result};
pub use input::InputReader;
pub use offset::{OffsetRange, TopicPartition};
pub use ops::LateCount;
pub use poison::PoisonPolicy;
pub use rate::{PidSettings, RateError, RateLimit, RateLimits, RateReason};
pub use record::Record;
pub use shared_reads::DEFAULT_SHARED_INPUT_BYTES;
pub use sink::{CheckpointSink, CounterSink, LatestValueSink, OutsideSink, Sink, SinkStart};
pub use source::{
    DataLossPolicy, MemorySource, OffsetReset, OutOfLog, PartitionOffsets, Plan, ResetKind, Source,
};
pub use stream::DStream;
pub use writes::{Write, WriteSet};

// The engine's side, for the other sluice crates (the driver, the worker
// pool, the Kafka reader) and the benchmarks; the facade does not expose it.
pub use exec::{run_task, Executor, InlineExecutor, TaskFn};
pub use input::MemoryInput;
pub use ops::MAX_SHUFFLE_PARTITIONS;
pub use poison::DeadLetter;
pub use rate::{batch_budget, batch_caps, batch_caps_within, BatchCaps, PidRateEstimator};
pub use source::plan_ranges;
pub use stream::{BatchOutput, StreamGraph};
