//! `sluice dead-letters DIR [--family NAME] [--export FILE]`.

use std::io::Write as _;
use std::path::Path;

use sluice::checkpoint::{CheckpointStore, DeadLetterRecord, RocksCheckpoint};

use crate::{open, Failure, Outcome};

pub(crate) fn run(dir: &Path, family: Option<&str>, export: Option<&Path>) -> Outcome {
    let (store, _) = open::read_only(dir)?;
    let family = match family {
        Some(family) => {
            if !store.families().any(|f| f == family) {
                let held: Vec<&str> = store.families().collect();
                return Err(Failure::failed(format!(
                    "checkpoint {} has no family '{family}'; it holds {held:?}",
                    dir.display()
                )));
            }
            if !holds_dead_letters(&store, family)? {
                return Err(Failure::failed(format!(
                    "family '{family}' of checkpoint {} holds no dead letters (its entries are \
                     not dead-letter records); the families with dead letters are {:?}",
                    dir.display(),
                    find_family(&store)?
                )));
            }
            family.to_owned()
        }
        None => match find_family(&store)?.as_slice() {
            [] => {
                out!("no dead letters in {}", dir.display());
                return Ok(());
            }
            [one] => one.clone(),
            many => {
                return Err(Failure::usage(format!(
                    "checkpoint {} has several dead-letter families ({}); pick one with --family",
                    dir.display(),
                    many.join(", ")
                )))
            }
        },
    };
    let letters = store.dead_letters(&family)?;
    match export {
        Some(file) => {
            let write = || -> std::io::Result<()> {
                let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
                for letter in &letters {
                    serde_json::to_writer(&mut out, letter)?;
                    out.write_all(b"\n")?;
                }
                out.flush()
            };
            write()
                .map_err(|e| Failure::failed(format!("cannot write {}: {e}", file.display())))?;
            out!(
                "exported {} dead letters of family '{family}' to {}",
                letters.len(),
                file.display()
            );
        }
        None => {
            out!("{} dead letters in family '{family}'", letters.len());
            for l in &letters {
                out!(
                    "  {}-{}@{}  batch {}  {}: {}",
                    l.topic,
                    l.partition,
                    l.offset,
                    l.batch,
                    l.operator,
                    l.error
                );
            }
        }
    }
    Ok(())
}

/// The user families whose first entry is a dead letter.
fn find_family(store: &RocksCheckpoint) -> Result<Vec<String>, Failure> {
    let mut found = Vec::new();
    for family in store.families() {
        let entries = store.scan(family)?;
        if let Some((_, value)) = entries.first() {
            if DeadLetterRecord::from_json(value).is_ok() {
                found.push(family.to_owned());
            }
        }
    }
    Ok(found)
}

/// Whether `family` is empty or starts with a dead-letter record.
fn holds_dead_letters(store: &RocksCheckpoint, family: &str) -> Result<bool, Failure> {
    Ok(store
        .scan(family)?
        .first()
        .is_none_or(|(_, value)| DeadLetterRecord::from_json(value).is_ok()))
}
