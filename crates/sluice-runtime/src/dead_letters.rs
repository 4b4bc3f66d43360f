//! Turning a batch's rejected records into dead-letter writes, committed
//! with the batch.

use sluice_checkpoint::DeadLetterRecord;
use sluice_core::{DeadLetter, WriteSet};

/// Dead letters of a batch logged one by one at `WARN`; the rest of the
/// batch's are summed up in one more line (each at `DEBUG`), so a bad
/// deploy upstream does not flood the log.
const LOGGED_PER_BATCH: usize = 10;

/// Stages one dead letter per rejected record into `family`. The source
/// tasks read each record's key and value back already (the rejecting task
/// saw only the values its operators made of it), on their workers and
/// apart from the consumers that read the batch. A record that could not be
/// read back is still stored, by coordinates, with the reason.
pub(crate) fn stage(letters: &[DeadLetter], batch: u64, family: &str, writes: &mut WriteSet) {
    for (n, letter) in letters.iter().enumerate() {
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
        let (topic, partition, offset) = (&letter.topic, letter.partition, letter.offset);
        if n < LOGGED_PER_BATCH {
            tracing::warn!(
                batch, record = %format_args!("{topic}-{partition}@{offset}"),
                operator = letter.operator, error = %letter.error, family,
                "record set aside as a dead letter"
            );
        } else {
            tracing::debug!(
                batch, record = %format_args!("{topic}-{partition}@{offset}"),
                operator = letter.operator, error = %letter.error, family,
                "record set aside as a dead letter"
            );
        }
        writes.put(family, stored.storage_key(), stored.to_json());
    }
    if letters.len() > LOGGED_PER_BATCH {
        tracing::warn!(
            batch,
            not_logged = letters.len() - LOGGED_PER_BATCH,
            family,
            "more records of this batch set aside as dead letters (each logged at DEBUG; \
             `sluice dead-letters` lists them all)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use sluice_core::Record;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Regression: every dead letter was a WARN line of its own.
    #[test]
    fn a_batch_logs_ten_dead_letters_and_sums_up_the_rest_in_one_line() {
        let letters: Vec<DeadLetter> = (0..25)
            .map(|offset| DeadLetter {
                topic: "clicks".into(),
                partition: 0,
                offset,
                operator: "try_map",
                error: "bad".to_owned(),
                record: Some(Record::with_value("clicks", 0, offset, "x")),
                unread: None,
            })
            .collect();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let mut writes = WriteSet::new();
        tracing::subscriber::with_default(subscriber, || {
            stage(&letters, 3, "dead", &mut writes);
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let warnings: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(" WARN sluice"))
            .collect();
        assert_eq!(warnings.len(), 11, "{log}");
        assert!(warnings[9].contains("clicks-0@9"), "{log}");
        assert!(warnings[10].contains("not_logged=15"), "{log}");
        // Each of the rest at DEBUG, for whoever turns it on.
        let debug = lines.iter().filter(|l| l.contains(" DEBUG sluice")).count();
        assert_eq!(debug, 15, "{log}");
        // Every letter is staged, logged or not.
        assert_eq!(writes.len(), 25);
    }
}
