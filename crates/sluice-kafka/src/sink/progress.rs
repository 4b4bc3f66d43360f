//! How a Kafka sink finds, after a restart, whether it already committed
//! the batch the checkpoint is about to redo.
//!
//! Every transaction also commits an offset for the consumer group named
//! like the sink's transactional id (Kafka's `sendOffsetsToTransaction`):
//! partition 0 of the output topic gets offset `batch id + 1` with the
//! metadata `sluice batch=<id> time=<batch time ms>`. The offset becomes
//! visible exactly when the transaction's records do. A batch redone after
//! a crash has the same id and time (its write-ahead plan), so finding its
//! marker means its records are in the topic; a batch planned anew after a
//! rewind has a later time, so an old marker never hides it.

use sluice_core::BatchInfo;

/// The transactional id of a sink, which is also the consumer group its
/// progress is committed under: stable per (app id, sink name), so a
/// restarted job fences its own earlier run and no other job's.
pub(crate) fn transactional_id(app_id: &str, sink: &str) -> String {
    format!("sluice.{app_id}.{sink}")
}

/// The offset committed with batch `batch`'s transaction.
pub(crate) fn offset(batch: &BatchInfo) -> i64 {
    i64::try_from(batch.id).map_or(i64::MAX, |id| id.saturating_add(1))
}

/// The metadata committed with batch `batch`'s transaction.
pub(crate) fn marker(batch: &BatchInfo) -> String {
    format!("sluice batch={} time={}", batch.id, batch.time_ms())
}

/// Whether the committed progress (offset and metadata, if any) is that
/// of `batch`.
pub(crate) fn holds(committed: Option<(i64, &str)>, batch: &BatchInfo) -> bool {
    committed
        .is_some_and(|(offset_, metadata)| offset_ == offset(batch) && metadata == marker(batch))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn batch(id: u64, time_ms: u64) -> BatchInfo {
        BatchInfo::new(id, UNIX_EPOCH + Duration::from_millis(time_ms), Vec::new())
    }

    #[test]
    fn progress_holds_only_for_the_same_batch_id_and_time() {
        let planned = batch(7, 1_000);
        let committed = (offset(&planned), marker(&planned));
        assert!(holds(Some((committed.0, &committed.1)), &planned));
        // The batch before it committed, this one did not.
        let earlier = batch(6, 900);
        assert!(!holds(
            Some((offset(&earlier), &marker(&earlier))),
            &planned
        ));
        // A rewind replanned batch 7 at a later time: the old marker is not its.
        assert!(!holds(Some((committed.0, &committed.1)), &batch(7, 2_000)));
        assert!(!holds(None, &planned));
    }

    #[test]
    fn the_transactional_id_names_app_and_sink() {
        assert_eq!(transactional_id("clicks", "out"), "sluice.clicks.out");
    }
}
