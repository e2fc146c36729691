//! `cbctl list [PREFIX]`: every breaker, paging through them all.

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson, Show},
};

/// Breakers per ListBreakers call (the daemon's maximum).
const PAGE_SIZE: u32 = 1000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only breakers whose name starts with this ("payments/").
    pub prefix: Option<String>,
}

#[derive(Serialize)]
struct ListJson {
    breakers: Vec<BreakerJson>,
    revision: u64,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    let (breakers, revision) = fetch_all(ctx, args.prefix.as_deref().unwrap_or("")).await?;
    ctx.output.print(&Listed { breakers, revision })
}

/// Every page of ListBreakers, joined.
struct Listed {
    breakers: Vec<pb::BreakerStatus>,
    revision: u64,
}

impl Show for Listed {
    fn json(&self) -> impl Serialize + '_ {
        ListJson {
            breakers: self.breakers.iter().map(BreakerJson::from).collect(),
            revision: self.revision,
        }
    }

    fn table(&self) -> Result<String, Error> {
        let rows: Vec<Vec<String>> = self
            .breakers
            .iter()
            .map(|b| {
                vec![
                    b.name.clone(),
                    output::short(b.state().as_str_name()).to_owned(),
                    output::override_cell(b.r#override()),
                    b.generation.to_string(),
                    format!("{}/{}", b.window_failures, b.window_calls),
                    output::retry_after_cell(b),
                ]
            })
            .collect();
        Ok(output::table(
            &[
                "NAME",
                "STATE",
                "OVERRIDE",
                "GEN",
                "FAILURES/CALLS",
                "RETRY-AFTER",
            ],
            &rows,
        ))
    }
}

/// Every breaker under `prefix`, in name order, and the revision of the last page.
pub async fn fetch_all(ctx: &Ctx, prefix: &str) -> Result<(Vec<pb::BreakerStatus>, u64), Error> {
    let mut admin = ctx.client().await?.admin();
    let mut breakers = Vec::new();
    let mut page_token = String::new();
    let mut revision = 0;
    loop {
        let page = ctx
            .run(admin.list_page(prefix, PAGE_SIZE, std::mem::take(&mut page_token)))
            .await?;
        breakers.extend(page.breakers);
        revision = revision.max(page.revision);
        if page.next_page_token.is_empty() {
            return Ok((breakers, revision));
        }
        page_token = page.next_page_token;
    }
}
