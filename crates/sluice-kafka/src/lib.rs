//! sluice-kafka: the Kafka *Direct* source of sluice, in the manner of Spark's
//! `spark-streaming-kafka-0-10`.
//!
//! Every batch reads one offset range `[from, until)` per partition; one
//! source task reads exactly its range; offsets belong to the engine, which
//! stores them in its checkpoint with the batch's results. Kafka never owns
//! them: consumers are created with `enable.auto.commit=false`,
//! `enable.auto.offset.store=false` and `auto.offset.reset=error`.
//!
//! How data moves between the types:
//!
//! - [`KafkaSource`] (from [`KafkaSource::builder`]) is the validated
//!   configuration: brokers, a [`ConsumerStrategy`] (subscribe to topics, to
//!   a pattern, or assign partitions), [`StartOffsets`] for the first start,
//!   a [`DataLossPolicy`](sluice_core::DataLossPolicy), and librdkafka
//!   settings passed through untouched.
//! - [`KafkaClient`] (from [`KafkaSource::connect`]) is the driver's side:
//!   each batch it discovers partitions ([`KafkaClient::partitions`]) and
//!   fetches their log start and latest offsets ([`KafkaClient::offsets`])
//!   as [`PartitionOffsets`](sluice_core::PartitionOffsets); on a first
//!   start it resolves [`StartOffsets`] ([`KafkaClient::start_offsets`]).
//! - [`KafkaReader`] (from [`KafkaClient::reader`]) implements
//!   [`sluice_core::InputReader`]: worker threads read the planned ranges,
//!   each partition through its own cached consumer.
//! - [`KafkaInput`] puts a client and a reader behind
//!   [`sluice_core::Source`], the interface the runtime's driver plans and
//!   reads every batch through. The ranges themselves are planned by
//!   [`sluice_core::plan_ranges`], a pure function of the stored positions
//!   and the offsets: partitions without a position — new partitions, new
//!   topics of a pattern — start from their log start.
//!
//! # Example
//!
//! One batch against librdkafka's in-process mock broker:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use rdkafka::mocking::MockCluster;
//! use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
//! use rdkafka::ClientConfig;
//! use sluice_core::{InputReader, Source};
//! use sluice_kafka::{KafkaInput, KafkaSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = MockCluster::new(1)?;
//! cluster.create_topic("events", 1, 1)?;
//! let producer: BaseProducer = ClientConfig::new()
//!     .set("bootstrap.servers", cluster.bootstrap_servers())
//!     .create()?;
//! for i in 0..3 {
//!     let value = format!("event {i}");
//!     producer.send(BaseRecord::<(), _>::to("events").partition(0).payload(&value))
//!         .map_err(|(e, _)| e)?;
//! }
//! producer.flush(Duration::from_secs(10))?;
//!
//! let source = KafkaSource::builder()
//!     .brokers(cluster.bootstrap_servers())
//!     .subscribe(["events"])
//!     .build()?
//!     .with_default_group_id("example-app");
//! // What the driver does for a job's first batch.
//! let mut input = KafkaInput::new(source.connect()?);
//! let offsets = input.partitions()?;
//! let positions = input.start_positions(&offsets)?;
//! let plan = input.plan(&positions, &offsets, None)?;
//!
//! let records = input.reader().read(&plan.ranges[0])?;
//! assert_eq!(records.len(), 3);
//! assert_eq!(records[2].value_str()?, "event 2");
//! // After the batch commits, the checkpoint stores `plan.next_positions()`.
//! assert_eq!(plan.next_positions().values().copied().collect::<Vec<_>>(), [3]);
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod consumer;
mod context;
mod error;
mod input;
mod lookup;
mod partition;
mod reader;
mod security;
mod sink;
mod start;
mod strategy;

// Shown to users by the facade as `sluice::kafka`.
pub use config::{KafkaSource, KafkaSourceBuilder};
pub use error::{Error, Result};
pub use sink::{Delivery, KafkaRecord, KafkaSink, KafkaSinkBuilder};
pub use start::StartOffsets;
pub use strategy::ConsumerStrategy;

// The driver's side, for sluice-runtime; the facade does not expose it.
pub use client::KafkaClient;
pub use input::KafkaInput;
pub use reader::KafkaReader;
