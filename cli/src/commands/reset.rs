//! `cbctl reset NAME`: back to CLOSED with an empty window and no backoff.

use crate::{
    commands::{Why, check_name, overrides::print_changed},
    conn::Ctx,
    error::Error,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
    #[command(flatten)]
    pub why: Why,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = args.why.admin(ctx).await?;
    let resp = ctx.run(admin.reset(&args.name)).await?;
    print_changed(ctx, &args.name, resp.breaker.as_ref(), resp.revision)
}
