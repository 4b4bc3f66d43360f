//! `sluice offsets set DIR TOPIC:PARTITION=OFFSET ... [--dry-run] [--new-partition]`.

use std::collections::BTreeMap;
use std::path::Path;

use sluice::checkpoint::CheckpointStore;
use sluice::kafka::TopicPartition;

use crate::{open, Failure, Outcome};

pub(crate) fn set(
    dir: &Path,
    offsets: &[(String, i32, i64)],
    dry_run: bool,
    new_partition: bool,
) -> Outcome {
    let changes: Vec<(TopicPartition, i64)> = offsets
        .iter()
        .map(|(topic, partition, offset)| {
            (TopicPartition::new(topic.as_str(), *partition), *offset)
        })
        .collect();
    // A dry run must not take the lock: it may look while the job runs.
    let stored = if dry_run {
        let stored = open::read_only(dir)?.0.offsets()?;
        check_known(dir, &stored, &changes, new_partition)?;
        stored
    } else {
        let mut store = open::read_write(dir)?;
        let stored = store.offsets()?;
        check_known(dir, &stored, &changes, new_partition)?;
        store.set_offsets(&changes)?;
        stored
    };
    let verb = if dry_run { "would set" } else { "set" };
    for (tp, offset) in &changes {
        let tp_shown = show(tp);
        match stored.get(tp) {
            Some(old) => out!("{verb} {tp_shown}: {old} -> {offset}"),
            None => out!("{verb} {tp_shown}: (none) -> {offset}"),
        }
    }
    if dry_run {
        out!("dry run: nothing was changed");
    }
    Ok(())
}

/// Refuses partitions the checkpoint holds no position for, unless
/// `new_partition`: a mistyped topic or partition would otherwise write an
/// offset no job reads.
fn check_known(
    dir: &Path,
    stored: &BTreeMap<TopicPartition, i64>,
    changes: &[(TopicPartition, i64)],
    new_partition: bool,
) -> Outcome {
    if new_partition {
        return Ok(());
    }
    let mut unknown: Vec<String> = Vec::new();
    for (tp, _) in changes {
        if !stored.contains_key(tp) && !unknown.contains(&show(tp)) {
            unknown.push(show(tp));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let held = if stored.is_empty() {
        "it holds none yet".to_owned()
    } else {
        let held: Vec<String> = stored.keys().map(show).collect();
        format!("it holds {}", held.join(", "))
    };
    Err(Failure::failed(format!(
        "checkpoint {} holds no position for {}; {held}. Check the topic and partition, or pass \
         --new-partition to add a position for a partition the job has not read yet; nothing \
         was changed",
        dir.display(),
        unknown.join(", ")
    )))
}

/// `topic:partition`, as the command line takes it.
fn show(tp: &TopicPartition) -> String {
    format!("{}:{}", tp.topic, tp.partition)
}

/// Parses `TOPIC:PARTITION=OFFSET`. The topic may contain `:`; the last
/// one separates the partition.
pub(crate) fn parse_assignment(text: &str) -> Result<(String, i32, i64), String> {
    let bad = |why: &str| format!("'{text}' is not TOPIC:PARTITION=OFFSET: {why}");
    let (target, offset) = text.rsplit_once('=').ok_or_else(|| bad("no '='"))?;
    let (topic, partition) = target
        .rsplit_once(':')
        .ok_or_else(|| bad("no ':' between topic and partition"))?;
    if topic.is_empty() {
        return Err(bad("the topic is empty"));
    }
    if topic.contains('\0') {
        return Err(bad("the topic contains a NUL byte"));
    }
    let partition: i32 = partition
        .parse()
        .map_err(|_| bad("the partition is not a number"))?;
    if partition < 0 {
        return Err(bad("the partition is negative"));
    }
    let offset: i64 = offset
        .parse()
        .map_err(|_| bad("the offset is not a number"))?;
    if offset < 0 {
        return Err(bad("the offset is negative"));
    }
    Ok((topic.to_owned(), partition, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_parse() {
        assert_eq!(parse_assignment("lines:2=40"), Ok(("lines".into(), 2, 40)));
        assert_eq!(
            parse_assignment("ns:topic:0=0"),
            Ok(("ns:topic".into(), 0, 0))
        );
    }

    #[test]
    fn bad_assignments_say_why() {
        for (text, why) in [
            ("lines:2", "no '='"),
            ("lines=4", "no ':'"),
            (":1=4", "topic is empty"),
            ("lines:x=4", "partition is not a number"),
            ("lines:-1=4", "partition is negative"),
            ("lines:1=four", "offset is not a number"),
            ("lines:1=-4", "offset is negative"),
        ] {
            let error = parse_assignment(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
