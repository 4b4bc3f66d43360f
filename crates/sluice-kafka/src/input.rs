//! [`KafkaInput`]: the Kafka source as the driver sees it, a
//! [`sluice_core::Source`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_core::{
    BatchInfo, DataLossPolicy, InputReader, PartitionOffsets, Source, TopicPartition,
};

use crate::{KafkaClient, KafkaReader};

/// The driver's Kafka input: a [`KafkaClient`] plans the batches, one
/// [`KafkaReader`] reads them for every batch of the run.
///
/// As a [`Source`]: partitions and offsets come from
/// [`KafkaClient::partitions_with_offsets`] (discovery every discovery
/// interval, offsets every batch, failures classified by
/// [`Error::is_transient`](crate::Error::is_transient)); the first start
/// resolves the source's [`StartOffsets`](crate::StartOffsets); planning
/// follows the source's [`DataLossPolicy`]; after each commit the reader
/// closes the consumers of partitions the batch had no range for, and the
/// next offsets are mirrored to the consumer group when the source asks
/// for it.
#[derive(Debug)]
pub struct KafkaInput {
    client: KafkaClient,
    reader: Arc<KafkaReader>,
}

impl KafkaInput {
    /// The input of `client`, with the reader all its batches share.
    pub fn new(client: KafkaClient) -> Self {
        let reader = Arc::new(client.reader());
        Self { client, reader }
    }

    /// The reader of the source tasks, to observe its consumers.
    pub fn kafka_reader(&self) -> Arc<KafkaReader> {
        Arc::clone(&self.reader)
    }
}

impl Source for KafkaInput {
    fn partitions(&mut self) -> sluice_core::Result<Vec<PartitionOffsets>> {
        Ok(self.client.partitions_with_offsets(Instant::now())?)
    }

    fn start_positions(
        &mut self,
        partitions: &[PartitionOffsets],
    ) -> sluice_core::Result<BTreeMap<TopicPartition, i64>> {
        let policy = self.client.source().start_from();
        Ok(self.client.start_offsets(policy, partitions)?)
    }

    fn on_data_loss(&self) -> DataLossPolicy {
        self.client.source().on_data_loss()
    }

    fn reader(&self) -> Arc<dyn InputReader> {
        self.kafka_reader()
    }

    fn committed(&mut self, batch: &BatchInfo) {
        self.reader.retain_ranges(&batch.ranges);
        if !self.client.source().mirrors_offsets() {
            return;
        }
        let next: BTreeMap<TopicPartition, i64> = batch
            .ranges
            .iter()
            .map(|range| (range.topic_partition(), range.until))
            .collect();
        if let Err(error) = self.client.mirror_offsets(&next) {
            tracing::warn!(%error, batch = batch.id, "could not mirror offsets to the consumer group; the checkpoint is not affected");
        }
    }
}
