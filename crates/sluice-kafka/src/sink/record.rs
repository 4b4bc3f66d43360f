//! [`KafkaRecord`]: one record a [`KafkaSink`](super::KafkaSink) writes.

use bytes::Bytes;
use sluice_core::Record;

/// A record to write to Kafka: value, key, headers, and optionally the
/// partition and timestamp. Without a partition, the producer's
/// partitioner picks one from the key (librdkafka's `partitioner` setting;
/// `murmur2_random` matches the Java client's default).
///
/// Payloads are [`Bytes`], as a [`Record`]'s are: an input record written
/// on unchanged (`KafkaRecord::from(record)`) shares its bytes. The
/// builder methods take a `Vec<u8>` or `String` without copying (and copy
/// a borrowed `&str` or `&[u8]`); a `Bytes` payload goes in the field.
///
/// ```
/// use sluice_kafka::KafkaRecord;
///
/// let record = KafkaRecord::new("clicks=3")
///     .key("page-7")
///     .header("source", "sluice")
///     .partition(2);
/// assert_eq!(record.key.as_deref(), Some(&b"page-7"[..]));
/// assert_eq!(record.partition, Some(2));
/// ```
///
/// An input record's value under a new key, its bytes shared (the builder
/// would take the `Bytes` through a `Vec`, copying it):
///
/// ```
/// use sluice_core::Record;
/// use sluice_kafka::KafkaRecord;
///
/// let input = Record::with_value("clicks", 0, 41, "page-7,ann");
/// let record = KafkaRecord {
///     value: input.value.clone(),
///     ..KafkaRecord::default()
/// }
/// .key("ann");
/// assert_eq!(record.value.as_ref().map(|v| v.as_ptr()), input.value.as_ref().map(|v| v.as_ptr()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The key; `None` writes a null key.
    pub key: Option<Bytes>,
    /// The value; `None` writes a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The partition to write to; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// The record timestamp in ms since the Unix epoch; `None` lets the
    /// producer stamp the time of sending.
    pub timestamp: Option<i64>,
}

impl KafkaRecord {
    /// A record with `value`, a null key and no headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: Some(Bytes::from(value.into())),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(Bytes::from(key.into()));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push((name.into(), Some(Bytes::from(value.into()))));
        self
    }

    /// Writes to `partition` instead of the partitioner's choice.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the record timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// An input record written on unchanged: key, value, headers and
/// timestamp; the partition is left to the partitioner.
impl From<Record> for KafkaRecord {
    fn from(record: Record) -> Self {
        Self {
            key: record.key,
            value: record.value,
            headers: record.headers,
            partition: None,
            timestamp: record.timestamp,
        }
    }
}
