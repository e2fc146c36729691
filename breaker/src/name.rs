//! Breaker names.

use crate::Error;

/// The longest breaker name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a breaker name: 1 to [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 . _ - : /`.
///
/// The set is small so that names are safe in URLs, log lines, metric labels and
/// store keys without escaping.
pub fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{} bytes long; at most {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some((offset, c)) = name.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(invalid(format!(
            "character {c:?} at byte {offset} is not allowed (use A-Z a-z 0-9 . _ - : /)"
        )));
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')
}

fn invalid(reason: String) -> Error {
    Error::InvalidName { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match validate_name(name) {
            Err(Error::InvalidName { reason }) => reason,
            other => panic!("expected InvalidName for {name:?}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_every_allowed_character() {
        validate_name("payments.api_v2-eu:west/charge").unwrap();
        validate_name("a").unwrap();
        validate_name("ABCxyz0189").unwrap();
        validate_name(&"x".repeat(MAX_NAME_LEN)).unwrap();
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(reason(""), "must not be empty");
    }

    #[test]
    fn rejects_too_long() {
        assert_eq!(
            reason(&"x".repeat(MAX_NAME_LEN + 1)),
            "257 bytes long; at most 256"
        );
    }

    #[test]
    fn rejects_bad_character_naming_it_and_its_byte_offset() {
        assert_eq!(
            reason("ab c"),
            "character ' ' at byte 2 is not allowed (use A-Z a-z 0-9 . _ - : /)"
        );
        assert!(reason("é").starts_with("character 'é' at byte 0 "));
        assert!(reason("aé").starts_with("character 'é' at byte 1 "));
        assert!(reason("a\n").starts_with("character '\\n' at byte 1 "));
    }
}
