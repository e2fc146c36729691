//! The permit's wire form: opaque to clients, checked by the daemon.
//!
//! Layout: `version (1) | flags (1) | generation (8, LE) | probe id (8, LE) | name | crc32 (4, LE)`.
//! The checksum turns truncated or garbled permits into a clear `INVALID_ARGUMENT`
//! instead of a report against the wrong breaker.

use cbd_breaker::PermitToken;

use crate::error::Error;

const VERSION: u8 = 1;
const FLAG_PROBE: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 8;
const TRAILER: usize = 4;

/// Encodes a permit for breaker `name`.
pub fn encode(name: &str, token: PermitToken) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + name.len() + TRAILER);
    out.push(VERSION);
    out.push(if token.probe.is_some() { FLAG_PROBE } else { 0 });
    out.extend_from_slice(&token.generation.to_le_bytes());
    out.extend_from_slice(&token.probe.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a permit into its breaker name and token; every failure names `permit`.
pub fn decode(bytes: &[u8]) -> Result<(&str, PermitToken), Error> {
    let bad = |reason: &str| Error::invalid("permit", reason);
    if bytes.is_empty() {
        return Err(bad("missing"));
    }
    if bytes.len() < HEADER + 1 + TRAILER {
        return Err(bad("truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - TRAILER);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("truncated"))?);
    if crc32fast::hash(body) != crc {
        return Err(bad(
            "corrupt (checksum mismatch): pass the permit bytes unchanged",
        ));
    }
    if body[0] != VERSION {
        return Err(bad("unknown permit version"));
    }
    let flags = body[1];
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let generation = word(2);
    let probe = (flags & FLAG_PROBE != 0).then(|| word(10));
    let name = std::str::from_utf8(&body[HEADER..]).map_err(|_| bad("corrupt name"))?;
    Ok((name, PermitToken { generation, probe }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(probe: Option<u64>) -> PermitToken {
        PermitToken {
            generation: 7,
            probe,
        }
    }

    #[test]
    fn round_trips_closed_and_probe_permits() {
        for t in [token(None), token(Some(42))] {
            let bytes = encode("payments/charge", t);
            assert_eq!(decode(&bytes).expect("valid"), ("payments/charge", t));
        }
    }

    #[test]
    fn rejects_empty_truncated_and_garbled_permits() {
        let bytes = encode("a", token(Some(1)));
        for bad in [
            Vec::new(),
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..5].to_vec(),
            b"garbage-garbage-garbage-garbage".to_vec(),
        ] {
            match decode(&bad) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "permit"),
                other => panic!("expected invalid permit, got {other:?}"),
            }
        }
        let mut flipped = bytes.clone();
        flipped[3] ^= 0xff;
        assert!(decode(&flipped).is_err());
    }
}
