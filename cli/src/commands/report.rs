//! `cbctl report PERMIT success|failure|ignored [--duration DUR]`.

use std::time::Duration;

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    conn::Ctx,
    error::Error,
    output::{self, Show},
    parse_duration,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The permit printed by `cbctl acquire` (hex).
    pub permit: String,
    /// How the call went.
    #[arg(value_enum)]
    pub outcome: OutcomeArg,
    /// How long the call took (counts for slow-call conditions).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Report as this caller; default: the caller the permit was acquired as.
    #[arg(long, value_name = "NAME")]
    pub caller: Option<String>,
}

/// The outcome argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    /// The dependency answered well.
    Success,
    /// The dependency failed.
    Failure,
    /// Not counted (the caller's own fault, a cancellation).
    Ignored,
}

impl OutcomeArg {
    /// The wire outcome.
    pub fn to_proto(self) -> pb::Outcome {
        match self {
            Self::Success => pb::Outcome::Success,
            Self::Failure => pb::Outcome::Failure,
            Self::Ignored => pb::Outcome::Ignored,
        }
    }
}

#[derive(Serialize)]
struct ReportJson {
    state: &'static str,
    stale: bool,
    revision: u64,
    generation: u64,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    let permit = hex::decode(args.permit.trim())
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "permit {:?}: expected the hex string printed by `cbctl acquire`",
                args.permit
            ))
        })?;
    let client = ctx.client_as(args.caller).await?;
    let resp = ctx
        .run(client.report_once(permit, args.outcome.to_proto(), args.duration))
        .await?;
    ctx.output.print(&Reported(resp))
}

/// Report's answer.
struct Reported(pb::ReportResponse);

impl Show for Reported {
    fn json(&self) -> impl Serialize + '_ {
        ReportJson {
            state: self.0.state().as_str_name(),
            stale: self.0.stale,
            revision: self.0.revision,
            generation: self.0.generation,
        }
    }

    fn table(&self) -> Result<String, Error> {
        let resp = &self.0;
        let mut rows = vec![
            (
                "state",
                output::short(resp.state().as_str_name()).to_owned(),
            ),
            ("generation", resp.generation.to_string()),
        ];
        if resp.stale {
            rows.push((
                "stale",
                "true (the permit is from an older generation: nothing changed)".into(),
            ));
        }
        rows.push(("revision", resp.revision.to_string()));
        Ok(output::key_values(&rows))
    }
}
