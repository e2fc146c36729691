//! The spec schema: every knob of a breaker's spec as people see it, declared once
//! (docs/DESIGN.md §3.5).
//!
//! [`KNOBS`] gives each knob its key, the proto field it maps to, its type, help text,
//! default and an example. From it come `cbctl put`'s flags (`--failure-rate`), the
//! keys of apply files and the daemon's `[[template]]` tables, `cbctl get`'s spec
//! rows, the spec in `-o json` output (proto field names), and the key named in an
//! error. Adding a knob touches the state machine's `Spec`, the proto (and
//! `convert.rs`, which maps one to the other) and one entry here.

use std::time::Duration;

use cbd_breaker::Fallback;

use crate::{convert::std_duration, v1 as pb};

/// Reads a knob from a wire spec; `None` when unset there.
pub type Get<T> = fn(&pb::BreakerSpec) -> Option<T>;
/// Writes a knob into a wire spec.
pub type Set<T> = fn(&mut pb::BreakerSpec, T);

/// A knob's type, with how it is read from and written to the wire spec.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A whole number (`5`).
    Count(Get<u32>, Set<u32>),
    /// A percentage, 1 to 100 (`50`; a flag may say `50%`).
    Percent(Get<u32>, Set<u32>),
    /// A duration (`"500ms"`, `"30s"`, `"2m"`).
    Duration(Get<Duration>, Set<Duration>),
    /// The fallback policy, by one of the names of [`FALLBACKS`].
    Fallback,
}

/// One knob of the spec.
#[derive(Debug)]
pub struct Knob {
    /// The key people write: apply files, `[[template]]` tables, `cbctl get`, errors;
    /// the flag is the key with dashes (`--failure-rate`).
    pub key: &'static str,
    /// The state machine's field, as `Spec::validate` names it
    /// (`failure_rate_percent`, `window.calls`).
    pub field: &'static str,
    /// The field's path in the proto's `BreakerSpec` (`count_window.calls`), and so
    /// in `-o json` output.
    pub proto: &'static str,
    /// Its type and wire accessors.
    pub kind: Kind,
    /// What it does, one line.
    pub help: &'static str,
    /// The value in force when it is not given, as shown in help; `None`: off.
    pub default: Option<&'static str>,
    /// A value that validates together with every other knob's example.
    pub example: &'static str,
    /// A knob that must be given with this one.
    pub requires: Option<&'static str>,
    /// A knob that must not be given with this one.
    pub conflicts: Option<&'static str>,
}

/// The fallback policies by name: (name, policy, help).
pub const FALLBACKS: &[(&str, Fallback, &str)] = &[
    ("open", Fallback::FailOpen, "Allow the call"),
    ("closed", Fallback::FailClosed, "Reject the call"),
    (
        "local",
        Fallback::Local,
        "Run an in-process breaker with the last known spec",
    ),
];

fn wire_duration(d: Duration) -> prost_types::Duration {
    crate::convert::duration_to_proto(d)
}

fn time_window(p: &pb::BreakerSpec) -> Option<&pb::TimeWindow> {
    match &p.window {
        Some(pb::breaker_spec::Window::TimeWindow(t)) => Some(t),
        _ => None,
    }
}

/// The time window of `p`, made one if it is not.
fn time_window_mut(p: &mut pb::BreakerSpec) -> &mut pb::TimeWindow {
    if time_window(p).is_none() {
        p.window = Some(pb::breaker_spec::Window::TimeWindow(
            pb::TimeWindow::default(),
        ));
    }
    match &mut p.window {
        Some(pb::breaker_spec::Window::TimeWindow(t)) => t,
        _ => unreachable!("set just above"),
    }
}

/// Every knob, in the order help, tables and JSON list them.
pub const KNOBS: &[Knob] = &[
    Knob {
        key: "consecutive_failures",
        field: "consecutive_failures",
        proto: "consecutive_failures",
        kind: Kind::Count(
            |p| p.consecutive_failures,
            |p, v| p.consecutive_failures = Some(v),
        ),
        help: "Trip after N failures in a row",
        default: Some("5 when no other trip condition is set"),
        example: "4",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "failure_rate",
        field: "failure_rate_percent",
        proto: "failure_rate_percent",
        kind: Kind::Percent(
            |p| p.failure_rate_percent,
            |p, v| p.failure_rate_percent = Some(v),
        ),
        help: "Trip when failures reach PCT percent (1-100) of the window",
        default: None,
        example: "50",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "slow_call_rate",
        field: "slow_call_rate_percent",
        proto: "slow_call_rate_percent",
        kind: Kind::Percent(
            |p| p.slow_call_rate_percent,
            |p, v| p.slow_call_rate_percent = Some(v),
        ),
        help: "Trip when slow successes reach PCT percent (1-100) of the window",
        default: None,
        example: "40",
        requires: Some("slow_call_duration"),
        conflicts: None,
    },
    Knob {
        key: "slow_call_duration",
        field: "slow_call_duration",
        proto: "slow_call_duration",
        kind: Kind::Duration(
            |p| p.slow_call_duration.as_ref().map(std_duration),
            |p, v| p.slow_call_duration = Some(wire_duration(v)),
        ),
        help: "A success slower than this is a slow call (at most 1h)",
        default: None,
        example: "2s",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "minimum_calls",
        field: "minimum_calls",
        proto: "minimum_calls",
        kind: Kind::Count(|p| p.minimum_calls, |p, v| p.minimum_calls = Some(v)),
        help: "Outcomes needed in the window before the rates count",
        default: Some("10"),
        example: "5",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "window_calls",
        field: "window.calls",
        proto: "count_window.calls",
        kind: Kind::Count(
            |p| match &p.window {
                Some(pb::breaker_spec::Window::CountWindow(c)) => Some(c.calls),
                _ => None,
            },
            |p, calls| {
                p.window = Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
                    calls,
                }));
            },
        ),
        help: "Count window: the last N outcomes",
        default: Some("100"),
        example: "20",
        requires: None,
        conflicts: Some("window_duration"),
    },
    Knob {
        key: "window_duration",
        field: "window.duration",
        proto: "time_window.duration",
        kind: Kind::Duration(
            |p| time_window(p)?.duration.as_ref().map(std_duration),
            |p, v| time_window_mut(p).duration = Some(wire_duration(v)),
        ),
        help: "Time window: the outcomes of the last DUR (at most 24h)",
        default: None,
        example: "1m",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "window_buckets",
        field: "window.buckets",
        proto: "time_window.buckets",
        kind: Kind::Count(
            |p| time_window(p).map(|t| t.buckets),
            |p, v| time_window_mut(p).buckets = v,
        ),
        help: "Buckets of the time window",
        default: Some("10"),
        example: "6",
        requires: Some("window_duration"),
        conflicts: None,
    },
    Knob {
        key: "open_duration",
        field: "open_duration",
        proto: "open_duration",
        kind: Kind::Duration(
            |p| p.open_duration.as_ref().map(std_duration),
            |p, v| p.open_duration = Some(wire_duration(v)),
        ),
        help: "How long the breaker stays open after it trips (at most 24h)",
        default: Some("30s"),
        example: "45s",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "max_open_duration",
        field: "max_open_duration",
        proto: "max_open_duration",
        kind: Kind::Duration(
            |p| p.max_open_duration.as_ref().map(std_duration),
            |p, v| p.max_open_duration = Some(wire_duration(v)),
        ),
        help: "Exponential backoff of the open duration on repeated trips, up to this",
        default: None,
        example: "5m",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "half_open_permits",
        field: "half_open_permits",
        proto: "half_open_permits",
        kind: Kind::Count(
            |p| p.half_open_permits,
            |p, v| p.half_open_permits = Some(v),
        ),
        help: "Half-open probes in flight at once",
        default: Some("1"),
        example: "3",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "success_threshold",
        field: "success_threshold",
        proto: "success_threshold",
        kind: Kind::Count(
            |p| p.success_threshold,
            |p, v| p.success_threshold = Some(v),
        ),
        help: "Probe successes that close the breaker (at most half_open_permits)",
        default: Some("1"),
        example: "2",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "permit_ttl",
        field: "permit_ttl",
        proto: "permit_ttl",
        kind: Kind::Duration(
            |p| p.permit_ttl.as_ref().map(std_duration),
            |p, v| p.permit_ttl = Some(wire_duration(v)),
        ),
        help: "An unreported half-open probe counts as a failure after this",
        default: Some("10s"),
        example: "15s",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "fallback",
        field: "fallback",
        proto: "fallback",
        kind: Kind::Fallback,
        help: "What clients do when the daemon is unreachable",
        default: Some("open"),
        example: "local",
        requires: None,
        conflicts: None,
    },
    Knob {
        key: "cache_ttl",
        field: "cache_ttl",
        proto: "cache_ttl",
        kind: Kind::Duration(
            |p| p.cache_ttl.as_ref().map(std_duration),
            |p, v| p.cache_ttl = Some(wire_duration(v)),
        ),
        help: "Clients may reuse a CLOSED answer for this long without asking (at most 60s)",
        default: None,
        example: "100ms",
        requires: None,
        conflicts: None,
    },
];

/// Every key, in schema order (for "expected one of" errors).
pub const KEYS: [&str; KNOBS.len()] = {
    let mut keys = [""; KNOBS.len()];
    let mut i = 0;
    while i < KNOBS.len() {
        keys[i] = KNOBS[i].key;
        i += 1;
    }
    keys
};

/// The knob of `key`.
pub fn knob(key: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.key == key)
}

/// `first`, then every knob that may be given with it and with those before (its
/// required knob included): a set whose examples make one valid spec that sets as
/// many knobs as can be set at once. For tests that walk the schema.
pub fn examples_with(first: &'static Knob) -> Vec<&'static Knob> {
    let clash = |a: &Knob, b: &Knob| a.conflicts == Some(b.key) || b.conflicts == Some(a.key);
    let with_needs = |k: &'static Knob| {
        let mut v = vec![k];
        v.extend(k.requires.and_then(knob));
        v
    };
    let mut chosen = with_needs(first);
    for k in KNOBS {
        let group = with_needs(k);
        let fits = group
            .iter()
            .all(|g| chosen.iter().all(|c| c.key == g.key || !clash(c, g)));
        if fits {
            for g in group {
                if !chosen.iter().any(|c| c.key == g.key) {
                    chosen.push(g);
                }
            }
        }
    }
    chosen
}

/// The key people write for a state-machine field as its errors name it
/// (`failure_rate_percent` is written `failure_rate`); other names unchanged.
pub fn key_of(field: &str) -> &str {
    KNOBS
        .iter()
        .find(|k| k.field == field)
        .map_or(field, |k| k.key)
}

/// A spec error in the words of the keys (`failure_rate: 101 is not in 1..=100`),
/// field names in the reason included.
pub fn spec_error(e: &cbd_breaker::Error) -> String {
    match e {
        cbd_breaker::Error::InvalidSpec { field, reason } => {
            let reason = KNOBS
                .iter()
                .filter(|k| k.field != k.key)
                .fold(reason.clone(), |r, k| r.replace(k.field, k.key));
            format!("{}: {reason}", key_of(field))
        }
        other => other.to_string(),
    }
}

/// The name of a fallback policy (`"open"`).
pub fn fallback_name(f: Fallback) -> &'static str {
    FALLBACKS
        .iter()
        .find(|(_, policy, _)| *policy == f)
        .map_or("open", |(name, _, _)| name)
}

/// The fallback policy called `name`.
pub fn fallback_named(name: &str) -> Option<Fallback> {
    FALLBACKS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, policy, _)| *policy)
}

impl Knob {
    /// The flag: the key with dashes (`failure-rate`, without the leading `--`).
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The placeholder of its value in help (`N`, `PCT`, `DUR`, `FALLBACK`).
    pub fn value_name(&self) -> &'static str {
        match self.kind {
            Kind::Count(..) => "N",
            Kind::Percent(..) => "PCT",
            Kind::Duration(..) => "DUR",
            Kind::Fallback => "FALLBACK",
        }
    }

    /// Its help line with the default (`... [default: 30s]`).
    pub fn help_line(&self) -> String {
        match self.default {
            Some(d) => format!("{} [default: {d}]", self.help),
            None => self.help.to_owned(),
        }
    }

    /// A value as written on a command line: `5`, `50` or `50%`, `30s`, `local`.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        match self.kind {
            Kind::Count(..) => text
                .trim()
                .parse()
                .map(Value::Count)
                .map_err(|_| format!("{text:?} is not a whole number")),
            Kind::Percent(..) => {
                let n: u32 = text
                    .trim()
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| format!("{text:?} is not a percentage (1-100)"))?;
                if !(1..=100).contains(&n) {
                    return Err(format!("{n} is not in 1..=100"));
                }
                Ok(Value::Count(n))
            }
            Kind::Duration(..) => humantime::parse_duration(text)
                .map(Value::Duration)
                .map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)")),
            Kind::Fallback => fallback_named(text).map(Value::Fallback).ok_or_else(|| {
                let names: Vec<&str> = FALLBACKS.iter().map(|(n, _, _)| *n).collect();
                format!("{text:?} is not one of {}", names.join(", "))
            }),
        }
    }

    /// Whether `value` is of this knob's type.
    pub fn accepts(&self, value: &Value) -> bool {
        matches!(
            (self.kind, value),
            (Kind::Count(..) | Kind::Percent(..), Value::Count(_))
                | (Kind::Duration(..), Value::Duration(_))
                | (Kind::Fallback, Value::Fallback(_))
        )
    }

    /// Its value in a wire spec; `None` when unset there. The fallback is always set
    /// (unset on the wire means fail open).
    pub fn get(&self, p: &pb::BreakerSpec) -> Option<Value> {
        match self.kind {
            Kind::Count(get, _) | Kind::Percent(get, _) => get(p).map(Value::Count),
            Kind::Duration(get, _) => get(p).map(Value::Duration),
            Kind::Fallback => Some(Value::Fallback(crate::convert::fallback_from_proto(
                p.fallback(),
            ))),
        }
    }

    /// Writes `value` into a wire spec; a value of another type is an error.
    pub fn set(&self, p: &mut pb::BreakerSpec, value: Value) -> Result<(), String> {
        match (self.kind, value) {
            (Kind::Count(_, set) | Kind::Percent(_, set), Value::Count(n)) => set(p, n),
            (Kind::Duration(_, set), Value::Duration(d)) => set(p, d),
            (Kind::Fallback, Value::Fallback(f)) => {
                p.fallback = crate::convert::fallback_to_proto(f) as i32;
            }
            (_, other) => return Err(format!("{}: {other:?} is of the wrong type", self.key)),
        }
        Ok(())
    }
}

/// A knob's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Of a [`Kind::Count`] or [`Kind::Percent`] knob.
    Count(u32),
    /// Of a [`Kind::Duration`] knob.
    Duration(Duration),
    /// Of the [`Kind::Fallback`] knob.
    Fallback(Fallback),
}

impl Value {
    /// In TOML value syntax, as apply files write it and `cbctl get` shows it:
    /// `5`, `"30s"`, `"local"`.
    pub fn to_toml(&self) -> String {
        match self {
            Value::Count(n) => n.to_string(),
            Value::Duration(d) => format!("{:?}", humantime::format_duration(*d).to_string()),
            Value::Fallback(f) => format!("{:?}", fallback_name(*f)),
        }
    }

    /// In `-o json` output, which follows the proto: `5`, `"30s"`, `"FALLBACK_LOCAL"`.
    pub fn to_json(&self) -> JsonScalar {
        match self {
            Value::Count(n) => JsonScalar::Number(*n),
            Value::Duration(d) => JsonScalar::Text(humantime::format_duration(*d).to_string()),
            Value::Fallback(f) => JsonScalar::Text(
                crate::convert::fallback_to_proto(*f)
                    .as_str_name()
                    .to_owned(),
            ),
        }
    }
}

/// A JSON scalar of [`Value::to_json`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum JsonScalar {
    /// A number.
    Number(u32),
    /// A string.
    Text(String),
}
