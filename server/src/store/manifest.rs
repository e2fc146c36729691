//! `MANIFEST`: what cbd last committed, kept beside the sled files and independent
//! of sled's own recovery, so that a start can tell a damaged store from a healthy one.
//!
//! The file holds two 64-byte slots. A commit overwrites the older slot in place and
//! `fdatasync`s it, so one commit costs one small write and one sync, and a write torn
//! by a crash leaves the other slot (the previous commit, the last one acknowledged)
//! intact. A slot is: magic, sequence, revision, breaker count, oldest retained
//! revision, record digest (all u64 little-endian), 12 zero bytes, and a crc32 of the
//! 60 bytes before it. The valid slot with the higher sequence wins; a file with no
//! valid slot is itself damage.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// The manifest's file name inside the data dir.
pub const FILE_NAME: &str = "MANIFEST";

const MAGIC: &[u8; 8] = b"CBDMAN01";
const SLOT: usize = 64;
const CRC_AT: usize = 60;

/// What was committed last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The revision of the last committed change.
    pub revision: u64,
    /// Breaker records in the store.
    pub breakers: u64,
    /// The oldest revision in the event log (`revision + 1` when it is empty).
    pub oldest_retained: u64,
    /// XOR over the records of a hash of key and value (see `record_hash`).
    pub digest: u64,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn encode(seq: u64, m: &Manifest) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    for (i, v) in [seq, m.revision, m.breakers, m.oldest_retained, m.digest]
        .into_iter()
        .enumerate()
    {
        slot[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&slot[..CRC_AT]);
    slot[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<(u64, Manifest)> {
    if slot.len() != SLOT || &slot[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot[CRC_AT..].try_into().ok()?);
    if crc32fast::hash(&slot[..CRC_AT]) != crc {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(slot[8 + 8 * i..16 + 8 * i].try_into().expect("8"));
    Some((
        word(0),
        Manifest {
            revision: word(1),
            breakers: word(2),
            oldest_retained: word(3),
            digest: word(4),
        },
    ))
}

/// Reads the manifest in `dir`: `Ok(None)` when there is none.
pub fn read(dir: &Path) -> Result<Option<Manifest>, ReadError> {
    Ok(read_slots(dir)?.map(|(_, m)| m))
}

fn read_slots(dir: &Path) -> Result<Option<(u64, Manifest)>, ReadError> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReadError::Io { path, source }),
    };
    if bytes.len() != 2 * SLOT {
        return Err(ReadError::Corrupt {
            path,
            reason: format!("{} bytes, expected {}", bytes.len(), 2 * SLOT),
        });
    }
    bytes
        .chunks(SLOT)
        .filter_map(decode)
        .max_by_key(|(seq, _)| *seq)
        .map(Some)
        .ok_or_else(|| ReadError::Corrupt {
            path,
            reason: "no slot with a valid checksum".into(),
        })
}

/// An open manifest that commits overwrite.
#[derive(Debug)]
pub struct ManifestFile {
    file: File,
    /// Sequence of the last slot written; the next write goes to slot `(seq + 1) % 2`.
    seq: AtomicU64,
}

impl ManifestFile {
    /// Replaces the manifest in `dir` with one holding `m` (both slots), atomically:
    /// temp file, fsync, rename, fsync of the dir.
    pub fn create(dir: &Path, m: &Manifest) -> std::io::Result<Self> {
        let slots = [encode(0, m), encode(1, m)].concat();
        crate::atomic_file::write(&dir.join(FILE_NAME), &slots, None)?;
        Self::open_existing(dir, 1)
    }

    /// Opens the manifest in `dir` for further commits.
    pub fn open(dir: &Path) -> Result<(Self, Manifest), ReadError> {
        let path = dir.join(FILE_NAME);
        let Some((seq, m)) = read_slots(dir)? else {
            return Err(ReadError::Io {
                path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        let file =
            Self::open_existing(dir, seq).map_err(|source| ReadError::Io { path, source })?;
        Ok((file, m))
    }

    fn open_existing(dir: &Path, seq: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().write(true).open(dir.join(FILE_NAME))?;
        Ok(Self {
            file,
            seq: AtomicU64::new(seq),
        })
    }

    /// Records `m` durably: overwrites the older slot and `fdatasync`s. Not called
    /// concurrently (only the store's committer writes).
    pub fn write(&self, m: &Manifest) -> std::io::Result<()> {
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        let offset = (seq % 2) * SLOT as u64;
        self.file.write_all_at(&encode(seq, m), offset)?;
        self.file.sync_data()?;
        self.seq.store(seq, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(revision: u64) -> Manifest {
        Manifest {
            revision,
            breakers: revision * 2,
            oldest_retained: 1,
            digest: 0xdead_beef ^ revision,
        }
    }

    #[test]
    fn round_trip_and_the_newest_slot_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        let file = ManifestFile::create(dir.path(), &m(1)).expect("create");
        assert_eq!(read(dir.path()).expect("read"), Some(m(1)));
        for rev in 2..=5 {
            file.write(&m(rev)).expect("write");
            assert_eq!(read(dir.path()).expect("read"), Some(m(rev)));
        }
        drop(file);
        let (file, back) = ManifestFile::open(dir.path()).expect("open");
        assert_eq!(back, m(5));
        file.write(&m(6)).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(m(6)));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ManifestFile::create(dir.path(), &m(1)).expect("create");
        file.write(&m(2)).expect("write");
        file.write(&m(3)).expect("write");
        // Slot of seq 3 is at offset 64 (3 % 2 = 1); tear it.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[64 + 20] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(m(2)));
    }

    #[test]
    fn garbage_or_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, [7u8; 128]).expect("write");
        let err = read(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("no slot with a valid checksum"),
            "{err}"
        );
        std::fs::write(&path, [0u8; 64]).expect("write");
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("64 bytes"), "{err}");
        std::fs::write(&path, b"").expect("write");
        assert!(read(dir.path()).is_err());
    }

    #[test]
    fn create_replaces_atomically_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        ManifestFile::create(dir.path(), &m(9)).expect("create");
        // A stale temp file from a crash mid-create does not matter.
        std::fs::write(dir.path().join("MANIFEST.tmp"), b"half").expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(m(9)));
        ManifestFile::create(dir.path(), &m(10)).expect("replace");
        assert_eq!(read(dir.path()).expect("read"), Some(m(10)));
        assert!(!dir.path().join("MANIFEST.tmp").exists());
    }
}
