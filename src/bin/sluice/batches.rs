//! `sluice batches DIR [--since TIME] [--json] [--skip-empty]`.

use std::path::Path;

use sluice::checkpoint::{BatchRecord, CheckpointStore, ResetRecordKind};

use crate::open::{self, format_time};
use crate::{Failure, Outcome};

pub(crate) fn run(dir: &Path, since: Option<i64>, json: bool, skip_empty: bool) -> Outcome {
    let (store, _) = open::read_only(dir)?;
    let batches = store.batches()?;
    let shown = batches
        .iter()
        .filter(|b| since.is_none_or(|since| b.time_ms >= since))
        .filter(|b| !skip_empty || !is_empty(b));
    if json {
        for batch in shown {
            let line = serde_json::to_string(batch).map_err(|e| Failure::failed(e.to_string()))?;
            out!("{line}");
        }
        return Ok(());
    }
    let rows: Vec<_> = shown.map(|b| (b, resets(b))).collect();
    let width = rows
        .iter()
        .map(|(_, r)| r.len())
        .chain(["resets".len()])
        .max()
        .unwrap_or(0);
    out!(
        "{:>8}  {:<24}  {:>10}  {:>10}  {:>13}  {:>14}  {:>14}  {:>12}  {:<width$}  rate limit",
        "batch",
        "time (UTC)",
        "records",
        "fetched",
        "processing ms",
        "sched delay ms",
        "max latency ms",
        "dead letters",
        "resets"
    );
    for (b, resets) in rows {
        out!(
            "{:>8}  {:<24}  {:>10}  {:>10}  {:>13}  {:>14}  {:>14}  {:>12}  {:<width$}  {}",
            b.id,
            format_time(b.time_ms),
            b.records,
            b.records_fetched
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            b.processing_ms,
            b.scheduling_delay_ms,
            b.max_latency_ms()
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            b.dead_letters,
            resets,
            b.rate_limit.as_deref().unwrap_or("-")
        );
        // Control changes and notes (pause, rate, offsets moved, a rewind),
        // each on a line of its own under its batch.
        for control in &b.control {
            out!(
                "{:>8}  control at {}: {}",
                "",
                format_time(control.time_ms),
                control.change
            );
        }
    }
    Ok(())
}

/// A batch that read no record, recorded no control change and reset no
/// partition (a reset on a recreated topic may read nothing).
fn is_empty(batch: &BatchRecord) -> bool {
    batch.records == 0
        && batch.control.is_empty()
        && batch
            .ranges
            .iter()
            .all(|range| range.reset.is_none() && range.skipped_offsets == 0)
}

/// The batch's data-loss resets, per kind: how many partitions, and the sum
/// of their `skipped_offsets` in parentheses; `-` when none.
fn resets(batch: &BatchRecord) -> String {
    let mut kinds: Vec<(&str, u64, u64)> = Vec::new();
    for range in &batch.ranges {
        let Some(reset) = range.reset else { continue };
        let kind = match reset.kind {
            ResetRecordKind::BelowLogStart => "below log start",
            ResetRecordKind::PastLatest => "past latest",
            _ => "other",
        };
        match kinds.iter_mut().find(|(k, ..)| *k == kind) {
            Some((_, partitions, offsets)) => {
                *partitions += 1;
                *offsets += range.skipped_offsets;
            }
            None => kinds.push((kind, 1, range.skipped_offsets)),
        }
    }
    if kinds.is_empty() {
        return "-".to_owned();
    }
    kinds
        .iter()
        .map(|(kind, partitions, offsets)| format!("{partitions} {kind} ({offsets})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `--since` value: milliseconds since the Unix epoch, or an RFC 3339
/// time (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00.250+02:00`).
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    text.parse::<jiff::Timestamp>()
        .map(|time| time.as_millisecond())
        .map_err(|error| {
            format!(
                "'{text}' is neither milliseconds since the epoch nor an RFC 3339 time such as \
                 2024-05-01T10:00:00Z ({error})"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00"),
            Ok(1_700_000_000_500)
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-13-01T00:00:00Z").is_err());
        assert!(parse_time("2023-11-14T22:13:20").is_err());
    }

    #[test]
    fn resets_are_counted_per_kind_with_their_skipped_offsets() {
        use sluice::checkpoint::{RangeRecord, ResetRecord};
        use sluice::kafka::{OffsetRange, TopicPartition};

        let range = |p, reset: Option<(ResetRecordKind, u64)>| {
            let r =
                RangeRecord::from_range(&OffsetRange::new(&TopicPartition::new("t", p), 0, 9), 9);
            match reset {
                Some((kind, skipped)) => r.with_reset(ResetRecord::new(kind, 1), skipped),
                None => r,
            }
        };
        let mut batch = BatchRecord::new(1, 0);
        assert_eq!(resets(&batch), "-");
        batch.ranges = vec![
            range(0, Some((ResetRecordKind::PastLatest, 4990))),
            range(1, None),
            range(2, Some((ResetRecordKind::BelowLogStart, 6))),
            range(3, Some((ResetRecordKind::PastLatest, 10))),
        ];
        assert_eq!(
            resets(&batch),
            "2 past latest (5000), 1 below log start (6)"
        );
    }

    #[test]
    fn times_print_back_the_same() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000] {
            assert_eq!(parse_time(&format_time(ms)), Ok(ms));
        }
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
