//! `sluice state dump DIR NAME [--json]`.
//!
//! Reads the state family `sluice_state.<NAME>` and decodes each value
//! entry (key `partition: u16 BE, 0x00, postcard(key)`, value
//! `postcard((state, timeout_at: Option<i64>, expires_at: Option<i64>))`,
//! see sluice-core's `state/layout.rs`) with the key and state shapes the
//! registry recorded. Entries that do not decode by the shape (a window
//! operator's own layout, a type serde could not trace) are shown as hex.

use std::path::Path;

use serde_json::{json, Value};
use sluice::checkpoint::CheckpointStore;

use crate::decode::{hex, Shape};
use crate::{open, Failure, Outcome};

/// The tag of a key's value entry in a state family.
const VALUE_TAG: u8 = 0;

pub(crate) fn dump(dir: &Path, name: &str, as_json: bool) -> Outcome {
    let (store, _) = open::read_only(dir)?;
    let states = store.states()?;
    let Some(record) = states.iter().find(|s| s.name == name) else {
        let held: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        return Err(Failure::failed(format!(
            "checkpoint {} has no state named '{name}'; it holds {}",
            dir.display(),
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        )));
    };
    let key_shape = Shape::parse(&record.key_shape);
    let state_shape = Shape::parse(&record.state_shape);
    let option = Shape::option_i64();
    let entries = store.scan(&format!("sluice_state.{name}"))?;
    let (mut decoded, mut raw, mut other) = (0usize, 0usize, 0usize);
    for (key, value) in &entries {
        let Some(encoded) = value_key(key) else {
            other += 1; // expiry index, markers, watermarks
            continue;
        };
        let partition = u16::from_be_bytes([key[0], key[1]]);
        let parsed = (|| -> Option<Value> {
            let (k, rest) = key_shape.as_ref()?.decode(encoded).ok()?;
            rest.is_empty().then_some(())?;
            let (s, rest) = state_shape.as_ref()?.decode(value).ok()?;
            let (timeout_at, rest) = option.decode(rest).ok()?;
            let (expires_at, rest) = option.decode(rest).ok()?;
            rest.is_empty().then_some(())?;
            Some(json!({"partition": partition, "key": k, "state": s,
                        "timeout_at": timeout_at, "expires_at": expires_at}))
        })();
        let entry = match parsed {
            Some(entry) => {
                decoded += 1;
                entry
            }
            None => {
                raw += 1;
                json!({"partition": partition, "key_hex": hex(encoded), "value_hex": hex(value)})
            }
        };
        if as_json {
            out!("{entry}");
        } else if let Some(k) = entry.get("key") {
            let mut line = format!("{k}\t{}", entry["state"]);
            for deadline in ["timeout_at", "expires_at"] {
                if !entry[deadline].is_null() {
                    line.push_str(&format!("\t{deadline}={}", entry[deadline]));
                }
            }
            out!("{line}");
        } else {
            out!(
                "key 0x{}\tvalue 0x{}",
                entry["key_hex"].as_str().unwrap_or_default(),
                entry["value_hex"].as_str().unwrap_or_default()
            );
        }
    }
    let summary = format!(
        "state '{name}' ({}): {decoded} keys decoded by their recorded shapes, {raw} shown as hex, {other} index entries skipped (the timeout and TTL indexes a state keeps beside its values)",
        record.operator
    );
    eprintln!("{summary}");
    Ok(())
}

/// The encoded key of a value entry; `None` for the other entries.
fn value_key(key: &[u8]) -> Option<&[u8]> {
    match key {
        [_, _, VALUE_TAG, encoded @ ..] => Some(encoded),
        _ => None,
    }
}
