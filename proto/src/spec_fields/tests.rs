//! The schema walked: every knob through every place derived from it.

use std::time::Duration;

use prost::Message as _;

use super::*;
use crate::{
    convert::{spec_from_proto, spec_to_proto},
    schema::examples_with,
};

fn fields_of(knobs: &[&'static Knob]) -> SpecFields {
    knobs.iter().fold(SpecFields::default(), |f, k| {
        f.with(k.key, k.parse(k.example).expect("example parses"))
            .expect("example fits")
    })
}

#[test]
fn every_knob_round_trips_through_file_proto_machine_json_and_table() {
    for first in KNOBS {
        let knobs = examples_with(first);
        let fields = fields_of(&knobs);
        // File keys: the same values back.
        let toml_text: String = fields
            .rows()
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let from_file: SpecFields = toml::from_str(&toml_text).expect(&toml_text);
        assert_eq!(from_file, fields, "{toml_text}");
        // Through the wire and the machine, and back.
        let wire = fields.to_proto().expect("examples are consistent");
        let spec = spec_from_proto(&wire).unwrap_or_else(|e| panic!("{toml_text}: {e}"));
        let shown = spec_to_proto(&spec);
        let back = SpecFields::from_proto(&shown);
        let json = serde_json::to_value(back.json()).expect("json");
        let table: SpecFields = toml::from_str(
            &back
                .rows()
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>(),
        )
        .expect("table rows are apply-file lines");
        assert_eq!(table, back);
        for k in &knobs {
            let want = k.parse(k.example).expect("example");
            assert_eq!(back.get(k.key), Some(want), "{} through the machine", k.key);
            let at = k.proto.split('.').fold(&json, |j, part| &j[part]);
            assert_eq!(
                *at,
                serde_json::to_value(want.to_json()).expect("json"),
                "{} in JSON at {}: {json}",
                k.key,
                k.proto
            );
        }
    }
}

#[test]
fn every_proto_field_of_the_spec_is_a_knob() {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("set");
    let messages: Vec<&prost_types::DescriptorProto> = set
        .file
        .iter()
        .filter(|f| f.package() == "cbd.v1")
        .flat_map(|f| &f.message_type)
        .collect();
    let message = |name: &str| {
        *messages
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let mut paths = Vec::new();
    for field in &message("BreakerSpec").field {
        match field.type_name().strip_prefix(".cbd.v1.") {
            Some(inner @ ("CountWindow" | "TimeWindow")) => {
                for sub in &message(inner).field {
                    paths.push(format!("{}.{}", field.name(), sub.name()));
                }
            }
            _ => paths.push(field.name().to_owned()),
        }
    }
    let knobs: Vec<&str> = KNOBS.iter().map(|k| k.proto).collect();
    assert_eq!(knobs, paths, "the schema lists every proto field, in order");
}

#[test]
fn errors_name_the_key() {
    // One value per knob the machine refuses; a new knob needs one here.
    let bad: &[(&str, &str)] = &[
        ("consecutive_failures", "0"),
        ("failure_rate", "101"),
        ("slow_call_rate", "0"),
        ("slow_call_duration", "2h"),
        ("minimum_calls", "0"),
        ("window_calls", "0"),
        ("window_duration", "25h"),
        ("window_buckets", "2000"),
        ("open_duration", "25h"),
        ("max_open_duration", "25h"),
        ("half_open_permits", "0"),
        ("success_threshold", "0"),
        ("permit_ttl", "25h"),
        ("cache_ttl", "61s"),
        ("half_open_failure_rate", "101"),
        ("half_open_max_wait", "25h"),
        ("min_distinct_callers", "0"),
    ];
    for k in KNOBS {
        if matches!(k.kind, Kind::Fallback | Kind::Flag(..)) {
            continue; // every value of the type is valid (with the knobs they require)
        }
        let (_, text) = bad
            .iter()
            .find(|(key, _)| *key == k.key)
            .unwrap_or_else(|| panic!("no invalid value for {}", k.key));
        let mut fields = fields_of(&examples_with(k));
        // A percentage flag refuses out-of-range values itself; files pass them on.
        let value = k
            .parse(text)
            .or_else(|_| text.parse().map(Value::Count))
            .expect("bad value parses");
        fields.set(k.key, value).expect("type fits");
        let err = spec_from_proto(&fields.to_proto().expect("consistent")).unwrap_err();
        let message = spec_error(&err);
        assert!(
            message.starts_with(&format!("{}: ", k.key)),
            "{}: {message}",
            k.key
        );
        for other in KNOBS.iter().filter(|o| o.field != o.key) {
            assert!(!message.contains(other.field), "{message}");
        }
    }
}

#[test]
fn defaults_in_help_are_the_machines() {
    let defaults = SpecFields::from_proto(&spec_to_proto(&cbd_breaker::Spec::default()));
    let time = SpecFields::from_proto(&spec_to_proto(
        &spec_from_proto(
            &SpecFields::default()
                .with("window_duration", Value::Duration(Duration::from_secs(60)))
                .expect("fits")
                .to_proto()
                .expect("alone"),
        )
        .expect("valid"),
    ));
    for k in KNOBS {
        match k.default {
            // A window knob's default is that of its kind of window.
            Some(text) => {
                let v = defaults.get(k.key).or(time.get(k.key));
                let v = v.unwrap_or_else(|| panic!("{}: no default in the machine", k.key));
                assert!(
                    text.starts_with(v.to_toml().trim_matches('"')),
                    "{}: help says {text:?}, the machine {v:?}",
                    k.key
                );
            }
            None => assert_eq!(defaults.get(k.key), None, "{}: off by default", k.key),
        }
    }
}

#[test]
fn readme_lists_every_key() {
    let readme = include_str!("../../../README.md");
    for k in KNOBS {
        let row = format!("| `{}` | `--{}` | `{}` |", k.key, k.flag(), k.proto);
        assert!(readme.contains(&row), "README lacks the row {row:?}");
    }
}

#[test]
fn parses_the_documented_keys() {
    let fields: SpecFields = toml::from_str(
        r#"
        consecutive_failures = 4
        failure_rate = 50
        open_duration = "30s"
        window_duration = "1m"
        fallback = "local"
        "#,
    )
    .expect("valid toml");
    let spec = fields.to_proto().expect("valid");
    assert_eq!(spec.consecutive_failures, Some(4));
    assert_eq!(spec.failure_rate_percent, Some(50));
    assert_eq!(spec.open_duration.map(|d| d.seconds), Some(30));
    assert_eq!(spec.fallback(), pb::Fallback::Local);
    assert!(matches!(
        spec.window,
        Some(pb::breaker_spec::Window::TimeWindow(_))
    ));
}

#[test]
fn unknown_keys_bad_values_and_double_windows_are_errors() {
    let err = toml::from_str::<SpecFields>("failure_rat = 5").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `failure_rat`"),
        "{err}"
    );
    let err = toml::from_str::<SpecFields>("open_duration = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("open_duration: "), "{err}");
    let err = toml::from_str::<SpecFields>("fallback = \"maybe\"").unwrap_err();
    assert!(
        err.to_string()
            .contains("fallback: unknown variant `maybe`"),
        "{err}"
    );
    let both = SpecFields::default()
        .with("window_calls", Value::Count(10))
        .and_then(|f| f.with("window_duration", Value::Duration(Duration::from_secs(1))))
        .expect("fits");
    assert_eq!(
        both.to_proto().unwrap_err(),
        "window_calls and window_duration are exclusive: pick one"
    );
    let lonely = SpecFields::default()
        .with("window_buckets", Value::Count(3))
        .expect("fits");
    assert_eq!(
        lonely.to_proto().unwrap_err(),
        "window_buckets needs window_duration"
    );
    assert!(SpecFields::default().set("nope", Value::Count(1)).is_err());
    assert!(
        SpecFields::default()
            .set("open_duration", Value::Count(1))
            .is_err()
    );
}

#[test]
fn flag_values_parse_as_documented() {
    let pct = knob("failure_rate").expect("known");
    assert_eq!(pct.parse("50%"), Ok(Value::Count(50)));
    assert_eq!(pct.parse("7"), Ok(Value::Count(7)));
    for bad in ["0", "101", "x"] {
        assert!(pct.parse(bad).is_err(), "{bad}");
    }
    let d = knob("open_duration").expect("known");
    assert_eq!(
        d.parse("1m 30s"),
        Ok(Value::Duration(Duration::from_secs(90)))
    );
    assert!(d.parse("soon").is_err());
    let f = knob("fallback").expect("known");
    assert_eq!(
        f.parse("closed"),
        Ok(Value::Fallback(cbd_breaker::Fallback::FailClosed))
    );
    assert!(f.parse("FAIL_CLOSED").is_err());
    // Every knob has a key of its own and a help line.
    for (i, k) in KNOBS.iter().enumerate() {
        assert!(!k.help.is_empty(), "{}", k.key);
        assert_eq!(KEYS[i], k.key);
        assert!(
            KNOBS[..i]
                .iter()
                .all(|o| o.key != k.key && o.field != k.field)
        );
        assert!(
            k.parse(k.example).is_ok(),
            "{}: example {:?}",
            k.key,
            k.example
        );
    }
}
