//! The Kafka sink: a stream of [`KafkaRecord`]s written to a topic, by
//! default exactly-once with one Kafka transaction per batch.
//!
//! # Exactly-once (the default)
//!
//! Per batch, on the driver: `begin_transaction` (with the batch's first
//! record; a batch that writes nothing opens no transaction), the batch's
//! records, an offset commit marking the batch (see `progress.rs`),
//! `commit_transaction` — then the checkpoint commit. A crash
//!
//! - before the Kafka commit: the open transaction is aborted when the job
//!   restarts (fenced by the same transactional id) or by the broker after
//!   the transaction timeout, and the batch is redone;
//! - between the two commits: at restart the sink finds the batch's progress offset
//!   committed, and the batch is redone for the checkpoint only, its Kafka
//!   output not written again;
//! - after both: nothing is redone.
//!
//! A `read_committed` consumer of the topic therefore sees every record of
//! every batch once.

mod progress;
mod record;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_core::{BatchInfo, BoxError, DeadLetter, OutsideSink, Sink, SinkStart};

pub use record::KafkaRecord;

use crate::{Error, Result};

/// How a [`KafkaSink`] delivers a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// One Kafka transaction per batch, committed before the checkpoint;
    /// a `read_committed` consumer sees every record once, whatever
    /// crashes. The default.
    #[default]
    ExactlyOnce,
    /// An idempotent producer, flushed before the checkpoint commit: no
    /// record is lost, but a batch redone after a crash writes its records
    /// again. Faster: no transaction per batch.
    AtLeastOnce,
}

/// Writes a stream of [`KafkaRecord`]s to a Kafka topic; register it with
/// `DStream::sink`.
///
/// The transactional id is `sluice.<app id>.<sink name>`: stable across
/// restarts, so a restarted job fences the writes of its earlier run (a
/// second process of the same app id on another checkpoint copy is fenced
/// too; its next commit fails). The transaction timeout is ten batch
/// intervals, at least 60 s and at most 15 min (the broker's default
/// `transaction.max.timeout.ms`); set `transaction.timeout.ms` to choose
/// another. A batch running longer is aborted by the broker and fails.
///
/// ```no_run
/// use sluice_kafka::{Delivery, KafkaSink};
///
/// let sink = KafkaSink::builder("counts-out", "word-counts")
///     .brokers("localhost:9092")
///     .set("compression.type", "zstd")
///     .build()?;
/// assert_eq!(sink.delivery(), Delivery::ExactlyOnce);
/// # Ok::<(), sluice_kafka::Error>(())
/// ```
pub struct KafkaSink {
    name: String,
    topic: String,
    brokers: String,
    delivery: Delivery,
    settings: BTreeMap<String, String>,
    operation_timeout: Duration,
    dead_letter_topic: Option<String>,
    active: Mutex<Option<Active>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// The producer of a started sink and where its batch stands.
struct Active {
    /// Polled by the sink itself: after sends, while waiting for
    /// deliveries before a commit, while aborting. Shared with the
    /// partitions' writes, which send without holding the sink's lock.
    producer: Arc<BaseProducer<SinkContext>>,
    /// The consumer group progress is committed under (exactly-once only).
    group: Option<ConsumerGroupMetadata>,
    /// A transaction is open for this batch id (begun with the batch's
    /// first record).
    open: Option<u64>,
    /// The batch (id, time) whose output Kafka already holds: a redo of it
    /// writes nothing.
    committed: Option<(u64, i64)>,
    /// The current batch writes nothing (it is the committed one).
    discarding: bool,
    /// A commit of this producer failed, and not by fencing: whether its
    /// transaction committed is unknown (a timed-out commit goes on in the
    /// background). The next batch first recovers as at a restart.
    unsettled: bool,
    /// The job's app id and batch interval, to recover with.
    app_id: String,
    batch_interval: Duration,
}

impl KafkaSink {
    /// A sink named `name` (unique in the job, stable across restarts)
    /// writing to `topic`, which must exist.
    pub fn builder(name: impl Into<String>, topic: impl Into<String>) -> KafkaSinkBuilder {
        KafkaSinkBuilder {
            name: name.into(),
            topic: topic.into(),
            brokers: None,
            delivery: Delivery::default(),
            settings: BTreeMap::new(),
            operation_timeout: Duration::from_secs(60),
            dead_letter_topic: None,
        }
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How records are delivered.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client_config(&self, start: &SinkStart<'_>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", format!("sluice-sink-{}", self.name));
        config.set("enable.idempotence", "true");
        if self.delivery == Delivery::ExactlyOnce {
            config.set(
                "transaction.timeout.ms",
                transaction_timeout_ms(start.batch_interval).to_string(),
            );
        }
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        if self.delivery == Delivery::ExactlyOnce {
            config.set(
                "transactional.id",
                progress::transactional_id(start.app_id, &self.name),
            );
        }
        config
    }

    /// Creates the producer, fences earlier writers and reads the progress
    /// of `start.pending`.
    fn start(&self, start: &SinkStart<'_>) -> Result<(Active, bool), BoxError> {
        let config = self.client_config(start);
        let producer: BaseProducer<SinkContext> =
            config.create_with_context(SinkContext::default())?;
        self.check_topic(&producer, &self.topic)?;
        if let Some(topic) = &self.dead_letter_topic {
            self.check_topic(&producer, topic)?;
        }
        let mut active = Active {
            producer: Arc::new(producer),
            group: None,
            open: None,
            committed: None,
            discarding: false,
            unsettled: false,
            app_id: start.app_id.to_owned(),
            batch_interval: start.batch_interval,
        };
        if self.delivery == Delivery::AtLeastOnce {
            // The idempotent producer asks a broker for its producer id
            // when a metadata answer comes in, or else on a 500 ms timer.
            // The first answer may come through the bootstrap connection,
            // which does not count; a second one comes from a broker of
            // the cluster, so the id is asked for now rather than making
            // the first batch wait up to half a second for the timer.
            active
                .producer
                .client()
                .fetch_metadata(None, self.operation_timeout)?;
            return Ok((active, false));
        }
        let id = progress::transactional_id(start.app_id, &self.name);
        active
            .producer
            .init_transactions(self.operation_timeout)
            .map_err(|e| {
                format!("initialising transactional id {id:?} (this fences earlier writers): {e}")
            })?;
        let consumer: BaseConsumer = self.progress_config(&id).create()?;
        active.group = consumer.group_metadata();
        let mut already = false;
        if let Some(pending) = start.pending {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, 0);
            let committed = consumer
                .committed_offsets(tpl, self.operation_timeout)
                .map_err(|e| format!("reading the progress of group {id:?}: {e}"))?;
            let found =
                committed
                    .find_partition(&self.topic, 0)
                    .and_then(|elem| match elem.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    });
            tracing::debug!(sink = %self.name, ?found, group = %id, batch = pending.id, "progress of the sink");
            already = progress::holds(found, pending);
            if already {
                active.committed = Some((pending.id, pending.time_ms()));
            }
        }
        Ok((active, already))
    }

    /// The consumer that reads and names the progress group.
    fn progress_config(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.settings {
            if is_shared_setting(key) {
                config.set(key, value);
            }
        }
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        config
    }

    fn check_topic(
        &self,
        producer: &BaseProducer<SinkContext>,
        topic: &str,
    ) -> Result<(), BoxError> {
        let metadata = producer
            .client()
            // All topics: asking for one would make a broker that creates
            // topics on demand create it.
            .fetch_metadata(None, self.operation_timeout)?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        if found.is_none() {
            return Err(format!(
                "topic {topic:?} does not exist at {}; create it first (the sink does not create topics)",
                self.brokers
            )
            .into());
        }
        Ok(())
    }

    fn send(
        producer: &BaseProducer<SinkContext>,
        topic: &str,
        record: &KafkaRecord,
    ) -> KafkaResult<()> {
        let mut base = BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(value) = &record.value {
            base = base.payload(&value[..]);
        }
        if let Some(key) = &record.key {
            base = base.key(&key[..]);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(timestamp) = record.timestamp {
            base = base.timestamp(timestamp);
        }
        if !record.headers.is_empty() {
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len()),
                |headers, (key, value)| {
                    headers.insert(Header {
                        key,
                        value: value.as_deref(),
                    })
                },
            );
            base = base.headers(headers);
        }
        loop {
            match producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The producer's queue is full: wait for deliveries.
                    producer.poll(Duration::from_millis(10));
                    base = back;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    fn commit_transaction(&self, active: &mut Active, batch: &BatchInfo) -> Result<(), BoxError> {
        let group = active
            .group
            .as_ref()
            .ok_or("the sink has no progress group")?;
        self.wait_for_deliveries(active)?;
        let mut tpl = TopicPartitionList::new();
        {
            let mut elem = tpl.add_partition(&self.topic, 0);
            elem.set_offset(Offset::Offset(progress::offset(batch)))?;
            elem.set_metadata(progress::marker(batch));
        }
        if let Err(error) =
            active
                .producer
                .send_offsets_to_transaction(&tpl, group, self.operation_timeout)
        {
            // Not committed yet: an abort settles it, unless the producer
            // can do nothing any more.
            let fatal = matches!(&error, KafkaError::Transaction(e) if e.is_fatal());
            active.unsettled = fatal && !is_fenced(&error);
            return Err(self.transaction_error("committing the batch's progress in", error));
        }
        // librdkafka: a commit that timed out or failed with a retriable
        // error may be called again; it must not be given up for an abort,
        // since it may have reached the broker.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failed = |active: &mut Active, error: KafkaError| {
                // A fenced producer must stop: recovering would fence the
                // process that took over.
                active.unsettled = !is_fenced(&error);
                self.transaction_error("committing", error)
            };
            match active.producer.commit_transaction(self.operation_timeout) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                    let Some(wait) = commit_retry_backoff(attempt) else {
                        return Err(failed(active, KafkaError::Transaction(e)));
                    };
                    tracing::warn!(
                        sink = %self.name, batch = batch.id, error = %e, attempt,
                        wait_ms = wait.as_millis() as u64,
                        "committing the transaction again"
                    );
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(failed(active, e)),
            }
        }
    }

    /// Waits until every record sent is delivered (or failed), checking
    /// every 0.2 ms. The client's own `flush(timeout)`, which
    /// `commit_transaction` also calls, polls in steps of up to 100 ms that
    /// always run out, so a commit right after the writes would wait
    /// 100 ms; after this wait it finds nothing left and returns at once.
    fn wait_for_deliveries(&self, active: &Active) -> Result<(), BoxError> {
        let deadline = Instant::now() + self.operation_timeout;
        loop {
            match active.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if Instant::now() < deadline =>
                {
                    // Serve the delivery reports that arrived meanwhile.
                    active.producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    return Err(format!(
                        "waiting for the batch's records to reach {:?}: {e}",
                        self.topic
                    )
                    .into())
                }
            }
        }
    }

    /// Aborts the open transaction. The abort purges the records in flight,
    /// whose delivery reports the sink serves itself (see
    /// [`Active::producer`]): it asks in short steps and polls between them,
    /// as librdkafka allows for an abort that timed out.
    fn abort_transaction(&self, active: &Active) -> KafkaResult<()> {
        let deadline = Instant::now() + self.operation_timeout;
        loop {
            match active.producer.abort_transaction(Duration::from_millis(50)) {
                Err(KafkaError::Transaction(e))
                    if e.code() == RDKafkaErrorCode::OperationTimedOut
                        && Instant::now() < deadline =>
                {
                    active.producer.poll(Duration::from_millis(10));
                }
                result => return result,
            }
        }
    }

    /// Begins `batch`'s transaction unless it is open (exactly-once only).
    fn ensure_transaction(&self, active: &mut Active, batch: &BatchInfo) -> Result<(), BoxError> {
        if self.delivery == Delivery::ExactlyOnce && active.open.is_none() {
            active
                .producer
                .begin_transaction()
                .map_err(|e| self.transaction_error("beginning", e))?;
            active.open = Some(batch.id);
        }
        Ok(())
    }

    fn transaction_error(&self, doing: &str, error: KafkaError) -> BoxError {
        let fatal = matches!(&error, KafkaError::Transaction(e) if e.is_fatal());
        let hint = if is_fenced(&error) {
            ". The producer was fenced: another process with the same app id started this sink \
             (same transactional id); this process cannot write any more and must stop"
        } else if fatal {
            ". The error is fatal: the producer cannot write any more; restart the job"
        } else {
            ""
        };
        format!(
            "{doing} the transaction of sink {:?} failed: {error}{hint}",
            self.name
        )
        .into()
    }
}

impl OutsideSink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn recover(&self, start: &SinkStart<'_>) -> Result<bool, BoxError> {
        let (active, already) = self.start(start)?;
        *self.lock() = Some(active);
        Ok(already)
    }

    fn begin(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        let mut guard = self.lock();
        let active = guard.as_mut().ok_or("the sink was not started")?;
        if active.unsettled {
            // As at a restart: a new producer with the same transactional
            // id fences this one and settles its transaction, then the
            // progress says whether the batch is in Kafka already.
            let app_id = active.app_id.clone();
            let start = SinkStart::new(&app_id, active.batch_interval, Some(batch));
            let (fresh, already) = self.start(&start)?;
            tracing::info!(
                sink = %self.name, batch = batch.id, already_committed = already,
                "recovered after a failed commit"
            );
            *active = fresh;
        }
        active.discarding = active.committed == Some((batch.id, batch.time_ms()));
        if active.discarding {
            return Ok(());
        }
        active
            .producer
            .context()
            .failures
            .store(0, Ordering::SeqCst);
        // The transaction begins with the batch's first record: a batch
        // that writes nothing costs no round trip, and redoing it writes
        // nothing either.
        active.open = None;
        Ok(())
    }

    fn commit(&self, batch: &BatchInfo) -> Result<(), BoxError> {
        let mut guard = self.lock();
        let active = guard.as_mut().ok_or("the sink was not started")?;
        if active.discarding {
            return Ok(());
        }
        match self.delivery {
            Delivery::ExactlyOnce => {
                if active.open.is_none() {
                    // Nothing written: nothing to commit.
                    return Ok(());
                }
                self.commit_transaction(active, batch)?;
                active.open = None;
            }
            Delivery::AtLeastOnce => {
                self.wait_for_deliveries(active)?;
                let failures = active.producer.context().failures.load(Ordering::SeqCst);
                if failures > 0 {
                    return Err(format!(
                        "{failures} record(s) of the batch could not be delivered to {:?}",
                        self.topic
                    )
                    .into());
                }
            }
        }
        active.committed = Some((batch.id, batch.time_ms()));
        Ok(())
    }

    fn write_dead_letters(
        &self,
        letters: &[DeadLetter],
        batch: &BatchInfo,
    ) -> Result<(), BoxError> {
        let Some(topic) = &self.dead_letter_topic else {
            return Ok(());
        };
        let mut guard = self.lock();
        let active = guard.as_mut().ok_or("the sink was not started")?;
        if active.discarding || letters.is_empty() {
            return Ok(());
        }
        self.ensure_transaction(active, batch)?;
        for letter in letters {
            Self::send(&active.producer, topic, &dead_letter_record(letter))
                .map_err(|e| format!("sending a dead letter to {topic:?}: {e}"))?;
        }
        Ok(())
    }

    fn abort(&self, batch: &BatchInfo) {
        let mut guard = self.lock();
        let Some(active) = guard.as_mut() else {
            return;
        };
        active.discarding = false;
        match self.delivery {
            Delivery::ExactlyOnce => {
                // After a failed commit the transaction may be committed:
                // the next batch's recovery settles it instead.
                if active.open.take().is_some() && !active.unsettled {
                    if let Err(error) = self.abort_transaction(active) {
                        tracing::warn!(sink = %self.name, batch = batch.id, %error, "could not abort the transaction; the broker aborts it after the transaction timeout");
                    }
                }
            }
            Delivery::AtLeastOnce => {
                // The records already sent are delivered, not purged: a
                // redo sends them again, which at-least-once allows, and
                // purging an idempotent producer's records in flight
                // breaks its sequence numbers on some brokers. Their
                // delivery reports are served here, so a failure among
                // them is not counted against the next batch.
                if let Err(error) = self.wait_for_deliveries(active) {
                    tracing::warn!(sink = %self.name, batch = batch.id, %error, "the aborted batch's records were still being delivered");
                }
                active
                    .producer
                    .context()
                    .failures
                    .store(0, Ordering::SeqCst);
            }
        }
    }
}

impl Sink<KafkaRecord> for KafkaSink {
    /// Sends one partition's records. The writes of several partitions
    /// send at the same time, each on its worker thread, to the one
    /// producer; only beginning the batch's transaction takes the lock.
    fn write(
        &self,
        records: Vec<KafkaRecord>,
        _partition: usize,
        info: &BatchInfo,
    ) -> Result<(), BoxError> {
        let producer = {
            let mut guard = self.lock();
            let active = guard.as_mut().ok_or("the sink was not started")?;
            if active.discarding {
                return Ok(());
            }
            self.ensure_transaction(active, info)?;
            Arc::clone(&active.producer)
        };
        for (i, record) in records.iter().enumerate() {
            Self::send(&producer, &self.topic, record)
                .map_err(|e| format!("sending a record to {:?}: {e}", self.topic))?;
            if i % POLL_EVERY == POLL_EVERY - 1 {
                // Serve delivery reports while sending, without waiting.
                producer.poll(Duration::ZERO);
            }
        }
        Ok(())
    }
}

/// Builds a [`KafkaSink`]; [`build`](Self::build) validates the settings.
#[derive(Debug, Clone)]
pub struct KafkaSinkBuilder {
    name: String,
    topic: String,
    brokers: Option<String>,
    delivery: Delivery,
    settings: BTreeMap<String, String>,
    operation_timeout: Duration,
    dead_letter_topic: Option<String>,
}

impl KafkaSinkBuilder {
    /// Also writes the job's dead letters (under
    /// `PoisonPolicy::DeadLetter`) to `topic`, in the same transaction as
    /// the batch's records: the rejected record's key and value, with the
    /// headers `sluice.topic`, `sluice.partition`, `sluice.offset`,
    /// `sluice.operator` and `sluice.error` (and `sluice.unread` when the
    /// record could not be read back). The topic must exist. The letters
    /// stay in the checkpoint's dead-letter family too.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Bootstrap servers, `host:port[,host:port…]`. Required.
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// Exactly-once (the default) or at-least-once delivery.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// A librdkafka producer setting, passed through (security settings,
    /// `compression.type`, `linger.ms`, `partitioner`, …). Security
    /// settings also apply to the consumer that reads the sink's progress.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// How long starting, committing, aborting or flushing may take before
    /// the batch fails; default 60 s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Validates the settings.
    ///
    /// Fails with [`Error::Config`] naming the setting when the name is
    /// empty or not made of letters, digits, `.`, `_`, `-`; the topic or
    /// brokers are missing; a setting contradicts the delivery mode
    /// (`transactional.id` is the sink's own, `enable.idempotence` must
    /// stay on); or librdkafka refuses a setting.
    pub fn build(self) -> Result<KafkaSink> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(Error::config(
                "sink name",
                format!("{:?} must be letters, digits, '.', '_' or '-'", self.name),
            ));
        }
        if self.topic.is_empty() {
            return Err(Error::config(
                "sink topic",
                "empty; name the topic to write to",
            ));
        }
        let brokers = self
            .brokers
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::config("brokers", "required: set the sink's .brokers(..)"))?;
        if self.settings.contains_key("transactional.id") {
            return Err(Error::config(
                "transactional.id",
                "the sink sets its own (sluice.<app id>.<sink name>), stable across restarts so \
                 it can fence its earlier run",
            ));
        }
        if self
            .settings
            .get("enable.idempotence")
            .is_some_and(|v| v != "true")
        {
            return Err(Error::config(
                "enable.idempotence",
                "the sink needs the idempotent producer in both delivery modes",
            ));
        }
        // librdkafka checks names and values when a configuration is built.
        let mut probe = ClientConfig::new();
        for (key, value) in &self.settings {
            probe.set(key, value);
        }
        probe
            .create_native_config()
            .map_err(|e| Error::config("sink settings", format!("librdkafka refuses them: {e}")))?;
        Ok(KafkaSink {
            name: self.name,
            topic: self.topic,
            brokers,
            delivery: self.delivery,
            settings: self.settings,
            operation_timeout: self.operation_timeout,
            dead_letter_topic: self.dead_letter_topic.filter(|t| !t.is_empty()),
            active: Mutex::new(None),
        })
    }
}

/// A dead letter as a Kafka record: the rejected record's key, value and
/// timestamp, with where it came from and why it was rejected in headers.
fn dead_letter_record(letter: &DeadLetter) -> KafkaRecord {
    let (key, value, timestamp) = match &letter.record {
        Some(record) => (record.key.clone(), record.value.clone(), record.timestamp),
        None => (None, None, None),
    };
    let mut record = KafkaRecord {
        key,
        value,
        timestamp,
        ..KafkaRecord::default()
    }
    .header("sluice.topic", letter.topic.as_bytes())
    .header("sluice.partition", letter.partition.to_string())
    .header("sluice.offset", letter.offset.to_string())
    .header("sluice.operator", letter.operator)
    .header("sluice.error", letter.error.as_bytes());
    if let Some(unread) = &letter.unread {
        record = record.header("sluice.unread", unread.as_bytes());
    }
    record
}

/// Records sent between two polls of the producer's delivery reports.
const POLL_EVERY: usize = 1024;

/// Ten batch intervals, within [60 s, 15 min].
fn transaction_timeout_ms(batch_interval: Duration) -> u64 {
    let ms = batch_interval.as_millis().saturating_mul(10);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(60_000, 900_000)
}

/// Settings the progress consumer shares with the producer: how to reach
/// and authenticate with the cluster.
fn is_shared_setting(key: &str) -> bool {
    key.starts_with("security.")
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key.starts_with("socket.")
        || key == "client.dns.lookup"
        || key == "broker.address.family"
}

/// Routes the producer's logs to `tracing` and counts failed deliveries.
#[derive(Default)]
struct SinkContext {
    failures: AtomicU64,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::context::log(level, facility, message);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if self.failures.fetch_add(1, Ordering::SeqCst) == 0 {
                tracing::warn!(%error, "a record could not be delivered; the batch fails");
            }
        }
    }
}

/// The producer was fenced: another process started the same sink.
fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    )
}

/// Attempts at committing a transaction that failed with a retriable
/// error, the first included.
const COMMIT_ATTEMPTS: u32 = 5;

/// How long to wait after failed commit attempt `attempt` (from 1) before
/// the next, or `None` when it was the last: 50 ms, doubling, so that a
/// coordinator that is moving or loading (the usual retriable causes) has
/// 750 ms in all to come back.
fn commit_retry_backoff(attempt: u32) -> Option<Duration> {
    (attempt < COMMIT_ATTEMPTS)
        .then(|| Duration::from_millis(50 << attempt.saturating_sub(1).min(8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retriable_commit_failure_waits_longer_each_time_and_gives_up_after_five_attempts() {
        let waits: Vec<Option<Duration>> = (1..=6).map(commit_retry_backoff).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(400), None, None]);
        assert_eq!(commit_retry_backoff(u32::MAX), None);
    }

    #[test]
    fn the_transaction_timeout_is_ten_intervals_within_the_brokers_bounds() {
        assert_eq!(transaction_timeout_ms(Duration::from_millis(100)), 60_000);
        assert_eq!(transaction_timeout_ms(Duration::from_secs(30)), 300_000);
        assert_eq!(transaction_timeout_ms(Duration::from_secs(600)), 900_000);
    }

    #[test]
    fn a_sink_refuses_settings_that_break_its_delivery() {
        let build = |key: &str, value: &str| {
            KafkaSink::builder("out", "t")
                .brokers("localhost:9092")
                .set(key, value)
                .build()
                .unwrap_err()
                .to_string()
        };
        assert!(build("transactional.id", "mine").contains("transactional.id"));
        assert!(build("enable.idempotence", "false").contains("enable.idempotence"));
        assert!(build("linger.ms", "soon").contains("linger.ms"));
        let unnamed = KafkaSink::builder("a b", "t")
            .brokers("x:1")
            .build()
            .unwrap_err();
        assert!(unnamed.to_string().contains("sink name"), "{unnamed}");
    }
}
