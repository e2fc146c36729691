//! `cbctl reset NAME`: back to CLOSED with an empty window and no backoff.

use cbd_proto::v1 as pb;

use crate::{
    Output,
    commands::{
        check_name,
        overrides::{ChangedJson, changed_line},
    },
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = ctx.admin().await?;
    let resp = ctx
        .call(admin.reset_breaker(pb::ResetBreakerRequest {
            name: args.name.clone(),
        }))
        .await?;
    match ctx.output {
        Output::Json => output::print_json_pretty(&ChangedJson {
            breaker: resp.breaker.as_ref().map(BreakerJson::from),
            revision: resp.revision,
        }),
        Output::Table => output::println(&changed_line(
            &args.name,
            resp.breaker.as_ref(),
            resp.revision,
        )),
    }
}
