//! Configuration of a [`RocksCheckpoint`] before it is opened.

use std::path::{Path, PathBuf};

use crate::memory::{Memory, DEFAULT_CACHE_BYTES, MIN_CACHE_BYTES};
use crate::restore::RestorePolicy;
use crate::{Error, Result, RocksCheckpoint};

/// Batch records kept by default: enough history for a UI and for
/// post-mortems without growing without bound.
pub(crate) const DEFAULT_RETAINED_BATCHES: usize = 10_000;

/// Opens a [`RocksCheckpoint`]; made by [`RocksCheckpoint::builder`].
///
/// ```
/// # fn main() -> sluice_checkpoint::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use sluice_checkpoint::RocksCheckpoint;
///
/// let store = RocksCheckpoint::builder(dir.path().join("checkpoint"))
///     .app_id("wordcount")
///     .retain_batches(100)
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until open() is called"]
pub struct RocksCheckpointBuilder {
    pub(crate) dir: PathBuf,
    pub(crate) app_id: Option<String>,
    pub(crate) sync: bool,
    pub(crate) retain_batches: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) restore: RestorePolicy,
}

impl RocksCheckpointBuilder {
    /// A builder for the checkpoint in directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            app_id: None,
            sync: true,
            retain_batches: DEFAULT_RETAINED_BATCHES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            restore: RestorePolicy::OFF,
        }
    }

    /// Names the application owning the checkpoint. Required: a checkpoint
    /// of another app id is refused, so two jobs cannot share one by
    /// mistake.
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Whether every commit waits for the write-ahead log to reach the
    /// disk (default `true`). Without it a machine crash, though not a
    /// process crash, can lose the last commits; the batches are then read
    /// again, so results stay exactly-once only if the lost commits' outside
    /// effects are idempotent.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// How many batch records to keep (default 10 000; at least 1): each
    /// commit deletes the records of batch ids `n` or more below its own.
    pub fn retain_batches(mut self, n: usize) -> Self {
        self.retain_batches = n;
        self
    }

    /// The memory RocksDB may use for the checkpoint, in bytes (default
    /// 128 MiB, at least 4 MiB): one LRU block cache shared by every
    /// family — results, keyed state, offsets — which also holds index and
    /// filter blocks and is charged for the memtables (at most half of
    /// it). State larger than this stays on disk and is read through the
    /// cache, so the process does not grow with the number of keys.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Takes a restore point — a RocksDB hard-link checkpoint of the whole
    /// database, in `<dir>/restore/<batch id>` — right after the commit of
    /// every batch whose id is a multiple of `every`, keeping the newest
    /// `keep` of them (at least 1). Default: off (`every` 0), because a
    /// restore point pins the table files it links: the checkpoint then
    /// needs up to `keep` times the disk of the data that compaction has
    /// since rewritten. With them on, [`RocksCheckpoint::rewind_to`] (and
    /// `sluice rewind`) can bring offsets, results and state back to the
    /// end of any batch that has one.
    ///
    /// A restore point that cannot be taken (a full disk) is logged as a
    /// warning; the batch is committed all the same.
    pub fn restore_points(mut self, every: u64, keep: usize) -> Self {
        self.restore = RestorePolicy { every, keep };
        self
    }

    /// Validates the configuration, then opens or creates the checkpoint.
    ///
    /// A new or empty directory starts a new checkpoint. Anything else must
    /// be a checkpoint of this app id with a schema this build reads;
    /// otherwise the error says what was found and nothing is written.
    pub fn open(self) -> Result<RocksCheckpoint> {
        let app_id = validate(&self.dir, self.app_id.as_deref(), self.retain_batches)?;
        if self.cache_bytes < MIN_CACHE_BYTES {
            return Err(Error::Config {
                path: self.dir,
                reason: format!(
                    "cache_bytes is {}; the checkpoint needs at least {MIN_CACHE_BYTES} bytes (4 MiB)",
                    self.cache_bytes
                ),
            });
        }
        if self.restore.every > 0 && self.restore.keep == 0 {
            return Err(Error::Config {
                path: self.dir,
                reason: format!(
                    "restore_points({}, 0) keeps none; keep at least 1, or turn them off with \
                     every = 0",
                    self.restore.every
                ),
            });
        }
        RocksCheckpoint::open_read_write(
            &self.dir,
            &app_id,
            self.sync,
            self.retain_batches,
            Memory::new(self.cache_bytes),
            self.restore,
        )
    }
}

/// Checks the settings that need no file system; returns the app id.
pub(crate) fn validate(dir: &Path, app_id: Option<&str>, retain_batches: usize) -> Result<String> {
    let config = |reason: &str| Error::Config {
        path: dir.to_owned(),
        reason: reason.to_owned(),
    };
    if dir.as_os_str().is_empty() {
        return Err(config("the checkpoint directory path is empty"));
    }
    let app_id = app_id.ok_or_else(|| config("an app id is required (builder.app_id(..))"))?;
    if app_id.trim().is_empty() {
        return Err(config("the app id is empty"));
    }
    if app_id.chars().any(char::is_control) {
        return Err(config("the app id contains control characters"));
    }
    if retain_batches == 0 {
        return Err(config(
            "retain_batches must be at least 1: the last batch record carries the next batch id",
        ));
    }
    Ok(app_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(dir: &str, app: Option<&str>, retain: usize) -> String {
        match validate(Path::new(dir), app, retain) {
            Err(Error::Config { reason, .. }) => reason,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_plain_configuration() {
        assert_eq!(validate(Path::new("cp"), Some("app"), 1).unwrap(), "app");
    }

    #[test]
    fn rejects_bad_settings_with_a_reason() {
        assert!(reason("", Some("app"), 1).contains("path is empty"));
        assert!(reason("cp", None, 1).contains("app id is required"));
        assert!(reason("cp", Some("  "), 1).contains("app id is empty"));
        assert!(reason("cp", Some("a\nb"), 1).contains("control"));
        assert!(reason("cp", Some("app"), 0).contains("retain_batches"));
    }
}
