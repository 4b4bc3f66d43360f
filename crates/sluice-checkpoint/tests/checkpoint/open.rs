//! Opening: first start, app id and schema checks, damage and locking.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use sluice_checkpoint::{CheckpointStore, Error, RocksCheckpoint};
use sluice_core::WriteSet;
use tempfile::TempDir;

use crate::util::{commit, open, raw_db, tp, APP};

/// A checkpoint with one committed batch, closed.
fn committed_checkpoint() -> TempDir {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path()).unwrap();
    commit(&mut store, 0, &[(tp("t", 0), 10)], WriteSet::new()).unwrap();
    dir
}

fn assert_corrupt(dir: &Path) {
    match open(dir) {
        Err(err @ Error::Corrupt { .. }) => {
            assert!(err.to_string().contains("corrupt"), "{err}")
        }
        other => panic!("expected a corrupt checkpoint error, got {other:?}"),
    }
}

#[test]
fn new_directory_is_created() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a/b/checkpoint");
    open(&path).unwrap();
    assert!(path.join("CURRENT").is_file());
}

#[test]
fn app_id_is_required() {
    let dir = TempDir::new().unwrap();
    let err = RocksCheckpoint::builder(dir.path()).open().unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn another_apps_checkpoint_is_refused() {
    let dir = committed_checkpoint();
    let err = RocksCheckpoint::builder(dir.path())
        .app_id("billing")
        .open()
        .unwrap_err();
    match err {
        Error::AppIdMismatch {
            stored, requested, ..
        } => assert_eq!((stored.as_str(), requested.as_str()), (APP, "billing")),
        other => panic!("expected an app id mismatch, got {other:?}"),
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = committed_checkpoint();
    {
        let db = raw_db(dir.path());
        let meta = db.cf_handle("sluice_meta").unwrap();
        db.put_cf(meta, "schema_version", "2").unwrap();
    }
    match open(dir.path()) {
        Err(Error::NewerSchema {
            found, supported, ..
        }) => assert_eq!((found, supported), (2, 1)),
        other => panic!("expected a newer schema error, got {other:?}"),
    }
}

#[test]
fn deleted_metadata_is_corrupt_not_a_first_start() {
    let dir = committed_checkpoint();
    {
        let db = raw_db(dir.path());
        let meta = db.cf_handle("sluice_meta").unwrap();
        db.delete_cf(meta, "schema_version").unwrap();
        db.delete_cf(meta, "app_id").unwrap();
    }
    assert_corrupt(dir.path());
}

#[test]
fn garbled_current_file_is_corrupt() {
    let dir = committed_checkpoint();
    std::fs::write(dir.path().join("CURRENT"), "MANIFEST-999999\n").unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn truncated_current_file_is_corrupt() {
    let dir = committed_checkpoint();
    std::fs::write(dir.path().join("CURRENT"), "").unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn missing_current_file_is_corrupt() {
    let dir = committed_checkpoint();
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn garbled_manifest_is_corrupt() {
    let dir = committed_checkpoint();
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let manifest = dir.path().join(current.trim());
    let len = std::fs::metadata(&manifest).unwrap().len();
    std::fs::write(&manifest, vec![0xA5; len as usize]).unwrap();
    assert_corrupt(dir.path());
}

#[test]
fn unrelated_directory_is_left_alone() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotACheckpoint { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn regular_file_path_is_a_config_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = open(&file).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn interrupted_first_start_is_completed() {
    let dir = TempDir::new().unwrap();
    // What a crash before the metadata write leaves: a database without data.
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        rocksdb::DB::open(&options, dir.path()).unwrap();
    }
    let mut store = open(dir.path()).unwrap();
    commit(&mut store, 0, &[(tp("t", 0), 1)], WriteSet::new()).unwrap();
    drop(store);
    let err = RocksCheckpoint::builder(dir.path())
        .app_id("other")
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::AppIdMismatch { .. }), "{err}");
}

#[test]
fn second_handle_is_locked_until_the_first_is_dropped() {
    let dir = TempDir::new().unwrap();
    let first = open(dir.path()).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another sluice process"), "{err}");
    drop(first);
    open(dir.path()).unwrap();
}

const HOLDER_DIR: &str = "SLUICE_TEST_LOCK_HOLDER_DIR";

/// Run by `another_process_holds_the_lock` in a child process: holds the
/// checkpoint open until its stdin closes.
#[test]
#[ignore = "helper process for another_process_holds_the_lock"]
fn lock_holder() {
    let Some(dir) = std::env::var_os(HOLDER_DIR) else {
        return;
    };
    let _store = open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "HOLDING").unwrap();
    out.flush().unwrap();
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
}

#[test]
fn another_process_holds_the_lock() {
    let dir = committed_checkpoint();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["open::lock_holder", "--exact", "--ignored", "--nocapture"])
        .env(HOLDER_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|line| line.unwrap() == "HOLDING"),
        "the helper process did not open the checkpoint"
    );

    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");

    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let store = open(dir.path()).unwrap();
    assert_eq!(store.offsets().unwrap()[&tp("t", 0)], 10);
}
