//! The Kafka record as user code sees it, with decoding helpers.

use std::sync::Arc;

use crate::error::{Error, Result};

/// One Kafka record read by a source task.
///
/// Every field of the Kafka record is kept so jobs can route on topic,
/// partition or headers and build idempotency keys from coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic the record was read from.
    pub topic: Arc<str>,
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// Record timestamp in milliseconds since the Unix epoch, when the broker
    /// or producer set one.
    pub timestamp: Option<i64>,
    /// Record key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// Record value; `None` for a null value (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Record headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// A record with only coordinates and a value; handy in tests and
    /// in-memory sources.
    pub fn with_value(
        topic: impl Into<Arc<str>>,
        partition: i32,
        offset: i64,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            timestamp: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// The value as UTF-8 text.
    ///
    /// A null value reads as the empty string. Bytes that are not UTF-8 give
    /// [`Error::Decode`] naming the record's topic, partition and offset.
    pub fn value_str(&self) -> Result<&str> {
        self.decode("value", self.value.as_deref())
    }

    /// Takes the value as an owned UTF-8 string without copying it; errors
    /// as [`Record::value_str`] does.
    pub fn into_value_string(self) -> Result<String> {
        String::from_utf8(self.value.unwrap_or_default()).map_err(|e| Error::Decode {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            field: "value",
            source: e.utf8_error(),
        })
    }

    /// The key as UTF-8 text; a null key reads as `None`.
    pub fn key_str(&self) -> Result<Option<&str>> {
        self.key
            .as_deref()
            .map(|k| self.decode("key", Some(k)))
            .transpose()
    }

    /// The first header named `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn decode<'a>(&self, field: &'static str, bytes: Option<&'a [u8]>) -> Result<&'a str> {
        std::str::from_utf8(bytes.unwrap_or_default()).map_err(|source| Error::Decode {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            field,
            source,
        })
    }
}
