//! What `cbctl` prints: the JSON shapes (`-o json`: proto field names, enum value
//! names, humantime durations, RFC 3339 timestamps) and the tables for people.

use std::{
    io::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cbd_proto::{spec_fields::SpecJson, v1 as pb};
use serde::Serialize;

use crate::error::Error;

/// Writes `text` and a newline to stdout. A closed pipe (`cbctl list | head`) is
/// not an error.
pub fn println(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::StdoutClosed),
        Err(e) => Err(e.into()),
    }
}

/// A result a verb prints: one JSON shape and one text for people. [`Output::print`]
/// is the one place that picks between them.
pub trait Show {
    /// The `-o json` form (proto field names, enum value names, `"30s"`).
    fn json(&self) -> impl Serialize + '_;
    /// The `-o table` form: aligned columns or `key: value` lines. An answer that
    /// cannot be shown (the daemon left out the breaker) is an error.
    fn table(&self) -> Result<String, Error>;
}

impl crate::Output {
    /// Prints one result: indented JSON, or its table.
    pub fn print(self, value: &impl Show) -> Result<(), Error> {
        match self {
            Self::Json => print_json_pretty(&value.json()),
            Self::Table => println(&value.table()?),
        }
    }

    /// Prints one item of a stream (`watch`): one line of JSON, or its table lines.
    pub fn print_line(self, value: &impl Show) -> Result<(), Error> {
        match self {
            Self::Json => print_json(&value.json()),
            Self::Table => match value.table()? {
                text if text.is_empty() => Ok(()),
                text => println(&text),
            },
        }
    }
}

/// Prints `value` as one line of JSON.
pub fn print_json(value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string(value).map_err(|e| Error::Other(e.to_string()))?;
    println(&text)
}

/// Prints `value` as indented JSON (single objects).
pub fn print_json_pretty(value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(e.to_string()))?;
    println(&text)
}

pub use cbd_proto::convert::std_duration;

/// `"30s"`, `"1m 30s"`, `"250ms"`.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A wire duration rounded to milliseconds (`"29s 912ms"`), for times left that
/// are stale by the time they are read anyway.
pub fn fmt_pb_duration_ms(d: &prost_types::Duration) -> String {
    let d = std_duration(d);
    fmt_duration(Duration::from_millis(d.as_millis() as u64))
}

/// A wire duration as `"30s"`.
pub fn fmt_pb_duration(d: &prost_types::Duration) -> String {
    fmt_duration(std_duration(d))
}

/// A wire timestamp as a `SystemTime` (out of range: the epoch).
pub fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*t).unwrap_or(UNIX_EPOCH)
}

/// A wire timestamp in RFC 3339 (UTC, milliseconds).
pub fn fmt_timestamp(t: &prost_types::Timestamp) -> String {
    humantime::format_rfc3339_millis(system_time(t)).to_string()
}

/// Bytes for people, in powers of 1024: `512 B`, `1.5 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `STATE_OPEN` → `OPEN` (for tables).
pub fn short(name: &str) -> &str {
    for prefix in [
        "STATE_",
        "OVERRIDE_",
        "EVENT_KIND_",
        "FALLBACK_",
        "OUTCOME_",
        "REPLICATION_ROLE_",
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest;
        }
    }
    name
}

/// The override for a table: `-` when none.
pub fn override_cell(o: pb::Override) -> String {
    match o {
        pb::Override::Unspecified => "-".into(),
        o => short(o.as_str_name()).into(),
    }
}

/// How long until an OPEN breaker may probe, from `open_until` and this machine's
/// clock; `-` when not open (or forced open: unknown).
pub fn retry_after_cell(b: &pb::BreakerStatus) -> String {
    match (&b.open_until, b.state()) {
        (Some(until), pb::State::Open) => {
            let left = system_time(until)
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            // Whole milliseconds: the daemon's clock and ours differ by more anyway.
            fmt_duration(Duration::from_millis(left.as_millis() as u64))
        }
        (None, pb::State::Open) if b.r#override() == pb::Override::ForcedOpen => {
            "until released".into()
        }
        _ => "-".into(),
    }
}

/// Aligned columns, two spaces apart, the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out.pop();
    out
}

/// `key: value` lines, the values aligned.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who made a change: `alice@127.0.0.1:50312`, or the actor alone when the peer is
/// unknown.
pub fn operator_cell(op: &pb::Operator) -> String {
    if op.peer.is_empty() {
        op.actor.clone()
    } else {
        format!("{}@{}", op.actor, op.peer)
    }
}

/// `by alice@127.0.0.1:50312: "INC-123"` (the reason only when one was given).
pub fn by_operator(op: &pb::Operator) -> String {
    let mut text = format!("by {}", operator_cell(op));
    if !op.reason.is_empty() {
        text.push_str(&format!(": {:?}", op.reason));
    }
    text
}

/// An event's state: `OPEN`, or `CLOSED -> OPEN` when it changed.
pub fn state_change_cell(e: &pb::Event) -> String {
    if e.previous_state() == e.state() {
        short(e.state().as_str_name()).to_owned()
    } else {
        format!(
            "{} -> {}",
            short(e.previous_state().as_str_name()),
            short(e.state().as_str_name())
        )
    }
}

/// `Operator` in JSON.
#[derive(Debug, Serialize)]
pub struct OperatorJson {
    pub actor: String,
    pub peer: String,
    pub reason: String,
}

impl From<&pb::Operator> for OperatorJson {
    fn from(o: &pb::Operator) -> Self {
        Self {
            actor: o.actor.clone(),
            peer: o.peer.clone(),
            reason: o.reason.clone(),
        }
    }
}

/// `BreakerStatus` in JSON.
#[derive(Debug, Serialize)]
pub struct BreakerJson {
    pub name: String,
    pub spec: Option<SpecJson>,
    pub state: &'static str,
    #[serde(rename = "override")]
    pub override_: &'static str,
    pub generation: u64,
    pub window_calls: u32,
    pub window_failures: u32,
    pub window_slow_calls: u32,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until: Option<String>,
    pub backoff_level: u32,
    pub probes_in_flight: u32,
    pub half_open_successes: u32,
    pub mod_revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_operator: Option<OperatorJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_until: Option<String>,
    /// The top failing callers in the window (`""`: anonymous, `"*"`: the overflow).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing_callers: Vec<CallerJson>,
}

/// `CallerFailures` in JSON.
#[derive(Debug, Serialize)]
pub struct CallerJson {
    pub caller: String,
    pub failures: u64,
    pub calls: u64,
}

/// How `cbctl get` names a caller: the anonymous one and the overflow in words.
pub fn caller_cell(caller: &str) -> &str {
    match caller {
        "" => "(no caller)",
        cbd_proto::convert::OVERFLOW_CALLER => "(callers beyond the cap)",
        name => name,
    }
}

impl From<&pb::BreakerStatus> for BreakerJson {
    fn from(b: &pb::BreakerStatus) -> Self {
        Self {
            name: b.name.clone(),
            spec: b.spec.as_ref().map(SpecJson::from),
            state: b.state().as_str_name(),
            override_: b.r#override().as_str_name(),
            generation: b.generation,
            window_calls: b.window_calls,
            window_failures: b.window_failures,
            window_slow_calls: b.window_slow_calls,
            consecutive_failures: b.consecutive_failures,
            open_until: b.open_until.as_ref().map(fmt_timestamp),
            backoff_level: b.backoff_level,
            probes_in_flight: b.probes_in_flight,
            half_open_successes: b.half_open_successes,
            mod_revision: b.mod_revision,
            override_operator: b.override_operator.as_ref().map(OperatorJson::from),
            override_until: b.override_until.as_ref().map(fmt_timestamp),
            failing_callers: b
                .failing_callers
                .iter()
                .map(|c| CallerJson {
                    caller: c.caller.clone(),
                    failures: c.failures,
                    calls: c.calls,
                })
                .collect(),
        }
    }
}

/// `Event` in JSON.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub revision: u64,
    pub name: String,
    pub kind: &'static str,
    pub previous_state: &'static str,
    pub state: &'static str,
    #[serde(rename = "override")]
    pub override_: &'static str,
    pub generation: u64,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecJson>,
    /// Who made the change; absent for the machine's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_until: Option<String>,
}

impl From<&pb::Event> for EventJson {
    fn from(e: &pb::Event) -> Self {
        Self {
            revision: e.revision,
            name: e.name.clone(),
            kind: e.kind().as_str_name(),
            previous_state: e.previous_state().as_str_name(),
            state: e.state().as_str_name(),
            override_: e.r#override().as_str_name(),
            generation: e.generation,
            reason: e.reason.clone(),
            time: e.time.as_ref().map(fmt_timestamp),
            spec: e.spec.as_ref().map(SpecJson::from),
            operator: e.operator.as_ref().map(OperatorJson::from),
            override_until: e.override_until.as_ref().map(fmt_timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "OPEN".into()],
                vec!["long/name".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME       STATE\na          OPEN\nlong/name  -");
    }

    #[test]
    fn durations_and_times_are_readable() {
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1s 500ms");
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000_000,
        };
        assert_eq!(fmt_timestamp(&t), "2023-11-14T22:13:20.005Z");
        assert_eq!(short("STATE_HALF_OPEN"), "HALF_OPEN");
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1024), "1.0 KiB");
        assert_eq!(fmt_bytes(1_572_864), "1.5 MiB");
        assert_eq!(fmt_bytes(5 << 30), "5.0 GiB");
    }
}
