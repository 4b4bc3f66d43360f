//! Sinks: where a batch's results go.
//!
//! - [`CheckpointSink`]s stage writes into the batch's atomic checkpoint
//!   commit (`save_counts`, [`LatestValueSink`], your own): exactly-once by
//!   construction, read back from the checkpoint.
//! - Outside sinks ([`Sink`], driven through [`OutsideSink`]) write to
//!   another system, a Kafka topic for one, in a transaction per batch
//!   committed just before the checkpoint commit.

mod checkpoint;
mod outside;

pub use checkpoint::{CheckpointSink, CounterSink, LatestValueSink};
pub use outside::{OutsideSink, Sink, SinkStart};
