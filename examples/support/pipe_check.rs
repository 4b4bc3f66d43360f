//! `pipe --check-output`: checks that the output topic holds every input
//! record the checkpoint says was processed exactly once.
//!
//! Reads, with `isolation.level=read_committed` as a consumer of the
//! output should, the input topic up to the checkpoint's committed offsets
//! and the whole output topic, and matches them by the `sluice.*` headers
//! each output record carries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the output holds against the input the checkpoint covers.
pub(crate) struct Report {
    /// Input records with a value, below the committed offsets.
    pub(crate) expected: usize,
    /// Output records.
    pub(crate) written: usize,
    /// Input records written more than once, with how many times.
    pub(crate) duplicates: BTreeMap<(i32, i64), usize>,
    /// Input records never written.
    pub(crate) missing: BTreeSet<(i32, i64)>,
    /// Output records of input past the committed offsets: a batch whose
    /// transaction committed but whose checkpoint commit did not; the next
    /// run does not write them again.
    pub(crate) ahead: usize,
}

impl Report {
    /// Exactly once: nothing duplicated, nothing missing.
    pub(crate) fn exact(&self) -> bool {
        self.duplicates.is_empty() && self.missing.is_empty()
    }
}

/// Compares `output` on `brokers` with `input` up to `committed` (the
/// checkpoint's next offsets per input partition); `copied` says which
/// input values the job writes.
pub(crate) fn check(
    brokers: &str,
    input: &str,
    output: &str,
    committed: &BTreeMap<i32, i64>,
    copied: impl Fn(Option<&[u8]>) -> bool,
) -> anyhow::Result<Report> {
    let mut expected = BTreeSet::new();
    read_to_end(brokers, input, |message| {
        let below = committed
            .get(&message.partition())
            .is_some_and(|&next| message.offset() < next);
        if below && copied(message.payload()) {
            expected.insert((message.partition(), message.offset()));
        }
        Ok(())
    })?;
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut written = 0;
    read_to_end(brokers, output, |message| {
        written += 1;
        let from = origin(message, input).with_context(|| {
            format!(
                "output record {output}:{}@{}",
                message.partition(),
                message.offset()
            )
        })?;
        *seen.entry(from).or_default() += 1;
        Ok(())
    })?;
    let ahead = seen
        .keys()
        .filter(|(partition, offset)| committed.get(partition).is_none_or(|&next| *offset >= next))
        .count();
    Ok(Report {
        missing: expected
            .iter()
            .filter(|k| !seen.contains_key(k))
            .copied()
            .collect(),
        duplicates: seen.into_iter().filter(|&(_, n)| n > 1).collect(),
        expected: expected.len(),
        written,
        ahead,
    })
}

/// The input partition and offset an output record names in its headers.
fn origin(
    message: &rdkafka::message::BorrowedMessage<'_>,
    input: &str,
) -> anyhow::Result<(i32, i64)> {
    let header = |name: &str| -> anyhow::Result<String> {
        let headers = message.headers().context("it has no headers")?;
        let value = headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .with_context(|| format!("it has no {name} header"))?;
        Ok(String::from_utf8_lossy(value).into_owned())
    };
    let topic = header("sluice.topic")?;
    if topic != input {
        bail!("it comes from topic {topic}, not {input}");
    }
    Ok((
        header("sluice.partition")?.parse()?,
        header("sluice.offset")?.parse()?,
    ))
}

/// A client context that does not log the end of a partition as an error:
/// reaching it is how [`read_to_end`] knows it is done.
struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!(%error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Quiet {}

/// Calls `each` for every committed record of `topic`, from the log start
/// of each partition to its end.
fn read_to_end(
    brokers: &str,
    topic: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-pipe-check")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(Quiet)
        .with_context(|| format!("connecting to {brokers}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the partitions of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} does not exist on {brokers}");
    }
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut at_end = BTreeSet::new();
    while at_end.len() < partitions.len() {
        if Instant::now() >= deadline {
            bail!(
                "read {} of {} partitions of {topic} to their end in {READ_TIMEOUT:?}",
                at_end.len(),
                partitions.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => each(&message)?,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
            None => {}
        }
    }
    Ok(())
}
