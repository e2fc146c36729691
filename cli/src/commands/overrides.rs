//! `cbctl force-open | force-closed | disable | shadow NAME [--for DUR] [--reason TEXT]`
//! and `cbctl release NAME`: operator overrides, persisted until released or, with
//! `--for`, until they run out and clear themselves on the daemon's timer.

use std::time::Duration;

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    commands::{Why, check_name},
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson, Show},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
    /// The override clears by itself this long after it is set (an
    /// OVERRIDE_EXPIRED event); at most 30 days. Unset: it holds until released.
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::parse_duration)]
    pub lasts: Option<Duration>,
    #[command(flatten)]
    pub why: Why,
}

/// `release`: an override has no duration to clear.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The breaker's name.
    pub name: String,
    #[command(flatten)]
    pub why: Why,
}

/// A breaker after a change, and the revision (SetOverride and ResetBreaker).
#[derive(Serialize)]
pub(crate) struct ChangedJson {
    pub breaker: Option<BreakerJson>,
    pub revision: u64,
}

/// `payments: state OPEN, override FORCED_OPEN (revision 7)`.
pub(crate) fn changed_line(name: &str, b: Option<&pb::BreakerStatus>, revision: u64) -> String {
    match b {
        Some(b) => {
            let until = b
                .override_until
                .as_ref()
                .map(|t| format!(" until {}", output::fmt_timestamp(t)))
                .unwrap_or_default();
            format!(
                "{name}: state {}, override {}{until} (revision {revision})",
                output::short(b.state().as_str_name()),
                output::override_cell(b.r#override()),
            )
        }
        None => format!("{name}: done (revision {revision})"),
    }
}

pub async fn run(ctx: &Ctx, args: Args, which: pb::Override) -> Result<(), Error> {
    set(ctx, &args.name, which, args.lasts, &args.why).await
}

pub async fn release(ctx: &Ctx, args: ReleaseArgs) -> Result<(), Error> {
    set(ctx, &args.name, pb::Override::Unspecified, None, &args.why).await
}

async fn set(
    ctx: &Ctx,
    name: &str,
    which: pb::Override,
    lasts: Option<Duration>,
    why: &Why,
) -> Result<(), Error> {
    check_name(name)?;
    if lasts.is_some_and(|d| d.is_zero()) {
        return Err(Error::Usage("--for: must be more than zero".into()));
    }
    let mut admin = why.admin(ctx).await?;
    let resp = ctx.run(admin.set_override_for(name, which, lasts)).await?;
    print_changed(ctx, name, resp.breaker.as_ref(), resp.revision)
}

/// Prints a breaker after an operator change (override or reset).
pub(crate) fn print_changed(
    ctx: &Ctx,
    name: &str,
    breaker: Option<&pb::BreakerStatus>,
    revision: u64,
) -> Result<(), Error> {
    ctx.output.print(&Changed {
        name,
        breaker,
        revision,
    })
}

/// A breaker after an operator change.
struct Changed<'a> {
    name: &'a str,
    breaker: Option<&'a pb::BreakerStatus>,
    revision: u64,
}

impl Show for Changed<'_> {
    fn json(&self) -> impl Serialize + '_ {
        ChangedJson {
            breaker: self.breaker.map(BreakerJson::from),
            revision: self.revision,
        }
    }

    fn table(&self) -> Result<String, Error> {
        Ok(changed_line(self.name, self.breaker, self.revision))
    }
}
