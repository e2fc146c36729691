//! `cbctl get NAME`: one breaker's spec and status.

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

#[derive(Serialize)]
struct GetJson {
    breaker: Option<BreakerJson>,
    revision: u64,
}

/// GetBreaker's answer.
struct Got(pb::GetBreakerResponse);

impl Show for Got {
    fn json(&self) -> impl Serialize + '_ {
        GetJson {
            breaker: self.0.breaker.as_ref().map(BreakerJson::from),
            revision: self.0.revision,
        }
    }

    fn table(&self) -> Result<String, Error> {
        self.0
            .breaker
            .as_ref()
            .map(describe)
            .ok_or_else(|| Error::Other("the daemon answered without a breaker".into()))
    }
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let mut admin = ctx.client().await?.admin();
    let resp = ctx.run(admin.get(&args.name)).await?;
    ctx.output.print(&Got(resp))
}

/// A breaker for people: its status, then its spec as the keys of `put` / apply files.
pub fn describe(b: &pb::BreakerStatus) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("name", b.name.clone()),
        ("state", output::short(b.state().as_str_name()).to_owned()),
        ("override", override_detail(b)),
        ("generation", b.generation.to_string()),
        (
            "window",
            format!(
                "{} calls, {} failures, {} slow",
                b.window_calls, b.window_failures, b.window_slow_calls
            ),
        ),
        ("consecutive failures", b.consecutive_failures.to_string()),
    ];
    if let Some(until) = &b.open_until {
        rows.push((
            "open until",
            format!(
                "{} (retry after {})",
                output::fmt_timestamp(until),
                output::retry_after_cell(b)
            ),
        ));
    }
    if b.backoff_level > 0 {
        rows.push(("backoff level", b.backoff_level.to_string()));
    }
    if b.state() == pb::State::HalfOpen {
        rows.push((
            "half-open",
            format!(
                "{} probes in flight, {} successes",
                b.probes_in_flight, b.half_open_successes
            ),
        ));
    }
    rows.push(("mod revision", b.mod_revision.to_string()));
    let mut text = output::key_values(&rows);
    if !b.failing_callers.is_empty() {
        // The window's top failing callers (docs/DESIGN.md §3.7), aligned.
        text.push_str("\nfailing callers:");
        let names: Vec<&str> = b
            .failing_callers
            .iter()
            .map(|c| output::caller_cell(&c.caller))
            .collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
        for (c, name) in b.failing_callers.iter().zip(names) {
            let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
            text.push_str(&format!(
                "\n  {name:<width$}  {} of {}",
                plural(c.failures, "failure"),
                plural(c.calls, "call")
            ));
        }
    }
    if let Some(spec) = &b.spec {
        text.push_str("\nspec:");
        let spec_rows = cbd_proto::spec_fields::SpecFields::from_proto(spec).rows();
        let width = spec_rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in spec_rows {
            text.push_str(&format!("\n  {k:<width$} = {v}"));
        }
    }
    text
}

/// `FORCED_OPEN until 2026-12-03T10:00:00Z, by alice@127.0.0.1:50312: "INC-123"`.
fn override_detail(b: &pb::BreakerStatus) -> String {
    let mut cell = output::override_cell(b.r#override());
    if let Some(until) = &b.override_until {
        cell.push_str(&format!(" until {}", output::fmt_timestamp(until)));
    }
    if let Some(op) = &b.override_operator {
        cell.push_str(", ");
        cell.push_str(&output::by_operator(op));
    }
    cell
}
