//! Kafka client helpers: producing test records, reading watermarks, and an
//! in-process `MockCluster` for tests that need no real broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long a flush or a metadata call may take before the test fails.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Produces `values` (no key) to `topic` and waits until every record is
/// acknowledged. `partition: None` lets librdkafka spread them.
///
/// Panics if any record is not delivered. Returns how many were delivered.
pub(crate) fn produce<V>(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    values: impl IntoIterator<Item = V>,
) -> usize
where
    V: AsRef<[u8]>,
{
    produce_keyed(
        bootstrap,
        topic,
        partition,
        values.into_iter().map(|v| (None::<&[u8]>, Some(v))),
    )
}

/// Like [`produce`], for `(key, value)` pairs; `None` is a null key or a
/// null value (a tombstone).
pub(crate) fn produce_keyed<K, V>(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: impl IntoIterator<Item = (Option<K>, Option<V>)>,
) -> usize
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    produce_with(bootstrap, topic, partition, records, &[])
}

/// Producer settings for records of up to 32 MiB: librdkafka's producer
/// refuses, before sending, a record above `message.max.bytes` (1 MB by
/// default).
pub(crate) const LARGE_RECORDS: &[(&str, &str)] = &[("message.max.bytes", "33554432")];

/// Like [`produce_keyed`], with extra producer `settings` such as
/// [`LARGE_RECORDS`].
pub(crate) fn produce_with<K, V>(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: impl IntoIterator<Item = (Option<K>, Option<V>)>,
    settings: &[(&str, &str)],
) -> usize
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: BaseProducer<DeliveryTracker> = config
        .create_with_context(DeliveryTracker::default())
        .unwrap_or_else(|e| panic!("creating a producer for {bootstrap}: {e}"));

    let mut sent = 0;
    for (key, value) in records {
        let mut record = BaseRecord::to(topic);
        if let Some(value) = value.as_ref() {
            record = record.payload(value.as_ref());
        }
        if let Some(key) = key.as_ref() {
            record = record.key(key.as_ref());
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        // The local queue is bounded: serve delivery reports until it drains.
        while let Err((e, back)) = producer.send(record) {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                e => panic!("producing to {topic} on {bootstrap}: {e}"),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("flushing {sent} records to {topic} on {bootstrap}: {e}"));

    let ctx = producer.context();
    if let Some(e) = ctx.first_error.lock().unwrap().take() {
        panic!(
            "{} of {sent} records to {topic} on {bootstrap} failed, first: {e}",
            ctx.failed.load(Ordering::SeqCst)
        );
    }
    let delivered = ctx.delivered.load(Ordering::SeqCst);
    assert_eq!(delivered, sent, "delivery reports missing for {topic}");
    delivered
}

/// Counts delivery reports so a test fails on the first lost record.
#[derive(Default)]
struct DeliveryTracker {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                self.first_error.lock().unwrap().get_or_insert(e.clone());
            }
        }
    }
}

/// `(partition, low, high)` watermarks of every partition of `topic`,
/// sorted by partition. Wrong on tansu's memory storage (see
/// `Tansu::start`).
pub(crate) fn watermarks(bootstrap: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    let consumer = plain_consumer(bootstrap);
    partitions(&consumer, bootstrap, topic)
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, CLIENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p} on {bootstrap}: {e}"));
            (p, low, high)
        })
        .collect()
}

/// Reads `topic` from the beginning of every partition until `count`
/// records have arrived, and returns them in arrival order. Panics if they
/// do not arrive within [`CLIENT_TIMEOUT`]. No consumer group is involved.
pub(crate) fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    let consumer = plain_consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    for p in partitions(&consumer, bootstrap, topic) {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("adding a partition to an assignment");
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assigning {topic} on {bootstrap}: {e}"));

    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} records from {topic} on {bootstrap} in {CLIENT_TIMEOUT:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push(m.detach()),
            Some(Err(e)) => panic!("reading {topic} on {bootstrap}: {e}"),
            None => {}
        }
    }
    records
}

/// A consumer for metadata, watermarks and assigned reads. librdkafka wants
/// a group id for `assign`; nothing joins or commits to it.
fn plain_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("creating a consumer for {bootstrap}: {e}"))
}

/// The partition ids of `topic`, sorted.
fn partitions(consumer: &BaseConsumer, bootstrap: &str, topic: &str) -> Vec<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata for {topic} on {bootstrap}: {e}"));
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(
        !partitions.is_empty(),
        "{topic} has no partitions on {bootstrap}"
    );
    partitions.sort_unstable();
    partitions
}

/// Records currently held by `topic` (sum of high minus low watermarks).
pub(crate) fn record_count(bootstrap: &str, topic: &str) -> i64 {
    watermarks(bootstrap, topic)
        .iter()
        .map(|(_, low, high)| high - low)
        .sum()
}

/// A one-broker in-process cluster (librdkafka's mock broker). It cannot
/// create partitions later and its fetch path is slow: use it for
/// behaviour, not throughput.
pub(crate) fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("starting librdkafka's mock cluster")
}

/// Creates `topic` with `partitions` partitions on a mock cluster.
pub(crate) fn create_mock_topic(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    topic: &str,
    partitions: i32,
) {
    cluster
        .create_topic(topic, partitions, 1)
        .unwrap_or_else(|e| panic!("creating {topic} on the mock cluster: {e}"));
}

/// Produces `lines` from a thread in chunks of `chunk`, pausing `pause`
/// between chunks so the job sees them arrive over time. The last `held`
/// lines wait for [`finish`](Self::finish), so the test knows records are
/// still to come until then.
pub(crate) struct BackgroundProducer {
    thread: thread::JoinHandle<()>,
    gate: mpsc::Sender<()>,
}

impl BackgroundProducer {
    pub(crate) fn start(
        bootstrap: &str,
        topic: &'static str,
        lines: &[String],
        held: usize,
        chunk: usize,
        pause: Duration,
    ) -> Self {
        let (gate, opened) = mpsc::channel();
        let bootstrap = bootstrap.to_owned();
        let (now, later) = lines.split_at(lines.len() - held);
        let (now, later) = (now.to_vec(), later.to_vec());
        let thread = thread::spawn(move || {
            for part in now.chunks(chunk) {
                produce(&bootstrap, topic, None, part);
                thread::sleep(pause);
            }
            // A dropped gate: the test failed, nothing more to produce.
            if opened.recv().is_ok() {
                produce(&bootstrap, topic, None, &later);
            }
        });
        Self { thread, gate }
    }

    /// Lets the held lines go and waits until every line is acknowledged.
    pub(crate) fn finish(self) {
        let _ = self.gate.send(());
        self.thread.join().expect("the producer thread panicked");
    }
}

/// Produces `(partition, timestamp ms, value)` records to `topic`, in order,
/// each to its partition with its record timestamp (CreateTime), and waits
/// until every one is acknowledged.
pub(crate) fn produce_timed(bootstrap: &str, topic: &str, records: &[(i32, i64, String)]) {
    let producer: BaseProducer<DeliveryTracker> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        // One request in flight: a retry cannot reorder a partition.
        .set("max.in.flight.requests.per.connection", "1")
        .create_with_context(DeliveryTracker::default())
        .unwrap_or_else(|e| panic!("creating a producer for {bootstrap}: {e}"));
    for (partition, timestamp, value) in records {
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(*partition)
            .timestamp(*timestamp)
            .payload(value.as_str());
        while let Err((e, back)) = producer.send(record) {
            match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                e => panic!("producing to {topic} on {bootstrap}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("flushing to {topic} on {bootstrap}: {e}"));
    let ctx = producer.context();
    if let Some(e) = ctx.first_error.lock().unwrap().take() {
        panic!("producing to {topic} on {bootstrap} failed: {e}");
    }
    assert_eq!(
        ctx.delivered.load(Ordering::SeqCst),
        records.len(),
        "delivery reports missing for {topic}"
    );
}

/// Every record of `topic` a `read_committed` consumer sees, read up to
/// each partition's end (its last stable offset), in partition order.
pub(crate) fn read_committed(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-test-committed-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap_or_else(|e| panic!("creating a consumer for {bootstrap}: {e}"));
    let ids = partitions(&consumer, bootstrap, topic);
    let mut assignment = TopicPartitionList::new();
    for &p in &ids {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("adding a partition to an assignment");
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assigning {topic} on {bootstrap}: {e}"));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut at_end = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    while at_end.len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "reached the end of {} of {} partitions of {topic} in {CLIENT_TIMEOUT:?}",
            at_end.len(),
            ids.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic} on {bootstrap}: {e}"),
            None => {}
        }
    }
    records.sort_by_key(|m| (rdkafka::Message::partition(m), rdkafka::Message::offset(m)));
    records
}
