//! The `cbd` binary: parse the configuration, set up logging, serve.

use std::{io::IsTerminal, process::ExitCode};

use cbd::config::{Args, Config, LogFormat};
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if args.check_config {
        return check_config(&args, &matches);
    }
    let config = match Config::load(&args, &matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cbd: error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let filter = match EnvFilter::try_new(&config.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cbd: error: --log-level {:?}: {e}", config.log_level);
            return ExitCode::from(2);
        }
    };
    // Colours only on a terminal: log files and collectors get plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cbd: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cbd::server::run(config, cbd::server::signals())) {
        Ok(()) => ExitCode::SUCCESS,
        // A damaged data dir has its own status, so a supervisor can stop restarting.
        Err(e @ cbd::error::Error::Damaged { .. }) => {
            eprintln!("cbd: error: {e}");
            ExitCode::from(3)
        }
        // One line, as for a bad configuration: not a log line as well.
        Err(e) => {
            eprintln!("cbd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: every problem on its own line and exit 2, or a line saying the
/// configuration is good and exit 0. Nothing is opened or bound.
fn check_config(args: &Args, matches: &clap::ArgMatches) -> ExitCode {
    let problems = match Config::layered(args, matches) {
        Ok(config) => {
            let mut problems = config.problems();
            problems.extend(config.check_files());
            problems
        }
        // A file that does not parse hides what else may be wrong.
        Err(e) => vec![e],
    };
    if problems.is_empty() {
        let source = args.config.as_ref().map_or_else(
            || "flags, environment and defaults".to_owned(),
            |path| format!("{} with flags and environment", path.display()),
        );
        println!("cbd: configuration is valid ({source})");
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("cbd: error: {problem}");
    }
    eprintln!("cbd: {} problem(s) found", problems.len());
    ExitCode::from(2)
}
