//! `cbctl history NAME [--since DURATION]`: one breaker's transitions and operator
//! changes from the daemon's event log (`cbd.v1.Admin/ListEvents`), oldest first,
//! with who made each change and why.

use std::time::{Duration, SystemTime};

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    commands::check_name,
    conn::Ctx,
    error::Error,
    output::{self, EventJson, Show},
};

/// Events asked for per ListEvents call (the daemon's maximum page).
const PAGE_SIZE: u32 = 1000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The breaker's name; a deleted breaker's history stays readable until the
    /// daemon compacts it (`--watch-retention`).
    pub name: String,
    /// Only the events of the last DURATION ("1h", "30m"), by this machine's clock.
    /// Unset: every retained event.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    pub since: Option<Duration>,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    check_name(&args.name)?;
    let since = match args.since {
        Some(d) => Some(
            SystemTime::now()
                .checked_sub(d)
                .ok_or_else(|| Error::Usage(format!("--since: {d:?} reaches before the epoch")))?,
        ),
        None => None,
    };
    let mut admin = ctx.client().await?.admin();
    let mut history = History {
        name: args.name.clone(),
        events: Vec::new(),
        revision: 0,
        oldest_retained_revision: 0,
    };
    let mut token = String::new();
    loop {
        let page = ctx
            .run(admin.events_page(&args.name, since, PAGE_SIZE, token))
            .await?;
        if history.revision == 0 {
            history.revision = page.revision;
            history.oldest_retained_revision = page.oldest_retained_revision;
        }
        history.events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if history.oldest_retained_revision > 1 && since.is_none() {
        eprintln!(
            "cbctl: history starts at revision {}: older events were compacted away",
            history.oldest_retained_revision
        );
    }
    ctx.output.print(&history)
}

/// Every page of the answer, gathered.
struct History {
    name: String,
    events: Vec<pb::Event>,
    revision: u64,
    oldest_retained_revision: u64,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    name: &'a str,
    revision: u64,
    oldest_retained_revision: u64,
    events: Vec<EventJson>,
}

impl Show for History {
    fn json(&self) -> impl Serialize + '_ {
        HistoryJson {
            name: &self.name,
            revision: self.revision,
            oldest_retained_revision: self.oldest_retained_revision,
            events: self.events.iter().map(EventJson::from).collect(),
        }
    }

    fn table(&self) -> Result<String, Error> {
        if self.events.is_empty() {
            return Ok(format!("{}: no retained events", self.name));
        }
        let rows: Vec<Vec<String>> = self.events.iter().map(row).collect();
        Ok(output::table(
            &["REVISION", "TIME", "KIND", "STATE", "OVERRIDE", "BY", "WHY"],
            &rows,
        ))
    }
}

/// One event as a row. BY is the operator (`alice@127.0.0.1:50312`), `-` for the
/// machine's own changes; WHY is the operator's reason when one was given, else
/// what the machine recorded ("5 consecutive failures").
fn row(e: &pb::Event) -> Vec<String> {
    let state = output::state_change_cell(e);
    let mut over = output::override_cell(e.r#override());
    if let Some(until) = &e.override_until {
        over.push_str(&format!(" until {}", output::fmt_timestamp(until)));
    }
    let (by, why) = match &e.operator {
        Some(op) => (
            output::operator_cell(op),
            if op.reason.is_empty() {
                e.reason.clone()
            } else {
                op.reason.clone()
            },
        ),
        None => ("-".to_owned(), e.reason.clone()),
    };
    vec![
        e.revision.to_string(),
        e.time
            .as_ref()
            .map(output::fmt_timestamp)
            .unwrap_or_else(|| "-".into()),
        output::short(e.kind().as_str_name()).to_owned(),
        state,
        over,
        by,
        why,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_names_the_operator_and_prefers_their_reason() {
        let mut e = pb::Event {
            revision: 7,
            kind: pb::EventKind::OverrideSet as i32,
            previous_state: pb::State::Closed as i32,
            state: pb::State::Open as i32,
            r#override: pb::Override::ForcedOpen as i32,
            reason: "override set: FORCED_OPEN".into(),
            operator: Some(pb::Operator {
                actor: "alice".into(),
                peer: "127.0.0.1:5000".into(),
                reason: "INC-123".into(),
            }),
            ..Default::default()
        };
        let r = row(&e);
        assert_eq!(r[0], "7");
        assert_eq!(r[2], "OVERRIDE_SET");
        assert_eq!(r[3], "CLOSED -> OPEN");
        assert_eq!(r[5], "alice@127.0.0.1:5000");
        assert_eq!(r[6], "INC-123");
        e.operator = None;
        let r = row(&e);
        assert_eq!(
            (r[5].as_str(), r[6].as_str()),
            ("-", "override set: FORCED_OPEN")
        );
    }
}
