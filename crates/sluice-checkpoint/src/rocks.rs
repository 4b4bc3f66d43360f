//! [`RocksCheckpoint`]: the [`CheckpointStore`] kept in a RocksDB database.
//!
//! Layout: `sluice_meta` (schema version, app id, shuffle partitions, the
//! plan of the batch about to run), `sluice_offsets` (next
//! offset per partition), `sluice_batches` (batch records by id), plus one
//! column family per user family. Every family has the counter merge
//! operator so `Write::Add` works anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, Direction, ErrorKind,
    IteratorMode, MultiThreaded, Options, ReadOptions, WriteBatch, WriteOptions,
};
use sluice_core::state::{family_of, shape_of, StateDescriptor, StateStore, STATE_FAMILY_PREFIX};
use sluice_core::{TopicPartition, Write};

use crate::keys::{self, SCHEMA_VERSION};
use crate::memory::{Memory, DEFAULT_CACHE_BYTES};
use crate::restore::{self, RestorePolicy};
use crate::state::{plan_states, RocksState};
use crate::validate::{
    check_meta, classify_dir, parse_shuffle_partitions, DirKind, MetaState, StoredMeta,
};
use crate::{
    builder, BatchRecord, CheckpointStore, Commit, ControlRecord, Error, Result,
    RocksCheckpointBuilder, StateChanges, StateRecord,
};

/// The database: multi-threaded, so state readers on worker threads share
/// it with the driver's writer.
pub(crate) type Db = DBWithThreadMode<MultiThreaded>;

/// A column family handle.
pub(crate) type Family<'a> = Arc<BoundColumnFamily<'a>>;

/// A raw key/value pair read from RocksDB.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A checkpoint stored in a RocksDB database directory.
///
/// Opened for writing with [`RocksCheckpoint::builder`], which takes the
/// database's lock so one process at a time owns the checkpoint; tools that
/// only read use [`RocksCheckpoint::open_read_only`], which works while a
/// writer runs and sees what was committed before it opened.
///
/// ```
/// # fn main() -> sluice_checkpoint::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// use sluice_checkpoint::{CheckpointStore, RocksCheckpoint};
///
/// let store = RocksCheckpoint::builder(dir.path()).app_id("wordcount").open()?;
/// assert!(store.offsets()?.is_empty(), "a new checkpoint is a first start");
/// # Ok(()) }
/// ```
pub struct RocksCheckpoint {
    db: Arc<Db>,
    path: PathBuf,
    read_only: bool,
    sync: bool,
    retain_batches: usize,
    /// The cache and memtable budget every family is opened with.
    memory: Memory,
    /// When restore points are taken and how many are kept.
    restore: RestorePolicy,
    /// Every column family, internal ones included.
    families: BTreeSet<String>,
    /// Id of the last committed batch.
    last_id: Option<u64>,
    /// No batch record below this id is stored, so expiring old records
    /// seeks straight past the ones already deleted.
    oldest_kept: u64,
}

impl RocksCheckpoint {
    /// Starts configuring the checkpoint in directory `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> RocksCheckpointBuilder {
        RocksCheckpointBuilder::new(dir)
    }

    /// Opens the checkpoint of `app_id` in `dir` for reading only.
    ///
    /// Works while a writer holds the checkpoint; the handle sees the
    /// commits made before it opened. [`CheckpointStore::commit`] and
    /// [`CheckpointStore::ensure_family`] return [`Error::ReadOnly`].
    pub fn open_read_only(dir: impl AsRef<Path>, app_id: &str) -> Result<Self> {
        let path = dir.as_ref().to_owned();
        let app_id = builder::validate(&path, Some(app_id), 1)?;
        match inspect_dir(&path)? {
            DirKind::Database => {}
            DirKind::Empty => return Err(Error::Missing { path }),
            DirKind::Damaged => return Err(missing_current(path)),
            DirKind::Foreign => return Err(Error::NotACheckpoint { path }),
        }
        let memory = Memory::new(DEFAULT_CACHE_BYTES);
        let (db, families) = open_db_read_only(&path, &memory)?;
        let mut store = Self::new(db, path, families, memory, true, false, 1);
        store.restore = RestorePolicy::OFF;
        match check_meta(&store.path, &store.stored_meta()?, &app_id)? {
            MetaState::Ready => {}
            // A first start is still writing its metadata: nothing to read.
            MetaState::Unfinished => return Err(Error::Missing { path: store.path }),
        }
        store.load_batch_bounds()?;
        tracing::debug!(path = %store.path.display(), "opened checkpoint read-only");
        Ok(store)
    }

    /// The checkpoint directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for handles made by [`RocksCheckpoint::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Names of the user families, sorted.
    pub fn families(&self) -> impl Iterator<Item = &str> {
        self.families
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "default" && !keys::is_reserved(f))
    }

    pub(crate) fn open_read_write(
        dir: &Path,
        app_id: &str,
        sync: bool,
        retain_batches: usize,
        memory: Memory,
        restore: RestorePolicy,
    ) -> Result<Self> {
        let path = dir.to_owned();
        let (families, create) = match inspect_dir(&path)? {
            DirKind::Foreign => return Err(Error::NotACheckpoint { path }),
            DirKind::Damaged => return Err(missing_current(path)),
            DirKind::Database => (list_families(&path)?, false),
            DirKind::Empty => {
                std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    operation: "create checkpoint directory",
                    source,
                })?;
                let new = ["default"].iter().chain(&keys::INTERNAL);
                (new.map(|f| f.to_string()).collect(), true)
            }
        };
        let db = Db::open_cf_descriptors(
            &memory.db_options(create),
            &path,
            descriptors(&memory, &families),
        )
        .map_err(|e| open_error(&path, e))?;
        let mut store = Self::new(db, path, families, memory, false, sync, retain_batches);
        store.restore = restore;
        match check_meta(&store.path, &store.stored_meta()?, app_id)? {
            MetaState::Ready => {}
            MetaState::Unfinished => store.initialise(app_id)?,
        }
        store.load_batch_bounds()?;
        // Restore points past the last batch belong to a history a rewind
        // undid and a crash kept it from deleting.
        let points = store.restore_points()?;
        let stale = match store.last_id {
            Some(last) => restore::after(&points, last),
            None => points,
        };
        store.remove_restore_points(&stale)?;
        tracing::info!(
            path = %store.path.display(),
            app_id,
            last_batch = ?store.last_id,
            "opened checkpoint"
        );
        Ok(store)
    }

    fn new(
        db: Db,
        path: PathBuf,
        families: BTreeSet<String>,
        memory: Memory,
        read_only: bool,
        sync: bool,
        retain_batches: usize,
    ) -> Self {
        Self {
            db: Arc::new(db),
            memory,
            path,
            read_only,
            sync,
            retain_batches,
            families,
            last_id: None,
            oldest_kept: 0,
            restore: RestorePolicy::OFF,
        }
    }

    /// Writes the metadata of a new checkpoint, synced whatever the sync
    /// setting: until it is on disk the directory is not a checkpoint.
    fn initialise(&mut self, app_id: &str) -> Result<()> {
        for family in keys::INTERNAL {
            if !self.families.contains(family) {
                self.db
                    .create_cf(family, &self.memory.family_options())
                    .map_err(self.rocks_error("create internal families in"))?;
                self.families.insert(family.to_owned());
            }
        }
        let meta = self.internal(keys::META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(&meta, keys::META_SCHEMA_VERSION, SCHEMA_VERSION.to_string());
        batch.put_cf(&meta, keys::META_APP_ID, app_id);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(self.rocks_error("initialise"))?;
        tracing::info!(path = %self.path.display(), app_id, "created checkpoint");
        Ok(())
    }

    fn stored_meta(&self) -> Result<StoredMeta> {
        let mut meta = StoredMeta {
            families: self.families.iter().cloned().collect(),
            ..StoredMeta::default()
        };
        if let Some(cf) = self.db.cf_handle(keys::META) {
            let get = |key| self.db.get_cf(&cf, key).map_err(self.rocks_error("read"));
            meta.schema_version = get(keys::META_SCHEMA_VERSION)?;
            meta.app_id = get(keys::META_APP_ID)?;
            meta.shuffle_partitions = get(keys::META_SHUFFLE_PARTITIONS)?;
        }
        for family in ["default", keys::OFFSETS, keys::BATCHES] {
            if let Some(cf) = self.db.cf_handle(family) {
                let first = self.db.iterator_cf(&cf, IteratorMode::Start).next();
                if first
                    .transpose()
                    .map_err(self.rocks_error("read"))?
                    .is_some()
                {
                    meta.has_data = true;
                }
            }
        }
        Ok(meta)
    }

    /// Finds the oldest and newest stored batch ids; two seeks, however
    /// long the history.
    fn load_batch_bounds(&mut self) -> Result<()> {
        let cf = self.internal(keys::BATCHES)?;
        let edge = |mode| -> Result<Option<u64>> {
            let Some(entry) = self.db.iterator_cf(&cf, mode).next() else {
                return Ok(None);
            };
            let (key, _) = entry.map_err(self.rocks_error("read"))?;
            keys::decode_batch_key(&key).map(Some).ok_or_else(|| {
                Error::corrupt(&self.path, format!("batch record key {key:?} is malformed"))
            })
        };
        let (oldest, last) = (edge(IteratorMode::Start)?, edge(IteratorMode::End)?);
        drop(cf);
        self.oldest_kept = oldest.unwrap_or(0);
        self.last_id = last;
        Ok(())
    }

    /// Keys of the stored batch records with ids in `[self.oldest_kept, until)`.
    fn batch_keys_before(&self, cf: &Family<'_>, until: u64) -> Result<Vec<Box<[u8]>>> {
        if until <= self.oldest_kept {
            return Ok(Vec::new());
        }
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::batch_key(until));
        let from = keys::batch_key(self.oldest_kept);
        self.db
            .iterator_cf_opt(cf, options, IteratorMode::From(&from, Direction::Forward))
            .map(|entry| Ok(entry.map_err(self.rocks_error("read"))?.0))
            .collect()
    }

    fn writable(&self, operation: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
                operation,
            });
        }
        Ok(())
    }

    fn internal(&self, family: &str) -> Result<Family<'_>> {
        self.db
            .cf_handle(family)
            .ok_or_else(|| Error::corrupt(&self.path, format!("its {family} family is missing")))
    }

    fn user_family(&self, family: &str) -> Result<Family<'_>> {
        if keys::is_reserved(family) && !family.starts_with(STATE_FAMILY_PREFIX) {
            return Err(Error::ReservedFamily {
                family: family.to_owned(),
            });
        }
        self.db
            .cf_handle(family)
            .ok_or_else(|| Error::UnknownFamily {
                path: self.path.clone(),
                family: family.to_owned(),
            })
    }

    /// `family` for a read: as [`Self::user_family`], but a missing
    /// family is named with the families the checkpoint holds, since no
    /// `ensure_family` on the reader's side would help.
    fn readable_family(&self, family: &str) -> Result<Family<'_>> {
        self.user_family(family).map_err(|error| match error {
            Error::UnknownFamily { path, family } => Error::NoSuchFamily {
                path,
                family,
                held: self.families().map(str::to_owned).collect(),
            },
            other => other,
        })
    }

    fn iterate<'a>(&'a self, cf: Family<'a>) -> impl Iterator<Item = Result<Entry>> + 'a {
        self.db
            .iterator_cf(&cf, IteratorMode::Start)
            .map(|entry| entry.map_err(self.rocks_error("read")))
    }

    /// Every `(key, state)` of the state named `name`, decoded as `K` and
    /// `S` — the types its operator was given — by key partition: for
    /// tools and tests. Works on a read-only handle while the job runs.
    ///
    /// Before decoding anything, the serde shapes of `K` and `S` are
    /// compared with those the checkpoint recorded for the state (as a
    /// job's start does): other types are refused with [`Error::State`]
    /// naming both shapes, rather than decoded into garbage. Every state
    /// the checkpoint holds has its shapes recorded (they are part of its
    /// registry since states were first kept), so there is no unchecked
    /// case. A window operator keeps its own layout, whose shape no public
    /// type has: read it with `sluice state dump` instead.
    pub fn read_state<K, S>(&self, name: &str) -> Result<Vec<(K, S)>>
    where
        K: serde::de::DeserializeOwned,
        S: serde::de::DeserializeOwned,
    {
        let states = self.states()?;
        let Some(record) = states.iter().find(|s| s.name == name) else {
            let held: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
            return Err(
                self.state_error(name, format!("is not in the checkpoint; it holds {held:?}"))
            );
        };
        let (key_shape, state_shape) = (shape_of::<K>(), shape_of::<S>());
        if record.key_shape != key_shape || record.state_shape != state_shape {
            return Err(self.state_error(
                name,
                format!(
                    "cannot be read with these types: the checkpoint holds key type {} and \
                     state type {} (kept by a {}), but key type {key_shape} and state type \
                     {state_shape} were asked for; read it with the types its operator was given",
                    record.key_shape, record.state_shape, record.operator
                ),
            ));
        }
        sluice_core::state::read_state(self.state_store().as_ref(), name)
            .map_err(|e| self.state_error(name, format!("cannot be read: {e}")))
    }

    /// The app id stored in the checkpoint at `dir`, read without knowing
    /// it: for tools that are pointed at a directory. Works while a job
    /// holds the checkpoint.
    pub fn app_id_at(dir: impl AsRef<Path>) -> Result<String> {
        let path = dir.as_ref().to_owned();
        match inspect_dir(&path)? {
            DirKind::Database => {}
            DirKind::Empty => return Err(Error::Missing { path }),
            DirKind::Damaged => return Err(missing_current(path)),
            DirKind::Foreign => return Err(Error::NotACheckpoint { path }),
        }
        if !list_families(&path)?.contains(keys::META) {
            return Err(Error::NotACheckpoint { path });
        }
        let memory = Memory::new(crate::memory::MIN_CACHE_BYTES);
        let (db, _) = open_db_read_only(&path, &memory)?;
        let meta = db
            .cf_handle(keys::META)
            .ok_or_else(|| Error::NotACheckpoint { path: path.clone() })?;
        let raw = db
            .get_cf(&meta, keys::META_APP_ID)
            .map_err(|source| Error::Rocks {
                path: path.clone(),
                operation: "read",
                source,
            })?;
        let raw = raw.ok_or_else(|| Error::Missing { path: path.clone() })?;
        String::from_utf8(raw).map_err(|_| Error::corrupt(&path, "its app id is not UTF-8"))
    }

    /// The schema version the checkpoint was written with.
    pub fn schema_version(&self) -> Result<u32> {
        let raw = self
            .db
            .get_cf(&self.internal(keys::META)?, keys::META_SCHEMA_VERSION)
            .map_err(self.rocks_error("read"))?
            .ok_or_else(|| Error::corrupt(&self.path, "its schema version is missing"))?;
        std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::corrupt(&self.path, "its schema version is not a number"))
    }

    /// Every column family with RocksDB's estimates of its size, internal
    /// ones included (the `default` family, always empty, left out).
    pub fn family_stats(&self) -> Result<Vec<FamilyStats>> {
        let mut stats = Vec::new();
        for name in self.families.iter().filter(|f| *f != "default") {
            let cf = self.internal(name)?;
            let property = |key: &str| -> Result<u64> {
                Ok(self
                    .db
                    .property_int_value_cf(&cf, key)
                    .map_err(self.rocks_error("read the properties of"))?
                    .unwrap_or(0))
            };
            stats.push(FamilyStats {
                name: name.clone(),
                estimated_keys: property("rocksdb.estimate-num-keys")?,
                sst_bytes: property("rocksdb.total-sst-files-size")?,
                memtable_bytes: property("rocksdb.size-all-mem-tables")?,
            });
        }
        Ok(stats)
    }

    /// The batch ids that have a restore point, ascending.
    pub fn restore_points(&self) -> Result<Vec<u64>> {
        restore::list(&self.path).map_err(|source| Error::Io {
            path: self.path.join(restore::RESTORE_DIR),
            operation: "list the restore points in",
            source,
        })
    }

    /// Takes the restore point of batch `id` (just committed), then deletes
    /// the ones past the retention.
    fn take_restore_point(&self, id: u64) -> Result<()> {
        let started = std::time::Instant::now();
        let target = restore::path_of(&self.path, id);
        let io = |operation: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                path,
                operation,
                source,
            }
        };
        let parent = self.path.join(restore::RESTORE_DIR);
        std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
        // Left by a restore point interrupted while being taken.
        for stale in [target.clone(), target.with_extension("tmp")] {
            if stale.exists() {
                std::fs::remove_dir_all(&stale).map_err(io("remove", &stale))?;
            }
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(&target))
            .map_err(self.rocks_error("take a restore point of"))?;
        let expired = restore::expired(&self.restore_points()?, self.restore.keep);
        self.remove_restore_points(&expired)?;
        tracing::debug!(
            batch = id,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            expired = ?expired,
            "took a restore point"
        );
        Ok(())
    }

    fn remove_restore_points(&self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            let path = restore::path_of(&self.path, id);
            std::fs::remove_dir_all(&path).map_err(|source| Error::Io {
                path,
                operation: "remove the restore point",
                source,
            })?;
        }
        Ok(())
    }

    /// Opens the restore point of `batch` read-only, or says which exist.
    fn open_restore_point(&self, batch: u64) -> Result<(Db, BTreeSet<String>, PathBuf)> {
        let available = self.restore_points()?;
        if !available.contains(&batch) {
            return Err(Error::NoRestorePoint {
                path: self.path.clone(),
                batch,
                available,
            });
        }
        let path = restore::path_of(&self.path, batch);
        let bad = |reason: String| Error::BadRestorePoint {
            path: path.clone(),
            reason,
        };
        let families = list_families(&path).map_err(|e| bad(e.to_string()))?;
        let db = Db::open_cf_descriptors_read_only(
            &self.memory.db_options(false),
            &path,
            descriptors(&self.memory, &families),
            false,
        )
        .map_err(|e| bad(e.to_string()))?;
        let meta = db
            .cf_handle(keys::META)
            .ok_or_else(|| bad("it has no sluice_meta family".into()))?;
        let theirs: Option<Vec<u8>> = db.get_cf(&meta, keys::META_APP_ID).ok().flatten();
        let own_meta = self.internal(keys::META)?;
        let ours: Option<Vec<u8>> = self.db.get_cf(&own_meta, keys::META_APP_ID).ok().flatten();
        drop(own_meta);
        if theirs != ours {
            return Err(bad("it belongs to another app".into()));
        }
        drop(meta);
        Ok((db, families, path))
    }

    /// What [`rewind_to`](Self::rewind_to) would change, without changing
    /// anything: the `--dry-run` of `sluice rewind`.
    pub fn rewind_plan(&self, batch: u64) -> Result<RewindPlan> {
        let (db, families, path) = self.open_restore_point(batch)?;
        let restored = RocksCheckpoint::new(
            db,
            path.clone(),
            families,
            self.memory.clone(),
            true,
            false,
            1,
        );
        let batches_removed = self
            .batches()?
            .into_iter()
            .map(|b| b.id)
            .filter(|&id| id > batch)
            .collect();
        Ok(RewindPlan {
            batch,
            restore_point: path,
            last_batch: self.last_id,
            offsets_before: self.offsets()?,
            offsets_after: restored.offsets()?,
            batches_removed,
            restore_points_removed: restore::after(&self.restore_points()?, batch),
            states_after: restored.states()?.into_iter().map(|s| s.name).collect(),
        })
    }

    /// Brings the checkpoint back to the state right after batch `batch`:
    /// offsets, batch history, result families and keyed state all come
    /// from its restore point, in one atomic, synced write (a crash leaves
    /// the checkpoint either as it was or rewound). The restore points of
    /// later batches are deleted after the write.
    ///
    /// Families created after `batch` are left empty; a state registered
    /// after it is dropped by the next start of the job, which no longer
    /// finds it registered. The write holds the restore point's data in
    /// memory once.
    ///
    /// Fails with [`Error::NoRestorePoint`], listing the ones there are,
    /// when `batch` has none.
    pub fn rewind_to(&mut self, batch: u64) -> Result<RewindPlan> {
        self.writable("rewind")?;
        let plan = self.rewind_plan(batch)?;
        // A pause is the operator's, not the data's: it stays as it is.
        let paused = self.paused_since()?;
        let (source, source_families, _) = self.open_restore_point(batch)?;
        for family in &source_families {
            if !self.families.contains(family) {
                self.db
                    .create_cf(family, &self.memory.family_options())
                    .map_err(self.rocks_error("create a family in"))?;
                self.families.insert(family.clone());
            }
        }
        let mut write = WriteBatch::default();
        for family in &self.families {
            let cf = self.internal(family)?;
            let last = self.db.iterator_cf(&cf, IteratorMode::End).next();
            if let Some(entry) = last {
                let (last, _) = entry.map_err(self.rocks_error("read"))?;
                // Later operations of a write batch win over earlier ones,
                // so the puts below survive this range deletion.
                write.delete_range_cf(&cf, [].as_slice(), &last[..]);
                write.delete_cf(&cf, &last);
            }
        }
        for family in &source_families {
            let (from, to) = (
                source
                    .cf_handle(family)
                    .ok_or_else(|| Error::corrupt(&plan.restore_point, "a family vanished"))?,
                self.internal(family)?,
            );
            for entry in source.iterator_cf(&from, IteratorMode::Start) {
                let (key, value) = entry.map_err(self.rocks_error("read a restore point of"))?;
                write.put_cf(&to, key, value);
            }
        }
        // The history keeps a trace of the jump: the record of the batch
        // rewound to notes it, as a control entry (`sluice batches` shows it).
        if let (Some(last), Some(json)) = (
            plan.last_batch.filter(|last| *last > batch),
            source
                .cf_handle(keys::BATCHES)
                .and_then(|cf| source.get_cf(&cf, keys::batch_key(batch)).transpose())
                .transpose()
                .map_err(self.rocks_error("read a restore point of"))?,
        ) {
            let mut record = self.decode_batch(batch, &json)?;
            record.control.push(ControlRecord::new(
                now_ms(),
                format!(
                    "rewound to this batch from batch {last} (sluice rewind): {} later batch \
                     records removed",
                    plan.batches_removed.len()
                ),
            ));
            let json =
                serde_json::to_vec(&record).expect("a BatchRecord always serialises to JSON");
            write.put_cf(&self.internal(keys::BATCHES)?, keys::batch_key(batch), json);
        }
        let meta = self.internal(keys::META)?;
        match paused {
            Some(since) => write.put_cf(&meta, keys::META_PAUSED, since.to_be_bytes()),
            None => write.delete_cf(&meta, keys::META_PAUSED),
        }
        drop(meta);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(write, &options)
            .map_err(self.rocks_error("rewind"))?;
        drop(source);
        self.load_batch_bounds()?;
        self.remove_restore_points(&plan.restore_points_removed)?;
        tracing::info!(
            path = %self.path.display(),
            batch,
            removed_batches = plan.batches_removed.len(),
            "rewound checkpoint"
        );
        Ok(plan)
    }

    /// Sets the stored next offset of each partition in `offsets`, in one
    /// atomic, synced write; other partitions keep theirs. The job reads
    /// on from these offsets at its next start. Results and state are not
    /// touched: to rewind those too, use [`rewind_to`](Self::rewind_to).
    pub fn set_offsets(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        self.writable("set offsets in")?;
        let cf = self.internal(keys::OFFSETS)?;
        let mut write = WriteBatch::default();
        for (tp, offset) in offsets {
            Self::check_offset(tp, *offset)?;
            write.put_cf(&cf, keys::offset_key(tp), keys::offset_value(*offset));
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(write, &options)
            .map_err(self.rocks_error("set offsets in"))?;
        tracing::info!(path = %self.path.display(), partitions = offsets.len(), "set offsets");
        Ok(())
    }

    fn state_error(&self, state: &str, reason: impl Into<String>) -> Error {
        Error::State {
            path: self.path.clone(),
            state: state.to_owned(),
            reason: reason.into(),
        }
    }

    /// Creates `family` empty, dropping what an interrupted start may have
    /// left under that name.
    fn create_empty_family(&mut self, family: &str) -> Result<()> {
        if self.families.remove(family) {
            self.db
                .drop_cf(family)
                .map_err(self.rocks_error("drop a family of"))?;
        }
        self.db
            .create_cf(family, &self.memory.family_options())
            .map_err(self.rocks_error("create a family in"))?;
        self.families.insert(family.to_owned());
        Ok(())
    }

    /// Copies every key of family `from` into family `to`, a bounded number
    /// of keys per write.
    fn copy_family(&self, from: &str, to: &str) -> Result<u64> {
        const KEYS_PER_WRITE: usize = 10_000;
        let (source, target) = (self.internal(from)?, self.internal(to)?);
        let mut batch = WriteBatch::default();
        let mut copied = 0;
        for entry in self.iterate(source) {
            let (key, value) = entry?;
            batch.put_cf(&target, key, value);
            copied += 1;
            if batch.len() >= KEYS_PER_WRITE {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(self.rocks_error("copy state in"))?;
            }
        }
        self.db
            .write(batch)
            .map_err(self.rocks_error("copy state in"))?;
        Ok(copied)
    }

    fn decode_batch(&self, id: u64, json: &[u8]) -> Result<BatchRecord> {
        serde_json::from_slice(json).map_err(|e| {
            Error::corrupt(
                &self.path,
                format!("batch record {id} is not readable: {e}"),
            )
        })
    }

    /// Maps a RocksDB error met after opening; corruption is reported as
    /// such so it is never mistaken for a passing I/O fault.
    fn rocks_error(&self, operation: &'static str) -> impl Fn(rocksdb::Error) -> Error + '_ {
        move |source| match source.kind() {
            ErrorKind::Corruption => Error::corrupt(
                &self.path,
                format!("RocksDB found damage while trying to {operation} it: {source}"),
            ),
            _ => Error::Rocks {
                path: self.path.clone(),
                operation,
                source,
            },
        }
    }

    fn check_offset(tp: &TopicPartition, offset: i64) -> Result<()> {
        let reason = if offset < 0 {
            "offsets are never negative"
        } else if tp.topic.contains('\0') {
            "the topic name contains a NUL byte"
        } else {
            return Ok(());
        };
        Err(Error::InvalidOffset {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset,
            reason,
        })
    }
}

impl CheckpointStore for RocksCheckpoint {
    fn family_stats(&self) -> Result<Vec<FamilyStats>> {
        RocksCheckpoint::family_stats(self)
    }

    fn offsets(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        self.iterate(self.internal(keys::OFFSETS)?)
            .map(|entry| {
                let (key, value) = entry?;
                let tp = keys::decode_offset_key(&key);
                let offset = keys::decode_offset_value(&value);
                tp.zip(offset).ok_or_else(|| {
                    Error::corrupt(&self.path, format!("offset entry {key:?} is malformed"))
                })
            })
            .collect()
    }

    fn last_batch(&self) -> Result<Option<BatchRecord>> {
        let Some(id) = self.last_id else {
            return Ok(None);
        };
        let json = self
            .db
            .get_pinned_cf(&self.internal(keys::BATCHES)?, keys::batch_key(id))
            .map_err(self.rocks_error("read"))?
            .ok_or_else(|| Error::corrupt(&self.path, format!("batch record {id} vanished")))?;
        self.decode_batch(id, &json).map(Some)
    }

    fn write_plan(&mut self, plan: &BatchRecord) -> Result<()> {
        self.writable("write a batch plan to")?;
        if let Some(last) = self.last_id {
            if plan.id <= last {
                return Err(Error::BatchIdNotIncreasing { id: plan.id, last });
            }
        }
        let json = serde_json::to_vec(plan).expect("a BatchRecord always serialises to JSON");
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db
            .put_cf_opt(
                &self.internal(keys::META)?,
                keys::META_PLANNED_BATCH,
                json,
                &options,
            )
            .map_err(self.rocks_error("write a batch plan to"))
    }

    fn pending_plan(&self) -> Result<Option<BatchRecord>> {
        let Some(json) = self
            .db
            .get_pinned_cf(&self.internal(keys::META)?, keys::META_PLANNED_BATCH)
            .map_err(self.rocks_error("read"))?
        else {
            return Ok(None);
        };
        let plan: BatchRecord = serde_json::from_slice(&json).map_err(|e| {
            Error::corrupt(
                &self.path,
                format!("the planned batch is not readable: {e}"),
            )
        })?;
        Ok(self
            .last_id
            .is_none_or(|last| plan.id > last)
            .then_some(plan))
    }

    fn shuffle_partitions(&self) -> Result<Option<NonZeroUsize>> {
        self.db
            .get_pinned_cf(&self.internal(keys::META)?, keys::META_SHUFFLE_PARTITIONS)
            .map_err(self.rocks_error("read"))?
            .map(|raw| parse_shuffle_partitions(&self.path, &raw))
            .transpose()
    }

    fn paused_since(&self) -> Result<Option<i64>> {
        let Some(raw) = self
            .db
            .get_pinned_cf(&self.internal(keys::META)?, keys::META_PAUSED)
            .map_err(self.rocks_error("read"))?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = raw[..]
            .try_into()
            .map_err(|_| Error::corrupt(&self.path, "the pause mark is not 8 bytes".to_owned()))?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    fn set_paused(&mut self, since_ms: Option<i64>) -> Result<()> {
        self.writable("record a pause in")?;
        let meta = self.internal(keys::META)?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let written = match since_ms {
            Some(since) => {
                self.db
                    .put_cf_opt(&meta, keys::META_PAUSED, since.to_be_bytes(), &options)
            }
            None => self.db.delete_cf_opt(&meta, keys::META_PAUSED, &options),
        };
        written.map_err(self.rocks_error("record a pause in"))
    }

    fn record_shuffle_partitions(&mut self, partitions: NonZeroUsize) -> Result<()> {
        self.writable("record the shuffle partitions in")?;
        match self.shuffle_partitions()? {
            Some(stored) if stored == partitions => return Ok(()),
            Some(stored) => {
                return Err(Error::ShufflePartitionsFixed {
                    path: self.path.clone(),
                    stored: stored.get(),
                    requested: partitions.get(),
                })
            }
            None => {}
        }
        // Synced whatever the sync setting: a batch planned after this must
        // never be redone with another count.
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(
                &self.internal(keys::META)?,
                keys::META_SHUFFLE_PARTITIONS,
                partitions.to_string(),
                &options,
            )
            .map_err(self.rocks_error("record the shuffle partitions in"))?;
        tracing::info!(
            path = %self.path.display(),
            shuffle_partitions = partitions.get(),
            "recorded the shuffle partitions"
        );
        Ok(())
    }

    fn batches(&self) -> Result<Vec<BatchRecord>> {
        self.iterate(self.internal(keys::BATCHES)?)
            .map(|entry| {
                let (key, json) = entry?;
                let id = keys::decode_batch_key(&key).unwrap_or_default();
                self.decode_batch(id, &json)
            })
            .collect()
    }

    fn ensure_family(&mut self, name: &str) -> Result<()> {
        self.writable("create a family")?;
        if name.is_empty() {
            return Err(Error::InvalidFamily {
                family: name.to_owned(),
                reason: "the name is empty",
            });
        }
        if keys::is_reserved(name) {
            return Err(Error::ReservedFamily {
                family: name.to_owned(),
            });
        }
        if self.families.contains(name) {
            return Ok(());
        }
        self.db
            .create_cf(name, &self.memory.family_options())
            .map_err(self.rocks_error("create a family in"))?;
        self.families.insert(name.to_owned());
        tracing::info!(path = %self.path.display(), family = name, "created family");
        Ok(())
    }

    fn states(&self) -> Result<Vec<StateRecord>> {
        let meta = self.internal(keys::META)?;
        let mut options = ReadOptions::default();
        let mut until = keys::META_STATE_PREFIX.to_vec();
        *until.last_mut().expect("the prefix is not empty") += 1;
        options.set_iterate_upper_bound(until);
        self.db
            .iterator_cf_opt(
                &meta,
                options,
                IteratorMode::From(keys::META_STATE_PREFIX, Direction::Forward),
            )
            .map(|entry| {
                let (key, json) = entry.map_err(self.rocks_error("read"))?;
                serde_json::from_slice(&json).map_err(|e| {
                    Error::corrupt(
                        &self.path,
                        format!(
                            "the record of {} is not readable: {e}",
                            String::from_utf8_lossy(&key)
                        ),
                    )
                })
            })
            .collect()
    }

    fn open_states(&mut self, declared: &[StateDescriptor], changes: &StateChanges) -> Result<()> {
        self.writable("open the states of")?;
        let plan = plan_states(&self.states()?, declared, changes)
            .map_err(|(state, reason)| self.state_error(&state, reason))?;
        for (old, record) in &plan.rename {
            let family = family_of(&record.name);
            self.create_empty_family(&family)?;
            let copied = self.copy_family(&family_of(old), &family)?;
            tracing::info!(from = %old, to = %record.name, keys = copied, "copied state to its new name");
        }
        for record in &plan.create {
            self.create_empty_family(&family_of(&record.name))?;
        }
        // The registry changes in one synced write: until then the states
        // are as they were, and an interrupted start does its work again.
        let meta = self.internal(keys::META)?;
        let mut batch = WriteBatch::default();
        let json = |record: &StateRecord| {
            serde_json::to_vec(record).expect("a StateRecord always serialises to JSON")
        };
        for record in &plan.create {
            batch.put_cf(&meta, keys::state_record_key(&record.name), json(record));
        }
        for (old, record) in &plan.rename {
            batch.delete_cf(&meta, keys::state_record_key(old));
            batch.put_cf(&meta, keys::state_record_key(&record.name), json(record));
        }
        for name in &plan.drop {
            batch.delete_cf(&meta, keys::state_record_key(name));
        }
        for record in &plan.migrate {
            // Converted in the same write as the new record: a start that
            // stops half-way leaves the old state, never a mix.
            let migration = &changes.migrate[&record.name];
            let family = family_of(&record.name);
            let cf = self.internal(&family)?;
            let mut converted = 0u64;
            for entry in self.iterate(Arc::clone(&cf)) {
                let (key, value) = entry?;
                if let Some(new) = migration.convert(&key, &value) {
                    let new = new.map_err(|e| {
                        self.state_error(
                            &record.name,
                            format!("cannot be migrated: a stored state does not convert: {e}"),
                        )
                    })?;
                    batch.put_cf(&cf, key, new);
                    converted += 1;
                }
            }
            batch.put_cf(&meta, keys::state_record_key(&record.name), json(record));
            tracing::info!(state = %record.name, keys = converted, "migrated state to its new type");
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(self.rocks_error("open the states of"))?;
        drop(meta);
        // Families of states no longer registered: renamed, dropped, or
        // left by an interrupted start.
        let registered: BTreeSet<String> =
            self.states()?.iter().map(|r| family_of(&r.name)).collect();
        let orphans: Vec<String> = self
            .families
            .iter()
            .filter(|f| f.starts_with(STATE_FAMILY_PREFIX) && !registered.contains(*f))
            .cloned()
            .collect();
        for family in orphans {
            self.db
                .drop_cf(&family)
                .map_err(self.rocks_error("drop a family of"))?;
            self.families.remove(&family);
        }
        if !plan.is_empty() {
            tracing::info!(
                created = ?plan.create.iter().map(|r| &r.name).collect::<Vec<_>>(),
                renamed = ?plan.rename.iter().map(|(old, r)| (old, &r.name)).collect::<Vec<_>>(),
                dropped = ?plan.drop,
                migrated = ?plan.migrate.iter().map(|r| &r.name).collect::<Vec<_>>(),
                "opened the job's states"
            );
        }
        Ok(())
    }

    fn state_store(&self) -> Arc<dyn StateStore> {
        Arc::new(RocksState {
            db: Arc::clone(&self.db),
        })
    }

    fn commit(&mut self, commit: Commit) -> Result<()> {
        self.writable("commit")?;
        let Commit {
            record,
            next_offsets,
            writes,
        } = commit;
        if let Some(last) = self.last_id {
            if record.id <= last {
                return Err(Error::BatchIdNotIncreasing {
                    id: record.id,
                    last,
                });
            }
        }
        // The batch is built in memory and written at the end, so an error
        // on the way leaves the store untouched.
        let mut batch = WriteBatch::default();
        let write_count = writes.len();
        // A family's handle is looked up once, not once per write.
        let mut families: HashMap<String, Family<'_>> = HashMap::new();
        for write in writes {
            if !families.contains_key(write.family()) {
                let cf = self.user_family(write.family())?;
                families.insert(write.family().to_owned(), cf);
            }
            let cf = &families[write.family()];
            match write {
                Write::Put { key, value, .. } => batch.put_cf(cf, key, value),
                Write::Delete { key, .. } => batch.delete_cf(cf, key),
                Write::Add { key, delta, .. } => {
                    batch.merge_cf(cf, key, keys::counter_value(delta))
                }
            }
        }
        drop(families);
        let offsets = self.internal(keys::OFFSETS)?;
        for (tp, offset) in &next_offsets {
            Self::check_offset(tp, *offset)?;
            batch.put_cf(&offsets, keys::offset_key(tp), keys::offset_value(*offset));
        }
        let batches = self.internal(keys::BATCHES)?;
        let json = serde_json::to_vec(&record).expect("a BatchRecord always serialises to JSON");
        batch.put_cf(&batches, keys::batch_key(record.id), json);
        // Retention counts ids: the runtime numbers batches without gaps.
        let keep_from = (record.id + 1).saturating_sub(self.retain_batches as u64);
        let expired = self.batch_keys_before(&batches, keep_from)?;
        for key in &expired {
            batch.delete_cf(&batches, key);
        }
        drop((offsets, batches));

        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db
            .write_opt(batch, &options)
            .map_err(self.rocks_error("commit to"))?;
        self.last_id = Some(record.id);
        self.oldest_kept = self.oldest_kept.max(keep_from);
        if self.restore.is_due(record.id) {
            // The batch is committed; a restore point is a convenience for
            // operators and its failure must not fail the job.
            if let Err(error) = self.take_restore_point(record.id) {
                tracing::warn!(batch = record.id, %error, "could not take a restore point");
            }
        }
        tracing::debug!(
            batch = record.id,
            writes = write_count,
            partitions = next_offsets.len(),
            expired = expired.len(),
            "committed batch"
        );
        Ok(())
    }

    fn counter(&self, family: &str, key: &[u8]) -> Result<Option<i64>> {
        let cf = self.readable_family(family)?;
        let value = self
            .db
            .get_pinned_cf(&cf, key)
            .map_err(self.rocks_error("read"))?;
        value.map(|v| decode_counter(family, key, &v)).transpose()
    }

    fn counters(&self, family: &str) -> Result<Vec<(Vec<u8>, i64)>> {
        self.iterate(self.readable_family(family)?)
            .map(|entry| {
                let (key, value) = entry?;
                let n = decode_counter(family, &key, &value)?;
                Ok((key.into_vec(), n))
            })
            .collect()
    }

    fn scan(&self, family: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.iterate(self.readable_family(family)?)
            .map(|entry| entry.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .collect()
    }
}

/// RocksDB's estimates of one column family's size (its properties
/// `rocksdb.estimate-num-keys`, `rocksdb.total-sst-files-size` and
/// `rocksdb.size-all-mem-tables`): approximate, counting overwritten and
/// deleted keys not yet compacted away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FamilyStats {
    /// The family.
    pub name: String,
    /// Estimated number of keys.
    pub estimated_keys: u64,
    /// Bytes of its table files on disk.
    pub sst_bytes: u64,
    /// Bytes of its memtables (written, not flushed yet).
    pub memtable_bytes: u64,
}

/// What a rewind changes: made by [`RocksCheckpoint::rewind_plan`] and
/// returned by [`RocksCheckpoint::rewind_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewindPlan {
    /// The batch rewound to.
    pub batch: u64,
    /// Its restore point.
    pub restore_point: PathBuf,
    /// The last committed batch before the rewind.
    pub last_batch: Option<u64>,
    /// Stored next offsets before the rewind.
    pub offsets_before: BTreeMap<TopicPartition, i64>,
    /// Stored next offsets after it.
    pub offsets_after: BTreeMap<TopicPartition, i64>,
    /// Batch records the rewind removes from the history.
    pub batches_removed: Vec<u64>,
    /// Restore points of later batches, deleted.
    pub restore_points_removed: Vec<u64>,
    /// The states registered after the rewind.
    pub states_after: Vec<String>,
}

impl fmt::Debug for RocksCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksCheckpoint")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("sync", &self.sync)
            .field("retain_batches", &self.retain_batches)
            .field("last_batch", &self.last_id)
            .finish_non_exhaustive()
    }
}

fn decode_counter(family: &str, key: &[u8], value: &[u8]) -> Result<i64> {
    keys::decode_counter(value).ok_or_else(|| Error::NotACounter {
        family: family.to_owned(),
        key: String::from_utf8_lossy(key).into_owned(),
        len: value.len(),
    })
}

fn descriptors(memory: &Memory, families: &BTreeSet<String>) -> Vec<ColumnFamilyDescriptor> {
    families
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(name, memory.family_options()))
        .collect()
}

fn list_families(path: &Path) -> Result<BTreeSet<String>> {
    let families = Db::list_cf(&Options::default(), path).map_err(|e| open_error(path, e))?;
    Ok(families.into_iter().collect())
}

fn inspect_dir(path: &Path) -> Result<DirKind> {
    let io = |operation| {
        move |source| Error::Io {
            path: path.to_owned(),
            operation,
            source,
        }
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirKind::Empty),
        Err(e) => return Err(io("inspect checkpoint directory")(e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::Config {
                path: path.to_owned(),
                reason: "the checkpoint path exists and is not a directory".into(),
            })
        }
        Ok(_) => {}
    }
    let names = std::fs::read_dir(path)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(io("list checkpoint directory"))?;
    Ok(classify_dir(&names))
}

fn missing_current(path: PathBuf) -> Error {
    Error::corrupt(path, "RocksDB files are present but CURRENT is missing")
}

/// Maps an error from opening an existing database: a held lock, damage,
/// or a fault of the machine.
fn open_error(path: &Path, source: rocksdb::Error) -> Error {
    let message = source.as_ref();
    let path = path.to_owned();
    match source.kind() {
        ErrorKind::IOError
            if message.contains("While lock file") || message.contains("lock hold by") =>
        {
            Error::Locked { path, source }
        }
        ErrorKind::Corruption => Error::corrupt(path, format!("RocksDB found damage: {source}")),
        // CURRENT names files that are gone.
        ErrorKind::NotFound => Error::corrupt(path, format!("a file is missing: {source}")),
        ErrorKind::IOError if message.contains("No such file") => {
            Error::corrupt(path, format!("a file is missing: {source}"))
        }
        _ => Error::Rocks {
            path,
            operation: "open",
            source,
        },
    }
}

/// How often a read-only open is tried when a file goes away under it.
const READ_ONLY_OPEN_ATTEMPTS: u32 = 5;

/// Opens the database at `path` read-only with every family it lists. A
/// running job's flush or compaction may delete a file between reading the
/// MANIFEST that lists it and opening it; the next attempt reads the new
/// MANIFEST.
fn open_db_read_only(path: &Path, memory: &Memory) -> Result<(Db, BTreeSet<String>)> {
    let mut attempt = 1;
    loop {
        let families = list_families(path)?;
        match Db::open_cf_descriptors_read_only(
            &memory.db_options(false),
            path,
            descriptors(memory, &families),
            false,
        ) {
            Ok(db) => return Ok((db, families)),
            Err(e) if attempt < READ_ONLY_OPEN_ATTEMPTS && is_file_gone(&e) => {
                tracing::debug!(error = %e, attempt, "a file of the checkpoint went away while opening it read-only; opening again");
                std::thread::sleep(std::time::Duration::from_millis(10 * u64::from(attempt)));
                attempt += 1;
            }
            Err(e) => return Err(open_error(path, e)),
        }
    }
}

/// True when RocksDB could not find a file it was told exists: a running
/// job's flush or compaction deleted it after the MANIFEST was read.
fn is_file_gone(error: &rocksdb::Error) -> bool {
    error.to_string().contains("No such file or directory")
}

/// The wall clock in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
