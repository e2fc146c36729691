//! The spec as `cbctl put` flags, one per knob of the schema (`cbd_proto::schema`):
//! `--failure-rate 50`, `--open-duration 30s`, `--fallback local`.

use std::ffi::OsStr;

use cbd_proto::{
    schema::{FALLBACKS, KNOBS, Kind, Knob, Value},
    spec_fields::SpecFields,
};
use clap::{
    Arg, ArgAction, ArgMatches, Command,
    builder::{PossibleValue, TypedValueParser},
};

/// The spec flags; the whole spec is replaced, so keys not given take their defaults.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpecArgs(pub SpecFields);

impl clap::FromArgMatches for SpecArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut fields = SpecFields::default();
        for k in KNOBS {
            if let Some(v) = m.get_one::<Value>(k.key) {
                fields
                    .set(k.key, *v)
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            }
        }
        Ok(Self(fields))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SpecArgs {
    fn augment_args(cmd: Command) -> Command {
        cmd.next_help_heading("Spec (unset keys take their defaults)")
            .args(KNOBS.iter().map(flag))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The flag of a knob: `--key-with-dashes VALUE`, with the knob's help, default and
/// the knobs it needs or excludes.
fn flag(k: &'static Knob) -> Arg {
    let mut arg = Arg::new(k.key)
        .long(k.flag())
        .value_name(k.value_name())
        .help(k.help_line())
        .action(ArgAction::Set)
        .value_parser(KnobParser(k));
    if let Some(other) = k.requires {
        arg = arg.requires(other);
    }
    if let Some(other) = k.conflicts {
        arg = arg.conflicts_with(other);
    }
    arg
}

/// Parses a flag's value as its knob does; lists the fallback names and `true` /
/// `false` for help and completions.
#[derive(Clone, Copy, Debug)]
struct KnobParser(&'static Knob);

impl TypedValueParser for KnobParser {
    type Value = Value;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Value, clap::Error> {
        let knob = self.0;
        // clap's own parser for closures formats the error with the flag's name.
        let parse = move |s: &str| knob.parse(s);
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        match self.0.kind {
            Kind::Fallback => {
                Some(Box::new(FALLBACKS.iter().map(|(name, _, help)| {
                    PossibleValue::new(*name).help(*help)
                })))
            }
            Kind::Flag(..) => Some(Box::new(
                ["true", "false"].into_iter().map(PossibleValue::new),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches as _;

    use cbd_proto::{
        convert::{spec_from_proto, spec_to_proto},
        schema::examples_with,
        v1 as pb,
    };

    use super::*;
    use crate::{
        Cli, Command as Verb,
        commands::{apply, get},
        output::BreakerJson,
    };

    /// `cbctl put x --key example ...`, parsed.
    fn put_flags(knobs: &[&'static Knob]) -> Result<SpecFields, clap::Error> {
        let mut argv = vec!["cbctl".to_owned(), "put".into(), "x".into()];
        for k in knobs {
            argv.push(format!("--{}", k.flag()));
            argv.push(k.example.to_owned());
        }
        let m = crate::command().try_get_matches_from(argv)?;
        match Cli::from_arg_matches(&m)?.command {
            Verb::Put(args) => Ok(args.spec.0),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Every knob, from a flag, through an apply file (TOML and YAML), the wire and
    /// the machine, to `-o json` and `cbctl get`'s table: a knob missing from one of
    /// them fails here.
    #[test]
    fn every_knob_round_trips_from_flag_to_output() {
        for first in KNOBS {
            let knobs = examples_with(first);
            let want: Vec<(&str, Value)> = knobs
                .iter()
                .map(|k| (k.key, k.parse(k.example).expect("example")))
                .collect();
            let fields = put_flags(&knobs).unwrap_or_else(|e| panic!("{}: {e}", first.key));
            assert_eq!(fields.iter().count(), knobs.len(), "{fields:?}");
            for (key, v) in &want {
                assert_eq!(fields.get(key), Some(*v), "--{key}");
            }
            // An apply file with the same keys says the same.
            let rows = fields.rows();
            let toml: String = rows.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let yaml: String = rows
                .iter()
                .map(|(k, v)| format!("  {k}: {}\n", v.trim_matches('"')))
                .collect();
            let from_toml = apply::parse(
                &format!("[[breaker]]\nname = \"x\"\n{toml}"),
                apply::Format::Toml,
            )
            .expect(&toml);
            let from_yaml =
                apply::parse(&format!("- name: x\n{yaml}"), apply::Format::Yaml).expect(&yaml);
            assert_eq!(from_toml[0].fields, fields, "{toml}");
            assert_eq!(from_yaml, from_toml, "{yaml}");
            // Through the machine and out again.
            let spec = spec_from_proto(&from_toml[0].spec).expect("valid");
            let status = pb::BreakerStatus {
                name: "x".into(),
                spec: Some(spec_to_proto(&spec)),
                ..Default::default()
            };
            let json = serde_json::to_value(BreakerJson::from(&status)).expect("json");
            let table = get::describe(&status);
            for (k, (_, v)) in knobs.iter().zip(&want) {
                let at = k.proto.split('.').fold(&json["spec"], |j, p| &j[p]);
                assert_eq!(
                    *at,
                    serde_json::to_value(v.to_json()).expect("json"),
                    "{} at spec.{}: {json}",
                    k.key,
                    k.proto
                );
                let line = table
                    .lines()
                    .find(|l| l.trim_start().split(' ').next() == Some(k.key))
                    .unwrap_or_else(|| panic!("{} not in:\n{table}", k.key));
                assert!(line.ends_with(&format!("= {}", v.to_toml())), "{line}");
            }
        }
    }

    #[test]
    fn flags_keep_their_rules() {
        let knob = |key| cbd_proto::schema::knob(key).expect("known");
        assert!(put_flags(&[knob("window_calls"), knob("window_duration")]).is_err());
        assert!(put_flags(&[knob("window_buckets")]).is_err());
        assert!(put_flags(&[knob("slow_call_rate")]).is_err());
        let help = crate::command()
            .find_subcommand_mut("put")
            .expect("put")
            .render_long_help()
            .to_string();
        for k in KNOBS {
            assert!(help.contains(&format!("--{} <", k.flag())), "{help}");
        }
        assert!(help.contains("Run an in-process breaker"), "{help}");
    }
}
