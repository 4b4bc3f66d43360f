//! How keyed state is laid out in its family: plain functions from keys,
//! deadlines and values to bytes and back.
//!
//! Every key of a state family starts with its *key partition*, a
//! big-endian `u16`: the reduce partition a shuffle sends the key to
//! (XXH3 of its `Hash` bytes modulo the job's shuffle partitions). One
//! key partition's state is therefore one contiguous key range that can be
//! read, copied or dropped as a unit. After the partition comes a tag:
//!
//! | key | value |
//! |---|---|
//! | `partition, 0x00, postcard(key)` | postcard([`Entry`]) |
//! | `partition, 0x01, deadline, postcard(key)` | empty: the expiry index |
//! | `partition, 0x02` | empty: the initial state was loaded |
//! | `0, 0x03` | an event-time window's watermark and partition clocks |
//!
//! A deadline is milliseconds since the Unix epoch as an `i64` with its
//! sign bit flipped, big-endian, so byte order is time order and expired
//! keys are one range scan away.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::BoxError;

const VALUE: u8 = 0;
const EXPIRY: u8 = 1;
const SEEDED: u8 = 2;
const WATERMARK: u8 = 3;

/// What is stored for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry<S> {
    pub(crate) state: S,
    /// Batch time (ms) from which the key times out; `None` without a
    /// timeout.
    pub(crate) timeout_at: Option<i64>,
    /// Batch time (ms) from which the state is expired by its TTL.
    pub(crate) expires_at: Option<i64>,
}

impl<S> Entry<S> {
    /// When the expiry index must next look at the key.
    pub(crate) fn deadline(&self) -> Option<i64> {
        match (self.timeout_at, self.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The postcard bytes of `value`, in a buffer of their exact size: sized
/// first, then written once, instead of grown a byte at a time.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BoxError> {
    let mut bytes = vec![0; postcard::experimental::serialized_size(value)?];
    postcard::to_slice(value, &mut bytes)?;
    Ok(bytes)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BoxError> {
    Ok(postcard::from_bytes(bytes)?)
}

fn prefix(partition: u16, tag: u8, capacity: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + capacity);
    key.extend_from_slice(&partition.to_be_bytes());
    key.push(tag);
    key
}

/// Where the state of the encoded key `key` lives.
pub(crate) fn value_key(partition: u16, key: &[u8]) -> Vec<u8> {
    let mut bytes = prefix(partition, VALUE, key.len());
    bytes.extend_from_slice(key);
    bytes
}

/// The encoded key of a [`value_key`]; `None` for other keys.
pub(crate) fn key_of_value(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        [_, _, VALUE, key @ ..] => Some(key),
        _ => None,
    }
}

/// The range holding the values of key partition `partition`.
pub(crate) fn values_of(partition: u16) -> (Vec<u8>, Vec<u8>) {
    (prefix(partition, VALUE, 0), prefix(partition, EXPIRY, 0))
}

fn deadline_bytes(deadline: i64) -> [u8; 8] {
    ((deadline as u64) ^ (1 << 63)).to_be_bytes()
}

/// The expiry index entry of `key` due at `deadline`.
pub(crate) fn expiry_key(partition: u16, deadline: i64, key: &[u8]) -> Vec<u8> {
    let mut bytes = prefix(partition, EXPIRY, 8 + key.len());
    bytes.extend_from_slice(&deadline_bytes(deadline));
    bytes.extend_from_slice(key);
    bytes
}

/// The deadline and encoded key of an [`expiry_key`].
pub(crate) fn decode_expiry_key(bytes: &[u8]) -> Option<(i64, &[u8])> {
    match bytes {
        [_, _, EXPIRY, rest @ ..] if rest.len() >= 8 => {
            let (deadline, key) = rest.split_at(8);
            let raw = u64::from_be_bytes(deadline.try_into().ok()?);
            Some(((raw ^ (1 << 63)) as i64, key))
        }
        _ => None,
    }
}

/// The range of expiry entries of `partition` due at or before `now`.
pub(crate) fn expired_until(partition: u16, now: i64) -> (Vec<u8>, Vec<u8>) {
    let from = prefix(partition, EXPIRY, 0);
    let mut until = prefix(partition, EXPIRY, 8);
    match now.checked_add(1) {
        Some(next) => until.extend_from_slice(&deadline_bytes(next)),
        None => until = prefix(partition, SEEDED, 0),
    }
    (from, until)
}

/// The marker saying `partition` holds its initial state.
pub(crate) fn seeded_key(partition: u16) -> Vec<u8> {
    prefix(partition, SEEDED, 0)
}

/// Where an event-time window operator keeps its watermark: one key for
/// the whole operator, in key partition 0, so it commits with the batch
/// like the windows.
pub(crate) fn watermark_key() -> Vec<u8> {
    prefix(0, WATERMARK, 0)
}

/// The key range `[from, until)` holding everything of key partition
/// `partition` of a state family: read, copy or drop it as a unit.
pub fn partition_range(partition: u16) -> (Vec<u8>, Vec<u8>) {
    let from = partition.to_be_bytes().to_vec();
    let until = match partition.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff],
    };
    (from, until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn expiry_keys_sort_by_partition_then_deadline(
            p in any::<u16>(), q in any::<u16>(),
            a in any::<i64>(), b in any::<i64>(),
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let (x, y) = (expiry_key(p, a, &key), expiry_key(q, b, &key));
            prop_assert_eq!(x.cmp(&y), (p, a).cmp(&(q, b)));
            prop_assert_eq!(decode_expiry_key(&x), Some((a, key.as_slice())));
        }

        #[test]
        fn an_expired_range_holds_exactly_the_deadlines_due(
            p in any::<u16>(), deadline in any::<i64>(), now in any::<i64>(),
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let (from, until) = expired_until(p, now);
            let entry = expiry_key(p, deadline, &key);
            prop_assert_eq!(from <= entry && entry < until, deadline <= now);
        }

        #[test]
        fn every_key_of_a_partition_is_inside_its_range(
            p in any::<u16>(), deadline in any::<i64>(),
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let (from, until) = partition_range(p);
            for bytes in [value_key(p, &key), expiry_key(p, deadline, &key), seeded_key(p)] {
                prop_assert!(from <= bytes && bytes < until);
            }
            let (from, until) = partition_range(0);
            let watermark = watermark_key();
            prop_assert!(from <= watermark && watermark < until);
            prop_assert_eq!(key_of_value(&watermark), None);
            let (from, until) = values_of(p);
            let value = value_key(p, &key);
            prop_assert!(from <= value && value < until);
            prop_assert_eq!(key_of_value(&value), Some(key.as_slice()));
        }
    }
}
