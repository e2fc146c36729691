//! `cbctl apply -f FILE`: create or update the breakers of a file, idempotently.
//!
//! TOML, one `[[breaker]]` table per breaker:
//!
//! ```toml
//! [[breaker]]
//! name = "payments"
//! consecutive_failures = 4
//! open_duration = "30s"
//! ```
//!
//! or YAML, a list of the same maps (`- name: payments`). The keys are those of
//! the spec schema's (`cbd_proto::schema`, [`SpecFields`]): `cbctl put`'s flags in
//! snake_case, as in the daemon's `[[template]]` tables; an unknown key is an error, never silently dropped.

use std::{collections::HashSet, io::Read as _, path::Path};

use cbd_proto::{spec_fields::SpecFields, v1 as pb};
use serde::{Deserialize, Serialize};

use crate::{
    Output,
    commands::{Why, put::verdict, spec_error},
    conn::Ctx,
    error::Error,
    output,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file: TOML ([[breaker]] tables) or YAML (a list of maps); `-` for stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,
    /// Compare with the daemon and print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The file's format [default: from the extension; for stdin, guessed].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    // The reason goes with every put of the file.
    #[command(flatten)]
    pub why: Why,
}

/// Apply file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `[[breaker]]` tables.
    Toml,
    /// A list of maps.
    Yaml,
}

/// One breaker of an apply file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its spec keys as written.
    pub fields: SpecFields,
    /// The spec on the wire.
    pub spec: pb::BreakerSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    breaker: Vec<toml::Table>,
}

/// The format of `path`: by extension, else by the first meaningful line.
pub fn detect_format(path: &str, text: &str) -> Format {
    let ext = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => Format::Toml,
        Some("yaml" | "yml") => Format::Yaml,
        _ => {
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            match first {
                Some(l) if l.starts_with('[') => Format::Toml,
                Some(l) if l.starts_with('-') || l == "breaker:" => Format::Yaml,
                Some(l) if l.contains('=') => Format::Toml,
                _ => Format::Yaml,
            }
        }
    }
}

/// Parses and checks an apply file: every name valid and unique, every spec valid.
pub fn parse(text: &str, format: Format) -> Result<Vec<Entry>, String> {
    let raw: Vec<(Option<String>, Result<SpecFields, String>)> = match format {
        Format::Toml => {
            let file: TomlFile = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
            file.breaker
                .into_iter()
                .map(|mut table| {
                    let name = table.remove("name").map(|v| match v {
                        toml::Value::String(s) => Ok(s),
                        other => Err(format!("name must be a string, not {}", other.type_str())),
                    });
                    let fields = toml::Value::Table(table)
                        .try_into::<SpecFields>()
                        .map_err(|e| one_line(&e.to_string()));
                    lift(name, fields)
                })
                .collect::<Result<_, _>>()?
        }
        Format::Yaml => {
            let value: serde_norway::Value =
                serde_norway::from_str(text).map_err(|e| one_line(&e.to_string()))?;
            let items = match value {
                serde_norway::Value::Null => Vec::new(),
                serde_norway::Value::Sequence(items) => items,
                serde_norway::Value::Mapping(mut m)
                    if m.len() == 1 && m.contains_key("breaker") =>
                {
                    match m.remove("breaker") {
                        Some(serde_norway::Value::Sequence(items)) => items,
                        _ => return Err("`breaker` must be a list of maps".into()),
                    }
                }
                _ => {
                    return Err("expected a list of breakers (`- name: payments` ...)".into());
                }
            };
            items
                .into_iter()
                .map(|item| {
                    let serde_norway::Value::Mapping(mut map) = item else {
                        return Err("each breaker must be a map with a `name`".to_owned());
                    };
                    let name = map.remove("name").map(|v| match v {
                        serde_norway::Value::String(s) => Ok(s),
                        _ => Err("name must be a string".to_owned()),
                    });
                    let fields =
                        serde_norway::from_value::<SpecFields>(serde_norway::Value::Mapping(map))
                            .map_err(|e| one_line(&e.to_string()));
                    lift(name, fields)
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(raw.len());
    for (i, (name, fields)) in raw.into_iter().enumerate() {
        let which = match &name {
            Some(n) => format!("breaker {n:?}"),
            None => format!("breaker #{}", i + 1),
        };
        let name = name.ok_or_else(|| format!("{which}: missing `name`"))?;
        cbd_breaker::validate_name(&name).map_err(|e| format!("{which}: {e}"))?;
        if !seen.insert(name.clone()) {
            return Err(format!("{which}: listed twice"));
        }
        let fields = fields.map_err(|e| format!("{which}: {e}"))?;
        let spec = fields.to_proto().map_err(|e| format!("{which}: {e}"))?;
        cbd_proto::convert::spec_from_proto(&spec)
            .map_err(|e| format!("{which}: {}", spec_error(&e)))?;
        entries.push(Entry { name, fields, spec });
    }
    Ok(entries)
}

type Lifted = (Option<String>, Result<SpecFields, String>);

fn lift(
    name: Option<Result<String, String>>,
    fields: Result<SpecFields, String>,
) -> Result<Lifted, String> {
    let name = name.transpose()?;
    Ok((name, fields))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read(path: &str) -> Result<String, Error> {
    let file_error = |reason: String| Error::File {
        path: path.to_owned(),
        reason,
    };
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| file_error(e.to_string()))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))
    }
}

#[derive(Serialize)]
struct ResultJson {
    name: String,
    result: &'static str,
}

#[derive(Serialize)]
struct ApplyJson {
    dry_run: bool,
    results: Vec<ResultJson>,
    revision: u64,
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    let text = read(&args.file)?;
    let format = args
        .format
        .unwrap_or_else(|| detect_format(&args.file, &text));
    let entries = parse(&text, format).map_err(|reason| Error::File {
        path: if args.file == "-" {
            "stdin".into()
        } else {
            args.file.clone()
        },
        reason,
    })?;
    if entries.is_empty() {
        eprintln!("{}: no breakers to apply", args.file);
    }
    let mut admin = args.why.admin(ctx).await?;
    let mut results = Vec::with_capacity(entries.len());
    let mut revision = 0;
    let width = "unchanged".len();
    for entry in entries {
        let result = if args.dry_run {
            let current = ctx.run(admin.get(&entry.name)).await;
            match current {
                Err(Error::NotFound(_)) => "created",
                Err(e) => return Err(e),
                Ok(resp) => {
                    revision = revision.max(resp.revision);
                    let now = resp
                        .breaker
                        .and_then(|b| b.spec)
                        .and_then(|s| cbd_proto::convert::spec_from_proto(&s).ok());
                    let want = cbd_proto::convert::spec_from_proto(&entry.spec).ok();
                    if now.is_some() && now == want {
                        "unchanged"
                    } else {
                        "updated"
                    }
                }
            }
        } else {
            let resp = ctx.run(admin.put(&entry.name, entry.spec)).await?;
            revision = revision.max(resp.revision);
            verdict(resp.created, resp.unchanged)
        };
        if ctx.output == Output::Table {
            let suffix = if args.dry_run { " (dry run)" } else { "" };
            output::println(&format!("{result:<width$}  {}{suffix}", entry.name))?;
        }
        results.push(ResultJson {
            name: entry.name,
            result,
        });
    }
    if ctx.output == Output::Json {
        output::print_json_pretty(&ApplyJson {
            dry_run: args.dry_run,
            results,
            revision,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
# two breakers
[[breaker]]
name = "payments"
consecutive_failures = 4
failure_rate = 50
open_duration = "30s"

[[breaker]]
name = "search/v2"
window_duration = "1m"
fallback = "local"
"#;

    const YAML: &str = r#"
- name: payments
  consecutive_failures: 4
  failure_rate: 50
  open_duration: 30s
- name: search/v2
  window_duration: 1m
  fallback: local
"#;

    #[test]
    fn toml_and_yaml_say_the_same() {
        let t = parse(TOML, Format::Toml).expect("toml");
        let y = parse(YAML, Format::Yaml).expect("yaml");
        assert_eq!(t, y);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].fields.get("failure_rate"),
            Some(cbd_proto::schema::Value::Count(50))
        );
        assert_eq!(detect_format("-", TOML), Format::Toml);
        assert_eq!(detect_format("-", YAML), Format::Yaml);
        assert_eq!(detect_format("x.yml", ""), Format::Yaml);
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse("[[breaker]]\nname = \"a\"\nfailure_rat = 5\n", Format::Toml).unwrap_err();
        assert!(
            err.contains("breaker \"a\"") && err.contains("failure_rat"),
            "{err}"
        );
        let err = parse("- name: a\n  failure_rate: 500\n", Format::Yaml).unwrap_err();
        assert!(err.contains("failure_rate"), "{err}");
        let err = parse("- name: a\n- name: a\n", Format::Yaml).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = parse("- consecutive_failures: 3\n", Format::Yaml).unwrap_err();
        assert!(err.contains("missing `name`"), "{err}");
        let err = parse("- name: \"bad name\"\n", Format::Yaml).unwrap_err();
        assert!(err.contains("bad name"), "{err}");
        assert!(parse("[[breakers]]\nname = \"a\"\n", Format::Toml).is_err());
        let err = parse(
            "- name: a\n  window_calls: 5\n  window_duration: 1s\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(err.contains("exclusive"), "{err}");
    }
}
