//! Bearer tokens with two roles (`--auth-file`, docs/DESIGN.md §7).
//!
//! The file is TOML with one `[[token]]` table per token: `role = "admin"` or
//! `"client"`, and either `token = "..."` or `sha256 = "<hex of the token's
//! SHA-256>"`. Only SHA-256 digests are kept in memory; a presented token is hashed
//! and compared with every digest in constant time. Tokens are never logged, and
//! errors about the file name the table, never its contents.
//!
//! `client` may call what [`crate::methods`] declares for it (the Breakers service,
//! Admin GetBreaker and ListBreakers); `admin` may call everything. Health and
//! reflection need no token.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::RwLock;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// The Breakers service, and Admin GetBreaker / ListBreakers.
    Client,
}

impl Role {
    /// `admin` or `client`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Client => "client",
        }
    }

    /// Whether this role may call `rpc` (`package.Service/Method`).
    pub fn may_call(self, rpc: &str) -> bool {
        self == Self::Admin || crate::methods::required_role(rpc) == Self::Client
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenTable {
    role: Role,
    token: Option<String>,
    sha256: Option<String>,
}

/// The known tokens, as SHA-256 digests with their roles.
#[derive(Clone)]
pub struct TokenSet {
    tokens: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenSet {
    /// Parses the file's text. Error messages never quote the file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| {
            // toml's Display quotes the offending line, which may hold a token.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            }
        })?;
        if file.token.is_empty() {
            return Err("no [[token]] tables".into());
        }
        let mut tokens = Vec::with_capacity(file.token.len());
        for (i, t) in file.token.into_iter().enumerate() {
            let which = i + 1;
            let hash = match (t.token, t.sha256) {
                (Some(token), None) => {
                    if token.is_empty() {
                        return Err(format!("[[token]] #{which}: token is empty"));
                    }
                    digest(token.as_bytes())
                }
                (None, Some(hex_digest)) => {
                    let bytes = hex::decode(hex_digest.trim()).map_err(|_| {
                        format!("[[token]] #{which}: sha256 is not 64 hexadecimal digits")
                    })?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        format!("[[token]] #{which}: sha256 is not 64 hexadecimal digits")
                    })?
                }
                _ => {
                    return Err(format!(
                        "[[token]] #{which}: give exactly one of token and sha256"
                    ));
                }
            };
            tokens.push((hash, t.role));
        }
        Ok(Self { tokens })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The role of `presented`, comparing its digest with every known digest in
    /// constant time (no early exit on a match or a mismatch).
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let hash = digest(presented.as_bytes());
        let mut admin = subtle::Choice::from(0);
        let mut client = subtle::Choice::from(0);
        for (known, role) in &self.tokens {
            let matched = known.ct_eq(&hash);
            let is_admin = subtle::Choice::from(u8::from(*role == Role::Admin));
            admin |= matched & is_admin;
            client |= matched & !is_admin;
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(client) {
            Some(Role::Client)
        } else {
            None
        }
    }
}

/// The token set of `--auth-file`, swapped whole on reload.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<TokenSet>>,
}

impl Auth {
    /// Reads `path`; a bad file is a configuration error naming `--auth-file`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let tokens = read(path)?;
        tracing::info!(path = %path.display(), tokens = tokens.len(), "auth file loaded");
        Ok(Self {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// Re-reads the file (on SIGHUP). A bad file keeps the tokens in force.
    pub fn reload(&self) -> Result<usize, Error> {
        let tokens = read(&self.path)?;
        let n = tokens.len();
        *self.tokens.write() = Arc::new(tokens);
        Ok(n)
    }

    /// Checks the `authorization` header value (if any) for `rpc`.
    pub fn check(&self, authorization: Option<&[u8]>, rpc: &str) -> Result<Role, Error> {
        let header = authorization.ok_or(Error::Unauthenticated {
            reason: "missing bearer token (authorization: Bearer <token>)",
        })?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthenticated {
                reason: "malformed authorization header: expected `Bearer <token>`",
            })?;
        let tokens = self.tokens.read().clone();
        let role = tokens.role_of(token).ok_or(Error::Unauthenticated {
            reason: "unknown bearer token",
        })?;
        if !role.may_call(rpc) {
            return Err(Error::PermissionDenied {
                role: role.as_str(),
                rpc: rpc.to_owned(),
            });
        }
        Ok(role)
    }
}

fn read(path: &Path) -> Result<TokenSet, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("--auth-file", format!("{}: {e}", path.display())))?;
    TokenSet::parse(&text)
        .map_err(|e| Error::invalid("--auth-file", format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[token]]
role = "admin"
token = "admin-secret"

[[token]]
role = "client"
sha256 = "8c6744c9d42ec2cb9e8885b54ff744d0a6a8d3d8a7a1fd9e1f6ab2e7e1f0c3b9"
"#;

    #[test]
    fn plain_and_hashed_tokens_resolve_to_their_roles() {
        let hashed = hex::encode(Sha256::digest(b"client-secret"));
        let text = FILE.replace(
            "8c6744c9d42ec2cb9e8885b54ff744d0a6a8d3d8a7a1fd9e1f6ab2e7e1f0c3b9",
            &hashed,
        );
        let set = TokenSet::parse(&text).expect("valid");
        assert_eq!(set.len(), 2);
        assert_eq!(set.role_of("admin-secret"), Some(Role::Admin));
        assert_eq!(set.role_of("client-secret"), Some(Role::Client));
        assert_eq!(set.role_of("nope"), None);
    }

    #[test]
    fn roles_gate_rpcs() {
        assert!(Role::Client.may_call("cbd.v1.Breakers/Acquire"));
        assert!(Role::Client.may_call("cbd.v1.Admin/ListBreakers"));
        assert!(!Role::Client.may_call("cbd.v1.Admin/PutBreaker"));
        assert!(Role::Admin.may_call("cbd.v1.Admin/PutBreaker"));
    }

    #[test]
    fn bad_files_are_errors_that_do_not_quote_tokens() {
        for bad in [
            "",
            "[[token]]\nrole = \"root\"\ntoken = \"sekrit-1\"\n",
            "[[token]]\nrole = \"admin\"\n",
            "[[token]]\nrole = \"admin\"\ntoken = \"sekrit-1\"\nsha256 = \"00\"\n",
            "[[token]]\nrole = \"admin\"\nsha256 = \"sekrit-1\"\n",
            "[[token]]\nrole = \"admin\"\ntoken = \"sekrit-1\"\nextra = 1\n",
            "[[token]]\nrole = \"admin\"\ntoken = \"\"\n",
        ] {
            let err = TokenSet::parse(bad).expect_err(bad);
            assert!(!err.contains("sekrit"), "{err}");
        }
    }

    #[test]
    fn check_maps_to_unauthenticated_and_permission_denied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            "[[token]]\nrole = \"client\"\ntoken = \"c\"\n[[token]]\nrole = \"admin\"\ntoken = \"a\"\n",
        )
        .expect("write");
        let auth = Auth::load(&path).expect("load");
        let rpc = "cbd.v1.Admin/PutBreaker";
        assert!(matches!(
            auth.check(None, rpc),
            Err(Error::Unauthenticated { .. })
        ));
        assert!(matches!(
            auth.check(Some(b"Basic x"), rpc),
            Err(Error::Unauthenticated { .. })
        ));
        assert!(matches!(
            auth.check(Some(b"Bearer zzz"), rpc),
            Err(Error::Unauthenticated { .. })
        ));
        let denied = auth.check(Some(b"Bearer c"), rpc).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "role client may not call cbd.v1.Admin/PutBreaker"
        );
        assert_eq!(auth.check(Some(b"bearer a"), rpc).ok(), Some(Role::Admin));
        // A bad file on reload keeps the old tokens.
        std::fs::write(&path, "not toml [").expect("write");
        assert!(auth.reload().is_err());
        assert_eq!(auth.check(Some(b"Bearer a"), rpc).ok(), Some(Role::Admin));
        std::fs::write(&path, "[[token]]\nrole = \"admin\"\ntoken = \"b\"\n").expect("write");
        assert_eq!(auth.reload().expect("reload"), 1);
        assert!(auth.check(Some(b"Bearer a"), rpc).is_err());
    }
}
