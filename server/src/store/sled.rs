//! The sled backend. One tree, keys by prefix:
//! `b/<name>` → [`StoredBreaker`], `e/<revision BE>` → `pb::Event`,
//! `m/revision` and `m/oldest` → u64 BE. A commit is one `apply_batch` (atomic), one
//! blocking `flush()`, an `fdatasync` of the files sled wrote (sled's flush on Linux is
//! `sync_file_range`, which leaves the drive's cache and the file size unflushed),
//! then the [`manifest`](super::manifest) records what was committed.
//!
//! Opening checks the store against the manifest before anything is served: sled's
//! recovery silently drops (and zeroes) what it cannot read, so a damaged store would
//! otherwise come up as a smaller, healthy-looking one.
//!
//! After a failed commit (e.g. the disk is full) sled keeps the IO error forever
//! and holds the batch in memory unflushed, so the handle is dropped at once —
//! nothing it holds is read again — and the next commit reopens the database from
//! what is on disk before it retries (docs/DESIGN.md §6).

use std::{
    collections::{BTreeMap, HashSet},
    ffi::OsString,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use cbd_proto::v1 as pb;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use sha2::{Digest, Sha256};

use super::{
    Committed, Loaded, Store, StoreFuture, StoredBreaker, WriteBatch, check_expected,
    manifest::{self, Manifest, ManifestFile},
};
use crate::error::Error;

const BREAKER_PREFIX: &[u8] = b"b/";
const EVENT_PREFIX: &[u8] = b"e/";
const META_REVISION: &[u8] = b"m/revision";
const META_OLDEST: &[u8] = b"m/oldest";

/// Our own lock on the data dir, held while the daemon runs (sled locks only `db`).
const LOCK_FILE: &str = "cbd.lock";
/// A copy of the sled files taken before sled opens them (its recovery writes).
const ASIDE: &str = ".pre-open";
const ASIDE_TMP: &str = ".pre-open.tmp";
const ASIDE_OLD: &str = ".pre-open.old";
/// How far `--force-recover` moves the revision when the manifest itself is
/// unreadable and the last revision handed out is unknown.
const UNKNOWN_REVISION_GAP: u64 = 1 << 32;

/// Breakers, events and the revision in one sled database.
#[derive(Debug)]
pub struct SledStore {
    /// The open database, or why it was closed (a commit failed) and not yet reopened.
    db: RwLock<Result<sled::Db, String>>,
    dir: PathBuf,
    /// sled's log file, kept open so each commit can `fdatasync` it.
    db_file: File,
    /// Blob files (values too big for a log segment) already synced.
    synced_blobs: Mutex<HashSet<OsString>>,
    manifest: ManifestFile,
    /// Breaker records and their digest as of the last commit (one committer).
    breakers: AtomicU64,
    digest: AtomicU64,
    _lock: File,
}

/// What a store holds, as compared with its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holds {
    revision: u64,
    breakers: u64,
    oldest_retained: u64,
    digest: u64,
    /// Events present in `oldest_retained..=revision`.
    events: u64,
}

fn breaker_key(name: &str) -> Vec<u8> {
    [BREAKER_PREFIX, name.as_bytes()].concat()
}

fn event_key(revision: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(EVENT_PREFIX);
    key[2..].copy_from_slice(&revision.to_be_bytes());
    key
}

/// A record's share of the digest: order-independent (XORed), so a commit updates
/// it from the records it touches alone.
fn record_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<Option<u64>, Error> {
    Ok(match db.get(key)? {
        None => None,
        Some(v) => Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            Error::Storage(format!("corrupt meta key {}", String::from_utf8_lossy(key)))
        })?)),
    })
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("{what} {}: {e}", path.display()))
}

fn damaged(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Damaged {
        data_dir: dir.to_owned(),
        reason: reason.into(),
    }
}

/// The files of the store proper (not ours): what is copied aside and restored.
fn sled_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let ours = d == dir
                && (name == LOCK_FILE
                    || name.to_string_lossy().starts_with(manifest::FILE_NAME)
                    || name.to_string_lossy().starts_with(crate::permit::KEY_FILE)
                    || name.to_string_lossy().starts_with(ASIDE));
            if ours {
                continue;
            }
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Copies the sled files to `dir/.pre-open`, complete or not at all.
fn copy_aside(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(ASIDE_TMP);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    for file in sled_files(dir)? {
        let rel = file.strip_prefix(dir).expect("under dir");
        let to = tmp.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&file, &to)?;
        File::open(&to)?.sync_all()?;
    }
    sync_dir(&tmp)?;
    std::fs::rename(&tmp, dir.join(ASIDE))?;
    sync_dir(dir)
}

/// Puts the copy back: the sled files become byte for byte what they were.
///
/// Safe to repeat: the copy stays whole until every file is back (files are copied,
/// not moved), so a restore interrupted by a crash is simply done again at the next
/// start from the same copy.
fn restore_aside(dir: &Path) -> std::io::Result<()> {
    let aside = dir.join(ASIDE);
    let saved: HashSet<PathBuf> = sled_files(&aside)?
        .into_iter()
        .map(|f| f.strip_prefix(&aside).expect("under aside").to_owned())
        .collect();
    // Files sled's recovery made that were not there before.
    for file in sled_files(dir)? {
        if !saved.contains(file.strip_prefix(dir).expect("under dir")) {
            std::fs::remove_file(file)?;
        }
    }
    for rel in &saved {
        let to = dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(aside.join(rel), &to)?;
        File::open(&to)?.sync_all()?;
    }
    sync_dir(dir)?;
    discard_aside(dir)
}

fn discard_aside(dir: &Path) -> std::io::Result<()> {
    let old = dir.join(ASIDE_OLD);
    match std::fs::rename(dir.join(ASIDE), &old) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::remove_dir_all(old)?;
    sync_dir(dir)
}

/// Fails when another process has sled's lock on `db` (an older cbd holds no
/// [`LOCK_FILE`]), so files in use are never copied over.
fn probe_sled_lock(dir: &Path) -> Result<(), Error> {
    use fs2::FileExt;
    let path = dir.join("db");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("cannot open", &path, e)),
    };
    file.try_lock_exclusive().map_err(|_| {
        Error::invalid(
            "--data-dir",
            format!("data dir {} is in use by another process", dir.display()),
        )
    })?;
    FileExt::unlock(&file).map_err(|e| io("cannot unlock", &path, e))
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, refusing a damaged one.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, false)
    }

    /// Opens (or creates) the database in `dir` and checks it against its manifest.
    /// A store holding less than the manifest says was committed is refused with
    /// [`Error::Damaged`], its files left byte for byte as they were; with
    /// `force_recover` it is served as it is instead, with the revision moved past
    /// every revision the manifest knows and the event log emptied, so no revision
    /// is ever handed out twice. A store without a manifest (a new one, or one from a
    /// cbd before manifests) is adopted as it is.
    pub fn open_with(dir: &Path, force_recover: bool) -> Result<Self, Error> {
        use fs2::FileExt;
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        lock.try_lock_exclusive().map_err(|_| {
            Error::invalid(
                "--data-dir",
                format!("data dir {} is in use by another cbd", dir.display()),
            )
        })?;
        probe_sled_lock(dir)?;

        // A start that stopped between copying aside and finishing its check.
        let _ = std::fs::remove_dir_all(dir.join(ASIDE_TMP));
        let _ = std::fs::remove_dir_all(dir.join(ASIDE_OLD));
        if dir.join(ASIDE).exists() {
            tracing::warn!(data_dir = %dir.display(), "restoring the store from an interrupted start");
            restore_aside(dir).map_err(|e| io("cannot restore", &dir.join(ASIDE), e))?;
        }

        let expected = match manifest::read(dir) {
            Ok(m) => Expected::from(m),
            Err(e @ manifest::ReadError::Io { .. }) => return Err(Error::Storage(e.to_string())),
            Err(e) if force_recover => Expected::Unreadable(e.to_string()),
            Err(e) => {
                return Err(damaged(
                    dir,
                    format!("{e}; start with --force-recover to serve what the store holds"),
                ));
            }
        };
        let has_store = dir.join("db").exists();
        let guarded = has_store || !matches!(expected, Expected::None);
        if guarded {
            copy_aside(dir).map_err(|e| io("cannot copy aside the store in", dir, e))?;
        }
        match Self::open_checked(dir, lock, &expected, force_recover) {
            Ok(store) => {
                discard_aside(dir).map_err(|e| io("cannot remove", &dir.join(ASIDE), e))?;
                Ok(store)
            }
            Err(e) => {
                if guarded {
                    restore_aside(dir).map_err(|re| {
                        Error::Storage(format!(
                            "{e}; and restoring the files from {} failed: {re}",
                            dir.join(ASIDE).display()
                        ))
                    })?;
                }
                Err(e)
            }
        }
    }

    fn open_checked(
        dir: &Path,
        lock: File,
        expected: &Expected,
        force_recover: bool,
    ) -> Result<Self, Error> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            let e = e.to_string();
            // sled's corruption message ends in an empty backtrace.
            let e = e.trim_end_matches(" backtrace ()");
            damaged(
                dir,
                format!(
                    "sled cannot open it ({e}); --force-recover cannot either, \
                         restore it from a backup"
                ),
            )
        })?;
        let holds = match holds(&db) {
            Ok(h) => h,
            Err(e) if force_recover => {
                tracing::warn!(error = %e, "dropping records that cannot be read");
                drop_unreadable(&db)?;
                holds(&db)?
            }
            Err(e) => {
                return Err(damaged(
                    dir,
                    format!("{e}; start with --force-recover to serve what is left"),
                ));
            }
        };
        let complete_log =
            holds.events == (holds.revision + 1).saturating_sub(holds.oldest_retained);
        let problem = match expected {
            Expected::None => {
                if dir.join("db").exists() && holds.revision > 0 {
                    tracing::warn!(
                        revision = holds.revision,
                        breakers = holds.breakers,
                        "no manifest: adopting the store as it is (first start after an upgrade)"
                    );
                }
                (!complete_log).then(|| missing_events(&holds))
            }
            Expected::Unreadable(reason) => Some(reason.clone()),
            Expected::Some(m) => check(&holds, m, complete_log),
        };
        let holds = match problem {
            None => holds,
            Some(problem) if !force_recover => {
                return Err(damaged(
                    dir,
                    format!("{problem}; start with --force-recover to serve what is left"),
                ));
            }
            Some(problem) => {
                let past = match expected {
                    Expected::Some(m) => m.revision.max(holds.revision) + 1,
                    _ => holds.revision + UNKNOWN_REVISION_GAP,
                };
                tracing::error!(
                    data_dir = %dir.display(),
                    lost = %problem,
                    revision = past,
                    breakers = holds.breakers,
                    "--force-recover: serving what is left; the event log starts over past every earlier revision"
                );
                force_past(&db, past)?;
                holds_of(&db)?
            }
        };
        let manifest = ManifestFile::create(
            dir,
            &Manifest {
                revision: holds.revision,
                breakers: holds.breakers,
                oldest_retained: holds.oldest_retained,
                digest: holds.digest,
            },
        )
        .map_err(|e| io("cannot write", &dir.join(manifest::FILE_NAME), e))?;
        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(|e| io("cannot open", &db_path, e))?;
        db_file
            .sync_all()
            .map_err(|e| io("cannot sync", &db_path, e))?;
        let store = Self {
            db: RwLock::new(Ok(db)),
            dir: dir.to_owned(),
            db_file,
            synced_blobs: Mutex::new(HashSet::new()),
            manifest,
            breakers: AtomicU64::new(holds.breakers),
            digest: AtomicU64::new(holds.digest),
            _lock: lock,
        };
        store.sync_blobs()?;
        sync_dir(dir).map_err(|e| io("cannot sync", dir, e))?;
        Ok(store)
    }

    /// The open database, reopening it after a failed commit when `reopen` (only
    /// commits reopen, and they never run concurrently, so no lock is held while
    /// sled opens); without `reopen` a closed database is UNAVAILABLE with the cause.
    fn db(&self, reopen: bool) -> Result<sled::Db, Error> {
        let closed = match &*self.db.read() {
            Ok(db) => return Ok(db.clone()),
            Err(cause) => cause.clone(),
        };
        if !reopen {
            return Err(Error::StoreUnavailable { cause: closed });
        }
        // Fails (and is retried by the writer) while a reader still holds the old
        // handle, whose file lock is released with its last clone.
        let unavailable = |e: String| Error::StoreUnavailable {
            cause: format!("{closed}; reopening failed: {e}"),
        };
        let db = sled::Config::new()
            .path(&self.dir)
            .open()
            .map_err(|e| unavailable(e.to_string()))?;
        // The failed commit may have reached the disk in part or in whole (it can
        // fail after sled's flush, at the fdatasync or the manifest): count what is
        // there, so the retry's digest starts from the truth.
        let now = holds_of(&db).map_err(|e| unavailable(e.to_string()))?;
        self.breakers.store(now.breakers, Ordering::Relaxed);
        self.digest.store(now.digest, Ordering::Relaxed);
        tracing::info!(dir = %self.dir.display(), "store reopened after a failed commit");
        *self.db.write() = Ok(db.clone());
        Ok(db)
    }

    /// `fdatasync`s blob files not synced yet, and their directory when there are new ones.
    fn sync_blobs(&self) -> Result<(), Error> {
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot list", &blobs, e)),
        };
        let present = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<HashSet<_>, _>>()
            .map_err(|e| io("cannot list", &blobs, e))?;
        let fresh: Vec<_> = {
            let synced = self.synced_blobs.lock();
            present.difference(&synced).cloned().collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        for name in &fresh {
            let path = blobs.join(name);
            match File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // sled removes blobs it no longer needs.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot sync", &path, e)),
            }
        }
        sync_dir(&blobs).map_err(|e| io("cannot sync", &blobs, e))?;
        // Only what is there: sled deletes blobs it no longer needs.
        *self.synced_blobs.lock() = present;
        Ok(())
    }
}

/// What the manifest says, if anything.
#[derive(Debug)]
enum Expected {
    None,
    Some(Manifest),
    /// Present but unreadable (only with `--force-recover`).
    Unreadable(String),
}

impl From<Option<Manifest>> for Expected {
    fn from(m: Option<Manifest>) -> Self {
        m.map_or(Self::None, Self::Some)
    }
}

fn missing_events(h: &Holds) -> String {
    format!(
        "its event log holds {} of the events {}..={}",
        h.events, h.oldest_retained, h.revision
    )
}

/// Why `h` holds less than `m` says was committed, if it does. A store ahead of its
/// manifest is one commit past it (the daemon stopped between the two writes).
fn check(h: &Holds, m: &Manifest, complete_log: bool) -> Option<String> {
    let said = format!(
        "revision {} and {} breakers were committed",
        m.revision, m.breakers
    );
    if h.revision < m.revision || (h.revision == m.revision && h.breakers != m.breakers) {
        return Some(format!(
            "it holds revision {} and {} breakers, but {said}",
            h.revision, h.breakers
        ));
    }
    if h.revision == m.revision && (h.digest != m.digest || h.oldest_retained != m.oldest_retained)
    {
        return Some(format!(
            "it holds revision {} and {} breakers, but their records differ from the ones committed",
            h.revision, h.breakers
        ));
    }
    (!complete_log).then(|| missing_events(h))
}

/// Reads the store's revision, records and event log; fails on unreadable ones.
fn holds(db: &sled::Db) -> Result<Holds, Error> {
    for kv in db.scan_prefix(BREAKER_PREFIX) {
        let (k, v) = kv?;
        StoredBreaker::decode(v.as_ref())?;
        std::str::from_utf8(&k[BREAKER_PREFIX.len()..])
            .map_err(|_| Error::Storage("corrupt breaker key".into()))?;
    }
    holds_of(db)
}

fn holds_of(db: &sled::Db) -> Result<Holds, Error> {
    let revision = read_u64(db, META_REVISION)?.unwrap_or(0);
    let oldest_retained = read_u64(db, META_OLDEST)?.unwrap_or(revision + 1);
    let (mut breakers, mut digest) = (0, 0);
    for kv in db.scan_prefix(BREAKER_PREFIX) {
        let (k, v) = kv?;
        breakers += 1;
        digest ^= record_hash(&k, &v);
    }
    let events = if oldest_retained > revision {
        0
    } else {
        db.range(event_key(oldest_retained)..=event_key(revision))
            .try_fold(0u64, |n, kv| kv.map(|_| n + 1))?
    };
    Ok(Holds {
        revision,
        breakers,
        oldest_retained,
        digest,
        events,
    })
}

/// Removes breaker records that do not decode (`--force-recover`).
fn drop_unreadable(db: &sled::Db) -> Result<(), Error> {
    let mut b = sled::Batch::default();
    for kv in db.scan_prefix(BREAKER_PREFIX) {
        let (k, v) = kv?;
        if StoredBreaker::decode(v.as_ref()).is_err()
            || std::str::from_utf8(&k[BREAKER_PREFIX.len()..]).is_err()
        {
            b.remove(k);
        }
    }
    db.apply_batch(b)?;
    Ok(())
}

/// Sets the revision to `revision` and empties the event log (`--force-recover`):
/// a watcher resuming from any earlier revision is told it was compacted.
fn force_past(db: &sled::Db, revision: u64) -> Result<(), Error> {
    let mut b = sled::Batch::default();
    for kv in db.scan_prefix(EVENT_PREFIX) {
        b.remove(kv?.0);
    }
    b.insert(META_REVISION, &revision.to_be_bytes());
    b.insert(META_OLDEST, &(revision + 1).to_be_bytes());
    db.apply_batch(b)?;
    db.flush()?;
    Ok(())
}

impl Store for SledStore {
    fn load(&self) -> Result<Loaded, Error> {
        let db = self.db(false)?;
        let revision = read_u64(&db, META_REVISION)?.unwrap_or(0);
        let oldest_retained = read_u64(&db, META_OLDEST)?.unwrap_or(revision + 1);
        Ok(Loaded {
            breakers: self.breakers("")?,
            revision,
            oldest_retained,
        })
    }

    /// sled's work (apply, flush, fdatasyncs) blocks: it runs on a blocking thread,
    /// and the writer awaits one commit at a time, so only one thread ever flushes.
    fn commit(self: Arc<Self>, batch: Arc<WriteBatch>) -> StoreFuture<Committed> {
        Box::pin(blocking(move || self.commit_blocking(&batch)))
    }

    fn events(self: Arc<Self>, from: u64, limit: usize) -> StoreFuture<Vec<pb::Event>> {
        Box::pin(blocking(move || self.events_blocking(from, limit)))
    }

    fn size_on_disk(self: Arc<Self>) -> StoreFuture<Option<u64>> {
        Box::pin(blocking(move || {
            dir_size(&self.dir)
                .map(Some)
                .map_err(|e| io("measuring", &self.dir, e))
        }))
    }
}

/// Bytes of every file under `dir` (apparent sizes, as `du --apparent-size`). A file
/// removed while it is walked (sled rewrites blobs) counts nothing, not an error.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

/// Runs `f` on a blocking thread; a panic there is a storage error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(Error::Storage(format!("store task failed: {join}"))))
}

impl SledStore {
    /// [`Store::commit`], on the calling thread.
    pub fn commit_blocking(&self, batch: &WriteBatch) -> Result<Committed, Error> {
        let db = self.db(true)?;
        let written = self.write(&db, batch);
        if let Err(e) = &written
            && !matches!(e, Error::StoreConflict { .. })
        {
            drop(db);
            let old = {
                let mut slot = self.db.write();
                match &*slot {
                    Ok(_) => std::mem::replace(&mut *slot, Err(e.to_string())),
                    Err(_) => return written,
                }
            };
            // Dropping the last handle joins sled's flusher: not under the lock.
            drop(old);
        }
        written
    }

    /// [`Store::events`], on the calling thread.
    pub fn events_blocking(&self, from: u64, limit: usize) -> Result<Vec<pb::Event>, Error> {
        self.db(false)?
            .range(event_key(from)..=event_key(u64::MAX))
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                Ok(pb::Event::decode(v.as_ref())?)
            })
            .collect()
    }

    /// Committed breaker records whose names start with `prefix`, in name order.
    pub fn breakers(&self, prefix: &str) -> Result<Vec<(String, StoredBreaker)>, Error> {
        self.db(false)?
            .scan_prefix(breaker_key(prefix))
            .map(|kv| {
                let (k, v) = kv?;
                let name = String::from_utf8(k[BREAKER_PREFIX.len()..].to_vec())
                    .map_err(|_| Error::Storage("corrupt breaker key".into()))?;
                Ok((name, StoredBreaker::decode(v.as_ref())?))
            })
            .collect()
    }
}

impl SledStore {
    /// One commit on `db`: the batch, sled's flush, the fdatasyncs, the manifest.
    fn write(&self, db: &sled::Db, batch: &WriteBatch) -> Result<Committed, Error> {
        // Only this process writes (cbd.lock), one commit at a time: nothing moves the
        // revision between this read and the apply below.
        check_expected(batch, read_u64(db, META_REVISION)?.unwrap_or(0), || {
            db.get(event_key(batch.revision))?
                .map(|v| Ok(pb::Event::decode(v.as_ref())?))
                .transpose()
        })?;
        let previous_oldest = read_u64(db, META_OLDEST)?.unwrap_or(1);
        // The records' final values, as sled applies them (last write per key wins).
        let mut records: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (name, record) in &batch.puts {
            records.insert(breaker_key(name), Some(record.encode_to_vec()));
        }
        for name in &batch.deletes {
            records.insert(breaker_key(name), None);
        }
        let mut breakers = self.breakers.load(Ordering::Relaxed);
        let mut digest = self.digest.load(Ordering::Relaxed);
        let mut b = sled::Batch::default();
        for (key, value) in records {
            match db.get(&key)? {
                Some(old) => digest ^= record_hash(&key, &old),
                None => breakers += 1,
            }
            match value {
                Some(v) => {
                    digest ^= record_hash(&key, &v);
                    b.insert(key, v);
                }
                None => {
                    breakers -= 1;
                    b.remove(key);
                }
            }
        }
        for event in &batch.events {
            b.insert(&event_key(event.revision), event.encode_to_vec());
        }
        for revision in previous_oldest..batch.oldest_retained {
            b.remove(&event_key(revision));
        }
        b.insert(META_REVISION, &batch.revision.to_be_bytes());
        b.insert(META_OLDEST, &batch.oldest_retained.to_be_bytes());
        db.apply_batch(b)?;
        db.flush()?;
        let db_path = || self.dir.join("db");
        self.db_file
            .sync_data()
            .map_err(|e| io("cannot sync", &db_path(), e))?;
        self.sync_blobs()?;
        self.manifest
            .write(&Manifest {
                revision: batch.revision,
                breakers,
                oldest_retained: batch.oldest_retained,
                digest,
            })
            .map_err(|e| io("cannot write", &self.dir.join(manifest::FILE_NAME), e))?;
        self.breakers.store(breakers, Ordering::Relaxed);
        self.digest.store(digest, Ordering::Relaxed);
        Ok(Committed {
            revision: batch.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::conformance::store_conformance!(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        Some((Arc::new(store) as Arc<dyn Store>, dir))
    });

    fn event(revision: u64, name: &str) -> pb::Event {
        pb::Event {
            revision,
            name: name.into(),
            kind: pb::EventKind::SpecPut as i32,
            ..Default::default()
        }
    }

    #[test]
    fn dir_size_adds_up_every_file_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), [0u8; 100]).expect("a");
        std::fs::create_dir_all(dir.path().join("blobs/x")).expect("dirs");
        std::fs::write(dir.path().join("blobs/x/b"), [0u8; 23]).expect("b");
        assert_eq!(dir_size(dir.path()).expect("size"), 123);
    }

    #[test]
    fn commits_survive_reopen_and_compaction_drops_old_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            for rev in 1..=5 {
                store
                    .commit_blocking(&WriteBatch {
                        puts: vec![(
                            format!("b{rev}"),
                            StoredBreaker {
                                generation: rev,
                                mod_revision: rev,
                                ..Default::default()
                            },
                        )],
                        events: vec![event(rev, &format!("b{rev}"))],
                        expect_revision: rev - 1,
                        revision: rev,
                        oldest_retained: rev.saturating_sub(2).max(1),
                        ..Default::default()
                    })
                    .expect("commit");
            }
            store
                .commit_blocking(&WriteBatch {
                    deletes: vec!["b1".into()],
                    events: vec![event(6, "b1")],
                    expect_revision: 5,
                    revision: 6,
                    oldest_retained: 4,
                    ..Default::default()
                })
                .expect("commit");
        }
        until_released(dir.path());
        let store = SledStore::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.revision, 6);
        assert_eq!(loaded.oldest_retained, 4);
        let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b2", "b3", "b4", "b5"]);
        let revs: Vec<_> = store
            .events_blocking(1, 6)
            .expect("events")
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revs, [4, 5, 6]);
    }

    fn record(rev: u64) -> StoredBreaker {
        StoredBreaker {
            generation: rev,
            mod_revision: rev,
            ..Default::default()
        }
    }

    /// Commits `a`, `b`, then in one batch replaces `a` and deletes `b` and `c` (never
    /// created): revision 3, two breakers... then one.
    fn populate(dir: &Path) {
        drop(populated(dir));
        until_released(dir);
    }

    /// sled's background threads let go of `db` a moment after its last handle is
    /// dropped (later still on a loaded machine): a test that opens it again waits
    /// for that, with a bound, instead of racing it.
    fn until_released(dir: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while probe_sled_lock(dir).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sled never let go of {}",
                dir.display()
            );
            std::thread::yield_now();
        }
    }

    /// [`populate`], returning the open store.
    fn populated(dir: &Path) -> SledStore {
        let store = SledStore::open(dir).expect("open");
        for (rev, name) in [(1, "a"), (2, "b")] {
            store
                .commit_blocking(&WriteBatch {
                    puts: vec![(name.into(), record(rev))],
                    events: vec![event(rev, name)],
                    expect_revision: rev - 1,
                    revision: rev,
                    oldest_retained: 1,
                    ..Default::default()
                })
                .expect("commit");
        }
        store
            .commit_blocking(&WriteBatch {
                puts: vec![("a".into(), record(3)), ("b".into(), record(3))],
                deletes: vec!["b".into(), "c".into()],
                events: vec![event(3, "a")],
                expect_revision: 2,
                revision: 3,
                oldest_retained: 1,
            })
            .expect("commit");
        store
    }

    #[test]
    fn a_commit_expecting_another_revision_is_refused_and_applies_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = populated(dir.path());
        let stale = WriteBatch {
            expect_revision: 2,
            puts: vec![("x".into(), record(3))],
            deletes: vec!["a".into()],
            events: vec![event(3, "x")],
            revision: 3,
            oldest_retained: 1,
        };
        let refused = store.commit_blocking(&stale);
        assert!(
            matches!(
                refused,
                Err(Error::StoreConflict {
                    expected: 2,
                    found: 3
                })
            ),
            "{refused:?}"
        );
        let names: Vec<_> = store.breakers("").expect("breakers");
        let names: Vec<_> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a"]);
        let log = store.events_blocking(3, 10).expect("events");
        assert_eq!(log, [event(3, "a")], "revision 3 kept its own event");
        // The same batch again (a retry after a failed attempt that landed) is taken.
        let again = WriteBatch {
            expect_revision: 2,
            puts: vec![("a".into(), record(3))],
            deletes: vec!["b".into(), "c".into()],
            events: vec![event(3, "a")],
            revision: 3,
            oldest_retained: 1,
        };
        assert_eq!(store.commit_blocking(&again).expect("retry").revision, 3);
        let m = manifest::read(dir.path()).expect("read").expect("manifest");
        assert_eq!((m.revision, m.breakers), (3, 1), "the manifest agrees");
    }

    fn raw(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir).open().expect("raw open")
    }

    #[test]
    fn the_manifest_follows_puts_and_deletes_in_one_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        let m = manifest::read(dir.path()).expect("read").expect("manifest");
        assert_eq!((m.revision, m.breakers, m.oldest_retained), (3, 1, 1));
        let store = SledStore::open(dir.path()).expect("reopen: consistent");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.breakers.len(), 1);
        assert_eq!(loaded.revision, 3);
    }

    #[test]
    fn a_changed_record_at_the_same_revision_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        {
            let db = raw(dir.path());
            db.insert(breaker_key("a"), record(99).encode_to_vec())
                .expect("insert");
            db.flush().expect("flush");
        }
        until_released(dir.path());
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("records differ"), "{err}");
    }

    #[test]
    fn a_hole_in_the_event_log_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        {
            let db = raw(dir.path());
            db.remove(event_key(2)).expect("remove");
            db.flush().expect("flush");
        }
        until_released(dir.path());
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("event log holds 2 of the events 1..=3"),
            "{err}"
        );
    }

    #[test]
    fn force_recover_with_an_unreadable_manifest_jumps_far_past() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        std::fs::write(dir.path().join(manifest::FILE_NAME), [0u8; 128]).expect("garble");
        let before = std::fs::read(dir.path().join("db")).expect("db");
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert_eq!(std::fs::read(dir.path().join("db")).expect("db"), before);
        let store = SledStore::open_with(dir.path(), true).expect("forced");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.revision, 3 + UNKNOWN_REVISION_GAP);
        assert_eq!(loaded.oldest_retained, loaded.revision + 1);
        assert!(
            store
                .events_blocking(0, usize::MAX)
                .expect("events")
                .is_empty()
        );
        drop(store);
        SledStore::open(dir.path()).expect("healthy after recovery");
    }

    #[test]
    fn an_interrupted_start_is_undone_from_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        copy_aside(dir.path()).expect("copy aside");
        // What a start's sled recovery might have done before the process died.
        std::fs::write(dir.path().join("db"), b"half recovered").expect("scribble");
        let store = SledStore::open(dir.path()).expect("restored and opened");
        assert_eq!(store.load().expect("load").revision, 3);
        assert!(!dir.path().join(ASIDE).exists());
    }

    #[test]
    fn a_restore_puts_back_every_file_from_any_state_and_leaves_the_permit_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        populate(dir.path());
        std::fs::write(dir.path().join(crate::permit::KEY_FILE), [7u8; 32]).expect("key");
        let before: Vec<(PathBuf, Vec<u8>)> = sled_files(dir.path())
            .expect("files")
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(&f).expect("read");
                (f, bytes)
            })
            .collect();
        assert!(
            before
                .iter()
                .all(|(f, _)| !f.ends_with(crate::permit::KEY_FILE)),
            "the permit key is not a store file"
        );
        copy_aside(dir.path()).expect("copy aside");
        // What an interrupted restore, or sled's recovery, may leave: one file back,
        // one garbled, one missing, one new.
        let (first, _) = &before[0];
        std::fs::write(first, b"garbage").expect("garble");
        if let Some((second, _)) = before.get(1) {
            std::fs::remove_file(second).expect("remove");
        }
        std::fs::write(dir.path().join("snap.extra"), b"new").expect("extra");
        restore_aside(dir.path()).expect("restore");
        for (f, bytes) in &before {
            assert_eq!(
                &std::fs::read(f).expect("restored"),
                bytes,
                "{}",
                f.display()
            );
        }
        assert!(!dir.path().join("snap.extra").exists());
        assert!(
            !dir.path().join(ASIDE).exists(),
            "the copy is discarded after"
        );
        assert_eq!(
            std::fs::read(dir.path().join(crate::permit::KEY_FILE)).expect("key"),
            [7u8; 32]
        );
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = SledStore::open(dir.path()).expect("open");
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
