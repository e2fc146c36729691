//! One module per verb: its clap arguments (`Args`) and its `run`.

pub mod acquire;
pub mod apply;
pub mod bench;
pub mod completion;
pub mod delete;
pub mod get;
pub mod health;
pub mod list;
pub mod overrides;
pub mod put;
pub mod report;
pub mod reset;
pub mod status;
pub mod watch;

use crate::error::Error;

/// Checks a breaker name as the daemon would (1-256 bytes of `A-Z a-z 0-9 . _ - : /`),
/// so that a typo is a usage error before anything is sent.
pub fn check_name(name: &str) -> Result<(), Error> {
    cbd_breaker::validate_name(name)
        .map_err(|e| Error::Usage(format!("breaker name {name:?}: {e}")))
}

/// A spec error in the words of `put`'s flags and apply files (`failure_rate`, not
/// `failure_rate_percent`).
pub use cbd_proto::schema::spec_error;
