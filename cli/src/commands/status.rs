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
    let mut answers = Vec::new();
    let mut failed = None;
    for endpoint in &ctx.endpoints {
        let one = Ctx {
            endpoint: endpoint.clone(),
            ..ctx.clone()
        };
        match ask(&one).await {
            Ok(answer) => answers.push((endpoint.clone(), answer)),
            // As etcdctl does: the endpoints that answered are shown, the others
            // said on stderr, and the exit code is the first failure's.
            Err(e) if ctx.endpoints.len() > 1 => {
                eprintln!("cbctl: {e}");
                failed.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if !answers.is_empty() {
        ctx.output.print(&Status { answers })?;
    }
    failed.map_or(Ok(()), Err)
}

/// One endpoint's answer: its Status, or a standby's pointer to the leader.
async fn ask(ctx: &Ctx) -> Result<Answer, Error> {
    let mut admin = ctx.admin_on(ctx.channel().await?);
    let call = admin.status(pb::StatusRequest::default());
    match tokio::time::timeout(ctx.timeout, call).await {
        Ok(Ok(answer)) => Ok(Answer::Status(Box::new(answer.into_inner()))),
        Ok(Err(status)) => match status.metadata().get(cbd_proto::LEADER_METADATA) {
            Some(leader) if status.code() == tonic::Code::Unavailable => Ok(Answer::Standby {
                leader: leader.to_str().unwrap_or_default().to_owned(),
            }),
            _ => Err(Error::from_status(&status, &ctx.endpoint)),
        },
        Err(_) => Err(Error::deadline(&ctx.endpoint, ctx.timeout)),
    }
}

/// What one endpoint said.
#[derive(Debug)]
pub enum Answer {
    /// A daemon that decides: its numbers.
    Status(Box<pb::StatusResponse>),
    /// A standby (docs/DESIGN.md §11): the leader it named; empty while none is known.
    Standby { leader: String },
}

/// The answers of every endpoint asked, in `--endpoint` order.
#[derive(Debug)]
pub struct Status {
    /// Each endpoint and its answer.
    pub answers: Vec<(String, Answer)>,
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

/// A standby's row in JSON.
#[derive(Debug, Serialize)]
struct StandbyJson<'a> {
    endpoint: &'a str,
    role: &'static str,
    leader: &'a str,
}

/// One endpoint in JSON: its Status, or what a standby said.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum AnswerJson<'a> {
    Status(Box<StatusJson>),
    Standby(StandbyJson<'a>),
}

impl<'a> AnswerJson<'a> {
    fn new(endpoint: &'a str, answer: &'a Answer) -> Self {
        match answer {
            Answer::Status(s) => Self::Status(Box::new(StatusJson::new(endpoint, s))),
            Answer::Standby { leader } => Self::Standby(StandbyJson {
                endpoint,
                role: pb::ReplicationRole::Standby.as_str_name(),
                leader,
            }),
        }
    }
}

/// One endpoint: one object; several: an array of them (as `etcdctl endpoint status`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum StatusOutput<'a> {
    One(AnswerJson<'a>),
    Many(Vec<AnswerJson<'a>>),
}

impl Show for Status {
    fn json(&self) -> impl Serialize + '_ {
        let mut all: Vec<AnswerJson<'_>> = self
            .answers
            .iter()
            .map(|(endpoint, answer)| AnswerJson::new(endpoint, answer))
            .collect();
        if all.len() == 1 {
            StatusOutput::One(all.remove(0))
        } else {
            StatusOutput::Many(all)
        }
    }

    fn table(&self) -> Result<String, Error> {
        let rows: Vec<Vec<String>> = self
            .answers
            .iter()
            .map(|(endpoint, answer)| match answer {
                Answer::Status(s) => row(endpoint, s),
                Answer::Standby { leader } => standby_row(endpoint, leader),
            })
            .collect();
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
                "LEADER",
            ],
            &rows,
        );
        // A failing store is the one thing here that needs action: its own line.
        for (endpoint, answer) in &self.answers {
            if let Answer::Status(s) = answer
                && !s.store_fault.is_empty()
            {
                let whose = if self.answers.len() > 1 {
                    format!(" at {endpoint}")
                } else {
                    String::new()
                };
                text.push_str(&format!("\nstore{whose} not committing: {}", s.store_fault));
            }
        }
        Ok(text)
    }
}

/// A standby's row: nothing but its role and the leader it names.
fn standby_row(endpoint: &str, leader: &str) -> Vec<String> {
    let mut cells = vec![endpoint.to_owned()];
    cells.extend(std::iter::repeat_n("-".to_owned(), 11));
    cells.push("standby".into());
    cells.push(if leader.is_empty() {
        "(none elected)".into()
    } else {
        leader.to_owned()
    });
    cells
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
        if s.leader.is_empty() {
            "-".to_owned()
        } else {
            s.leader.clone()
        },
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
            answers: vec![(
                "http://127.0.0.1:7411".into(),
                Answer::Status(Box::new(status)),
            )],
        }
    }

    #[test]
    fn the_table_is_one_row_like_etcdctl() {
        assert_eq!(
            shown(answer()).table().expect("table"),
            "\
ENDPOINT               VERSION  COMMIT        UPTIME    REVISION  OLDEST  BREAKERS  WATCHERS  SESSIONS  LEASES  STORE SIZE  LAST COMMIT          ROLE        LEADER
http://127.0.0.1:7411  0.1.0    0123456789ab  1h 2m 3s  42        7       3         2         1         5       1.5 MiB     1ms 234us, 2 events  standalone  -"
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
            "http://127.0.0.1:7411  0.1.0    0123456789ab  0s      42        7       3         2         1         5       -           -            standalone  -"
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

    #[test]
    fn several_endpoints_a_row_each_and_a_json_array_with_standbys() {
        let status = Status {
            answers: vec![
                (
                    "http://127.0.0.1:1".into(),
                    Answer::Standby {
                        leader: "http://127.0.0.1:2".into(),
                    },
                ),
                (
                    "http://127.0.0.1:2".into(),
                    Answer::Status(Box::new(pb::StatusResponse {
                        role: pb::ReplicationRole::Leader as i32,
                        leader: "http://127.0.0.1:2".into(),
                        ..answer()
                    })),
                ),
                (
                    "http://127.0.0.1:3".into(),
                    Answer::Standby {
                        leader: String::new(),
                    },
                ),
            ],
        };
        let table = status.table().expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let cells = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(cells(1)[0], "http://127.0.0.1:1");
        assert_eq!(cells(1)[12..], ["standby", "http://127.0.0.1:2"]);
        assert_eq!(cells(2).last(), Some(&"http://127.0.0.1:2"));
        assert!(lines[2].contains(" leader "), "{table}");
        assert!(lines[3].ends_with("standby  (none elected)"), "{table}");

        let json = serde_json::to_value(status.json()).expect("json");
        assert_eq!(json[0]["role"], "REPLICATION_ROLE_STANDBY");
        assert_eq!(json[0]["leader"], "http://127.0.0.1:2");
        assert_eq!(json[1]["role"], "REPLICATION_ROLE_LEADER");
        assert_eq!(json[1]["revision"], 42);
        assert_eq!(json[2]["leader"], "");
    }
}
