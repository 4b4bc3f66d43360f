//! The rdkafka side of a partition reader: one `BaseConsumer` assigned to
//! one partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::context::SluiceContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_core::{Record, TopicPartition};

use crate::partition::{PartitionSource, Polled};
use crate::{Error, Result};

/// The consumer of one partition, created on first use.
pub(crate) struct PartitionConsumer {
    tp: TopicPartition,
    config: Arc<ClientConfig>,
    consumer: Option<BaseConsumer<SluiceContext>>,
    /// Counts the times this consumer is positioned, with the other
    /// consumers of its reader.
    positions: Arc<AtomicU64>,
}

impl PartitionConsumer {
    /// The consumer of `tp`; `consumer` is an idle one to reuse, if any.
    pub(crate) fn new(
        tp: TopicPartition,
        config: Arc<ClientConfig>,
        consumer: Option<BaseConsumer<SluiceContext>>,
        positions: Arc<AtomicU64>,
    ) -> Self {
        // A topic name of its own: every record holds a reference to it, and
        // a count shared with the consumers read on other threads would be
        // contended on every record.
        let tp = TopicPartition::new(&*tp.topic, tp.partition);
        Self {
            tp,
            config,
            consumer,
            positions,
        }
    }

    /// Stops fetching and drops what was fetched, and hands the client back
    /// for reuse (on any partition). `None` if it was never created or
    /// cannot be unassigned.
    pub(crate) fn release(self) -> Option<BaseConsumer<SluiceContext>> {
        let consumer = self.consumer?;
        match consumer.unassign() {
            Ok(()) => Some(consumer),
            Err(error) => {
                tracing::debug!(partition = %self.tp, %error, "could not unassign a consumer; closing it");
                None
            }
        }
    }

    fn consumer(&self) -> &BaseConsumer<SluiceContext> {
        self.consumer
            .as_ref()
            .expect("a partition consumer is positioned before it is used")
    }
}

impl PartitionSource for PartitionConsumer {
    fn position(&mut self, offset: i64) -> Result<()> {
        let consumer = match &mut self.consumer {
            Some(consumer) => consumer,
            slot @ None => {
                let consumer: BaseConsumer<SluiceContext> = self
                    .config
                    .create_with_context(SluiceContext)
                    .map_err(|e| {
                        Error::kafka(format!("creating the consumer of {}", self.tp), e)
                    })?;
                tracing::debug!(partition = %self.tp, "created partition consumer");
                slot.insert(consumer)
            }
        };
        let context = || format!("positioning the consumer of {} at offset {offset}", self.tp);
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(&self.tp.topic, self.tp.partition, Offset::Offset(offset))
            .map_err(|e| Error::kafka(context(), e))?;
        // Re-assigning restarts fetching under a new version: librdkafka
        // drops everything fetched for the old position, events included.
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(context(), e))?;
        self.positions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(partition = %self.tp, offset, "positioned partition consumer");
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Polled {
        match self.consumer().poll(timeout) {
            None => Polled::Nothing,
            Some(Ok(msg)) => Polled::Record(to_record(&self.tp, &msg)),
            Some(Err(KafkaError::PartitionEOF(_))) => Polled::Eof,
            Some(Err(e)) => Polled::Failed(e),
        }
    }

    fn latest(&mut self, timeout: Duration) -> Result<i64> {
        let (_, latest) = self
            .consumer()
            .fetch_watermarks(&self.tp.topic, self.tp.partition, timeout)
            .map_err(|e| Error::kafka(format!("fetching the offsets of {}", self.tp), e))?;
        Ok(latest)
    }
}

fn to_record(tp: &TopicPartition, msg: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: tp.topic.clone(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers: msg
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
