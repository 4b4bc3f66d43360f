//! Turning a batch's rejected records into dead-letter writes, committed
//! with the batch.

use std::collections::BTreeMap;

use sluice_checkpoint::DeadLetterRecord;
use sluice_core::{DeadLetter, InputReader, OffsetRange, Record, TopicPartition, WriteSet};

/// Stages one dead letter per rejected record into `family`, with the
/// record's key and value read back from Kafka: the rejecting task saw
/// only the values its operators made of it. Records of one partition are
/// read back in one range read. A record that cannot be read back is
/// still stored, by coordinates, with the reason.
pub(crate) fn stage(
    letters: &[DeadLetter],
    batch: u64,
    family: &str,
    reader: &dyn InputReader,
    writes: &mut WriteSet,
) {
    let mut by_partition: BTreeMap<TopicPartition, Vec<&DeadLetter>> = BTreeMap::new();
    for letter in letters {
        by_partition
            .entry(TopicPartition::new(&*letter.topic, letter.partition))
            .or_default()
            .push(letter);
    }
    for (tp, letters) in by_partition {
        let from = letters.iter().map(|l| l.offset).min().unwrap_or_default();
        let until = letters
            .iter()
            .map(|l| l.offset + 1)
            .max()
            .unwrap_or_default();
        let range = OffsetRange::new(&tp, from, until);
        let read = reader.read(&range).map(|records| {
            records
                .into_iter()
                .map(|r| (r.offset, r))
                .collect::<BTreeMap<i64, Record>>()
        });
        for letter in letters {
            let mut stored = DeadLetterRecord::new(
                &*letter.topic,
                letter.partition,
                letter.offset,
                batch,
                letter.operator,
                &letter.error,
            );
            match &read {
                Ok(records) => match records.get(&letter.offset) {
                    Some(record) => {
                        stored = stored.with_bytes(record.key.as_deref(), record.value.as_deref());
                        stored.timestamp = record.timestamp;
                    }
                    None => stored.unread = Some("the offset holds no record".to_owned()),
                },
                Err(e) => stored.unread = Some(format!("reading {range} back failed: {e}")),
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
}
