//! # sluice
//!
//! Micro-batch stream processing over Kafka, read the *Direct* way, with
//! exactly-once results kept in a RocksDB checkpoint.
//!
//! Each batch reads one offset range per Kafka partition; a task per
//! partition reads exactly its range and pushes it through the job's
//! operators; when every output of the batch succeeded, the batch's
//! results and the next offsets are committed together in one atomic
//! RocksDB write. A crash at any moment leaves the checkpoint at the last
//! committed batch, and a restart reads on from exactly there.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice::prelude::*;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let ctx = StreamingContext::builder()
//!         .app_id("wordcount")
//!         .batch_interval(Duration::from_secs(1))
//!         .checkpoint_dir("checkpoints/wordcount")
//!         .build()?;
//!     let source = KafkaSource::builder()
//!         .brokers("127.0.0.1:9092")
//!         .subscribe(["lines"])
//!         .build()?;
//!     ctx.kafka_stream(source)?
//!         .values_utf8()
//!         .count_keys(|line: &String, count| line.split_ascii_whitespace().for_each(count))
//!         .save_counts("word_counts")?;
//!     ctx.add_listener(|batch: &BatchCompleted, _checkpoint: &dyn CheckpointStore| {
//!         for (range, records) in batch.info.ranges.iter().zip(&batch.records_per_range) {
//!             println!("batch {}: {range} ({records} records)", batch.info.id);
//!         }
//!     })?;
//!     ctx.start()?;
//!     ctx.await_termination()?;
//!     Ok(())
//! }
//! ```
//!
//! # Where things are
//!
//! Each type has one path; [`prelude`] re-exports the ones almost every
//! job names, so `use sluice::prelude::*;` is the usual first line.
//!
//! | path | what |
//! |---|---|
//! | `sluice` | running a job: [`StreamingContext`] and its builder, [`StopHandle`], the [`BatchFailurePolicy`] and [`PoisonPolicy`] settings, [`BatchCompleted`] and [`BatchListener`], [`Error`] |
//! | [`stream`] | the operator API: [`DStream`](stream::DStream), [`Batch`](stream::Batch), [`BatchInfo`](stream::BatchInfo), and the [`Error`](stream::Error) a batch's computation fails with |
//! | [`state`] | keyed state kept in the checkpoint: [`StateSpec`](state::StateSpec) and [`State`](state::State) for `map_with_state`, [`MapWithStateStream`](state::MapWithStateStream), [`read_state`](state::read_state) (see `docs/state.md`) |
//! | [`window`] | batch-time windows ([`InverseReduce`](window::InverseReduce)) and event-time windows: [`EventTimeSpec`](window::EventTimeSpec), [`Window`](window::Window), [`OutputMode`](window::OutputMode), [`Windowed`](window::Windowed) (see `docs/windows.md`) |
//! | [`sink`] | where results go: [`CheckpointSink`](sink::CheckpointSink)s whose writes join the atomic commit ([`WriteSet`](sink::WriteSet), the bundled ones), and outside [`Sink`](sink::Sink)s written in a transaction per batch ([`OutsideSink`](sink::OutsideSink)) |
//! | [`kafka`] | the source, [`KafkaSource`](kafka::KafkaSource) and its settings, and the sink, [`KafkaSink`](kafka::KafkaSink) of [`KafkaRecord`](kafka::KafkaRecord)s; [`Record`](kafka::Record) (payloads as shared [`Bytes`](kafka::Bytes)), [`TopicPartition`](kafka::TopicPartition), [`OffsetRange`](kafka::OffsetRange) |
//! | [`source`] | inputs besides Kafka: the [`Source`](source::Source) interface the driver plans every batch through (started with [`StreamingContext::stream`]), and [`MemorySource`](source::MemorySource) for tests |
//! | [`checkpoint`] | reading what a job committed: [`RocksCheckpoint`](checkpoint::RocksCheckpoint), [`CheckpointStore`](checkpoint::CheckpointStore), batch records, dead letters |
//! | [`rate`] | [`RateLimits`](rate::RateLimits), backpressure settings, and the limit each batch records |
//!
//! The engine's plumbing (stream graph, executors, the driver's Kafka
//! client, range planning) lives in the workspace crates `sluice-core`,
//! `sluice-kafka`, `sluice-checkpoint` and `sluice-runtime`, which the
//! facade does not expose.
//!
//! # Cargo features
//!
//! - `mimalloc` (default): makes [mimalloc](https://crates.io/crates/mimalloc)
//!   the global allocator of the program that links sluice. Workers that
//!   allocate and free per record (an owned value per record, a `String`
//!   per word in a `flat_map`) wait for each other's locks on glibc's
//!   allocator and run up to twice as fast on mimalloc (see
//!   `docs/performance.md`). A program that sets its own
//!   `#[global_allocator]` turns it off with `default-features = false`;
//!   otherwise the compiler reports the two allocators as conflicting.
//! - `cli` (default): the `sluice` command-line tool.
//! - `gssapi`: Kerberos (SASL GSSAPI) in the Kafka client.

/// The program's global allocator; see the `mimalloc` feature above.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use sluice_core::PoisonPolicy;
pub use sluice_runtime::{
    BatchCompleted, BatchFailurePolicy, BatchListener, CheckpointUi, Error, Result, StopHandle,
    StreamingContext, StreamingContextBuilder,
};

pub mod stream {
    //! The operator API: a [`DStream`] is a sequence of batches of `T`,
    //! derived from the job's Kafka input by operators (`map`, `filter`,
    //! `count_keys`, …) and consumed by outputs (`foreach_batch`, `print`,
    //! sinks).

    pub use sluice_core::{Batch, BatchInfo, BoxError, DStream, Error, Result};
}

pub mod sink {
    //! Where a batch's results go.
    //!
    //! Checkpoint sinks are committed atomically with the batch's offsets:
    //! `save_counts(family)` is a [`CounterSink`];
    //! `checkpoint_sink(LatestValueSink::new(family))` keeps the latest value
    //! per key; a [`CheckpointSink`] of your own stages [`Write`]s into the
    //! batch's [`WriteSet`].
    //!
    //! Outside sinks write to another system in one transaction per batch,
    //! committed just before the checkpoint: `sink(KafkaSink)` (see
    //! [`KafkaSink`](crate::kafka::KafkaSink)); the protocol a sink of your
    //! own follows is [`OutsideSink`].

    pub use sluice_core::{
        CheckpointSink, CounterSink, LatestValueSink, OutsideSink, Sink, SinkStart, Write, WriteSet,
    };
}

pub mod kafka {
    //! The Kafka *Direct* source, the Kafka sink, and the Kafka vocabulary
    //! batches are made of (whatever their source).

    pub use sluice_core::{
        Bytes, DataLossPolicy, OffsetRange, OffsetReset, OutOfLog, Record, ResetKind,
        TopicPartition,
    };
    pub use sluice_kafka::{
        ConsumerStrategy, Delivery, Error, KafkaRecord, KafkaSink, KafkaSinkBuilder, KafkaSource,
        KafkaSourceBuilder, Result, StartOffsets,
    };
}

pub mod source {
    //! Where batches come from, for inputs besides Kafka: a [`Source`] tells
    //! the driver its partitions and their offsets, and hands the tasks the
    //! [`InputReader`] that reads the planned ranges;
    //! [`StreamingContext::stream`](crate::StreamingContext::stream) starts a
    //! job on one. [`MemorySource`] keeps partitions in memory that can grow
    //! while the job runs, for tests and examples. The vocabulary they share
    //! with Kafka (records, ranges, the data-loss policy) is in
    //! [`kafka`](crate::kafka).

    pub use sluice_core::{InputReader, MemorySource, PartitionOffsets, Plan, Source};
}

pub mod state {
    //! Keyed state that lives in the checkpoint and is committed with each
    //! batch: [`DStream::update_state_by_key`](crate::stream::DStream::update_state_by_key)
    //! and [`DStream::map_with_state`](crate::stream::DStream::map_with_state)
    //! with a [`StateSpec`]. `docs/state.md` explains the operators, the
    //! timeout model and upgrades.

    pub use sluice_core::state::{
        key_partition_range, read_state, MapWithStateStream, MemoryState, Migration, State,
        StateDescriptor, StateSpec, StateStore, Table,
    };
}

pub mod window {
    //! Windows kept in the checkpoint: DStream's batch-time windows
    //! ([`DStream::reduce_by_key_and_window`](crate::stream::DStream::reduce_by_key_and_window)
    //! and its family) and event-time windows with per-partition watermarks
    //! ([`DStream::event_time_window`](crate::stream::DStream::event_time_window)).
    //! `docs/windows.md` explains when windows are emitted, the watermark
    //! rule, idle partitions and how late records are audited.

    pub use sluice_core::window::{
        EventTimeSpec, InverseReduce, LateCount, OutputMode, Window, Windowed,
    };
}

pub mod checkpoint {
    //! What a job committed: offsets, batch history, result families and dead
    //! letters, readable while the job runs with
    //! [`RocksCheckpoint::open_read_only`].
    //!
    //! The read methods (`counters`, `scan`, `dead_letters`, `batches`, …)
    //! belong to the [`CheckpointStore`] trait, so bring it into scope too.

    pub use sluice_checkpoint::{
        BatchRecord, CheckpointStore, Commit, ControlRecord, DeadLetterRecord, Error, FamilyStats,
        LateRecords, RangeRecord, ResetRecord, ResetRecordKind, Result, RewindPlan,
        RocksCheckpoint, RocksCheckpointBuilder, StateChanges, StateRecord,
    };
}

pub mod rate {
    //! Rate control: per-partition and job-wide limits, the initial rate, and
    //! backpressure; each batch records the [`RateLimit`] in force.

    pub use sluice_core::{PidSettings, RateError, RateLimit, RateLimits, RateReason};
}

pub mod prelude {
    //! Re-exports of the types almost every job names, for
    //! `use sluice::prelude::*;`. Each is also at its own path (the crate root,
    //! [`stream`](crate::stream), [`kafka`](crate::kafka),
    //! [`checkpoint`](crate::checkpoint), [`rate`](crate::rate)).

    pub use crate::checkpoint::CheckpointStore;
    pub use crate::kafka::{
        Bytes, KafkaRecord, KafkaSink, KafkaSource, OffsetRange, Record, StartOffsets,
        TopicPartition,
    };
    pub use crate::rate::RateLimits;
    pub use crate::state::{State, StateSpec};
    pub use crate::stream::{Batch, BatchInfo, BoxError, DStream};
    pub use crate::window::{EventTimeSpec, OutputMode, Window, Windowed};
    pub use crate::{BatchCompleted, PoisonPolicy, StreamingContext};
}

#[doc(hidden)]
pub mod __private {
    //! Engine internals for sluice's own benchmarks and tests: running a
    //! stream graph on in-memory input without Kafka or a checkpoint. Not part
    //! of the API; it changes without notice.

    pub use sluice_core::{BatchEnv, Executor, InlineExecutor, MemoryInput, StreamGraph};
    pub use sluice_kafka::KafkaReader;
    pub use sluice_runtime::WorkerPool;
}

// The Rust snippets of the README and the guides compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/guarantees.md")]
struct GuaranteesSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/state.md")]
struct StateSnippets;

#[cfg(doctest)]
#[doc = include_str!("../docs/windows.md")]
struct WindowsSnippets;
