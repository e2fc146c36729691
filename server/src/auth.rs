//! Bearer tokens with two roles (`--auth-file`, docs/DESIGN.md §7).
//!
//! The file is TOML with one `[[token]]` table per token: `role = "admin"` or
//! `"client"`, either `token = "..."` or `sha256 = "<hex of the token's
//! SHA-256>"`, and optionally `name = "..."` (named like a breaker): who the token
//! is, recorded as the actor of every operator change it makes. Only SHA-256 digests are kept in memory; a presented token is hashed
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
    name: Option<String>,
}

/// Who presented a known token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// What the token may do.
    pub role: Role,
    /// The token's `name` in the auth file; `None` when it has none.
    pub name: Option<Arc<str>>,
}

impl Identity {
    /// The actor written into events: the token's name, else its role.
    pub fn actor(&self) -> &str {
        self.name.as_deref().unwrap_or(self.role.as_str())
    }
}

/// The known tokens, as SHA-256 digests with their identities.
#[derive(Clone)]
pub struct TokenSet {
    tokens: Vec<([u8; 32], Identity)>,
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
            let name = match t.name {
                Some(name) => {
                    cbd_breaker::validate_name(&name)
                        .map_err(|e| format!("[[token]] #{which}: name: {e}"))?;
                    if tokens
                        .iter()
                        .any(|(_, id): &(_, Identity)| id.name.as_deref() == Some(name.as_str()))
                    {
                        return Err(format!("[[token]] #{which}: name {name:?} is taken"));
                    }
                    Some(Arc::from(name))
                }
                None => None,
            };
            tokens.push((hash, Identity { role: t.role, name }));
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

    /// Who presented `presented`, comparing its digest with every known digest in
    /// constant time (no early exit on a match or a mismatch). Two tables with the
    /// same token: the last one wins.
    pub fn identify(&self, presented: &str) -> Option<&Identity> {
        use subtle::ConditionallySelectable as _;
        let hash = digest(presented.as_bytes());
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, (known, _)) in self.tokens.iter().enumerate() {
            let matched = known.ct_eq(&hash);
            index.conditional_assign(&(i as u64), matched);
            found |= matched;
        }
        bool::from(found).then(|| &self.tokens[index as usize].1)
    }

    /// The role of `presented` (see [`TokenSet::identify`]).
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.identify(presented).map(|id| id.role)
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
    pub fn check(&self, authorization: Option<&[u8]>, rpc: &str) -> Result<Identity, Error> {
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
        let identity = tokens.identify(token).ok_or(Error::Unauthenticated {
            reason: "unknown bearer token",
        })?;
        if !identity.role.may_call(rpc) {
            return Err(Error::PermissionDenied {
                role: identity.role.as_str(),
                rpc: rpc.to_owned(),
            });
        }
        Ok(identity.clone())
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
    fn named_tokens_identify_their_holder() {
        let set = TokenSet::parse(
            "[[token]]\nrole = \"admin\"\ntoken = \"a\"\nname = \"alice\"\n\
             [[token]]\nrole = \"admin\"\ntoken = \"b\"\n\
             [[token]]\nrole = \"client\"\ntoken = \"c\"\nname = \"checkout\"\n",
        )
        .expect("valid");
        let alice = set.identify("a").expect("known");
        assert_eq!((alice.role, alice.actor()), (Role::Admin, "alice"));
        assert_eq!(set.identify("b").expect("known").actor(), "admin");
        let checkout = set.identify("c").expect("known");
        assert_eq!(
            (checkout.role, checkout.actor()),
            (Role::Client, "checkout")
        );
        assert_eq!(set.identify("d"), None);
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
            "[[token]]\nrole = \"admin\"\ntoken = \"sekrit-1\"\nname = \"a b\"\n",
            "[[token]]\nrole = \"admin\"\ntoken = \"sekrit-1\"\nname = \"x\"\n[[token]]\nrole = \"client\"\ntoken = \"sekrit-2\"\nname = \"x\"\n",
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
        assert_eq!(
            auth.check(Some(b"bearer a"), rpc).ok().map(|i| i.role),
            Some(Role::Admin)
        );
        // A bad file on reload keeps the old tokens.
        std::fs::write(&path, "not toml [").expect("write");
        assert!(auth.reload().is_err());
        assert_eq!(
            auth.check(Some(b"Bearer a"), rpc).ok().map(|i| i.role),
            Some(Role::Admin)
        );
        std::fs::write(&path, "[[token]]\nrole = \"admin\"\ntoken = \"b\"\n").expect("write");
        assert_eq!(auth.reload().expect("reload"), 1);
        assert!(auth.check(Some(b"Bearer a"), rpc).is_err());
    }
}
