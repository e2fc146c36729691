//! `cbctl watch [PREFIX] [--name NAME]... [--from-revision N]`: one line per event.
//!
//! The stream is `cbd-client`'s resuming watch: when the daemon restarts or the
//! connection breaks it reconnects with backoff and resumes from the revision after
//! the last one printed, so nothing is lost or repeated, saying so on stderr (stdout
//! carries the events only). If the revision to resume at was compacted away, it
//! exits non-zero naming the oldest retained revision, as `etcdctl watch --rev` does;
//! with `--resync` it starts over with a snapshot marked `resync` instead.

use cbd_client::{OnCompaction, WatchEvent, WatchFilter};
use cbd_proto::v1 as pb;
use futures::StreamExt as _;
use serde::Serialize;

use crate::{
    Output,
    conn::Ctx,
    error::Error,
    output::{self, BreakerJson, EventJson, Show},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only breakers whose name starts with this.
    pub prefix: Option<String>,
    /// Also (or only) these breakers; repeat for several.
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Replay every retained change from this revision on (no snapshot), then follow.
    #[arg(long, value_name = "N")]
    pub from_revision: Option<u64>,
    /// Do not print the initial snapshot (the breakers' state when the watch starts).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Also print progress messages (the store's revision on a quiet stream).
    #[arg(long)]
    pub progress: bool,
    /// When the revision to resume at was compacted away, print a fresh snapshot
    /// (marked resync) and go on, instead of exiting with an error.
    #[arg(long)]
    pub resync: bool,
}

/// One line of `-o json`, tagged by `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Snapshot {
        revision: u64,
        resync: bool,
        breakers: Vec<BreakerJson>,
    },
    Event(Box<EventJson>),
    Progress {
        revision: u64,
    },
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    for name in &args.names {
        super::check_name(name)?;
    }
    // A daemon that is not there at all is exit 4 now; once the watch runs, it
    // rides out restarts by itself.
    drop(ctx.channel().await?);
    let client = ctx
        .client_builder()
        .build()
        .map_err(|e| Error::from_client(&e, &ctx.endpoint))?;
    let filter = WatchFilter {
        prefix: args.prefix.clone().unwrap_or_default(),
        names: args.names.clone(),
    };
    let on_compaction = if args.resync {
        OnCompaction::Resync
    } else {
        OnCompaction::Fail
    };
    let mut stream = client.watch_with(filter, args.from_revision, on_compaction);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => print(ctx.output, &args, event)?,
            // Only errors that retrying cannot fix end the stream.
            Err(e) => return Err(Error::from_client(&e, &ctx.endpoint)),
        }
    }
    Ok(())
}

fn print(output: Output, args: &Args, event: WatchEvent) -> Result<(), Error> {
    match event {
        WatchEvent::Snapshot {
            breakers,
            revision,
            resync,
        } => {
            if args.no_snapshot && !resync {
                return Ok(());
            }
            output.print_line(&Item::Snapshot {
                revision,
                resync,
                breakers: &breakers,
            })
        }
        WatchEvent::Event(e) => output.print_line(&Item::Event(&e)),
        // Outages go to stderr, so stdout stays the events only.
        WatchEvent::Interrupted { reason } => {
            eprintln!("cbctl: watch interrupted: {reason}; reconnecting");
            Ok(())
        }
        WatchEvent::Resumed { revision } => {
            match revision {
                Some(r) => eprintln!("cbctl: watch resumed at revision {r}"),
                None => eprintln!("cbctl: watch resumed"),
            }
            Ok(())
        }
        WatchEvent::Progress { revision } if args.progress => {
            output.print_line(&Item::Progress { revision })
        }
        WatchEvent::Progress { .. } => Ok(()),
    }
}

/// What stdout shows of the stream.
enum Item<'a> {
    Snapshot {
        revision: u64,
        resync: bool,
        breakers: &'a [pb::BreakerStatus],
    },
    Event(&'a pb::Event),
    Progress {
        revision: u64,
    },
}

impl Show for Item<'_> {
    fn json(&self) -> impl Serialize + '_ {
        match self {
            Item::Snapshot {
                revision,
                resync,
                breakers,
            } => Line::Snapshot {
                revision: *revision,
                resync: *resync,
                breakers: breakers.iter().map(BreakerJson::from).collect(),
            },
            Item::Event(e) => Line::Event(Box::new(EventJson::from(*e))),
            Item::Progress { revision } => Line::Progress {
                revision: *revision,
            },
        }
    }

    /// Snapshot: one line per breaker (none for an empty one), after a `resync`
    /// line when events were compacted away.
    fn table(&self) -> Result<String, Error> {
        Ok(match self {
            Item::Snapshot {
                revision,
                resync,
                breakers,
            } => {
                let mut lines: Vec<String> = Vec::new();
                if *resync {
                    lines.push(format!(
                        "{revision}  resync: events were compacted away; the state now:"
                    ));
                }
                lines.extend(breakers.iter().map(|b| snapshot_line(*revision, b)));
                lines.join("\n")
            }
            Item::Event(e) => event_line(e),
            Item::Progress { revision } => format!("{revision}  progress"),
        })
    }
}

/// `11  snapshot  payments  OPEN  override -  gen 3`
fn snapshot_line(revision: u64, b: &pb::BreakerStatus) -> String {
    format!(
        "{revision}  snapshot  {}  {}  override {}  gen {}",
        b.name,
        output::short(b.state().as_str_name()),
        output::override_cell(b.r#override()),
        b.generation
    )
}

/// `12  2025-01-01T10:00:00.123Z  payments  STATE_CHANGED  CLOSED -> OPEN  gen 3  5 consecutive failures`
pub fn event_line(e: &pb::Event) -> String {
    let time = e
        .time
        .as_ref()
        .map(output::fmt_timestamp)
        .unwrap_or_else(|| "-".into());
    let state = output::state_change_cell(e);
    let mut line = format!(
        "{}  {time}  {}  {}  {state}",
        e.revision,
        e.name,
        output::short(e.kind().as_str_name()),
    );
    if e.r#override() != pb::Override::Unspecified {
        line.push_str(&format!(
            "  override {}",
            output::short(e.r#override().as_str_name())
        ));
    }
    line.push_str(&format!("  gen {}", e.generation));
    if !e.reason.is_empty() {
        line.push_str("  ");
        line.push_str(&e.reason);
    }
    if let Some(until) = &e.override_until {
        line.push_str(&format!("  until {}", output::fmt_timestamp(until)));
    }
    if let Some(op) = &e.operator {
        line.push_str("  ");
        line.push_str(&output::by_operator(op));
    }
    line
}
