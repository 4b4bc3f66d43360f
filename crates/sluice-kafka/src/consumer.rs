//! The rdkafka side of a partition reader: one `BaseConsumer` assigned to
//! one partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
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
    /// Where the payloads of the records read are copied to.
    payloads: PayloadBlocks,
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
            payloads: PayloadBlocks::default(),
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
        let consumer = self
            .consumer
            .as_ref()
            .expect("a partition consumer is positioned before it is used");
        match consumer.poll(timeout) {
            None => Polled::Nothing,
            Some(Ok(msg)) => Polled::Record(to_record(&self.tp, &msg, &mut self.payloads)),
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

/// Copies a record out of librdkafka's buffer: coordinates, and the key,
/// value and header values into `payloads`.
fn to_record(
    tp: &TopicPartition,
    msg: &BorrowedMessage<'_>,
    payloads: &mut PayloadBlocks,
) -> Record {
    Record {
        topic: tp.topic.clone(),
        partition: msg.partition(),
        offset: msg.offset(),
        timestamp: msg.timestamp().to_millis(),
        key: msg.key().map(|key| payloads.copy(key)),
        value: msg.payload().map(|value| payloads.copy(value)),
        headers: msg
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(|v| payloads.copy(v))))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Payloads are copied into shared blocks of this size: one allocation for
/// the payloads of many small records, freed when the last record pointing
/// into the block is dropped.
const PAYLOAD_BLOCK_BYTES: usize = 64 * 1024;

/// A payload larger than this gets an allocation of its own, so one large
/// record does not leave most of a block unused.
const LARGE_PAYLOAD_BYTES: usize = PAYLOAD_BLOCK_BYTES / 8;

/// The block the next payloads are copied to.
#[derive(Default)]
struct PayloadBlocks {
    block: BytesMut,
}

impl PayloadBlocks {
    /// `bytes` as a view of the current block (a new one when it is full).
    fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.is_empty() {
            return Bytes::new();
        }
        if bytes.len() > LARGE_PAYLOAD_BYTES {
            return Bytes::copy_from_slice(bytes);
        }
        if self.block.capacity() - self.block.len() < bytes.len() {
            self.block = BytesMut::with_capacity(PAYLOAD_BLOCK_BYTES);
        }
        self.block.extend_from_slice(bytes);
        self.block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every payload reads back as what was copied, however the
        /// payloads fall across blocks.
        #[test]
        fn payloads_read_back_as_copied(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..3 * LARGE_PAYLOAD_BYTES / 2),
                0..40,
            )
        ) {
            let mut blocks = PayloadBlocks::default();
            let copies: Vec<Bytes> = payloads.iter().map(|p| blocks.copy(p)).collect();
            for (copy, payload) in copies.iter().zip(&payloads) {
                prop_assert_eq!(&copy[..], &payload[..]);
            }
        }
    }

    #[test]
    fn small_payloads_share_one_block() {
        let mut blocks = PayloadBlocks::default();
        let a = blocks.copy(b"first");
        let b = blocks.copy(b"second");
        // Adjacent in one allocation.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let large = blocks.copy(&[7; LARGE_PAYLOAD_BYTES + 1]);
        let c = blocks.copy(b"third");
        assert_eq!(large.len(), LARGE_PAYLOAD_BYTES + 1);
        assert_eq!(b.as_ptr().wrapping_add(b.len()), c.as_ptr());
    }
}
