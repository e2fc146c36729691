//! `cbctl reset NAME`: back to CLOSED with an empty window and no backoff.

use crate::{
    commands::{check_name, overrides::print_changed},
    conn::Ctx,
    error::Error,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = ctx.client().await?.admin();
    let resp = ctx.run(admin.reset(&args.name)).await?;
    print_changed(ctx, &args.name, resp.breaker.as_ref(), resp.revision)
}
