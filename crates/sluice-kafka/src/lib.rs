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
//!   a [`DataLossPolicy`], and librdkafka settings passed through untouched.
//! - [`KafkaClient`] (from [`KafkaSource::connect`]) is the driver's side:
//!   each batch it discovers partitions ([`KafkaClient::partitions`]) and
//!   fetches their log start and latest offsets ([`KafkaClient::offsets`]);
//!   on a first start it resolves [`StartOffsets`]
//!   ([`KafkaClient::start_offsets`]).
//! - [`plan_ranges`] is a pure function: stored positions plus
//!   [`PartitionOffsets`] (and optional rate caps) give the batch's
//!   [`Plan`]. Partitions without a position — new partitions, new topics
//!   of a pattern — start from their log start.
//! - [`KafkaReader`] (from [`KafkaClient::reader`]) implements
//!   [`sluice_core::InputReader`]: worker threads read the planned ranges,
//!   each partition through its own cached consumer.
//!
//! # Example
//!
//! One batch against librdkafka's in-process mock broker:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::{Duration, Instant};
//! use rdkafka::mocking::MockCluster;
//! use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
//! use rdkafka::ClientConfig;
//! use sluice_core::InputReader;
//! use sluice_kafka::{plan_ranges, KafkaSource};
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
//! let mut client = source.connect()?;
//! let partitions = client.partitions(Instant::now())?;
//! let offsets = client.offsets(&partitions)?;
//! let positions = client.start_offsets(source.start_from(), &offsets)?;
//! let plan = plan_ranges(&positions, &offsets, None, source.on_data_loss())?;
//!
//! let reader = client.reader();
//! let records = reader.read(&plan.ranges[0])?;
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
mod lookup;
mod partition;
mod planner;
mod reader;
mod security;
mod sink;
mod start;
mod strategy;

// Shown to users by the facade as `sluice::kafka`.
pub use config::{KafkaSource, KafkaSourceBuilder};
pub use error::{Error, Result};
pub use planner::{DataLossPolicy, OffsetReset, ResetKind};
pub use sink::{Delivery, KafkaRecord, KafkaSink, KafkaSinkBuilder};
pub use start::StartOffsets;
pub use strategy::ConsumerStrategy;

// The driver's side, for sluice-runtime; the facade does not expose it.
pub use client::KafkaClient;
pub use planner::{plan_ranges, PartitionOffsets, Plan};
pub use reader::KafkaReader;
