//! Restore points: RocksDB's own hard-link checkpoints of the whole
//! database, taken right after the commit of every K-th batch and kept in
//! `<checkpoint dir>/restore/<batch id>`, so the checkpoint can be rewound
//! to the state right after that batch — offsets, results and keyed state
//! together (`RocksCheckpoint::rewind_to`).
//!
//! Which batches get one and which are deleted are plain functions here;
//! taking, listing and reading them is I/O in `rocks.rs`.

use std::path::{Path, PathBuf};

/// The subdirectory of the checkpoint holding restore points. RocksDB
/// ignores a directory it did not create.
pub(crate) const RESTORE_DIR: &str = "restore";

/// When restore points are taken and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestorePolicy {
    /// A restore point after every batch whose id is a multiple of this;
    /// 0 turns restore points off.
    pub(crate) every: u64,
    /// How many of the newest restore points are kept (at least 1 when on).
    pub(crate) keep: usize,
}

impl RestorePolicy {
    /// No restore points: the default.
    pub(crate) const OFF: Self = Self { every: 0, keep: 0 };

    /// Whether the commit of batch `id` is followed by a restore point.
    pub(crate) fn is_due(&self, id: u64) -> bool {
        self.every > 0 && id % self.every == 0
    }
}

/// The restore points to delete once `existing` (batch ids, any order) are
/// on disk: all but the newest `keep`, oldest first.
pub(crate) fn expired(existing: &[u64], keep: usize) -> Vec<u64> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable();
    let excess = sorted.len().saturating_sub(keep);
    sorted.truncate(excess);
    sorted
}

/// The restore points of batches after `batch`: a history that a rewind to
/// `batch` makes never happen, deleted with it.
pub(crate) fn after(existing: &[u64], batch: u64) -> Vec<u64> {
    let mut later: Vec<u64> = existing.iter().copied().filter(|&id| id > batch).collect();
    later.sort_unstable();
    later
}

/// The batch id a restore point directory is named after; `None` for
/// anything else (RocksDB's `<id>.tmp` of a restore point being taken).
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Where the restore point of batch `id` lives.
pub(crate) fn path_of(checkpoint: &Path, id: u64) -> PathBuf {
    checkpoint.join(RESTORE_DIR).join(id.to_string())
}

/// The batch ids of the restore points under `checkpoint`, ascending;
/// empty when there are none.
pub(crate) fn list(checkpoint: &Path) -> std::io::Result<Vec<u64>> {
    let dir = checkpoint.join(RESTORE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_name) {
            if entry.path().join("CURRENT").is_file() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn due_every_kth_batch_and_never_when_off() {
        let every_10 = RestorePolicy { every: 10, keep: 3 };
        let due: Vec<u64> = (0..35).filter(|&id| every_10.is_due(id)).collect();
        assert_eq!(due, [0, 10, 20, 30]);
        assert!((0..1000).all(|id| !RestorePolicy::OFF.is_due(id)));
        let every_1 = RestorePolicy { every: 1, keep: 1 };
        assert!((0..10).all(|id| every_1.is_due(id)));
    }

    #[test]
    fn retention_keeps_the_newest() {
        assert_eq!(expired(&[30, 0, 20, 10], 2), [0, 10]);
        assert_eq!(expired(&[10, 20], 5), Vec::<u64>::new());
        assert_eq!(expired(&[10], 0), [10]);
    }

    #[test]
    fn a_rewind_drops_the_later_points_only() {
        assert_eq!(after(&[40, 10, 20, 30], 20), [30, 40]);
        assert_eq!(after(&[10, 20], 20), Vec::<u64>::new());
    }

    #[test]
    fn only_numeric_names_are_restore_points() {
        assert_eq!(parse_name("120"), Some(120));
        assert_eq!(parse_name("120.tmp"), None);
        assert_eq!(parse_name(""), None);
        assert_eq!(parse_name("-1"), None);
        assert_eq!(parse_name("99999999999999999999999"), None);
    }

    proptest! {
        #[test]
        fn retention_keeps_exactly_min_of_keep_and_count(
            ids in proptest::collection::btree_set(any::<u64>(), 0..20),
            keep in 0usize..25,
        ) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let gone = expired(&ids, keep);
            prop_assert_eq!(ids.len() - gone.len(), keep.min(ids.len()));
            // Every deleted point is older than every kept one.
            let kept: Vec<&u64> = ids.iter().filter(|id| !gone.contains(id)).collect();
            if let (Some(newest_gone), Some(oldest_kept)) = (gone.last(), kept.first()) {
                prop_assert!(newest_gone < oldest_kept);
            }
        }
    }
}
