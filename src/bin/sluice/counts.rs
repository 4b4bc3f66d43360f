//! `sluice counts DIR FAMILY [--top N] [--json]`: the running totals a job
//! keeps with `save_counts`, largest first.

use std::path::Path;

use serde_json::json;
use sluice::checkpoint::{CheckpointStore, Error};

use crate::decode::hex;
use crate::{open, Failure, Outcome};

pub(crate) fn run(dir: &Path, family: &str, top: Option<usize>, as_json: bool) -> Outcome {
    let (store, _) = open::read_only(dir)?;
    if !store.families().any(|f| f == family) {
        let held: Vec<&str> = store.families().collect();
        return Err(Failure::failed(format!(
            "checkpoint {} has no family '{family}'; it holds {}",
            dir.display(),
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        )));
    }
    let mut counts = store.counters(family).map_err(|error| match error {
        Error::NotACounter { .. } => Failure::failed(format!(
            "family '{family}' of checkpoint {} does not hold running totals (a job's \
             save_counts): {error}",
            dir.display()
        )),
        other => other.into(),
    })?;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total = counts.len();
    counts.truncate(top.unwrap_or(usize::MAX));
    for (key, count) in &counts {
        let text = std::str::from_utf8(key).ok();
        if as_json {
            // JSON escapes whatever text holds.
            let key = match text {
                Some(text) => json!({ "key": text, "count": count }),
                None => json!({ "key_hex": hex(key), "count": count }),
            };
            out!("{key}");
        } else {
            // A tab may be part of a key (`start<TAB>word`): the count
            // follows the last one. Other control characters would break
            // the line: such keys are printed in hex.
            let printable = text.filter(|k| !k.chars().any(|c| c.is_control() && c != '\t'));
            let key = printable.map_or_else(|| format!("0x{}", hex(key)), str::to_owned);
            out!("{key}\t{count}");
        }
    }
    if counts.len() < total {
        eprintln!(
            "({} more keys; a larger --top shows more)",
            total - counts.len()
        );
    }
    Ok(())
}
