//! `cbctl delete NAME`.

use serde::Serialize;

use crate::{
    commands::{Why, check_name},
    conn::Ctx,
    error::Error,
    output::Show,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
    #[command(flatten)]
    pub why: Why,
}

#[derive(Serialize)]
struct DeleteJson {
    name: String,
    revision: u64,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = args.why.admin(ctx).await?;
    let resp = ctx.run(admin.delete(&args.name)).await?;
    ctx.output.print(&DeleteJson {
        name: args.name,
        revision: resp.revision,
    })
}

impl Show for DeleteJson {
    fn json(&self) -> impl Serialize + '_ {
        self
    }

    fn table(&self) -> Result<String, Error> {
        Ok(format!(
            "deleted {} (revision {})",
            self.name, self.revision
        ))
    }
}
