//! The sled backend. One tree, keys by prefix:
//! `b/<name>` → [`StoredBreaker`], `e/<revision BE>` → `pb::Event`,
//! `m/revision` and `m/oldest` → u64 BE. A commit is one `apply_batch` (atomic)
//! followed by one blocking `flush()`.
//!
//! After a failed commit (e.g. the disk is full) sled keeps the IO error forever
//! and holds the batch in memory unflushed, so the handle is dropped at once —
//! nothing it holds is read again — and the next commit reopens the database from
//! what is on disk before it retries.

use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use cbd_proto::v1 as pb;
use prost::Message;

use super::{Loaded, Store, StoredBreaker, WriteBatch};
use crate::error::Error;

const BREAKER_PREFIX: &[u8] = b"b/";
const EVENT_PREFIX: &[u8] = b"e/";
const META_REVISION: &[u8] = b"m/revision";
const META_OLDEST: &[u8] = b"m/oldest";

/// Breakers, events and the revision in one sled database.
#[derive(Debug)]
pub struct SledStore {
    dir: PathBuf,
    /// The open database, or why it was closed (a commit failed) and not yet reopened.
    db: RwLock<Result<sled::Db, String>>,
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

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<Option<u64>, Error> {
    Ok(match db.get(key)? {
        None => None,
        Some(v) => Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            Error::Storage(format!("corrupt meta key {}", String::from_utf8_lossy(key)))
        })?)),
    })
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self {
            dir: dir.to_owned(),
            db: RwLock::new(Ok(db)),
        })
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
        let db =
            sled::Config::new()
                .path(&self.dir)
                .open()
                .map_err(|e| Error::StoreUnavailable {
                    cause: format!("{closed}; reopening failed: {e}"),
                })?;
        tracing::info!(dir = %self.dir.display(), "store reopened after a failed commit");
        *self.db.write() = Ok(db.clone());
        Ok(db)
    }

    fn write(db: &sled::Db, batch: &WriteBatch) -> Result<(), Error> {
        let previous_oldest = read_u64(db, META_OLDEST)?.unwrap_or(1);
        let mut b = sled::Batch::default();
        for (name, record) in &batch.puts {
            b.insert(breaker_key(name), record.encode_to_vec());
        }
        for name in &batch.deletes {
            b.remove(breaker_key(name));
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
        Ok(())
    }
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

    fn commit(&self, batch: &WriteBatch) -> Result<(), Error> {
        let db = self.db(true)?;
        let written = Self::write(&db, batch);
        if let Err(e) = &written {
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

    fn events(&self, from: u64, to: u64) -> Result<Vec<pb::Event>, Error> {
        if from > to {
            return Ok(Vec::new());
        }
        self.db(false)?
            .range(event_key(from)..=event_key(to))
            .map(|kv| {
                let (_, v) = kv?;
                Ok(pb::Event::decode(v.as_ref())?)
            })
            .collect()
    }

    fn breakers(&self, prefix: &str) -> Result<Vec<(String, StoredBreaker)>, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64, name: &str) -> pb::Event {
        pb::Event {
            revision,
            name: name.into(),
            kind: pb::EventKind::SpecPut as i32,
            ..Default::default()
        }
    }

    #[test]
    fn commits_survive_reopen_and_compaction_drops_old_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            for rev in 1..=5 {
                store
                    .commit(&WriteBatch {
                        puts: vec![(
                            format!("b{rev}"),
                            StoredBreaker {
                                generation: rev,
                                mod_revision: rev,
                                ..Default::default()
                            },
                        )],
                        events: vec![event(rev, &format!("b{rev}"))],
                        revision: rev,
                        oldest_retained: rev.saturating_sub(2).max(1),
                        ..Default::default()
                    })
                    .expect("commit");
            }
            store
                .commit(&WriteBatch {
                    deletes: vec!["b1".into()],
                    events: vec![event(6, "b1")],
                    revision: 6,
                    oldest_retained: 4,
                    ..Default::default()
                })
                .expect("commit");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.revision, 6);
        assert_eq!(loaded.oldest_retained, 4);
        let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b2", "b3", "b4", "b5"]);
        let revs: Vec<_> = store
            .events(1, 6)
            .expect("events")
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revs, [4, 5, 6]);
    }
}
