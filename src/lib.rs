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
//!         .flat_map(|line| line.split_ascii_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!         .count_by_value()
//!         .save_counts("word_counts")?;
//!     ctx.start()?;
//!     ctx.await_termination()?;
//!     Ok(())
//! }
//! ```
//!
//! The crates behind the facade: [`core`] (the `DStream` API), [`kafka`]
//! (the Direct source), [`checkpoint`] (the RocksDB store) and
//! [`runtime`] (driver loop and worker pool).

pub use sluice_checkpoint as checkpoint;
pub use sluice_core as core;
pub use sluice_kafka as kafka;
pub use sluice_runtime as runtime;

pub use sluice_checkpoint::{
    BatchRecord, CheckpointStore, DeadLetterRecord, RangeRecord, RocksCheckpoint,
};
pub use sluice_core::{
    Batch, BatchInfo, DStream, OffsetRange, PidSettings, PoisonPolicy, RateLimit, RateLimits,
    RateReason, Record, Sink, TopicPartition, WriteSet,
};
pub use sluice_kafka::{DataLossPolicy, KafkaSource, StartOffsets};
pub use sluice_runtime::{
    BatchCompleted, BatchFailurePolicy, StopHandle, StreamingContext, StreamingContextBuilder,
    WorkerPool,
};

/// The types almost every job uses.
pub mod prelude {
    pub use sluice_checkpoint::CheckpointStore;
    pub use sluice_core::{
        Batch, BatchInfo, DStream, OffsetRange, PoisonPolicy, RateLimits, Record, TopicPartition,
    };
    pub use sluice_kafka::{DataLossPolicy, KafkaSource, StartOffsets};
    pub use sluice_runtime::{BatchCompleted, BatchFailurePolicy, StreamingContext};
}
