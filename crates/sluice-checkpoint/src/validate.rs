//! Pure decisions about what is on disk: is the directory a checkpoint,
//! and may this job use the one it holds.
//!
//! Anything unexpected is an error: a damaged checkpoint silently taken
//! for a first start would re-read or skip data.

use std::num::NonZeroUsize;
use std::path::Path;

use crate::keys::{self, SCHEMA_VERSION};
use crate::{Error, Result};

/// What a checkpoint directory holds, judged from its file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DirKind {
    /// Nothing of value: start a new checkpoint.
    Empty,
    /// A RocksDB database (it has a `CURRENT` file).
    Database,
    /// RocksDB files without `CURRENT`: a damaged database.
    Damaged,
    /// Unrelated files.
    Foreign,
}

/// Classifies a directory from the names of the files it contains.
pub(crate) fn classify_dir<S: AsRef<str>>(names: &[S]) -> DirKind {
    let names = names.iter().map(AsRef::as_ref);
    // LOCK and info logs appear before anything is stored, so a directory
    // holding only them is an interrupted first start.
    let mut names = names
        .filter(|n| *n != "LOCK" && !n.starts_with("LOG"))
        .peekable();
    if names.peek().is_none() {
        return DirKind::Empty;
    }
    let names: Vec<&str> = names.collect();
    if names.contains(&"CURRENT") {
        DirKind::Database
    } else if names.iter().any(|n| is_rocksdb_file(n)) {
        DirKind::Damaged
    } else {
        DirKind::Foreign
    }
}

/// A name RocksDB gives its own files: `MANIFEST-000005`,
/// `OPTIONS-000007`, `IDENTITY`, `000009.sst`, `000004.log` (a number, not
/// any name: `app.log` in a job's working directory is not a WAL).
fn is_rocksdb_file(name: &str) -> bool {
    let number = |digits: &str| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    name == "IDENTITY"
        || name.strip_prefix("MANIFEST-").is_some_and(number)
        || name.strip_prefix("OPTIONS-").is_some_and(number)
        || name.strip_suffix(".sst").is_some_and(number)
        || name.strip_suffix(".log").is_some_and(number)
}

/// What an existing database holds of sluice's metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredMeta {
    /// Every column family of the database.
    pub(crate) families: Vec<String>,
    /// Raw `schema_version` value, when present.
    pub(crate) schema_version: Option<Vec<u8>>,
    /// Raw `app_id` value, when present.
    pub(crate) app_id: Option<Vec<u8>>,
    /// Raw `shuffle_partitions` value, when recorded.
    pub(crate) shuffle_partitions: Option<Vec<u8>>,
    /// Whether any offset, batch record or default-family key is stored.
    pub(crate) has_data: bool,
}

/// Outcome of [`check_meta`] for a usable database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaState {
    /// Initialised checkpoint of the requested app.
    Ready,
    /// A first start that stopped before writing its metadata; it holds no
    /// data, so initialising it again loses nothing.
    Unfinished,
}

/// Decides whether the job `app_id` may use a database holding `meta`.
pub(crate) fn check_meta(path: &Path, meta: &StoredMeta, app_id: &str) -> Result<MetaState> {
    let has = |name: &str| meta.families.iter().any(|f| f == name);
    if meta.schema_version.is_none() && meta.app_id.is_none() {
        let only_sluice_families = meta
            .families
            .iter()
            .all(|f| f == "default" || keys::INTERNAL.contains(&f.as_str()));
        if only_sluice_families && !meta.has_data {
            return Ok(MetaState::Unfinished);
        }
        let detail = if has(keys::META) {
            "its metadata (schema version, app id) is missing"
        } else {
            "it has no sluice_meta family (not a sluice checkpoint, or damaged)"
        };
        return Err(Error::corrupt(path, detail));
    }
    let raw = meta
        .schema_version
        .as_deref()
        .ok_or_else(|| Error::corrupt(path, "its schema version is missing"))?;
    let found = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            Error::corrupt(
                path,
                format!(
                    "its schema version {:?} is not a version number",
                    String::from_utf8_lossy(raw)
                ),
            )
        })?;
    if found > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if let Some(missing) = keys::INTERNAL.iter().find(|f| !has(f)) {
        return Err(Error::corrupt(
            path,
            format!("its {missing} family is missing"),
        ));
    }
    let stored = meta
        .app_id
        .as_deref()
        .ok_or_else(|| Error::corrupt(path, "its app id is missing"))?;
    let stored =
        std::str::from_utf8(stored).map_err(|_| Error::corrupt(path, "its app id is not UTF-8"))?;
    if stored != app_id {
        return Err(Error::AppIdMismatch {
            path: path.to_owned(),
            stored: stored.to_owned(),
            requested: app_id.to_owned(),
        });
    }
    if let Some(raw) = &meta.shuffle_partitions {
        parse_shuffle_partitions(path, raw)?;
    }
    Ok(MetaState::Ready)
}

/// Reads a recorded shuffle partition count: a positive decimal number.
pub(crate) fn parse_shuffle_partitions(path: &Path, raw: &[u8]) -> Result<NonZeroUsize> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<NonZeroUsize>().ok())
        .ok_or_else(|| {
            Error::corrupt(
                path,
                format!(
                    "its recorded shuffle partition count {:?} is not a positive number",
                    String::from_utf8_lossy(raw)
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<String> {
        ["default", keys::META, keys::OFFSETS, keys::BATCHES]
            .map(String::from)
            .to_vec()
    }

    fn ready(app: &str) -> StoredMeta {
        StoredMeta {
            families: families(),
            schema_version: Some(b"1".to_vec()),
            app_id: Some(app.as_bytes().to_vec()),
            shuffle_partitions: None,
            has_data: true,
        }
    }

    fn check(meta: &StoredMeta) -> Result<MetaState> {
        check_meta(Path::new("/cp"), meta, "app")
    }

    #[test]
    fn classifies_directories() {
        assert_eq!(classify_dir::<&str>(&[]), DirKind::Empty);
        assert_eq!(classify_dir(&["LOCK", "LOG", "LOG.old.1"]), DirKind::Empty);
        assert_eq!(
            classify_dir(&["CURRENT", "MANIFEST-000005", "000004.log"]),
            DirKind::Database
        );
        assert_eq!(
            classify_dir(&["MANIFEST-000005", "000009.sst"]),
            DirKind::Damaged
        );
        assert_eq!(classify_dir(&["notes.txt"]), DirKind::Foreign);
    }

    /// Regression: any `*.log` file made a directory a damaged checkpoint,
    /// so `/tmp` or a job's log directory was "corrupt: delete it".
    #[test]
    fn files_named_like_rocksdbs_only_by_their_suffix_are_foreign() {
        for names in [
            &["app.log", "notes.txt"][..],
            &["job.log"],
            &["data.sst", "MANIFEST-old", "OPTIONS-"],
        ] {
            assert_eq!(classify_dir(names), DirKind::Foreign, "{names:?}");
        }
        for name in [
            "000004.log",
            "000009.sst",
            "MANIFEST-000005",
            "OPTIONS-000007",
            "IDENTITY",
        ] {
            assert_eq!(classify_dir(&[name, "app.log"]), DirKind::Damaged, "{name}");
        }
    }

    #[test]
    fn accepts_own_checkpoint() {
        assert_eq!(check(&ready("app")).unwrap(), MetaState::Ready);
    }

    #[test]
    fn rejects_other_app() {
        let err = check(&ready("other")).unwrap_err();
        assert!(
            matches!(err, Error::AppIdMismatch { ref stored, ref requested, .. }
                if stored == "other" && requested == "app"),
            "{err}"
        );
    }

    #[test]
    fn rejects_newer_schema_before_reading_anything_else() {
        let meta = StoredMeta {
            schema_version: Some(b"2".to_vec()),
            app_id: None,
            families: vec!["default".into(), keys::META.into()],
            ..ready("app")
        };
        assert!(matches!(
            check(&meta).unwrap_err(),
            Error::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_recorded_shuffle_partition_count_must_be_a_positive_number() {
        let with = |raw: &[u8]| StoredMeta {
            shuffle_partitions: Some(raw.to_vec()),
            ..ready("app")
        };
        assert_eq!(check(&with(b"12")).unwrap(), MetaState::Ready);
        for raw in [&b"0"[..], b"-3", b"", b"twelve", b"0x10", b"\xff"] {
            let err = check(&with(raw)).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { detail, .. } if detail.contains("shuffle partition")),
                "{raw:?}: {err}"
            );
        }
        assert_eq!(
            parse_shuffle_partitions(Path::new("/cp"), b"12")
                .unwrap()
                .get(),
            12
        );
    }

    #[test]
    fn missing_metadata_with_data_is_corrupt() {
        let meta = StoredMeta {
            schema_version: None,
            app_id: None,
            ..ready("app")
        };
        assert!(matches!(check(&meta).unwrap_err(), Error::Corrupt { .. }));
    }

    #[test]
    fn missing_metadata_without_data_is_an_unfinished_first_start() {
        let meta = StoredMeta {
            schema_version: None,
            app_id: None,
            has_data: false,
            ..ready("app")
        };
        assert_eq!(check(&meta).unwrap(), MetaState::Unfinished);
    }

    #[test]
    fn foreign_database_is_corrupt_even_when_empty_of_sluice_data() {
        let meta = StoredMeta {
            families: vec!["default".into(), "theirs".into()],
            has_data: false,
            ..StoredMeta::default()
        };
        assert!(matches!(check(&meta).unwrap_err(), Error::Corrupt { .. }));
    }

    #[test]
    fn half_written_metadata_is_corrupt() {
        for meta in [
            StoredMeta {
                app_id: None,
                ..ready("app")
            },
            StoredMeta {
                schema_version: None,
                ..ready("app")
            },
            StoredMeta {
                schema_version: Some(b"one".to_vec()),
                ..ready("app")
            },
            StoredMeta {
                schema_version: Some(b"0".to_vec()),
                ..ready("app")
            },
            StoredMeta {
                families: vec!["default".into(), keys::META.into()],
                ..ready("app")
            },
        ] {
            assert!(matches!(check(&meta).unwrap_err(), Error::Corrupt { .. }));
        }
    }
}
