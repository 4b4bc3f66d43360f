//! The on-disk layout: internal family names and key/value encodings.
//!
//! Keys are big-endian so RocksDB's bytewise order is numeric order.

use sluice_core::TopicPartition;

/// Newest schema version this build reads and the one it writes.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Prefix of the families sluice keeps for itself.
pub const RESERVED_PREFIX: &str = "sluice_";

pub(crate) const META: &str = "sluice_meta";
pub(crate) const OFFSETS: &str = "sluice_offsets";
pub(crate) const BATCHES: &str = "sluice_batches";
pub(crate) const INTERNAL: [&str; 3] = [META, OFFSETS, BATCHES];

pub(crate) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub(crate) const META_APP_ID: &[u8] = b"app_id";
/// The plan of the batch about to run: a `BatchRecord` as JSON.
pub(crate) const META_PLANNED_BATCH: &[u8] = b"planned_batch";
/// The reduce partitions of the job's shuffles, in decimal, recorded at its
/// first start. Absent in checkpoints of older builds; they ignore it.
pub(crate) const META_SHUFFLE_PARTITIONS: &[u8] = b"shuffle_partitions";
/// When the job's intake was paused, ms since the epoch (i64 big-endian);
/// absent when it runs.
pub(crate) const META_PAUSED: &[u8] = b"paused_since";

/// Prefix of a state's record in `sluice_meta`: `state.<name>` holds a
/// `StateRecord` as JSON.
pub(crate) const META_STATE_PREFIX: &[u8] = b"state.";

pub(crate) fn state_record_key(name: &str) -> Vec<u8> {
    [META_STATE_PREFIX, name.as_bytes()].concat()
}

/// True for names only sluice may use.
pub(crate) fn is_reserved(family: &str) -> bool {
    family.starts_with(RESERVED_PREFIX)
}

/// Offset key: topic bytes, 0x00, partition as big-endian i32. Kafka topic
/// names cannot contain 0x00, so the separator is unambiguous.
pub(crate) fn offset_key(tp: &TopicPartition) -> Vec<u8> {
    let mut key = Vec::with_capacity(tp.topic.len() + 5);
    key.extend_from_slice(tp.topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&tp.partition.to_be_bytes());
    key
}

/// Inverse of [`offset_key`]; `None` for bytes it cannot have produced.
pub(crate) fn decode_offset_key(key: &[u8]) -> Option<TopicPartition> {
    let split = key.len().checked_sub(5)?;
    let (topic, rest) = key.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let topic = std::str::from_utf8(topic).ok()?;
    let partition = i32::from_be_bytes(rest[1..].try_into().ok()?);
    Some(TopicPartition::new(topic, partition))
}

pub(crate) fn offset_value(offset: i64) -> [u8; 8] {
    offset.to_be_bytes()
}

pub(crate) fn decode_offset_value(value: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(value.try_into().ok()?))
}

pub(crate) fn batch_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn decode_batch_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Counters are little-endian i64, the format the merge operator adds.
pub(crate) fn counter_value(n: i64) -> [u8; 8] {
    n.to_le_bytes()
}

pub(crate) fn decode_counter(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_keys_sort_by_topic_then_partition() {
        let a = offset_key(&TopicPartition::new("a", 2));
        let b = offset_key(&TopicPartition::new("a", 10));
        let c = offset_key(&TopicPartition::new("ab", 0));
        assert!(a < b && b < c);
    }

    #[test]
    fn garbage_offset_keys_are_rejected() {
        assert_eq!(decode_offset_key(b""), None);
        assert_eq!(decode_offset_key(b"abcd"), None);
        assert_eq!(decode_offset_key(b"topic\x01\0\0\0\x01"), None);
    }

    #[test]
    fn batch_keys_sort_numerically() {
        assert!(batch_key(255) < batch_key(256));
    }

    proptest! {
        #[test]
        fn offset_key_round_trips(topic in "[a-zA-Z0-9._-]{0,40}", partition in 0i32..) {
            let tp = TopicPartition::new(topic.as_str(), partition);
            prop_assert_eq!(decode_offset_key(&offset_key(&tp)), Some(tp));
        }

        #[test]
        fn values_round_trip(n in any::<i64>(), id in any::<u64>()) {
            prop_assert_eq!(decode_offset_value(&offset_value(n)), Some(n));
            prop_assert_eq!(decode_counter(&counter_value(n)), Some(n));
            prop_assert_eq!(decode_batch_key(&batch_key(id)), Some(id));
        }
    }
}
