//! The librdkafka client context of every consumer sluice creates: routes
//! the client's logs and errors to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Sends librdkafka's logs and global errors to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SluiceContext;

impl ClientContext for SluiceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
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

impl ConsumerContext for SluiceContext {}
