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

/// Milliseconds since the epoch as RFC 3339 UTC, to the millisecond.
pub(crate) fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 to (year, month, day).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
