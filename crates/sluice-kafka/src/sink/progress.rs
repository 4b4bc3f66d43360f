//! How a Kafka sink finds, after a restart, whether it already committed
//! the batch the checkpoint is about to redo.
//!
//! Every transaction also commits an offset for the consumer group named
//! like the sink's transactional id (Kafka's `sendOffsetsToTransaction`):
//! partition 0 of the output topic gets the batch's *progress offset*, a
//! 62-bit XXH3 hash of the batch id and time, with the metadata
//! `sluice batch=<id> time=<batch time ms>` for people. The offset becomes
//! visible exactly when the transaction's records do. A batch redone after
//! a crash has the same id and time (its write-ahead plan), so finding its
//! progress offset means its records are in the topic; a batch planned
//! anew after a rewind has a later time, so an old offset never hides it.
//! The check reads the offset only, not the metadata, which some brokers
//! do not keep for offsets committed in a transaction.

use sluice_core::BatchInfo;

/// The transactional id of a sink, which is also the consumer group its
/// progress is committed under: stable per (app id, sink name), so a
/// restarted job fences its own earlier run and no other job's.
pub(crate) fn transactional_id(app_id: &str, sink: &str) -> String {
    format!("sluice.{app_id}.{sink}")
}

/// The offset committed with batch `batch`'s transaction: XXH3-64 (seed 0)
/// of the id and the time in ms (both little-endian), shifted to 62 bits
/// so it is a valid, non-negative offset.
pub(crate) fn offset(batch: &BatchInfo) -> i64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&batch.id.to_le_bytes());
    bytes[8..].copy_from_slice(&batch.time_ms().to_le_bytes());
    (xxhash_rust::xxh3::xxh3_64(&bytes) >> 2) as i64
}

/// The metadata committed with batch `batch`'s transaction, for people
/// reading the group's offsets.
pub(crate) fn marker(batch: &BatchInfo) -> String {
    format!("sluice batch={} time={}", batch.id, batch.time_ms())
}

/// Whether the committed progress offset, if any, is that of `batch`.
pub(crate) fn holds(committed: Option<i64>, batch: &BatchInfo) -> bool {
    committed == Some(offset(batch))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const PINNED: i64 = 4_404_803_749_516_180_452;

    fn batch(id: u64, time_ms: u64) -> BatchInfo {
        BatchInfo::new(id, UNIX_EPOCH + Duration::from_millis(time_ms), Vec::new())
    }

    #[test]
    fn progress_holds_only_for_the_same_batch_id_and_time() {
        let planned = batch(7, 1_000);
        assert!(holds(Some(offset(&planned)), &planned));
        // The batch before it committed, this one did not.
        assert!(!holds(Some(offset(&batch(6, 900))), &planned));
        // A rewind replanned batch 7 at a later time: the old offset is not its.
        assert!(!holds(Some(offset(&planned)), &batch(7, 2_000)));
        // A restart within the interval of the last batch may reuse its time.
        assert!(!holds(Some(offset(&batch(6, 1_000))), &planned));
        assert!(!holds(None, &planned));
    }

    #[test]
    fn the_progress_offset_is_a_fixed_non_negative_value() {
        let value = offset(&batch(4, 40_000));
        assert!(value >= 0);
        // Pinned: a change would make restarts miss committed batches.
        assert_eq!(value, offset(&batch(4, 40_000)));
        assert_eq!(value, PINNED);
    }

    #[test]
    fn the_transactional_id_names_app_and_sink() {
        assert_eq!(transactional_id("clicks", "out"), "sluice.clicks.out");
    }
}
