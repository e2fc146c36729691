//! The cbd gRPC contract: `proto/cbd/v1/*.proto` and the Rust code generated from it
//! at build time (protox: no `protoc` needed).
//!
//! `cbd::v1` holds the messages, `cbd::v1::breakers_client` / `breakers_server` and
//! `admin_client` / `admin_server` the services. [`FILE_DESCRIPTOR_SET`] is what
//! server reflection serves.

/// Generated code, laid out as the proto packages are (`google.rpc`, `cbd.v1`) so
/// that the generated cross-package paths resolve. Lints do not apply to it.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod pb {
    /// Package `google.rpc`: the standard status model, for per-item errors.
    pub mod google {
        /// `google.rpc`.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    /// Package `cbd.v1`.
    pub mod cbd {
        /// `cbd.v1`: the messages and both services.
        pub mod v1 {
            tonic::include_proto!("cbd.v1");
        }
    }
}

pub use pb::cbd::v1;
pub use pb::google::rpc;

/// Metadata key of an `UNAVAILABLE` answer from a replica that is not the leader
/// (docs/DESIGN.md §11): the leader's URL, e.g. `http://10.0.0.7:7411`; empty while no
/// leader is known. A client switches to that URL, or (empty) to its next endpoint.
/// Without this key an `UNAVAILABLE` comes from the leader itself.
pub const LEADER_METADATA: &str = "cbd-leader";

pub mod codec;
pub mod convert;
pub mod schema;
pub mod spec_fields;

/// The encoded `FileDescriptorSet` of `proto/cbd/v1` and its imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cbd_descriptor.bin"));

pub use prost_types;
