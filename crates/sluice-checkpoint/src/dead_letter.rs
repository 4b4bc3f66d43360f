//! Dead letters as stored: a record an operator rejected, with its bytes,
//! kept in a checkpoint family under a key that sorts by coordinates.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One rejected record, stored as JSON in the dead-letter family of the
/// job's poison policy, committed atomically with the batch that rejected
/// it. Key and value are kept as base64 so any bytes survive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetterRecord {
    /// Topic of the record.
    pub topic: String,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// Id of the batch that rejected it.
    pub batch: u64,
    /// The operator whose closure returned the error.
    pub operator: String,
    /// The error, as text.
    pub error: String,
    /// Record timestamp in ms since the Unix epoch, if it had one.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// The key, base64; `None` for a null key.
    #[serde(default)]
    pub key_base64: Option<String>,
    /// The value, base64; `None` for a null value.
    #[serde(default)]
    pub value_base64: Option<String>,
    /// Why the bytes are missing, when the record could not be read back.
    #[serde(default)]
    pub unread: Option<String>,
}

impl DeadLetterRecord {
    /// A dead letter for the record at `offset` of `topic`-`partition`,
    /// without its bytes.
    pub fn new(
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        batch: u64,
        operator: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            batch,
            operator: operator.into(),
            error: error.into(),
            timestamp: None,
            key_base64: None,
            value_base64: None,
            unread: None,
        }
    }

    /// Keeps the record's key and value.
    pub fn with_bytes(mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        self.key_base64 = key.map(|k| STANDARD.encode(k));
        self.value_base64 = value.map(|v| STANDARD.encode(v));
        self
    }

    /// The key the letter is stored under: `topic/partition/offset` with
    /// zero-padded numbers, so a family lists its letters in order.
    pub fn storage_key(&self) -> String {
        format!("{}/{:010}/{:020}", self.topic, self.partition, self.offset)
    }

    /// The record's key bytes.
    pub fn key(&self) -> Result<Option<Vec<u8>>> {
        self.decode("key", self.key_base64.as_deref())
    }

    /// The record's value bytes.
    pub fn value(&self) -> Result<Option<Vec<u8>>> {
        self.decode("value", self.value_base64.as_deref())
    }

    /// The stored JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter always serialises")
    }

    /// Reads a stored letter back.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|e| Error::BadDeadLetter {
            reason: e.to_string(),
        })
    }

    fn decode(&self, field: &str, text: Option<&str>) -> Result<Option<Vec<u8>>> {
        text.map(|t| {
            STANDARD.decode(t).map_err(|e| Error::BadDeadLetter {
                reason: format!("{field} of {}: {e}", self.storage_key()),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes_through_json() {
        let letter = DeadLetterRecord::new("t", 3, 42, 7, "values_utf8", "not UTF-8")
            .with_bytes(None, Some(&[0xff, 0x00, 0xfe]));
        let back = DeadLetterRecord::from_json(&letter.to_json()).unwrap();
        assert_eq!(back, letter);
        assert_eq!(back.key().unwrap(), None);
        assert_eq!(back.value().unwrap(), Some(vec![0xff, 0x00, 0xfe]));
    }

    #[test]
    fn storage_keys_sort_by_partition_then_offset() {
        let key = |p, o| DeadLetterRecord::new("t", p, o, 0, "op", "e").storage_key();
        let mut keys = vec![key(10, 5), key(2, 100), key(2, 9)];
        keys.sort();
        assert_eq!(keys, [key(2, 9), key(2, 100), key(10, 5)]);
    }

    #[test]
    fn a_damaged_letter_is_an_error() {
        assert!(DeadLetterRecord::from_json(b"{").is_err());
        let mut letter = DeadLetterRecord::new("t", 0, 1, 0, "op", "e");
        letter.value_base64 = Some("***".into());
        let err = letter.value().unwrap_err();
        assert!(err.to_string().contains("value of t/"), "{err}");
    }
}
