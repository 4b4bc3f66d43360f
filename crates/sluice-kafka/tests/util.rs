//! A mock broker per test, with a producer and a source builder aimed at it.

use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::ClientConfig;
use sluice_core::{OffsetRange, TopicPartition};
use sluice_kafka::{KafkaSource, KafkaSourceBuilder};

/// One in-process Kafka broker.
pub(crate) struct Broker {
    // Dropped before the cluster it talks to.
    producer: BaseProducer,
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl Broker {
    pub(crate) fn new() -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let producer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        Self { producer, cluster }
    }

    pub(crate) fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Delays every answer of the broker by `delay`: requests are neither
    /// refused nor answered in time.
    pub(crate) fn answer_after(&self, delay: Duration) {
        self.cluster
            .broker_round_trip_time(1, delay)
            .expect("broker round-trip time");
    }

    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) {
        self.cluster
            .create_topic(topic, partitions, 1)
            .expect("create topic");
    }

    /// Appends `values` to a partition and waits until the broker has them.
    pub(crate) fn produce<V: AsRef<[u8]>>(
        &self,
        topic: &str,
        partition: i32,
        values: impl IntoIterator<Item = V>,
    ) {
        for value in values {
            self.send(
                BaseRecord::<[u8], [u8]>::to(topic)
                    .partition(partition)
                    .payload(value.as_ref()),
            );
        }
        self.flush();
    }

    /// Appends `count` values `"{partition}:{offset}"` to a partition whose
    /// next offset is `first`.
    pub(crate) fn produce_numbered(&self, topic: &str, partition: i32, first: i64, count: i64) {
        self.produce(
            topic,
            partition,
            (first..first + count).map(|o| format!("{partition}:{o}")),
        );
    }

    /// Appends a record with a key, a timestamp and two headers (one null).
    pub(crate) fn produce_full(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: &str,
        ts: i64,
    ) {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(value),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            });
        self.send(
            BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .key(key.as_bytes())
                .payload(value.as_bytes())
                .timestamp(ts)
                .headers(headers),
        );
        self.flush();
    }

    /// Appends a record with a null value (a tombstone).
    pub(crate) fn produce_tombstone(&self, topic: &str, partition: i32, key: &str) {
        self.send(
            BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .key(key.as_bytes()),
        );
        self.flush();
    }

    fn send(&self, record: BaseRecord<'_, [u8], [u8]>) {
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    pub(crate) fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(30))
            .expect("flush producer");
    }

    /// A source builder aimed at this broker, with a group id.
    pub(crate) fn source(&self) -> KafkaSourceBuilder {
        KafkaSource::builder()
            .brokers(self.bootstrap_servers())
            .group_id("sluice-test")
            .poll_timeout(Duration::from_secs(30))
            // Tests see topics they create at once.
            .discovery_interval(Duration::ZERO)
    }
}

pub(crate) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

pub(crate) fn range(topic: &str, partition: i32, from: i64, until: i64) -> OffsetRange {
    OffsetRange::new(&tp(topic, partition), from, until)
}

/// Polls `check` until it returns `Some`, failing the test at `timeout`.
pub(crate) fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
