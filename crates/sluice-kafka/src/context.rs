//! The librdkafka client context of every consumer sluice creates: routes
//! the client's logs and errors to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

/// Sends librdkafka's logs and global errors to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SluiceContext;

impl ClientContext for SluiceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition is how a read learns its range is complete; it is
        // not a fault, whichever queue it is delivered on.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!(reason, "end of partition");
            return;
        }
        tracing::warn!(%error, reason, "Kafka client error (the client retries by itself)");
    }
}

impl ConsumerContext for SluiceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Only offsets mirrored to the consumer group are committed to
        // Kafka; the checkpoint stays the truth, so a failure is a warning.
        match result {
            Ok(()) => tracing::debug!(
                partitions = offsets.count(),
                "offsets mirrored to the consumer group"
            ),
            Err(error) => tracing::warn!(
                %error,
                partitions = offsets.count(),
                "mirroring offsets to the consumer group failed; lag tools show older progress \
                 until the next batch (the checkpoint is not affected)"
            ),
        }
    }
}

/// Sends one librdkafka log line to `tracing` at the matching level.
pub(crate) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
    }
}
