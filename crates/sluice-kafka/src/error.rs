//! The error type of sluice-kafka.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Result alias for sluice-kafka.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while configuring, planning or reading the Kafka source.
///
/// Who must act: [`Error::Config`] is a mistake in the job's setup (fix it,
/// nothing was read); the rest are outside faults, see
/// [`Error::is_transient`]. (A stored offset the log no longer holds is
/// found by planning: `sluice_core::Error::DataLoss` and `OffsetAhead`.)
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source is configured wrongly; nothing was read.
    #[error("invalid Kafka source setting `{setting}`: {reason}")]
    Config {
        /// The builder method or client setting at fault.
        setting: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A subscribed topic does not exist (yet).
    #[error("subscribed topic '{topic}' does not exist")]
    UnknownTopic {
        /// The missing topic.
        topic: String,
    },
    /// The Kafka client failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What the source was doing.
        context: String,
        /// The client's error.
        source: KafkaError,
    },
    /// A read asked for offsets the log no longer holds (below its log
    /// start, or past its end): the range must be planned again.
    #[error(
        "offset {offset} of {topic}-{partition} is out of range: the log no longer holds it \
         (deleted by retention, or the topic was recreated)"
    )]
    OffsetOutOfRange {
        /// Topic of the partition.
        topic: String,
        /// Partition number.
        partition: i32,
        /// The offset the read asked for.
        offset: i64,
    },
    /// The records of a range did not all arrive within the poll timeout.
    #[error(
        "timed out after {timeout:?} reading {topic}-{partition} [{from}, {until}): \
         {received} record(s) arrived, still waiting for offset {waiting_for}"
    )]
    ReadTimeout {
        /// Topic of the range.
        topic: String,
        /// Partition of the range.
        partition: i32,
        /// First offset of the range.
        from: i64,
        /// End of the range (exclusive).
        until: i64,
        /// Records of the range that did arrive.
        received: usize,
        /// The offset the reader was waiting for.
        waiting_for: i64,
        /// The configured poll timeout.
        timeout: Duration,
    },
}

impl Error {
    pub(crate) fn config(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            setting: setting.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    /// True for outside faults that may go away by themselves (a broker
    /// down, a metadata timeout, a topic not created yet): the caller may
    /// retry with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::UnknownTopic { .. } | Error::ReadTimeout { .. } => true,
            Error::Kafka { source, .. } => {
                source.rdkafka_error_code().is_some_and(is_transient_code)
            }
            _ => false,
        }
    }

    /// True when a client's metadata lags the cluster's (see
    /// [`Error::is_transient`]): refresh it before retrying.
    pub(crate) fn is_metadata_lag(&self) -> bool {
        match self {
            Error::Kafka { source, .. } => source.rdkafka_error_code().is_some_and(is_metadata_lag),
            _ => false,
        }
    }
}

/// What the driver sees of a Kafka failure while it plans a batch: a
/// source error, transient exactly when [`Error::is_transient`] holds.
impl From<Error> for sluice_core::Error {
    fn from(error: Error) -> Self {
        if error.is_transient() {
            sluice_core::Error::transient_source(error)
        } else {
            sluice_core::Error::lasting_source(error)
        }
    }
}

/// Client error codes that go away by themselves: a broker or the network
/// down, or a client's view of the metadata lagging the cluster's.
pub(crate) fn is_transient_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    is_metadata_lag(code)
        || matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::Resolve
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
        )
}

/// Codes that mean a client's metadata lags the cluster's: a partition or
/// topic another client has just discovered, a leader that moved or is being
/// elected, a cache refresh under way. The driver's clients learn metadata
/// at different moments, so a lookup for a partition one of them has just
/// discovered can fail in another; refreshing its metadata and retrying
/// heals it.
pub(crate) fn is_metadata_lag(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::UnknownPartition
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::ReplicaNotAvailable
            | C::OffsetNotAvailable
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::WaitCache
            | C::KafkaStorageError
    )
}

/// The message and its causes, not the fields: what a `main` returning this
/// error through `?` prints.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sluice_core::write_report(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets_error(code: RDKafkaErrorCode) -> Error {
        Error::kafka(
            "fetching the log start offsets of 3 partitions",
            KafkaError::MetadataFetch(code),
        )
    }

    /// The error a real broker gave right after the topic grew: another
    /// client already knew the new partitions, the offsets client did not.
    #[test]
    fn a_partition_unknown_to_one_client_is_transient() {
        for code in [
            RDKafkaErrorCode::UnknownPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::WaitCache,
        ] {
            let error = offsets_error(code);
            assert!(error.is_transient(), "{code:?}");
            assert!(error.is_metadata_lag(), "{code:?}");
        }
    }

    #[test]
    fn configuration_and_data_errors_are_not_transient() {
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::InvalidArgument,
            RDKafkaErrorCode::AutoOffsetReset,
        ] {
            assert!(!offsets_error(code).is_transient(), "{code:?}");
        }
    }

    #[test]
    fn the_driver_sees_the_same_classification() {
        let lag = sluice_core::Error::from(offsets_error(RDKafkaErrorCode::UnknownPartition));
        assert!(lag.is_transient());
        let refused = offsets_error(RDKafkaErrorCode::TopicAuthorizationFailed);
        let message = refused.to_string();
        let refused = sluice_core::Error::from(refused);
        assert!(!refused.is_transient());
        assert_eq!(refused.to_string(), message);
    }
}
