//! Opening the checkpoint a command is pointed at, by its stored app id.

use std::path::Path;

use sluice::checkpoint::RocksCheckpoint;

use crate::Failure;

/// Opens `dir` read-only; works while a job runs.
pub(crate) fn read_only(dir: &Path) -> Result<(RocksCheckpoint, String), Failure> {
    let app_id = RocksCheckpoint::app_id_at(dir)?;
    Ok((RocksCheckpoint::open_read_only(dir, &app_id)?, app_id))
}

/// Opens `dir` for writing, taking its lock: fails (exit 3) while a job
/// holds it. Never creates a checkpoint, and never writes to a restore
/// point: what a later rewind restores must stay as it was taken.
pub(crate) fn read_write(dir: &Path) -> Result<RocksCheckpoint, Failure> {
    if let Some((checkpoint, batch)) = restore_point_of(dir) {
        return Err(Failure::failed(format!(
            "{} is the restore point of batch {batch} of checkpoint {}: `sluice rewind {} \
             --to-batch {batch}` restores it as it is, so it is not changed; point the command \
             at the checkpoint, or at a copy of the restore point",
            dir.display(),
            checkpoint.display(),
            checkpoint.display()
        )));
    }
    let app_id = RocksCheckpoint::app_id_at(dir)?;
    Ok(RocksCheckpoint::builder(dir).app_id(app_id).open()?)
}

/// The checkpoint and batch id of `dir` when it is a restore point:
/// `<checkpoint>/restore/<batch id>`, the checkpoint a RocksDB database.
fn restore_point_of(dir: &Path) -> Option<(&Path, u64)> {
    let batch = dir.file_name()?.to_str()?.parse().ok()?;
    let restore = dir.parent()?;
    if restore.file_name()? != "restore" {
        return None;
    }
    let checkpoint = restore.parent()?;
    checkpoint
        .join("CURRENT")
        .is_file()
        .then_some((checkpoint, batch))
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the millisecond; a
/// value outside the years -9999 to 9999 as its number of milliseconds.
pub(crate) fn format_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(time) => format!("{time:.3}"),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}
