//! `cbctl put NAME [spec flags]`: create a breaker or replace its spec.

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    commands::{Why, check_name, spec_error},
    conn::Ctx,
    error::Error,
    output::{BreakerJson, Show},
    spec_args::SpecArgs,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name: 1-256 bytes of A-Z a-z 0-9 . _ - : /
    pub name: String,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub why: Why,
}

#[derive(Serialize)]
pub(crate) struct PutJson {
    pub breaker: Option<BreakerJson>,
    pub created: bool,
    pub unchanged: bool,
    pub revision: u64,
}

/// `created` / `updated` / `unchanged`.
pub fn verdict(created: bool, unchanged: bool) -> &'static str {
    if created {
        "created"
    } else if unchanged {
        "unchanged"
    } else {
        "updated"
    }
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let spec = args.spec.0.to_proto().map_err(Error::Usage)?;
    // Validate here too, so a bad combination is named before anything is sent.
    cbd_proto::convert::spec_from_proto(&spec).map_err(|e| Error::Usage(spec_error(&e)))?;
    let mut admin = args.why.admin(ctx).await?;
    let resp = ctx.run(admin.put(&args.name, spec)).await?;
    ctx.output.print(&Put {
        name: args.name,
        resp,
    })
}

/// PutBreaker's answer.
struct Put {
    name: String,
    resp: pb::PutBreakerResponse,
}

impl Show for Put {
    fn json(&self) -> impl Serialize + '_ {
        PutJson {
            breaker: self.resp.breaker.as_ref().map(BreakerJson::from),
            created: self.resp.created,
            unchanged: self.resp.unchanged,
            revision: self.resp.revision,
        }
    }

    fn table(&self) -> Result<String, Error> {
        Ok(format!(
            "{} {} (revision {})",
            verdict(self.resp.created, self.resp.unchanged),
            self.name,
            self.resp.revision
        ))
    }
}
