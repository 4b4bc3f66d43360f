//! `sluice lag DIR --brokers HOST:PORT` — the only command that talks to
//! Kafka: it asks for the latest offset of each partition the checkpoint
//! holds an offset for, with the job's own client.

use std::path::Path;

use serde_json::json;
use sluice::checkpoint::CheckpointStore;
use sluice::kafka::KafkaSource;

use crate::{open, Failure, Outcome};

pub(crate) fn run(
    dir: &Path,
    brokers: &str,
    settings: &[(String, String)],
    as_json: bool,
) -> Outcome {
    let (store, app_id) = open::read_only(dir)?;
    let committed = store.offsets()?;
    if committed.is_empty() {
        out!("checkpoint {} holds no offsets yet", dir.display());
        return Ok(());
    }
    let kafka = |e: sluice::kafka::Error| {
        Failure::failed(format!("asking {brokers} for the latest offsets: {e}"))
    };
    let mut builder = KafkaSource::builder()
        .brokers(brokers)
        .assign(committed.iter().map(|(tp, o)| (tp.clone(), *o)));
    for (key, value) in settings {
        builder = builder.set(key, value);
    }
    // The lookup joins no group; the id only names its client.
    let source = builder
        .build()
        .map_err(|e| Failure::usage(e.to_string()))?
        .with_default_group_id(format!("{app_id}-sluice-lag"));
    let tps: Vec<_> = committed.keys().cloned().collect();
    let latest = source
        .connect()
        .map_err(kafka)?
        .offsets(&tps)
        .map_err(kafka)?;
    if !as_json {
        out!(
            "{:<30} {:>14} {:>14} {:>14}",
            "partition",
            "committed",
            "latest",
            "lag"
        );
    }
    let mut total = 0;
    for offsets in &latest {
        let next = committed[&offsets.tp];
        let lag = (offsets.latest - next).max(0);
        total += lag;
        if as_json {
            out!(
                "{}",
                json!({"topic": offsets.tp.topic.to_string(), "partition": offsets.tp.partition,
                       "committed": next, "latest": offsets.latest, "log_start": offsets.log_start, "lag": lag})
            );
        } else {
            out!(
                "{:<30} {next:>14} {:>14} {lag:>14}",
                format!("{}:{}", offsets.tp.topic, offsets.tp.partition),
                offsets.latest
            );
        }
    }
    if !as_json {
        out!("{:<30} {:>14} {:>14} {total:>14}", "total", "", "");
    }
    Ok(())
}

/// A `--set KEY=VALUE` client setting.
pub(crate) fn setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}
