//! One module per verb: its clap arguments (`Args`) and its `run`.

pub mod acquire;
pub mod apply;
pub mod bench;
pub mod completion;
pub mod delete;
pub mod get;
pub mod health;
pub mod history;
pub mod list;
pub mod overrides;
pub mod put;
pub mod report;
pub mod reset;
pub mod status;
pub mod watch;

use crate::{conn::Ctx, error::Error};

/// `--reason`, on every verb that changes a breaker.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Why {
    /// Why you make this change ("INC-123: payments degraded"): the daemon keeps it
    /// in the event log with who made the change (the token's name, else its role)
    /// and from where; `cbctl history` shows it. At most 256 bytes, no control
    /// characters.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl Why {
    /// An admin client whose writes carry this reason.
    pub async fn admin(&self, ctx: &Ctx) -> Result<cbd_client::Admin, Error> {
        let admin = ctx.client().await?.admin();
        Ok(admin.with_reason(self.reason.clone().unwrap_or_default()))
    }
}

/// Checks a breaker name as the daemon would (1-256 bytes of `A-Z a-z 0-9 . _ - : /`),
/// so that a typo is a usage error before anything is sent.
pub fn check_name(name: &str) -> Result<(), Error> {
    cbd_breaker::validate_name(name)
        .map_err(|e| Error::Usage(format!("breaker name {name:?}: {e}")))
}

/// A spec error in the words of `put`'s flags and apply files (`failure_rate`, not
/// `failure_rate_percent`).
pub use cbd_proto::schema::spec_error;
