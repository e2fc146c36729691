//! The method table (docs/DESIGN.md §7): every RPC the daemon serves, read once from
//! the file descriptors (cbd's and health's), with whether it streams and which role
//! it needs. Auth, the request limit, the timeout and the metric labels all look
//! methods up here, so no RPC name is written out by hand.

use std::sync::LazyLock;

use prost::Message as _;
use prost_types::FileDescriptorSet;

use crate::auth::Role;

/// What role `client` may call: a full path, or `package.Service/*` for a whole
/// service. `admin` may call everything. The one declaration of roles.
const CLIENT_MAY_CALL: &[&str] = &[
    "cbd.v1.Breakers/*",
    "cbd.v1.Admin/GetBreaker",
    "cbd.v1.Admin/ListBreakers",
    "cbd.v1.Admin/Status",
    "cbd.v1.Admin/ListEvents",
];

/// Paths under this prefix are guarded (token, request limit, timeout); health and
/// reflection are not, so probes and tooling keep working.
const GUARDED_PREFIX: &str = "cbd.";

/// One RPC.
#[derive(Debug, PartialEq, Eq)]
pub struct Method {
    /// `package.Service/Method`, as in the request path without its leading `/`.
    pub path: String,
    /// Client or server streaming: no timeout, and a request slot only while opening.
    pub streaming: bool,
    /// The least role that may call it (`client` or `admin`).
    pub role: Role,
}

static METHODS: LazyLock<Vec<Method>> = LazyLock::new(|| {
    let mut methods = Vec::new();
    for encoded in [
        cbd_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        // Both sets are compiled into the binary; failing to decode one is a build bug.
        let set = FileDescriptorSet::decode(encoded).expect("embedded descriptor set decodes");
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let path = format!("{package}.{}/{}", service.name(), method.name());
                    methods.push(Method {
                        role: required_role(&path),
                        streaming: method.client_streaming() || method.server_streaming(),
                        path,
                    });
                }
            }
        }
    }
    methods
});

/// Every method served, cbd's and health's (reflection's are not listed).
pub fn all() -> &'static [Method] {
    &METHODS
}

/// The method at `path` (`package.Service/Method`), if the daemon serves it.
pub fn find(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.path == path)
}

/// Whether `path` is guarded: any `cbd.*` path, served or not.
pub fn is_guarded(path: &str) -> bool {
    path.starts_with(GUARDED_PREFIX)
}

/// Whether `path` is a streaming RPC.
pub fn is_streaming(path: &str) -> bool {
    find(path).is_some_and(|m| m.streaming)
}

/// The least role that may call `path`; unknown paths need `admin`.
pub fn required_role(path: &str) -> Role {
    if CLIENT_MAY_CALL.iter().any(|p| matches(p, path)) {
        Role::Client
    } else {
        Role::Admin
    }
}

fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(service) => path.starts_with(service),
        None => pattern == path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_comes_from_the_descriptors() {
        let acquire = find("cbd.v1.Breakers/Acquire").expect("Acquire");
        assert!(!acquire.streaming);
        assert_eq!(acquire.role, Role::Client);
        assert!(find("cbd.v1.Breakers/Watch").expect("Watch").streaming);
        assert!(find("cbd.v1.Breakers/Session").expect("Session").streaming);
        assert_eq!(
            find("cbd.v1.Admin/PutBreaker").expect("PutBreaker").role,
            Role::Admin
        );
        assert!(find("grpc.health.v1.Health/Check").is_some());
        assert!(find("cbd.v1.Admin/Whatever").is_none());
        assert!(is_guarded("cbd.v1.Admin/Whatever"));
        assert!(!is_guarded("grpc.health.v1.Health/Check"));
    }

    #[test]
    fn every_role_declaration_names_a_served_method() {
        for pattern in CLIENT_MAY_CALL {
            assert!(
                all().iter().any(|m| matches(pattern, &m.path)),
                "{pattern} matches no method"
            );
        }
    }

    #[test]
    fn every_served_method_has_a_generated_service() {
        // The generated servers name their services; the table must know them all.
        use tonic::server::NamedService;
        for service in [
            <cbd_proto::v1::breakers_server::BreakersServer<crate::service::BreakersService>>::NAME,
            <cbd_proto::v1::admin_server::AdminServer<crate::service::AdminService>>::NAME,
        ] {
            assert!(
                all()
                    .iter()
                    .any(|m| m.path.starts_with(&format!("{service}/"))),
                "{service}"
            );
        }
    }
}
