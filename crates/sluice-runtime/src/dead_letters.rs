//! Turning a batch's rejected records into dead-letter writes, committed
//! with the batch.

use sluice_checkpoint::DeadLetterRecord;
use sluice_core::{DeadLetter, WriteSet};

/// Stages one dead letter per rejected record into `family`. The source
/// tasks read each record's key and value back already (the rejecting task
/// saw only the values its operators made of it), on their workers and
/// apart from the consumers that read the batch. A record that could not be
/// read back is still stored, by coordinates, with the reason.
pub(crate) fn stage(letters: &[DeadLetter], batch: u64, family: &str, writes: &mut WriteSet) {
    for letter in letters {
        let mut stored = DeadLetterRecord::new(
            &*letter.topic,
            letter.partition,
            letter.offset,
            batch,
            letter.operator,
            &letter.error,
        );
        match &letter.record {
            Some(record) => {
                stored = stored.with_bytes(record.key.as_deref(), record.value.as_deref());
                stored.timestamp = record.timestamp;
            }
            None => {
                stored.unread = Some(
                    letter
                        .unread
                        .clone()
                        .unwrap_or_else(|| "the record was not read back".to_owned()),
                );
            }
        }
        tracing::warn!(
            batch,
            record = %format_args!("{}-{}@{}", letter.topic, letter.partition, letter.offset),
            operator = letter.operator,
            error = %letter.error,
            family,
            "record set aside as a dead letter"
        );
        writes.put(family, stored.storage_key(), stored.to_json());
    }
}
