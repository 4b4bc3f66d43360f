//! The Kafka record as user code sees it, with decoding helpers.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};

/// One Kafka record read by a source task.
///
/// Every field of the Kafka record is kept so jobs can route on topic,
/// partition or headers and build idempotency keys from coordinates.
///
/// Keys, values and header values are [`Bytes`]: reference-counted views
/// of a buffer. The Kafka source copies the payloads of the records it
/// reads into shared blocks of about 64 KiB, one allocation for many
/// records, and cloning a record (for a second output, a [`cache`]d
/// stream, a join) shares its bytes instead of copying them. `Bytes`
/// dereferences to `[u8]`; `bytes.to_vec()` and
/// [`Record::into_value_string`] give owned buffers of the payload's size
/// (`Vec::from(bytes)` may hand back a whole block instead of copying). A
/// block is freed when the last record pointing into it is dropped, so
/// keeping a few small records for long (in a `static`, say) keeps their
/// blocks: copy what you keep. `Bytes` has no serde support here: a state
/// key or anything else serialized takes `bytes.to_vec()`.
///
/// [`cache`]: crate::DStream::cache
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
    pub key: Option<Bytes>,
    /// Record value; `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Record headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Record {
    /// A record with only coordinates and a value; handy in tests and
    /// in-memory sources. A `Vec<u8>` or `String` value is taken without
    /// copying.
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
            value: Some(Bytes::from(value.into())),
            headers: Vec::new(),
        }
    }

    /// A copy with a buffer of its own for each of the key, value and
    /// header values (one allocation per payload, where the Kafka reader
    /// makes one per 64 KiB block). The in-memory inputs hand out such
    /// copies, so [`Record::into_value_string`] takes the value without
    /// copying it again.
    pub(crate) fn unshared_copy(&self) -> Self {
        let copy = |bytes: &Option<Bytes>| bytes.as_deref().map(Bytes::copy_from_slice);
        Self {
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: copy(&self.key),
            value: copy(&self.value),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), copy(value)))
                .collect(),
        }
    }

    /// The value as UTF-8 text.
    ///
    /// A null value reads as the empty string. Bytes that are not UTF-8 give
    /// [`Error::Decode`] naming the record's topic, partition and offset.
    #[inline]
    pub fn value_str(&self) -> Result<&str> {
        self.decode("value", self.value.as_deref())
    }

    /// Takes the value as an owned UTF-8 string of the value's size; errors
    /// as [`Record::value_str`] does. The bytes are copied unless this
    /// record holds the only reference to a buffer of its own (a record
    /// made from a `Vec<u8>` or `String`).
    pub fn into_value_string(self) -> Result<String> {
        let bytes = self.value.map(tight_vec).unwrap_or_default();
        String::from_utf8(bytes).map_err(|e| Error::Decode {
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

    /// The first header named `name` as UTF-8 text; `None` when there is no
    /// such header or its value is null. Bytes that are not UTF-8 give
    /// [`Error::DecodeHeader`] naming the header and the record.
    pub fn header_str(&self, name: &str) -> Result<Option<&str>> {
        self.header(name)
            .map(|value| {
                std::str::from_utf8(value).map_err(|source| Error::DecodeHeader {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset: self.offset,
                    name: name.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    #[inline]
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

/// `bytes` as a `Vec` no larger than it needs. `Vec::from` takes a buffer
/// over without copying when `bytes` is its only reference, and for the
/// last view of a shared block that is the whole block: kept, a few bytes
/// would hold 64 KiB.
fn tight_vec(bytes: Bytes) -> Vec<u8> {
    let mut vec = Vec::from(bytes);
    if vec.capacity() > 2 * vec.len() + 64 {
        vec.shrink_to_fit();
    }
    vec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the string taken from the last record of a 64 KiB block
    /// was the block.
    #[test]
    fn a_value_string_is_the_size_of_the_value_even_from_the_last_view_of_a_block() {
        let mut block = bytes::BytesMut::with_capacity(64 * 1024);
        block.extend_from_slice(b"first");
        let first = block.split().freeze();
        block.extend_from_slice(b"last");
        let last = block.split().freeze();
        drop((block, first));
        let mut record = Record::with_value("t", 0, 0, "");
        record.value = Some(last);
        let text = record.into_value_string().unwrap();
        assert_eq!(text, "last");
        assert!(text.capacity() < 1024, "capacity {}", text.capacity());
    }

    #[test]
    fn header_str_reads_text_and_names_the_record_for_bad_bytes() {
        let mut record = Record::with_value("t", 1, 7, "v");
        record.headers = vec![
            ("type".to_owned(), Some(Bytes::from_static(b"click"))),
            ("null".to_owned(), None),
            ("bad".to_owned(), Some(Bytes::from_static(&[0xff]))),
        ];
        assert_eq!(record.header_str("type").unwrap(), Some("click"));
        assert_eq!(record.header_str("null").unwrap(), None);
        assert_eq!(record.header_str("absent").unwrap(), None);
        let error = record.header_str("bad").unwrap_err().to_string();
        assert!(error.contains("header 'bad' of record t-1@7"), "{error}");
    }
}
