//! The driver's view of Kafka: partition discovery and offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use crate::context::SluiceContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::MetadataTopic;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::{PartitionOffsets, TopicPartition};

use crate::strategy::{pattern_matches, ConsumerStrategy};
use crate::{start, Error, KafkaReader, KafkaSource, Result, StartOffsets};

impl KafkaSource {
    /// Creates the driver's client. Needs a group id (configured, or set by
    /// [`with_default_group_id`](Self::with_default_group_id)); does no I/O
    /// yet, so an unreachable broker shows up in the first request.
    // The driver's; hidden from the facade's users.
    #[doc(hidden)]
    pub fn connect(&self) -> Result<KafkaClient> {
        let group_id = self.group_id().map(str::to_owned).ok_or_else(|| {
            Error::config(
                "group_id",
                "no consumer group id: set .group_id(..) or call with_default_group_id (the \
                 runtime passes the application id)",
            )
        })?;
        // The driver's consumers join no group: they only ask for metadata
        // and offsets. A broker answers the requests of one connection in
        // order, so each question of a batch gets a client (and a
        // connection) of its own and all three are answered at once.
        let mut config = self.client_config(None);
        if !self.settings().contains_key("enable.sparse.connections") {
            // Connected only on demand, a fresh client's request made while
            // it hands over from the bootstrap connection to the cluster's
            // own brokers waits about 50 ms: the first batch would pay it.
            // Three clients may well connect to every broker.
            config.set("enable.sparse.connections", "false");
        }
        let create = |role: &str| -> Result<BaseConsumer<SluiceContext>> {
            config
                .create_with_context(SluiceContext)
                .map_err(|e| Error::kafka(format!("creating the {role} consumer"), e))
        };
        Ok(KafkaClient {
            source: self.clone(),
            group_id,
            consumer: create("metadata")?,
            log_start_consumer: create("log start offsets")?,
            latest_consumer: create("latest offsets")?,
            group_consumer: None,
            cache: None,
            known: BTreeSet::new(),
            said_none_match: false,
        })
    }
}

/// The driver's connection: discovers partitions, fetches their offsets,
/// resolves start offsets, and hands out the [`KafkaReader`] for tasks.
///
/// ```no_run
/// use std::time::Instant;
/// use sluice_kafka::{KafkaSource, StartOffsets};
///
/// let source = KafkaSource::builder()
///     .brokers("localhost:9092")
///     .subscribe(["events"])
///     .build()?
///     .with_default_group_id("my-app");
/// let mut client = source.connect()?;
/// let partitions = client.partitions(Instant::now())?;
/// let offsets = client.offsets(&partitions)?;
/// let start = client.start_offsets(&StartOffsets::Earliest, &offsets)?;
/// # Ok::<(), sluice_kafka::Error>(())
/// ```
pub struct KafkaClient {
    source: KafkaSource,
    group_id: String,
    /// Discovery and timestamp lookups.
    consumer: BaseConsumer<SluiceContext>,
    log_start_consumer: BaseConsumer<SluiceContext>,
    latest_consumer: BaseConsumer<SluiceContext>,
    /// Commits mirrored offsets to the consumer group; made on first use.
    group_consumer: Option<BaseConsumer<SluiceContext>>,
    /// Last discovery and when it ran.
    cache: Option<(Instant, Vec<TopicPartition>)>,
    /// Every partition seen so far, to log only the new ones.
    known: BTreeSet<TopicPartition>,
    /// Whether the warning that the subscription matches no partition was
    /// logged, so discovery says it once rather than every interval.
    said_none_match: bool,
}

impl fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaClient")
            .field("brokers", &self.source.brokers())
            .field("group_id", &self.group_id)
            .field("strategy", self.source.strategy())
            .field("known_partitions", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl KafkaClient {
    /// The source this client was created from.
    pub fn source(&self) -> &KafkaSource {
        &self.source
    }

    /// The partitions to read, sorted, per the source's strategy.
    ///
    /// Metadata is fetched again once the discovery interval has passed
    /// since the last fetch (always, with a zero interval); in between the
    /// last answer is returned. A subscribed topic that does not exist is
    /// [`Error::UnknownTopic`].
    pub fn partitions(&mut self, now: Instant) -> Result<Vec<TopicPartition>> {
        if let Some((at, partitions)) = &self.cache {
            if now.saturating_duration_since(*at) < self.source.discovery_interval() {
                return Ok(partitions.clone());
            }
        }
        self.drain_events();
        let partitions = self.discover()?;
        self.log_changes(&partitions);
        self.cache = Some((now, partitions.clone()));
        Ok(partitions)
    }

    /// Log start and latest offset of every partition of `tps`, in order.
    ///
    /// `latest` is the high watermark, or the last stable offset when the
    /// source sets `isolation.level=read_committed`. Costs one round trip:
    /// a single ListOffsets request per broker for the latest offsets and
    /// one for the log starts, sent at the same time on two connections.
    ///
    /// A lookup that fails because a client's metadata lags (a partition
    /// another client has just discovered, a leader moving) is retried once
    /// after refreshing that metadata; if it still fails, the error is
    /// transient ([`Error::is_transient`]). Offsets come for every partition
    /// of `tps` or not at all.
    pub fn offsets(&self, tps: &[TopicPartition]) -> Result<Vec<PartitionOffsets>> {
        if tps.is_empty() {
            return Ok(Vec::new());
        }
        match self.fetch_offsets(tps) {
            Err(error) if error.is_metadata_lag() => {
                tracing::debug!(%error, "refreshing the offset clients' metadata and asking again");
                self.refresh_metadata(tps);
                self.fetch_offsets(tps)
            }
            result => result,
        }
    }

    fn fetch_offsets(&self, tps: &[TopicPartition]) -> Result<Vec<PartitionOffsets>> {
        let (log_starts, latest) = thread::scope(|s| {
            let log_starts = s.spawn(|| {
                list_offsets(
                    &self.log_start_consumer,
                    tps,
                    Offset::Beginning,
                    self.timeout(),
                )
            });
            let latest = list_offsets(&self.latest_consumer, tps, Offset::End, self.timeout());
            let log_starts = log_starts
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (log_starts, latest)
        });
        let (log_starts, latest) = (log_starts?, latest?);
        tps.iter()
            .map(|tp| {
                let found = |offsets: &BTreeMap<TopicPartition, i64>| {
                    offsets.get(tp).copied().ok_or_else(|| {
                        Error::kafka(
                            format!("fetching the offsets of {tp}"),
                            KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition),
                        )
                    })
                };
                Ok(PartitionOffsets::new(
                    tp.clone(),
                    found(&log_starts)?,
                    found(&latest)?,
                ))
            })
            .collect()
    }

    /// Asks the broker for the metadata of the topics of `tps` on both
    /// offset clients, so their caches learn partitions and leaders that
    /// the discovery client has already seen.
    fn refresh_metadata(&self, tps: &[TopicPartition]) {
        let topics: BTreeSet<&str> = tps.iter().map(|tp| &*tp.topic).collect();
        for consumer in [&self.log_start_consumer, &self.latest_consumer] {
            for topic in &topics {
                if let Err(error) = consumer.fetch_metadata(Some(topic), self.timeout()) {
                    tracing::debug!(%error, topic, "metadata refresh failed");
                }
            }
        }
    }

    /// The partitions to read (as [`partitions`](Self::partitions)) with
    /// their offsets (as [`offsets`](Self::offsets)), in one round trip
    /// while the partitions stay the same: discovery runs at the same time
    /// as the offset requests for the partitions known so far, and only
    /// partitions it finds new cost one more request.
    ///
    /// After a failure the next call discovers again, whatever the discovery
    /// interval: the partition set a plan is made from is always one that
    /// the broker reported and every partition of it has offsets.
    pub fn partitions_with_offsets(&mut self, now: Instant) -> Result<Vec<PartitionOffsets>> {
        let result = self.try_partitions_with_offsets(now);
        if result.is_err() {
            self.cache = None;
        }
        result
    }

    fn try_partitions_with_offsets(&mut self, now: Instant) -> Result<Vec<PartitionOffsets>> {
        let known = self.cache.as_ref().map(|(_, tps)| tps.clone());
        let fresh = self.cache.as_ref().is_some_and(|(at, _)| {
            now.saturating_duration_since(*at) < self.source.discovery_interval()
        });
        let Some(known) = known.filter(|_| !fresh) else {
            // Nothing known yet, or no discovery due: one request at a time.
            let partitions = self.partitions(now)?;
            return self.offsets(&partitions);
        };
        self.drain_events();
        let (discovered, known_offsets) = thread::scope(|s| {
            let offsets = s.spawn(|| self.offsets(&known));
            let discovered = self.discover();
            let offsets = offsets
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (discovered, offsets)
        });
        let partitions = discovered?;
        self.log_changes(&partitions);
        self.cache = Some((now, partitions.clone()));
        let Ok(known_offsets) = known_offsets else {
            // Typically a partition that went away: ask for what exists now.
            return self.offsets(&partitions);
        };
        let new: Vec<_> = partitions
            .iter()
            .filter(|tp| known.binary_search(tp).is_err())
            .cloned()
            .collect();
        let mut offsets: Vec<_> = known_offsets
            .into_iter()
            .filter(|p| partitions.binary_search(&p.tp).is_ok())
            .chain(self.offsets(&new)?)
            .collect();
        offsets.sort_by(|a, b| a.tp.cmp(&b.tp));
        Ok(offsets)
    }

    /// Resolves the first-start `policy` to an offset per partition of
    /// `partitions`. An assign strategy's explicit offsets win over the
    /// policy; a timestamp later than every record resolves to the latest
    /// offset. An explicit offset outside its partition's log, or for a
    /// partition not in `partitions`, is an [`Error::Config`]: nothing is
    /// read.
    pub fn start_offsets(
        &self,
        policy: &StartOffsets,
        partitions: &[PartitionOffsets],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let assigned = match self.source.strategy() {
            ConsumerStrategy::Assign(offsets) => Some(offsets),
            _ => None,
        };
        let lookups: Vec<_> = partitions
            .iter()
            .filter(|p| !assigned.is_some_and(|a| a.contains_key(&p.tp)))
            .collect();
        let looked_up = match policy {
            _ if lookups.is_empty() => BTreeMap::new(),
            StartOffsets::Timestamp(ts) => self.offsets_for_time(*ts, &lookups)?,
            StartOffsets::GroupCommitted => self.group_committed(&lookups)?,
            _ => BTreeMap::new(),
        };
        if matches!(policy, StartOffsets::GroupCommitted) {
            self.warn_committed_outside_log(&lookups, &looked_up);
        }
        start::resolve(policy, partitions, assigned, &looked_up)
    }

    /// Commits `offsets` (the next offset to read, per partition) to the
    /// source's consumer group, so that standard lag tools see the job's
    /// progress. Asynchronous and best effort: a failure is logged when
    /// the broker answers, and the next call commits newer offsets anyway.
    /// sluice never reads these offsets back; its checkpoint is the truth.
    pub fn mirror_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let consumer = match &mut self.group_consumer {
            Some(consumer) => consumer,
            slot @ None => slot.insert(
                self.source
                    .client_config(Some(&self.group_id))
                    .create_with_context(SluiceContext)
                    .map_err(|e| Error::kafka("creating the consumer-group committer", e))?,
            ),
        };
        let context = || format!("mirroring offsets to consumer group '{}'", self.group_id);
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (tp, offset) in offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
                .map_err(|e| Error::kafka(context(), e))?;
        }
        consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| Error::kafka(context(), e))?;
        // Serves the answers to earlier commits (logged by the context).
        let _ = consumer.poll(Duration::ZERO);
        Ok(())
    }

    /// The reader source tasks use. Each call makes a new reader with its
    /// own consumers; share one (it is `Sync`) rather than calling this per
    /// batch.
    pub fn reader(&self) -> KafkaReader {
        KafkaReader::new(
            self.source.client_config(Some(&self.group_id)),
            self.source.poll_timeout(),
        )
    }

    fn timeout(&self) -> Duration {
        self.source.metadata_timeout()
    }

    fn discover(&self) -> Result<Vec<TopicPartition>> {
        let mut partitions = Vec::new();
        match self.source.strategy() {
            ConsumerStrategy::Subscribe(topics) => {
                for topic in topics {
                    let metadata = self
                        .consumer
                        .fetch_metadata(Some(topic), self.timeout())
                        .map_err(|e| {
                            Error::kafka(format!("fetching metadata of topic '{topic}'"), e)
                        })?;
                    let found = metadata.topics().iter().find(|t| t.name() == topic);
                    let error = found
                        .and_then(MetadataTopic::error)
                        .map(RDKafkaErrorCode::from);
                    match (found, error) {
                        (Some(t), None) if !t.partitions().is_empty() => {
                            push_partitions(&mut partitions, t)
                        }
                        (Some(_), Some(code)) if !is_unknown_topic(code) => {
                            return Err(Error::kafka(
                                format!("metadata of topic '{topic}'"),
                                KafkaError::MetadataFetch(code),
                            ));
                        }
                        _ => {
                            return Err(Error::UnknownTopic {
                                topic: topic.clone(),
                            })
                        }
                    }
                }
            }
            ConsumerStrategy::Pattern(pattern) => {
                let metadata = self
                    .consumer
                    .fetch_metadata(None, self.timeout())
                    .map_err(|e| Error::kafka("fetching metadata of all topics", e))?;
                for t in metadata.topics() {
                    if !pattern_matches(pattern, t.name()) {
                        continue;
                    }
                    match t.error() {
                        // Typically a topic still being created: next time.
                        Some(e) => tracing::debug!(
                            topic = t.name(), error = ?RDKafkaErrorCode::from(e),
                            "skipping matching topic whose metadata has an error"
                        ),
                        None => push_partitions(&mut partitions, t),
                    }
                }
            }
            ConsumerStrategy::Assign(assigned) => partitions.extend(assigned.keys().cloned()),
        }
        partitions.sort();
        partitions.dedup();
        Ok(partitions)
    }

    fn log_changes(&mut self, partitions: &[TopicPartition]) {
        let current: BTreeSet<_> = partitions.iter().cloned().collect();
        let added: Vec<_> = current.difference(&self.known).collect();
        let gone: Vec<_> = self.known.difference(&current).collect();
        let known_topics: BTreeSet<_> = self.known.iter().map(|tp| &tp.topic).collect();
        let new_topics: BTreeSet<_> = added
            .iter()
            .map(|tp| &tp.topic)
            .filter(|t| !known_topics.contains(t))
            .collect();
        if current.is_empty() {
            if !self.said_none_match {
                tracing::warn!(
                    "the subscription matches no Kafka partition yet; batches stay empty and \
                     discovery looks again every discovery interval"
                );
                self.said_none_match = true;
            }
        } else if self.known.is_empty() {
            tracing::info!(
                partitions = current.len(),
                topics = new_topics.len(),
                "discovered Kafka partitions"
            );
        } else if !added.is_empty() {
            tracing::info!(
                new_partitions = ?added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                new_topics = ?new_topics,
                "new Kafka partitions discovered; they start from their log start"
            );
        }
        if !gone.is_empty() {
            tracing::warn!(
                partitions = ?gone.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "Kafka partitions disappeared from the metadata"
            );
        }
        // Keep what was seen once: a partition that comes back is not new.
        self.known.extend(current);
    }

    /// Serves queued client events (errors, logs) so they neither pile up
    /// nor go unnoticed.
    fn drain_events(&self) {
        for consumer in [
            &self.consumer,
            &self.log_start_consumer,
            &self.latest_consumer,
        ] {
            for _ in 0..64 {
                match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => tracing::debug!(error = %e, "driver consumer event"),
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    /// The offsets the source's consumer group committed for `partitions`
    /// (`None`: nothing committed).
    /// Says where a data-loss or offset-ahead error of the first planning
    /// comes from when the consumer group committed an offset outside a
    /// partition's log: the error itself speaks of a stored offset.
    fn warn_committed_outside_log(
        &self,
        partitions: &[&PartitionOffsets],
        committed: &BTreeMap<TopicPartition, Option<i64>>,
    ) {
        for p in partitions {
            let Some(offset) = committed.get(&p.tp).copied().flatten() else {
                continue;
            };
            if offset < p.log_start || offset > p.latest {
                tracing::warn!(
                    group = %self.group_id,
                    partition = %p.tp,
                    committed = offset,
                    log_start = p.log_start,
                    latest = p.latest,
                    "the consumer group's committed offset is outside the partition's log; \
                     the first batch applies the source's data-loss policy to it (the default \
                     fails, naming it as the stored offset)"
                );
            }
        }
    }

    fn group_committed(
        &self,
        partitions: &[&PartitionOffsets],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let context = || {
            format!(
                "reading the offsets consumer group '{}' committed",
                self.group_id
            )
        };
        let consumer: BaseConsumer<SluiceContext> = self
            .source
            .client_config(Some(&self.group_id))
            .create_with_context(SluiceContext)
            .map_err(|e| Error::kafka(context(), e))?;
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for p in partitions {
            tpl.add_partition(&p.tp.topic, p.tp.partition);
        }
        let committed = consumer
            .committed_offsets(tpl, self.timeout())
            .map_err(|e| Error::kafka(context(), e))?;
        let mut offsets = BTreeMap::new();
        for elem in committed.elements() {
            let tp = TopicPartition::new(elem.topic(), elem.partition());
            elem.error()
                .map_err(|e| Error::kafka(format!("{} for {tp}", context()), e))?;
            let offset = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            offsets.insert(tp, offset);
        }
        let without = offsets.values().filter(|o| o.is_none()).count();
        tracing::info!(
            group = %self.group_id,
            partitions = offsets.len(),
            without_committed_offset = without,
            "first start from the consumer group's committed offsets; partitions without one \
             start from earliest"
        );
        Ok(offsets)
    }

    fn offsets_for_time(
        &self,
        ts: i64,
        partitions: &[&PartitionOffsets],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let context = || format!("looking up offsets for timestamp {ts}");
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for p in partitions {
            tpl.add_partition_offset(&p.tp.topic, p.tp.partition, Offset::Offset(ts))
                .map_err(|e| Error::kafka(context(), e))?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, self.timeout())
            .map_err(|e| Error::kafka(context(), e))?;
        let mut offsets = BTreeMap::new();
        for elem in found.elements() {
            let tp = TopicPartition::new(elem.topic(), elem.partition());
            elem.error()
                .map_err(|e| Error::kafka(format!("{} of {tp}", context()), e))?;
            // -1 (`End`): no record that late.
            let offset = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            offsets.insert(tp, offset);
        }
        Ok(offsets)
    }
}

/// One ListOffsets request per broker for `which` (the log start or
/// the latest offset) of every partition of `tps`.
fn list_offsets(
    consumer: &BaseConsumer<SluiceContext>,
    tps: &[TopicPartition],
    which: Offset,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let context = || {
        let which = if which == Offset::Beginning {
            "log start"
        } else {
            "latest"
        };
        match tps {
            [tp] => format!("fetching the {which} offset of {tp}"),
            _ => format!("fetching the {which} offsets of {} partitions", tps.len()),
        }
    };
    let mut tpl = TopicPartitionList::with_capacity(tps.len());
    for tp in tps {
        tpl.add_partition_offset(&tp.topic, tp.partition, which)
            .map_err(|e| Error::kafka(context(), e))?;
    }
    // A ListOffsets lookup by "timestamp": the special timestamps of
    // the beginning and the end ask for the log start and latest offset.
    let found = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(|e| Error::kafka(context(), e))?;
    let mut offsets = BTreeMap::new();
    for elem in found.elements() {
        let tp = TopicPartition::new(elem.topic(), elem.partition());
        elem.error()
            .map_err(|e| Error::kafka(format!("fetching the offsets of {tp}"), e))?;
        match elem.offset() {
            Offset::Offset(offset) => offsets.insert(tp, offset),
            other => {
                return Err(Error::kafka(
                    format!("fetching the offsets of {tp}: the broker answered {other:?}"),
                    KafkaError::OffsetFetch(RDKafkaErrorCode::Fail),
                ))
            }
        };
    }
    Ok(offsets)
}

fn push_partitions(partitions: &mut Vec<TopicPartition>, topic: &MetadataTopic) {
    partitions.extend(
        topic
            .partitions()
            .iter()
            .map(|p| TopicPartition::new(topic.name(), p.id())),
    );
}

fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}
