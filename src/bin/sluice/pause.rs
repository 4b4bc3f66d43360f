//! `sluice pause DIR` and `sluice resume DIR`: the pause a job keeps in its
//! checkpoint, set or cleared while the job is stopped.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice::checkpoint::CheckpointStore;

use sluice::checkpoint::RocksCheckpoint;

use crate::open::{self, format_time};
use crate::{Failure, Outcome};

pub(crate) fn pause(dir: &Path) -> Outcome {
    let mut store = open_stopped(dir, "pause")?;
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
    let mut store = open_stopped(dir, "resume")?;
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

/// The checkpoint for writing; a running job holding it is paused and
/// resumed through its control API instead.
fn open_stopped(dir: &Path, action: &str) -> Result<RocksCheckpoint, Failure> {
    open::read_write(dir).map_err(|failure| {
        if failure.is_locked() {
            Failure::locked(format!(
                "checkpoint {} is held by a running job: {action} it through its control API \
                 (POST /api/control/{action}, or the UI's button); `sluice {action}` is for a \
                 stopped job; nothing was changed",
                dir.display()
            ))
        } else {
            failure
        }
    })
}
