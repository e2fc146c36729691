//! `cbctl put NAME [spec flags]`: create a breaker or replace its spec.

use std::time::Duration;

use cbd_proto::{
    spec_fields::{FallbackName, SpecFields},
    v1 as pb,
};
use serde::Serialize;

use crate::{
    Output,
    commands::{check_name, spec_error},
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson},
    parse_duration,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name: 1-256 bytes of A-Z a-z 0-9 . _ - : /
    pub name: String,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// The spec as flags: the keys of apply files and the daemon's `[[template]]`
/// tables. The whole spec is replaced: keys not given take their defaults.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Spec (unset keys take their defaults)")]
pub struct SpecArgs {
    /// Trip after N failures in a row [default: 5 when no other trip condition is set].
    #[arg(long, value_name = "N")]
    pub consecutive_failures: Option<u32>,
    /// Trip when failures reach PCT percent (1-100) of the window.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub failure_rate: Option<u32>,
    /// Trip when slow successes reach PCT percent (1-100) of the window.
    #[arg(long, value_name = "PCT", value_parser = parse_percent, requires = "slow_call_duration")]
    pub slow_call_rate: Option<u32>,
    /// A success slower than this is a slow call.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub slow_call_duration: Option<Duration>,
    /// Outcomes needed in the window before the rates count [default: 10].
    #[arg(long, value_name = "N")]
    pub minimum_calls: Option<u32>,
    /// Count window: the last N outcomes [default: 100].
    #[arg(long, value_name = "N", conflicts_with = "window_duration")]
    pub window_calls: Option<u32>,
    /// Time window: the outcomes of the last DUR.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub window_duration: Option<Duration>,
    /// Buckets of the time window [default: 10].
    #[arg(long, value_name = "N", requires = "window_duration")]
    pub window_buckets: Option<u32>,
    /// How long the breaker stays open after it trips [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub open_duration: Option<Duration>,
    /// Exponential backoff of the open duration on repeated trips, up to this.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_open_duration: Option<Duration>,
    /// Half-open probes in flight at once [default: 1].
    #[arg(long, value_name = "N")]
    pub half_open_permits: Option<u32>,
    /// Probe successes that close the breaker [default: 1].
    #[arg(long, value_name = "N")]
    pub success_threshold: Option<u32>,
    /// An unreported half-open probe counts as a failure after this [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub permit_ttl: Option<Duration>,
    /// What clients do when the daemon is unreachable [default: open].
    #[arg(long, value_enum)]
    pub fallback: Option<FallbackArg>,
    /// Clients may reuse a CLOSED answer for this long without asking.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub cache_ttl: Option<Duration>,
}

/// `--fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FallbackArg {
    /// Allow the call.
    Open,
    /// Reject the call.
    Closed,
    /// Run an in-process breaker with the last known spec.
    Local,
}

impl SpecArgs {
    /// The flags as the shared flat key set.
    pub fn to_fields(&self) -> SpecFields {
        SpecFields {
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate,
            slow_call_rate: self.slow_call_rate,
            slow_call_duration: self.slow_call_duration,
            minimum_calls: self.minimum_calls,
            window_calls: self.window_calls,
            window_duration: self.window_duration,
            window_buckets: self.window_buckets,
            open_duration: self.open_duration,
            max_open_duration: self.max_open_duration,
            half_open_permits: self.half_open_permits,
            success_threshold: self.success_threshold,
            permit_ttl: self.permit_ttl,
            fallback: self.fallback.map(|f| match f {
                FallbackArg::Open => FallbackName::Open,
                FallbackArg::Closed => FallbackName::Closed,
                FallbackArg::Local => FallbackName::Local,
            }),
            cache_ttl: self.cache_ttl,
        }
    }
}

/// "50" or "50%".
fn parse_percent(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (1-100)"))?;
    if !(1..=100).contains(&n) {
        return Err(format!("{n} is not in 1..=100"));
    }
    Ok(n)
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
    let spec = args.spec.to_fields().to_proto().map_err(Error::Usage)?;
    // Validate here too, so a bad combination is named before anything is sent.
    cbd_proto::convert::spec_from_proto(&spec).map_err(|e| Error::Usage(spec_error(&e)))?;
    let mut admin = ctx.admin().await?;
    let resp = ctx
        .call(admin.put_breaker(pb::PutBreakerRequest {
            name: args.name.clone(),
            spec: Some(spec),
        }))
        .await?;
    match ctx.output {
        Output::Json => output::print_json_pretty(&PutJson {
            breaker: resp.breaker.as_ref().map(BreakerJson::from),
            created: resp.created,
            unchanged: resp.unchanged,
            revision: resp.revision,
        }),
        Output::Table => output::println(&format!(
            "{} {} (revision {})",
            verdict(resp.created, resp.unchanged),
            args.name,
            resp.revision
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_take_an_optional_sign() {
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("7"), Ok(7));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("x").is_err());
    }
}
