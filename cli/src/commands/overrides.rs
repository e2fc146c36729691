//! `cbctl force-open | force-closed | disable | shadow | release NAME`: operator
//! overrides, persisted until released.

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    commands::check_name,
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson, Show},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
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
        Some(b) => format!(
            "{name}: state {}, override {} (revision {revision})",
            output::short(b.state().as_str_name()),
            output::override_cell(b.r#override()),
        ),
        None => format!("{name}: done (revision {revision})"),
    }
}

pub async fn run(ctx: &Ctx, args: Args, which: pb::Override) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = ctx.client().await?.admin();
    let resp = ctx.run(admin.set_override(&args.name, which)).await?;
    print_changed(ctx, &args.name, resp.breaker.as_ref(), resp.revision)
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
