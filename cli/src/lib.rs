//! `cbctl`, the operator's command line for cbd.
//!
//! One module per verb under [`commands`]; [`error::Error`] is the crate's one error
//! type, and [`error::Error::exit_code`] its one mapping to exit codes.

use std::{process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

pub mod commands;
pub mod conn;
pub mod error;
pub mod output;
pub mod spec_args;

use commands::{
    acquire, apply, bench, completion, delete, get, health, history, list, overrides, put, report,
    reset, status, watch,
};
use conn::{Auth, Ctx, DEFAULT_ENDPOINT, normalize_endpoint};
use error::{EXIT_CODES_HELP, Error, exit};

/// cbctl: inspect and steer the breakers of a cbd daemon.
///
/// Talks gRPC to cbd (the cbd.v1.Admin and cbd.v1.Breakers services, and
/// grpc.health.v1). Tables are for people; `-o json` prints one JSON object (one per
/// line for `watch`) with the proto's field names, enum value names ("STATE_OPEN"),
/// durations like "30s" and RFC 3339 timestamps.
#[derive(Debug, Parser)]
#[command(
    name = "cbctl",
    version,
    about,
    long_about,
    after_help = EXIT_CODES_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes; `--help` lists them apart from the verb's own.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The daemon's gRPC address: http://host:port, or host:port (port: 7411 if none).
    /// Replicas: several, comma-separated; commands go to the one whose
    /// `cbd.v1.Leader` health is SERVING, and `status` asks each.
    #[arg(
        long,
        visible_alias = "endpoints",
        env = "CBD_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        global = true,
        value_name = "URL[,URL...]"
    )]
    pub endpoint: String,

    /// Deadline for connecting and for each request ("500ms", "5s", "1m").
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true, value_name = "DUR")]
    pub timeout: Duration,

    /// Output format: a table for people, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,

    /// Bearer token, sent as `authorization: Bearer <token>`; never printed.
    #[arg(
        long,
        env = "CBD_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// CA certificate (PEM) to verify the daemon with; turns on TLS (https).
    #[arg(long, env = "CBD_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for mTLS; needs --tls-key and --tls-ca.
    #[arg(
        long,
        env = "CBD_TLS_CERT",
        global = true,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Client private key (PEM) for mTLS; needs --tls-cert.
    #[arg(
        long,
        env = "CBD_TLS_KEY",
        global = true,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Name to verify the daemon's certificate against [default: the endpoint's host].
    #[arg(long, env = "CBD_TLS_SERVER_NAME", global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and `key: value` lines.
    Table,
    /// One JSON object (one per line for `watch`).
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List breakers (all, or those whose name starts with PREFIX).
    List(list::Args),
    /// Show one breaker's spec and status.
    Get(get::Args),
    /// Create a breaker or replace its spec (unset keys take their defaults).
    Put(Box<put::Args>),
    /// Create or update the breakers of a TOML or YAML file; prints created / updated / unchanged.
    Apply(apply::Args),
    /// Delete a breaker (its outstanding permits become invalid).
    Delete(delete::Args),
    /// Override: reject every call until released.
    ForceOpen(overrides::Args),
    /// Override: allow every call; outcomes are counted but never trip it.
    ForceClosed(overrides::Args),
    /// Override: allow every call and count nothing.
    Disable(overrides::Args),
    /// Override: allow every call, but run the state machine and emit its events.
    Shadow(overrides::Args),
    /// Clear the override (back to CLOSED with an empty window).
    Release(overrides::ReleaseArgs),
    /// Back to CLOSED with an empty window and no backoff (an override stays).
    Reset(reset::Args),
    /// Follow changes: one line per event; resumes by itself after a daemon restart.
    Watch(watch::Args),
    /// One breaker's past: its transitions and operator changes, with who and why.
    History(history::Args),
    /// Ask for a permit, as a client would (prints the decision and the permit).
    Acquire(acquire::Args),
    /// Report how a call went, with the permit from `acquire`.
    Report(report::Args),
    /// The daemon's health status (exit 0 only when SERVING).
    Health(health::Args),
    /// The daemon itself: version, uptime, revisions, breakers, streams, store size, last commit.
    Status(status::Args),
    /// Load generator: acquire+report pairs, with latency percentiles.
    Bench(bench::Args),
    /// Print a shell completion script.
    Completion(completion::Args),
}

/// Parses "500ms", "5s", "1m 30s".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m)"))
}

/// The clap command (for parsing, completions and tests): every subcommand's
/// `--help` ends with the exit codes too.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommands(|sub| {
        if sub.get_after_help().is_some() {
            sub
        } else {
            sub.after_help(EXIT_CODES_HELP)
        }
    })
}

/// Parses the arguments, runs the command, prints the error, returns the exit code.
pub fn main() -> ExitCode {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::from(exit::OK)
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(Error::StdoutClosed) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, Error::Usage(_)) {
                eprintln!("\nFor more information, try '--help'.");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Completion(args) = &cli.command {
        return completion::run(args);
    }
    if cli.global.timeout.is_zero() {
        return Err(Error::Usage("--timeout: must be more than zero".into()));
    }
    let tls = conn::tls_config(&cli.global)?;
    let endpoints = cli
        .global
        .endpoint
        .split(',')
        .map(|e| normalize_endpoint(e, tls.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ctx = Ctx {
        endpoint: endpoints[0].clone(),
        endpoints,
        timeout: cli.global.timeout,
        output: cli.global.output,
        auth: Auth::new(cli.global.token.as_deref())?,
        tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        if ctx.endpoints.len() > 1 && !matches!(cli.command, Command::Status(_)) {
            ctx.endpoint = ctx.leader().await;
        }
        dispatch(ctx, cli.command).await
    })
}

async fn dispatch(ctx: Ctx, command: Command) -> Result<(), Error> {
    use cbd_proto::v1::Override;
    match command {
        Command::List(a) => list::run(&ctx, a).await,
        Command::Get(a) => get::run(&ctx, a).await,
        Command::Put(a) => put::run(&ctx, *a).await,
        Command::Apply(a) => apply::run(&ctx, a).await,
        Command::Delete(a) => delete::run(&ctx, a).await,
        Command::ForceOpen(a) => overrides::run(&ctx, a, Override::ForcedOpen).await,
        Command::ForceClosed(a) => overrides::run(&ctx, a, Override::ForcedClosed).await,
        Command::Disable(a) => overrides::run(&ctx, a, Override::Disabled).await,
        Command::Shadow(a) => overrides::run(&ctx, a, Override::Shadow).await,
        Command::Release(a) => overrides::release(&ctx, a).await,
        Command::Reset(a) => reset::run(&ctx, a).await,
        Command::Watch(a) => watch::run(&ctx, a).await,
        Command::History(a) => history::run(&ctx, a).await,
        Command::Acquire(a) => acquire::run(&ctx, a).await,
        Command::Report(a) => report::run(&ctx, a).await,
        Command::Health(a) => health::run(&ctx, a).await,
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Bench(a) => bench::run(&ctx, a).await,
        Command::Completion(a) => completion::run(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }
}
