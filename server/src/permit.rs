//! The permit's wire form (docs/DESIGN.md §4.2): opaque to clients, minted and checked
//! only by the daemon.
//!
//! Layout: `version (1) | flags (1) | boot (8) | generation (8) | serial (8) | name
//! [| NUL | caller] | tag (16)`, integers little-endian. The caller the Acquire (or
//! lease request) acted as rides along after a NUL byte, which no name contains, so a
//! Report without a caller is still attributed (docs/DESIGN.md §3.7); a permit
//! without one reads as before. `tag` is the first 16 bytes of the BLAKE3 keyed hash of
//! everything before it, keyed by the data dir's permit key, so nobody without the key
//! can make a permit, and any change to one is caught. `boot` is random per daemon
//! start: the breaker's single-use ledger lives in memory, so a permit of an earlier
//! run cannot be checked for reuse and is answered `stale`.

use std::{fmt, path::Path};

use cbd_breaker::PermitToken;
use subtle::ConstantTimeEq;

use crate::error::Error;

const VERSION: u8 = 2;
const FLAG_PROBE: u8 = 1;
/// A lease (docs/DESIGN.md §10), not a permit: sent with leased outcomes, never reported.
const FLAG_LEASE: u8 = 2;
const HEADER: usize = 1 + 1 + 8 + 8 + 8;
const TAG: usize = 16;
const KEY_LEN: usize = 32;

/// The permit key's file in the data dir: 32 random bytes, mode 0600, never logged.
pub const KEY_FILE: &str = "permit.key";

/// The secret that authenticates permits. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct PermitKey([u8; KEY_LEN]);

impl fmt::Debug for PermitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PermitKey(<secret>)")
    }
}

impl PermitKey {
    /// A fresh random key.
    pub fn random() -> Result<Self, Error> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key)
            .map_err(|e| Error::Storage(format!("no randomness for the permit key: {e}")))?;
        Ok(Self(key))
    }

    /// A key kept elsewhere (a replica's, in etcd): exactly 32 bytes; `origin` names
    /// where it came from in the error.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, Error> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::Storage(format!(
                "permit key {origin}: {} bytes, expected {KEY_LEN}",
                bytes.len()
            ))
        })?;
        Ok(Self(key))
    }

    /// The key's bytes, for storing it ([`PermitKey::from_bytes`] reads them back).
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    /// Reads `<dir>/permit.key`, creating it (atomically, fsynced, mode 0600) on the
    /// first start. A file of the wrong length is an error: a new key would turn every
    /// outstanding permit into garbage, so cbd does not pick one silently.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(KEY_FILE);
        let fail = |what: &str, e: std::io::Error| {
            Error::Storage(format!("permit key {}: {what}: {e}", path.display()))
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Storage(format!(
                        "permit key {}: {} bytes, expected {KEY_LEN}; restore it from a backup, \
                         or delete it to make a new one (outstanding permits then fail)",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its dir", e))?;
                let key = Self::random()?;
                crate::atomic_file::write(&path, &key.0, Some(0o600))
                    .map_err(|e| fail("cannot write", e))?;
                tracing::info!(path = %path.display(), "created a new permit key");
                Ok(key)
            }
            Err(e) => Err(fail("cannot read", e)),
        }
    }
}

/// A permit as the daemon reads it back.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The breaker it was issued for.
    pub name: &'a str,
    /// The caller the Acquire (or lease request) acted as; `None`: anonymous.
    pub caller: Option<&'a str>,
    pub token: PermitToken,
    /// Issued by this run of the daemon; `false`: by an earlier one (stale).
    pub this_boot: bool,
    /// A lease rather than a permit: `token.serial` is the lease's number.
    pub lease: bool,
}

/// Mints and checks permits: the key and this run's boot id.
#[derive(Clone)]
pub struct Permits {
    key: [u8; KEY_LEN],
    boot: u64,
}

impl fmt::Debug for Permits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permits").field("boot", &self.boot).finish()
    }
}

impl Permits {
    /// Permits under `key` for a daemon run identified by `boot`.
    pub fn new(key: &PermitKey, boot: u64) -> Self {
        Self { key: key.0, boot }
    }

    /// Permits under `key` with a random boot id.
    pub fn for_this_boot(key: &PermitKey) -> Result<Self, Error> {
        let boot = getrandom::u64()
            .map_err(|e| Error::Storage(format!("no randomness for the boot id: {e}")))?;
        Ok(Self::new(key, boot))
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG] {
        let hash = blake3::keyed_hash(&self.key, body);
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&hash.as_bytes()[..TAG]);
        tag
    }

    /// The permit for breaker `name`.
    pub fn encode(&self, name: &str, token: PermitToken) -> Vec<u8> {
        self.encode_as(name, None, token)
    }

    /// The permit for breaker `name`, acquired by `caller`.
    pub fn encode_as(&self, name: &str, caller: Option<&str>, token: PermitToken) -> Vec<u8> {
        self.mint(
            name,
            caller,
            token,
            if token.probe { FLAG_PROBE } else { 0 },
        )
    }

    /// The lease number `serial` on breaker `name`, granted in `generation`: the
    /// permit layout with the lease flag.
    pub fn encode_lease(&self, name: &str, generation: u64, serial: u64) -> Vec<u8> {
        self.encode_lease_as(name, None, generation, serial)
    }

    /// [`Permits::encode_lease`] for a lease asked for by `caller`.
    pub fn encode_lease_as(
        &self,
        name: &str,
        caller: Option<&str>,
        generation: u64,
        serial: u64,
    ) -> Vec<u8> {
        let token = PermitToken {
            generation,
            serial,
            probe: false,
        };
        self.mint(name, caller, token, FLAG_LEASE)
    }

    fn mint(&self, name: &str, caller: Option<&str>, token: PermitToken, flags: u8) -> Vec<u8> {
        let extra = caller.map_or(0, |c| 1 + c.len());
        let mut out = Vec::with_capacity(HEADER + name.len() + extra + TAG);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.boot.to_le_bytes());
        out.extend_from_slice(&token.generation.to_le_bytes());
        out.extend_from_slice(&token.serial.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        if let Some(caller) = caller {
            out.push(0);
            out.extend_from_slice(caller.as_bytes());
        }
        let tag = self.tag(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Checks and reads a permit; every failure is `INVALID_ARGUMENT` naming `permit`,
    /// a lease among them.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Decoded<'a>, Error> {
        let decoded = self.decode_any(bytes, "permit")?;
        if decoded.lease {
            return Err(Error::invalid(
                "permit",
                "this is a lease, not a permit: send it with leased outcomes",
            ));
        }
        Ok(decoded)
    }

    /// Checks and reads a lease; every failure is `INVALID_ARGUMENT` naming `lease`.
    pub fn decode_lease<'a>(&self, bytes: &'a [u8]) -> Result<Decoded<'a>, Error> {
        let decoded = self.decode_any(bytes, "lease")?;
        if !decoded.lease {
            return Err(Error::invalid(
                "lease",
                "this is a permit, not a lease: report it with Report",
            ));
        }
        Ok(decoded)
    }

    fn decode_any<'a>(&self, bytes: &'a [u8], field: &'static str) -> Result<Decoded<'a>, Error> {
        let bad = |reason: &str| Error::invalid(field, reason);
        if bytes.is_empty() {
            return Err(bad("missing"));
        }
        if bytes.len() < HEADER + 1 + TAG {
            return Err(bad("truncated"));
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG);
        if !bool::from(self.tag(body).ct_eq(tag)) {
            return Err(bad(
                "not issued by this daemon, or changed (bad signature): pass the permit \
                 bytes unchanged",
            ));
        }
        if body[0] != VERSION {
            return Err(bad("unknown permit version"));
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let text = std::str::from_utf8(&body[HEADER..]).map_err(|_| bad("corrupt name"))?;
        let (name, caller) = match text.split_once('\0') {
            Some((name, caller)) => (name, Some(caller)),
            None => (text, None),
        };
        Ok(Decoded {
            name,
            caller,
            token: PermitToken {
                generation: word(10),
                serial: word(18),
                probe: body[1] & FLAG_PROBE != 0,
            },
            this_boot: word(2) == self.boot,
            lease: body[1] & FLAG_LEASE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits(boot: u64) -> Permits {
        Permits::new(&PermitKey([7; KEY_LEN]), boot)
    }

    fn token(probe: bool) -> PermitToken {
        PermitToken {
            generation: 7,
            serial: 42,
            probe,
        }
    }

    fn field_of(r: Result<Decoded<'_>, Error>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid permit, got {other:?}"),
        }
    }

    #[test]
    fn a_lease_is_not_a_permit_nor_a_permit_a_lease() {
        let p = permits(1);
        let lease = p.encode_lease("payments/charge", 7, 3);
        let d = p.decode_lease(&lease).expect("valid lease");
        assert!(d.lease && d.this_boot);
        assert_eq!(
            (d.name, d.token.generation, d.token.serial),
            ("payments/charge", 7, 3)
        );
        assert_eq!(field_of(p.decode(&lease)), "permit");
        let permit = p.encode("payments/charge", token(false));
        assert_eq!(field_of(p.decode_lease(&permit)), "lease");
        let mut forged = lease.clone();
        forged[1] = 0; // the lease flag cleared: the tag no longer matches
        assert_eq!(field_of(p.decode(&forged)), "permit");
    }

    #[test]
    fn round_trips_plain_and_probe_permits() {
        let p = permits(1);
        for t in [token(false), token(true)] {
            let bytes = p.encode("payments/charge", t);
            let d = p.decode(&bytes).expect("valid");
            assert_eq!((d.name, d.token, d.this_boot), ("payments/charge", t, true));
        }
    }

    #[test]
    fn the_acquiring_caller_rides_in_permits_and_leases() {
        let p = permits(1);
        let bytes = p.encode_as("payments/charge", Some("checkout"), token(false));
        let d = p.decode(&bytes).expect("valid");
        assert_eq!((d.name, d.caller), ("payments/charge", Some("checkout")));
        assert_eq!(d.token, token(false));
        let plain = p.encode("payments/charge", token(false));
        let d = p.decode(&plain).expect("valid");
        assert_eq!(d.caller, None, "no caller: none read back");
        let lease = p.encode_lease_as("payments/charge", Some("web"), 7, 3);
        let d = p.decode_lease(&lease).expect("valid lease");
        assert_eq!(
            (d.name, d.caller, d.token.serial),
            ("payments/charge", Some("web"), 3)
        );
        // The caller is under the tag too: changing it breaks the permit.
        let mut changed = bytes.clone();
        let at = changed.len() - TAG - 1;
        changed[at] ^= 1;
        assert_eq!(field_of(p.decode(&changed)), "permit");
    }

    #[test]
    fn a_permit_of_another_boot_is_read_but_marked() {
        let bytes = permits(1).encode("a", token(false));
        let d = permits(2).decode(&bytes).expect("same key");
        assert!(!d.this_boot);
    }

    #[test]
    fn rejects_empty_truncated_garbled_and_flipped_permits() {
        let p = permits(1);
        let bytes = p.encode("a", token(true));
        let mut cases = vec![
            Vec::new(),
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..5].to_vec(),
            b"garbage-garbage-garbage-garbage-garbage-garbage".to_vec(),
        ];
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            cases.push(flipped);
        }
        for bad in cases {
            assert_eq!(field_of(p.decode(&bad)), "permit", "{bad:?}");
        }
    }

    #[test]
    fn a_permit_built_without_the_key_is_rejected() {
        // What an attacker who read the generation could build: the layout is public.
        let forger = Permits::new(&PermitKey([8; KEY_LEN]), 1);
        let forged = forger.encode("victim", token(false));
        assert_eq!(field_of(permits(1).decode(&forged)), "permit");
    }

    #[test]
    fn the_key_file_is_created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = PermitKey::load_or_create(dir.path()).expect("create");
        let again = PermitKey::load_or_create(dir.path()).expect("load");
        assert_eq!(first.0, again.0);
        assert_eq!(format!("{first:?}"), "PermitKey(<secret>)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("damage it");
        let err = PermitKey::load_or_create(dir.path()).expect_err("damaged key");
        assert!(err.to_string().contains("5 bytes, expected 32"), "{err}");
    }
}
