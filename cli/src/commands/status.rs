//! `cbctl status`: the daemon itself (`cbd.v1.Admin/Status`), as one table row the
//! way `etcdctl endpoint status` prints it.

use std::time::Duration;

use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::{
    conn::Ctx,
    error::Error,
    output::{self, Show},
};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Ctx, _args: Args) -> Result<(), Error> {
    let mut admin = ctx.client().await?.admin();
    let status = ctx.run(admin.status()).await?;
    ctx.output.print(&Status {
        endpoint: ctx.endpoint.clone(),
        status,
    })
}

/// A Status answer and the endpoint that gave it.
#[derive(Debug)]
pub struct Status {
    /// The endpoint asked.
    pub endpoint: String,
    /// Its answer.
    pub status: pb::StatusResponse,
}

/// One endpoint's answer in JSON: the proto's fields, plus the endpoint asked.
#[derive(Debug, Serialize)]
struct StatusJson {
    endpoint: String,
    version: String,
    git_commit: String,
    started_at: Option<String>,
    uptime: Option<String>,
    revision: u64,
    oldest_retained_revision: u64,
    breakers: u64,
    watchers: u64,
    sessions: u64,
    leases: u64,
    /// `null`: the store keeps nothing on disk, or could not be measured.
    store_size_bytes: Option<u64>,
    /// `null`: no commit yet since the daemon started.
    last_commit: Option<LastCommitJson>,
    store_fault: String,
    role: &'static str,
    leader: String,
}

#[derive(Debug, Serialize)]
struct LastCommitJson {
    committed_at: Option<String>,
    duration: Option<String>,
    events: u32,
    revision: u64,
}

impl StatusJson {
    fn new(endpoint: &str, s: &pb::StatusResponse) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            version: s.version.clone(),
            git_commit: s.git_commit.clone(),
            started_at: s.started_at.as_ref().map(output::fmt_timestamp),
            uptime: s.uptime.as_ref().map(output::fmt_pb_duration_ms),
            revision: s.revision,
            oldest_retained_revision: s.oldest_retained_revision,
            breakers: s.breakers,
            watchers: s.watchers,
            sessions: s.sessions,
            leases: s.leases,
            store_size_bytes: s.store_size_bytes,
            last_commit: s.last_commit.as_ref().map(|c| LastCommitJson {
                committed_at: c.committed_at.as_ref().map(output::fmt_timestamp),
                duration: c.duration.as_ref().map(output::fmt_pb_duration),
                events: c.events,
                revision: c.revision,
            }),
            store_fault: s.store_fault.clone(),
            role: s.role().as_str_name(),
            leader: s.leader.clone(),
        }
    }
}

impl Show for Status {
    fn json(&self) -> impl Serialize + '_ {
        StatusJson::new(&self.endpoint, &self.status)
    }

    fn table(&self) -> Result<String, Error> {
        let rows = [row(&self.endpoint, &self.status)];
        let mut text = output::table(
            &[
                "ENDPOINT",
                "VERSION",
                "COMMIT",
                "UPTIME",
                "REVISION",
                "OLDEST",
                "BREAKERS",
                "WATCHERS",
                "SESSIONS",
                "LEASES",
                "STORE SIZE",
                "LAST COMMIT",
                "ROLE",
            ],
            &rows,
        );
        // A failing store is the one thing here that needs action: its own line.
        if !self.status.store_fault.is_empty() {
            text.push_str(&format!(
                "\nstore not committing: {}",
                self.status.store_fault
            ));
        }
        Ok(text)
    }
}

fn row(endpoint: &str, s: &pb::StatusResponse) -> Vec<String> {
    let dash = || "-".to_owned();
    // Whole seconds of uptime, microseconds of commit time: what a person compares.
    let uptime = s.uptime.as_ref().map_or_else(dash, |d| {
        output::fmt_duration(Duration::from_secs(output::std_duration(d).as_secs()))
    });
    let last_commit = s.last_commit.as_ref().map_or_else(dash, |c| {
        let took = c
            .duration
            .as_ref()
            .map_or(Duration::ZERO, output::std_duration);
        let took = Duration::from_micros(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        let events = if c.events == 1 { "event" } else { "events" };
        format!("{}, {} {events}", output::fmt_duration(took), c.events)
    });
    vec![
        endpoint.to_owned(),
        s.version.clone(),
        s.git_commit.clone(),
        uptime,
        s.revision.to_string(),
        s.oldest_retained_revision.to_string(),
        s.breakers.to_string(),
        s.watchers.to_string(),
        s.sessions.to_string(),
        s.leases.to_string(),
        s.store_size_bytes.map_or_else(dash, output::fmt_bytes),
        last_commit,
        output::short(s.role().as_str_name()).to_lowercase(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> pb::StatusResponse {
        pb::StatusResponse {
            version: "0.1.0".into(),
            git_commit: "0123456789ab".into(),
            started_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            uptime: Some(prost_types::Duration {
                seconds: 3723,
                nanos: 900_000_000,
            }),
            revision: 42,
            oldest_retained_revision: 7,
            breakers: 3,
            watchers: 2,
            sessions: 1,
            leases: 5,
            store_size_bytes: Some(1_572_864),
            last_commit: Some(pb::LastCommit {
                committed_at: Some(prost_types::Timestamp {
                    seconds: 1_700_003_723,
                    nanos: 0,
                }),
                duration: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_234_567,
                }),
                events: 2,
                revision: 42,
            }),
            store_fault: String::new(),
            role: pb::ReplicationRole::Standalone as i32,
            leader: String::new(),
        }
    }

    fn shown(status: pb::StatusResponse) -> Status {
        Status {
            endpoint: "http://127.0.0.1:7411".into(),
            status,
        }
    }

    #[test]
    fn the_table_is_one_row_like_etcdctl() {
        assert_eq!(
            shown(answer()).table().expect("table"),
            "\
ENDPOINT               VERSION  COMMIT        UPTIME    REVISION  OLDEST  BREAKERS  WATCHERS  SESSIONS  LEASES  STORE SIZE  LAST COMMIT          ROLE
http://127.0.0.1:7411  0.1.0    0123456789ab  1h 2m 3s  42        7       3         2         1         5       1.5 MiB     1ms 234us, 2 events  standalone"
        );
        let failing = pb::StatusResponse {
            uptime: Some(prost_types::Duration::default()),
            store_size_bytes: None,
            last_commit: None,
            store_fault: "No space left on device (os error 28)".into(),
            ..answer()
        };
        let table = shown(failing).table().expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "http://127.0.0.1:7411  0.1.0    0123456789ab  0s      42        7       3         2         1         5       -           -            standalone"
        );
        assert_eq!(
            lines[2],
            "store not committing: No space left on device (os error 28)"
        );
    }

    #[test]
    fn json_keeps_the_proto_names_and_says_null_for_unset() {
        let json = serde_json::to_value(shown(answer()).json()).expect("json");
        assert_eq!(json["endpoint"], "http://127.0.0.1:7411");
        assert_eq!(json["revision"], 42);
        assert_eq!(json["oldest_retained_revision"], 7);
        assert_eq!(json["store_size_bytes"], 1_572_864);
        assert_eq!(json["uptime"], "1h 2m 3s 900ms");
        assert_eq!(json["started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["last_commit"]["duration"], "1ms 234us 567ns");
        assert_eq!(json["last_commit"]["events"], 2);
        assert_eq!(json["role"], "REPLICATION_ROLE_STANDALONE");
        assert_eq!(json["leader"], "");
        let fresh = pb::StatusResponse {
            store_size_bytes: None,
            last_commit: None,
            ..answer()
        };
        let json = serde_json::to_value(shown(fresh).json()).expect("json");
        assert!(json["store_size_bytes"].is_null());
        assert!(json["last_commit"].is_null());
    }
}
