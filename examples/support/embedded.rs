//! The in-process Kafka broker the examples start when no `--brokers` is
//! given, with a producer thread writing generated lines into it (or, for
//! a bounded run, a fixed number of lines written before the job starts).
//!
//! The broker forgets its records when the process exits, so on a restart
//! the producer first writes the same records again up to the offsets
//! stored in the checkpoint: lines are a pure function of their position,
//! so offsets stay valid and results continue exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use sluice::kafka::TopicPartition;

/// The line at an offset of a partition.
pub(crate) type LineAt = fn(i32, i64) -> String;

/// The line at an offset of a partition and its record timestamp (ms since
/// the Unix epoch; `None`: the producer's clock).
pub(crate) type RecordAt = Arc<dyn Fn(i32, i64) -> (String, Option<i64>) + Send + Sync>;

/// The embedded broker and its producer thread.
pub(crate) struct Embedded {
    /// The broker's bootstrap address.
    pub(crate) bootstrap: String,
    stop: Arc<AtomicBool>,
    producer: Option<std::thread::JoinHandle<()>>,
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl Drop for Embedded {
    /// Stops the producer before the broker goes, so it does not log
    /// connection errors on the way out.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

impl Embedded {
    /// Starts the broker with `topic`, refills it up to `stored`, and
    /// produces `rate` lines per second round-robin over the partitions.
    // Not every example including this file calls it.
    #[allow(dead_code)]
    pub(crate) fn start(
        topic: &str,
        partitions: i32,
        rate: u32,
        stored: &BTreeMap<TopicPartition, i64>,
        line_at: LineAt,
    ) -> anyhow::Result<Self> {
        let record_at: RecordAt = Arc::new(move |p, offset| (line_at(p, offset), None));
        Self::start_timestamped(topic, partitions, rate, stored, record_at)
    }

    /// Like [`start`](Self::start), with each record's timestamp set by
    /// `record_at` too, so event times are a pure function of the position.
    pub(crate) fn start_timestamped(
        topic: &str,
        partitions: i32,
        rate: u32,
        stored: &BTreeMap<TopicPartition, i64>,
        record_at: RecordAt,
    ) -> anyhow::Result<Self> {
        let (cluster, producer, next) = Self::refilled(topic, partitions, stored, &record_at)?;
        let bootstrap = cluster.bootstrap_servers();
        tracing::info!(%bootstrap, topic, partitions, rate, "embedded broker started");
        let topic = topic.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let producer = std::thread::spawn(move || {
            produce_until(&producer, &topic, rate.max(1), next, &stopped, &record_at)
        });
        Ok(Self {
            bootstrap,
            stop,
            producer: Some(producer),
            cluster,
        })
    }

    /// Starts the broker with `topic`, refills it up to `stored`, then
    /// writes `lines` more lines round-robin over the partitions and no
    /// more: a fixed input for a bounded run (`--until-caught-up`), which
    /// otherwise would find the broker empty.
    // Not every example including this file calls it.
    #[allow(dead_code)]
    pub(crate) fn filled(
        topic: &str,
        partitions: i32,
        lines: u64,
        stored: &BTreeMap<TopicPartition, i64>,
        line_at: LineAt,
    ) -> anyhow::Result<Self> {
        let record_at: RecordAt = Arc::new(move |p, offset| (line_at(p, offset), None));
        let (cluster, producer, mut next) = Self::refilled(topic, partitions, stored, &record_at)?;
        for sent in 0..lines {
            let p = (sent % next.len() as u64) as usize;
            send(&producer, topic, p as i32, next[p], &record_at)?;
            next[p] += 1;
        }
        producer.flush(Duration::from_secs(60))?;
        let bootstrap = cluster.bootstrap_servers();
        tracing::info!(%bootstrap, topic, partitions, lines, "embedded broker started with new lines");
        Ok(Self {
            bootstrap,
            stop: Arc::new(AtomicBool::new(true)),
            producer: None,
            cluster,
        })
    }

    /// A new broker with `topic`, holding again what earlier runs consumed
    /// (up to the `stored` offsets), so stored offsets exist again; its
    /// producer, and each partition's next offset.
    fn refilled(
        topic: &str,
        partitions: i32,
        stored: &BTreeMap<TopicPartition, i64>,
        record_at: &RecordAt,
    ) -> anyhow::Result<(
        MockCluster<'static, DefaultProducerContext>,
        ThreadedProducer<DefaultProducerContext>,
        Vec<i64>,
    )> {
        let cluster = MockCluster::new(1).context("starting the embedded broker")?;
        cluster
            .create_topic(topic, partitions, 1)
            .context("creating the embedded topic")?;
        let producer: ThreadedProducer<_> = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            // Few, larger record batches: the embedded broker's fetches
            // slow down with the number of batches in its log.
            .set("linger.ms", "100")
            .set("enable.idempotence", "true")
            .create()
            .context("creating the embedded producer")?;
        let mut next: Vec<i64> = vec![0; partitions as usize];
        for (p, next_offset) in next.iter_mut().enumerate() {
            let end = stored
                .get(&TopicPartition::new(topic, p as i32))
                .copied()
                .unwrap_or(0);
            while *next_offset < end {
                send(&producer, topic, p as i32, *next_offset, record_at)?;
                *next_offset += 1;
            }
        }
        producer.flush(Duration::from_secs(60))?;
        if next.iter().any(|&n| n > 0) {
            tracing::info!(
                records = next.iter().sum::<i64>(),
                "embedded broker refilled up to the stored offsets"
            );
        }
        Ok((cluster, producer, next))
    }

    /// Creates another topic on the embedded broker.
    // Not every example including this file calls it.
    #[allow(dead_code)]
    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating the embedded topic {topic}"))
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    offset: i64,
    record_at: &RecordAt,
) -> anyhow::Result<()> {
    let (line, timestamp) = record_at(partition, offset);
    let mut record = BaseRecord::<(), str>::to(topic)
        .partition(partition)
        .payload(line.as_str());
    if let Some(timestamp) = timestamp {
        record = record.timestamp(timestamp);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

fn produce_until(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    rate: u32,
    mut next: Vec<i64>,
    stop: &AtomicBool,
    record_at: &RecordAt,
) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let p = (sent % next.len() as u64) as usize;
            if let Err(error) = send(producer, topic, p as i32, next[p], record_at) {
                tracing::error!(%error, "embedded producer stopped");
                return;
            }
            next[p] += 1;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
