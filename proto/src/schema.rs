//! The spec schema: every knob of a breaker's spec as people see it, declared once
//! (docs/DESIGN.md §3.5).
//!
//! [`KNOBS`] gives each knob its key, the proto field it maps to, its type, help text,
//! default and an example. From it come `cbctl put`'s flags (`--failure-rate`), the
//! keys of apply files and the daemon's `[[template]]` tables, `cbctl get`'s spec
//! rows, the spec in `-o json` output (proto field names), and the key named in an
//! error. Adding a knob touches the state machine's `Spec`, the proto (and
//! `convert.rs`, which maps one to the other) and one entry here.

use std::{fmt, ops::RangeInclusive, str::FromStr, time::Duration};

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
    /// On or off (`true`, `false`); off is the wire's default, shown as not set.
    Flag(Get<bool>, Set<bool>),
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

/// The accessors of a knob that is an optional field of `BreakerSpec` itself.
macro_rules! field {
    (Count $f:ident) => {
        Kind::Count(|p| p.$f, |p, v| p.$f = Some(v))
    };
    (Percent $f:ident) => {
        Kind::Percent(|p| p.$f, |p, v| p.$f = Some(v))
    };
    (Duration $f:ident) => {
        Kind::Duration(
            |p| p.$f.as_ref().map(std_duration),
            |p, v| p.$f = Some(wire_duration(v)),
        )
    };
    (Flag $f:ident) => {
        Kind::Flag(|p| p.$f.then_some(true), |p, v| p.$f = v)
    };
}

/// A knob whose key, machine field and proto field are all `key`, off by default.
const fn entry(key: &'static str, kind: Kind, help: &'static str, example: &'static str) -> Knob {
    Knob {
        key,
        field: key,
        proto: key,
        kind,
        help,
        default: None,
        example,
        requires: None,
        conflicts: None,
    }
}

impl Knob {
    /// With the machine field and proto path it has when they are not the key.
    const fn names(mut self, field: &'static str, proto: &'static str) -> Self {
        self.field = field;
        self.proto = proto;
        self
    }

    /// With the value in force when it is not given.
    const fn default(mut self, text: &'static str) -> Self {
        self.default = Some(text);
        self
    }

    /// Given only with `other`.
    const fn requires(mut self, other: &'static str) -> Self {
        self.requires = Some(other);
        self
    }

    /// Never given with `other`.
    const fn conflicts(mut self, other: &'static str) -> Self {
        self.conflicts = Some(other);
        self
    }
}

/// Every knob, in the order help, tables and JSON list them.
pub const KNOBS: &[Knob] = &[
    entry(
        "consecutive_failures",
        field!(Count consecutive_failures),
        "Trip after N failures in a row",
        "4",
    )
    .default("5 when no other trip condition is set"),
    entry(
        "failure_rate",
        field!(Percent failure_rate_percent),
        "Trip when failures reach PCT percent (1-100) of the window",
        "50",
    )
    .names("failure_rate_percent", "failure_rate_percent"),
    entry(
        "slow_call_rate",
        field!(Percent slow_call_rate_percent),
        "Trip when slow successes reach PCT percent (1-100) of the window",
        "40",
    )
    .names("slow_call_rate_percent", "slow_call_rate_percent")
    .requires("slow_call_duration"),
    entry(
        "slow_call_duration",
        field!(Duration slow_call_duration),
        "A success slower than this is a slow call (at most 1h)",
        "2s",
    ),
    entry(
        "minimum_calls",
        field!(Count minimum_calls),
        "Outcomes needed in the window before the rates count",
        "5",
    )
    .default("10"),
    entry(
        "window_calls",
        Kind::Count(
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
        "Count window: the last N outcomes",
        "20",
    )
    .names("window.calls", "count_window.calls")
    .default("100")
    .conflicts("window_duration"),
    entry(
        "window_duration",
        Kind::Duration(
            |p| time_window(p)?.duration.as_ref().map(std_duration),
            |p, v| time_window_mut(p).duration = Some(wire_duration(v)),
        ),
        "Time window: the outcomes of the last DUR (at most 24h)",
        "1m",
    )
    .names("window.duration", "time_window.duration"),
    entry(
        "window_buckets",
        Kind::Count(
            |p| time_window(p).map(|t| t.buckets),
            |p, v| time_window_mut(p).buckets = v,
        ),
        "Buckets of the time window",
        "6",
    )
    .names("window.buckets", "time_window.buckets")
    .default("10")
    .requires("window_duration"),
    entry(
        "open_duration",
        field!(Duration open_duration),
        "How long the breaker stays open after it trips (at most 24h)",
        "45s",
    )
    .default("30s"),
    entry(
        "max_open_duration",
        field!(Duration max_open_duration),
        "Exponential backoff of the open duration on repeated trips, up to this",
        "5m",
    ),
    entry(
        "half_open_permits",
        field!(Count half_open_permits),
        "Half-open probes in flight at once",
        "3",
    )
    .default("1"),
    entry(
        "success_threshold",
        field!(Count success_threshold),
        "Probe successes that close the breaker (at most half_open_permits)",
        "2",
    )
    .default("1"),
    entry(
        "permit_ttl",
        field!(Duration permit_ttl),
        "An unreported half-open probe counts as a failure after this",
        "15s",
    )
    .default("10s"),
    entry(
        "fallback",
        Kind::Fallback,
        "What clients do when the daemon is unreachable",
        "local",
    )
    .default("open"),
    entry(
        "cache_ttl",
        field!(Duration cache_ttl),
        "Clients may reuse a CLOSED answer for this long without asking (at most 60s)",
        "100ms",
    ),
    entry(
        "half_open_failure_rate",
        field!(Percent half_open_failure_rate_percent),
        "Judge a half-open trial of half_open_permits probes by rate: re-open at PCT percent failed, else close (resilience4j's rule; success_threshold unused)",
        "50",
    )
    .names(
        "half_open_failure_rate_percent",
        "half_open_failure_rate_percent",
    ),
    entry(
        "half_open_max_wait",
        field!(Duration half_open_max_wait),
        "Half-open this long with no probe taken: back to open (at most 24h)",
        "1m",
    ),
    entry(
        "half_open_max_wait_closes",
        field!(Flag half_open_max_wait_closes),
        "half_open_max_wait closes the breaker instead of re-opening it",
        "true",
    )
    .requires("half_open_max_wait"),
    entry(
        "slow_includes_failures",
        field!(Flag slow_includes_failures),
        "A failure slower than slow_call_duration is a slow call too (resilience4j's rule; not leased)",
        "true",
    )
    .requires("slow_call_rate"),
    entry(
        "min_distinct_callers",
        field!(Count min_distinct_callers),
        "Trip on consecutive failures or the failure rate only when at least N distinct callers failed (1-64)",
        "2",
    )
    .default("1"),
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

/// A percentage as written on a command line, `50` or `50%`, within `range`.
pub fn parse_percent<T>(text: &str, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let (lo, hi) = (range.start(), range.end());
    let n: T = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage ({lo}-{hi})"))?;
    if !range.contains(&n) {
        return Err(format!("{n} is not in {lo}..={hi}"));
    }
    Ok(n)
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
            Kind::Flag(..) => "BOOL",
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
            Kind::Percent(..) => parse_percent(text, 1..=100).map(Value::Count),
            Kind::Duration(..) => humantime::parse_duration(text)
                .map(Value::Duration)
                .map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)")),
            Kind::Fallback => fallback_named(text).map(Value::Fallback).ok_or_else(|| {
                let names: Vec<&str> = FALLBACKS.iter().map(|(n, _, _)| *n).collect();
                format!("{text:?} is not one of {}", names.join(", "))
            }),
            Kind::Flag(..) => match text.trim() {
                "true" => Ok(Value::Flag(true)),
                "false" => Ok(Value::Flag(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
        }
    }

    /// Whether `value` is of this knob's type.
    pub fn accepts(&self, value: &Value) -> bool {
        matches!(
            (self.kind, value),
            (Kind::Count(..) | Kind::Percent(..), Value::Count(_))
                | (Kind::Duration(..), Value::Duration(_))
                | (Kind::Fallback, Value::Fallback(_))
                | (Kind::Flag(..), Value::Flag(_))
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
            Kind::Flag(get, _) => get(p).map(Value::Flag),
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
            (Kind::Flag(_, set), Value::Flag(on)) => set(p, on),
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
    /// Of a [`Kind::Flag`] knob.
    Flag(bool),
}

impl Value {
    /// In TOML value syntax, as apply files write it and `cbctl get` shows it:
    /// `5`, `"30s"`, `"local"`.
    pub fn to_toml(&self) -> String {
        match self {
            Value::Count(n) => n.to_string(),
            Value::Duration(d) => format!("{:?}", humantime::format_duration(*d).to_string()),
            Value::Fallback(f) => format!("{:?}", fallback_name(*f)),
            Value::Flag(on) => on.to_string(),
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
            Value::Flag(on) => JsonScalar::Flag(*on),
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
    /// `true` or `false`.
    Flag(bool),
}
