//! `sluice pause DIR` and `sluice resume DIR`: the pause a job keeps in its
//! checkpoint, set or cleared while the job is stopped.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice::checkpoint::CheckpointStore;

use crate::open::{self, format_time};
use crate::Outcome;

pub(crate) fn pause(dir: &Path) -> Outcome {
    let mut store = open::read_write(dir)?;
    if let Some(since) = store.paused_since()? {
        out!("already paused since {}", format_time(since));
        return Ok(());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    store.set_paused(Some(now))?;
    out!(
        "paused: the job starts paused, and runs no batch until resumed (`sluice resume {}`, \
         or its control API)",
        dir.display()
    );
    Ok(())
}

pub(crate) fn resume(dir: &Path) -> Outcome {
    let mut store = open::read_write(dir)?;
    match store.paused_since()? {
        Some(since) => {
            store.set_paused(None)?;
            out!(
                "resumed (paused since {}): the job reads at its next start",
                format_time(since)
            );
        }
        None => out!("not paused"),
    }
    Ok(())
}
