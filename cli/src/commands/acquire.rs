//! `cbctl acquire NAME`: ask for a permit, as a client would. A rejection is a
//! normal answer (exit 0, `allowed: false`).

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    commands::check_name,
    conn::Ctx,
    error::Error,
    output::{self, Show},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name.
    pub name: String,
    /// Print only the permit (an empty line when rejected), for `$(...)`.
    #[arg(short, long)]
    pub quiet: bool,
    /// Acquire as this caller (names as breaker names; with a named token, only
    /// that name). The permit carries it, so its report is attributed to it.
    #[arg(long, value_name = "NAME")]
    pub caller: Option<String>,
}

#[derive(Serialize)]
struct AcquireJson {
    allowed: bool,
    /// Hex; pass it to `cbctl report`.
    permit: String,
    state: &'static str,
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<String>,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
    shadow_rejected: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let client = ctx.client_as(args.caller).await?;
    let resp = ctx.run(client.acquire_once(&args.name)).await?;
    if args.quiet {
        return output::println(&hex::encode(&resp.permit));
    }
    ctx.output.print(&Acquired(resp))
}

/// Acquire's answer.
struct Acquired(pb::AcquireResponse);

impl Show for Acquired {
    fn json(&self) -> impl Serialize + '_ {
        let resp = &self.0;
        AcquireJson {
            allowed: resp.allowed,
            permit: hex::encode(&resp.permit),
            state: resp.state().as_str_name(),
            generation: resp.generation,
            retry_after: resp.retry_after.as_ref().map(output::fmt_pb_duration_ms),
            revision: resp.revision,
            valid_until: resp.valid_until.as_ref().map(output::fmt_timestamp),
            shadow_rejected: resp.shadow_rejected,
        }
    }

    fn table(&self) -> Result<String, Error> {
        let resp = &self.0;
        let mut rows = vec![
            ("allowed", resp.allowed.to_string()),
            (
                "state",
                output::short(resp.state().as_str_name()).to_owned(),
            ),
            ("generation", resp.generation.to_string()),
        ];
        if resp.allowed {
            rows.insert(1, ("permit", hex::encode(&resp.permit)));
        } else {
            let retry_after = resp.retry_after.as_ref().map(output::fmt_pb_duration_ms);
            rows.push((
                "retry after",
                retry_after.unwrap_or_else(|| "unknown (forced open)".into()),
            ));
        }
        if let Some(v) = resp.valid_until.as_ref().map(output::fmt_timestamp) {
            rows.push(("valid until", v));
        }
        if resp.shadow_rejected {
            rows.push(("shadow", "would have been rejected".into()));
        }
        rows.push(("revision", resp.revision.to_string()));
        Ok(output::key_values(&rows))
    }
}
