//! The daemon's configuration: flags, `CBD_*` environment variables, and an optional
//! TOML file. Precedence: flag > environment > file > default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use cbd_proto::spec_fields::SpecFields;
use clap::{ArgMatches, Parser, ValueEnum, parser::ValueSource};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::error::Error;

/// Default gRPC listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";

/// cbd, the circuit-breaker daemon: named circuit breakers in an embedded sled
/// database, served over gRPC (cbd.v1.Breakers, cbd.v1.Admin, health, reflection).
///
/// Every setting can also be given with its CBD_* environment variable or in the
/// TOML file named by --config (keys as the long flags, in snake_case); a flag beats
/// the environment, which beats the file, which beats the default.
#[derive(Debug, Parser)]
#[command(name = "cbd", version = crate::LONG_VERSION, about, long_about)]
pub struct Args {
    /// TOML configuration file (same keys as the flags, plus [[template]] tables).
    #[arg(long, env = "CBD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The settings: flags and environment here, the file layered under them by
    /// [`Config::load`].
    #[command(flatten)]
    pub settings: Config,

    /// Print the effective configuration as TOML and exit.
    #[arg(long, conflicts_with = "check_config")]
    pub print_config: bool,

    /// Check the flags, the environment, the --config file with its templates, the
    /// auth file and the TLS files, then exit: 0 when all is well, 2 with every
    /// problem listed, one a line.
    #[arg(long)]
    pub check_config: bool,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why `--store etcd` cannot run on a build without the `etcd` feature.
pub const NO_ETCD: &str = "this cbd was built without etcd support; build it with \
     `cargo build --release -p cbd --features etcd`";

/// The `--help` heading of the replica settings.
const REPLICAS: &str = "Replicas (--store etcd)";

/// Where breakers are kept (`--store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded sled database in --data-dir: one daemon.
    Sled,
    /// etcd, shared by replicas of which one leads.
    Etcd,
}

/// A `[[template]]` table: a spec for unknown names under `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Names starting with this get the spec; the longest matching prefix wins.
    pub prefix: String,
    /// The spec keys (as in `cbctl apply`).
    #[serde(flatten)]
    pub spec: SpecFields,
}

/// The effective configuration, declared once: each field is a flag, its `CBD_*`
/// variable and its key in the file, with the default and the help text here.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address. Port 0 picks a free port (see --addr-file). Non-loopback
    /// addresses need --auth-file or --allow-unauthenticated.
    #[arg(long, env = "CBD_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory of the sled database.
    #[arg(
        long,
        env = "CBD_DATA_DIR",
        value_name = "DIR",
        default_value = "cbd-data"
    )]
    pub data_dir: PathBuf,

    /// Write the bound address to this file once serving (for port 0).
    #[arg(long, env = "CBD_ADDR_FILE", value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr_file: Option<PathBuf>,

    /// Log format.
    #[arg(
        long,
        env = "CBD_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter, as RUST_LOG.
    #[arg(
        long,
        env = "CBD_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Most breakers the daemon holds; past it, RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CBD_MAX_BREAKERS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_breakers: usize,

    /// Largest gRPC message accepted, in bytes (at least 1024).
    #[arg(long, env = "CBD_MAX_MESSAGE_SIZE", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Events kept in the watch log; older ones are compacted.
    #[arg(
        long,
        env = "CBD_WATCH_RETENTION",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub watch_retention: u64,

    /// Most concurrent Watch streams; past it, RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "CBD_MAX_WATCHERS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_watchers: usize,

    /// Allow listening on a non-loopback address without authentication.
    #[arg(long, env = "CBD_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Bearer tokens and their roles: TOML, one [[token]] table per token with
    /// `role = "admin"|"client"` and `token = "..."` or `sha256 = "<hex>"`.
    /// Re-read on SIGHUP. With it, non-loopback addresses are allowed.
    #[arg(long, env = "CBD_AUTH_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,

    /// Server certificate chain (PEM); turns TLS on. Needs --tls-key.
    #[arg(long, env = "CBD_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM). Needs --tls-cert.
    #[arg(long, env = "CBD_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that client certificates must be signed by (mTLS):
    /// a client without one is refused at the handshake. Needs --tls-cert.
    #[arg(long, env = "CBD_TLS_CLIENT_CA", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,

    /// Most concurrent HTTP/2 streams per connection.
    #[arg(
        long,
        env = "CBD_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        default_value_t = 1024
    )]
    pub max_concurrent_streams: u32,

    /// Most cbd.v1 requests being handled at once, over all connections; past it,
    /// RESOURCE_EXHAUSTED at once.
    #[arg(
        long,
        env = "CBD_MAX_CONCURRENT_REQUESTS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_concurrent_requests: usize,

    /// Longest a unary cbd.v1 request may take; past it, DEADLINE_EXCEEDED. Not
    /// applied to Watch streams.
    #[arg(long, env = "CBD_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,

    /// Close a connection that has not sent the start of its HTTP/2 preface (or
    /// TLS handshake) this long after it was accepted.
    #[arg(long, env = "CBD_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,

    /// Close a connection the client has sent nothing on for this long. Live
    /// clients answer the keepalive PINGs, so only dead or silent ones reach it;
    /// must be above --http2-keepalive-interval + --http2-keepalive-timeout.
    #[arg(long, env = "CBD_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5m")]
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,

    /// Send an HTTP/2 PING on every connection this often.
    #[arg(long, env = "CBD_HTTP2_KEEPALIVE_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,

    /// Close a connection whose PING is not answered within this.
    #[arg(long, env = "CBD_HTTP2_KEEPALIVE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "20s")]
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,

    /// Serve Prometheus metrics over HTTP on this address (GET /metrics, /healthz,
    /// /readyz); none by default.
    #[arg(long, env = "CBD_METRICS_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,

    /// Most breakers with their own metric series; the rest are summed under
    /// breaker="_other".
    #[arg(
        long,
        env = "CBD_METRICS_MAX_BREAKERS",
        value_name = "N",
        default_value_t = 1000
    )]
    pub metrics_max_breakers: usize,

    /// Let the dashboard (GET /dashboard on --metrics-listen) force, release and
    /// reset breakers when no --auth-file is set; without it that page is read-only.
    /// With --auth-file, actions need an admin token, and this flag changes nothing.
    #[arg(long, env = "CBD_DASHBOARD_ALLOW_ACTIONS")]
    pub dashboard_allow_actions: bool,

    /// Serve a data dir that holds less than was committed (see the log for what was
    /// lost) instead of refusing to start. The revision moves past every revision
    /// handed out before and the watch log starts over. Never read from --config:
    /// recovery is asked for at each start.
    #[arg(long, env = "CBD_FORCE_RECOVER")]
    #[serde(skip)]
    pub force_recover: bool,

    /// Where breakers live: `sled`, the embedded database in --data-dir; or `etcd`,
    /// shared by replicas of which one leads (docs/DESIGN.md §11): needs
    /// --etcd-endpoints, and a cbd built with the `etcd` cargo feature.
    #[arg(long, env = "CBD_STORE", value_name = "KIND", default_value = "sled", help_heading = REPLICAS)]
    pub store: StoreKind,

    /// etcd client URLs, comma-separated (`https://` with --etcd-ca). Only with
    /// --store etcd.
    #[arg(long, env = "CBD_ETCD_ENDPOINTS", value_name = "URLS", value_delimiter = ',', help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub etcd_endpoints: Vec<String>,

    /// This cbd cluster's key prefix in etcd: clusters with other prefixes can share
    /// the same etcd.
    #[arg(long, env = "CBD_ETCD_PREFIX", value_name = "PREFIX", default_value = "cbd", help_heading = REPLICAS)]
    pub etcd_prefix: String,

    /// The URL clients reach this replica at: what standbys name as the leader while
    /// it leads. [default: http://<--listen> (https with --tls-cert), with the port
    /// bound]; needed when --listen is an unspecified address such as 0.0.0.0.
    #[arg(long, env = "CBD_ADVERTISE_URL", value_name = "URL", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,

    /// The leader's etcd lease, in whole seconds: a leader cut off from etcd stops
    /// deciding before it ends, and a standby takes over about this long after a
    /// leader dies (a leader that stops cleanly hands over at once).
    #[arg(long, env = "CBD_ETCD_LEASE_TTL", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2s", help_heading = REPLICAS)]
    #[serde(with = "humantime_serde")]
    pub etcd_lease_ttl: Duration,

    /// etcd user, when etcd has authentication on; the password is read from
    /// --etcd-password-file.
    #[arg(long, env = "CBD_ETCD_USER", value_name = "NAME", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_user: Option<String>,

    /// File holding the password of --etcd-user (one line; trailing newline ignored).
    #[arg(long, env = "CBD_ETCD_PASSWORD_FILE", value_name = "FILE", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_password_file: Option<PathBuf>,

    /// CA certificate(s) (PEM) etcd's server certificates are checked against; turns
    /// TLS to etcd on (endpoints must be https://).
    #[arg(long, env = "CBD_ETCD_CA", value_name = "FILE", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) for etcd's mTLS. Needs --etcd-key and --etcd-ca.
    #[arg(long, env = "CBD_ETCD_CERT", value_name = "FILE", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_cert: Option<PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, env = "CBD_ETCD_KEY", value_name = "FILE", help_heading = REPLICAS)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_key: Option<PathBuf>,

    /// etcd's `--max-txn-ops` (operations per transaction): group commits are split
    /// to fit.
    #[arg(long, env = "CBD_ETCD_MAX_TXN_OPS", value_name = "N", default_value_t = 128, help_heading = REPLICAS)]
    pub etcd_max_txn_ops: usize,

    /// Specs for unknown names by prefix: the file's `[[template]]` tables.
    #[arg(skip)]
    #[serde(rename = "template", skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
}

impl Default for Config {
    /// The defaults declared on the fields above; no environment is read.
    fn default() -> Self {
        use clap::{Args as _, FromArgMatches as _};
        let command = Config::augment_args(clap::Command::new("cbd")).mut_args(|a| a.env(None));
        let matches = command
            .try_get_matches_from(["cbd"])
            .expect("the defaults parse");
        Config::from_arg_matches(&matches).expect("the defaults are a configuration")
    }
}

/// An error about the `--config` file, naming it.
fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid("--config", format!("{}: {e}", path.display()))
}

impl Template {
    /// The template's spec, validated; errors name the template and the key as the
    /// file wrote it (`failure_rate`, not the machine's `failure_rate_percent`).
    pub fn spec(&self) -> Result<cbd_breaker::Spec, Error> {
        let field = format!("template {:?}", self.prefix);
        if self.prefix.is_empty() {
            return Err(Error::invalid(field, "prefix must not be empty"));
        }
        let wire = self
            .spec
            .to_proto()
            .map_err(|e| Error::invalid(&field, e))?;
        cbd_proto::convert::spec_from_proto(&wire)
            .map_err(|e| Error::invalid(&field, cbd_proto::spec_fields::spec_error(&e)))
    }
}

impl Config {
    /// The effective configuration, checked: [`Config::layered`], then
    /// [`Config::validate`].
    pub fn load(args: &Args, matches: &ArgMatches) -> Result<Self, Error> {
        let config = Self::layered(args, matches)?;
        config.validate()?;
        Ok(config)
    }

    /// The file (if any) under the flags and environment, unchecked. `matches` are
    /// the ones `args` was parsed from: they tell a flag or variable that was given
    /// from a default, which the file's value beats.
    pub fn layered(args: &Args, matches: &ArgMatches) -> Result<Self, Error> {
        let Some(path) = &args.config else {
            return Ok(args.settings.clone());
        };
        let (text, _) = Self::read_file(path)?;
        let bad_file = |e: toml::de::Error| file_error(path, e);
        let mut table: toml::Table = toml::from_str(&text).map_err(bad_file)?;
        let given = toml::Table::try_from(&args.settings).expect("a configuration serializes");
        for (key, value) in given {
            if matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                table.insert(key, value);
            }
        }
        let mut config: Self = table.try_into().map_err(bad_file)?;
        config.force_recover = args.settings.force_recover;
        Ok(config)
    }

    /// Reads a TOML file alone (no flags); unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Self::read_file(path).map(|(_, config)| config)
    }

    /// The file's text and the configuration it holds alone, parsed whole so that a
    /// mistake is reported with the file's line.
    fn read_file(path: &Path) -> Result<(String, Self), Error> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let config = toml::from_str(&text).map_err(|e| file_error(path, e))?;
        Ok((text, config))
    }

    /// The first of [`Config::problems`], if any.
    pub fn validate(&self) -> Result<(), Error> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Everything wrong that the types cannot say, in flag order; empty when the
    /// configuration is good. Files named by it are not read (see
    /// [`Config::check_files`]).
    pub fn problems(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        if !self.listen.ip().is_loopback()
            && self.auth_file.is_none()
            && !self.allow_unauthenticated
        {
            problems.push(Error::invalid(
                "--listen",
                format!(
                    "refusing to listen on non-loopback address {} without authentication; \
                     give --auth-file, or pass --allow-unauthenticated to do it anyway",
                    self.listen
                ),
            ));
        }
        if let Err(e) = EnvFilter::try_new(&self.log_level) {
            problems.push(Error::invalid(
                "--log-level",
                format!("{:?}: {e}", self.log_level),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => problems.push(Error::invalid(
                "--tls-cert",
                "--tls-cert and --tls-key must be given together (--tls-key is missing)",
            )),
            (None, Some(_)) => problems.push(Error::invalid(
                "--tls-key",
                "--tls-cert and --tls-key must be given together (--tls-cert is missing)",
            )),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            problems.push(Error::invalid(
                "--tls-client-ca",
                "mTLS needs TLS: give --tls-cert and --tls-key too",
            ));
        }
        for (field, value) in [
            ("--request-timeout", self.request_timeout),
            ("--handshake-timeout", self.handshake_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--http2-keepalive-interval", self.http2_keepalive_interval),
            ("--http2-keepalive-timeout", self.http2_keepalive_timeout),
        ] {
            if value.is_zero() {
                problems.push(Error::invalid(field, "must be above zero"));
            }
        }
        // Saturating: an absurd flag is an error below, never a panic.
        let keepalive = self
            .http2_keepalive_interval
            .saturating_add(self.http2_keepalive_timeout);
        if !self.idle_timeout.is_zero() && self.idle_timeout <= keepalive {
            problems.push(Error::invalid(
                "--idle-timeout",
                format!(
                    "{} would close live connections: it must be above \
                     --http2-keepalive-interval + --http2-keepalive-timeout ({})",
                    humantime::format_duration(self.idle_timeout),
                    humantime::format_duration(keepalive)
                ),
            ));
        }
        for (field, value) in [
            ("--max-breakers", self.max_breakers as u64),
            ("--max-message-size", self.max_message_size as u64),
            ("--watch-retention", self.watch_retention),
            ("--max-watchers", self.max_watchers as u64),
            (
                "--max-concurrent-streams",
                u64::from(self.max_concurrent_streams),
            ),
            (
                "--max-concurrent-requests",
                self.max_concurrent_requests as u64,
            ),
            ("--metrics-max-breakers", self.metrics_max_breakers as u64),
        ] {
            if value == 0 {
                problems.push(Error::invalid(field, "must be at least 1"));
            }
        }
        if self.max_message_size != 0 && self.max_message_size < 1024 {
            problems.push(Error::invalid(
                "--max-message-size",
                "must be at least 1024 bytes",
            ));
        }
        if self.dashboard_allow_actions {
            match self.metrics_listen {
                None => problems.push(Error::invalid(
                    "--dashboard-allow-actions",
                    "the dashboard is served on --metrics-listen: give it too",
                )),
                // Actions without a token are an unauthenticated write path: the same
                // consent as for gRPC is asked before exposing it beyond loopback.
                Some(addr)
                    if !addr.ip().is_loopback()
                        && self.auth_file.is_none()
                        && !self.allow_unauthenticated =>
                {
                    problems.push(Error::invalid(
                        "--dashboard-allow-actions",
                        format!(
                            "refusing unauthenticated dashboard actions on non-loopback \
                             --metrics-listen {addr}; give --auth-file (actions then need \
                             an admin token), or pass --allow-unauthenticated"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        problems.extend(self.templates.iter().filter_map(|t| t.spec().err()));
        problems.extend(self.replica_problems());
        problems
    }

    /// What is wrong with the replica settings (`--store` and `--etcd-*`).
    fn replica_problems(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        if self.store == StoreKind::Sled {
            let given = [
                ("--etcd-endpoints", !self.etcd_endpoints.is_empty()),
                ("--advertise-url", self.advertise_url.is_some()),
                ("--etcd-user", self.etcd_user.is_some()),
                ("--etcd-password-file", self.etcd_password_file.is_some()),
                ("--etcd-ca", self.etcd_ca.is_some()),
                ("--etcd-cert", self.etcd_cert.is_some()),
                ("--etcd-key", self.etcd_key.is_some()),
            ];
            // Forgetting `--store etcd` would run a lone daemon on sled beside the
            // replicas: refused, never ignored.
            for (flag, _) in given.iter().filter(|(_, set)| *set) {
                problems.push(Error::invalid(
                    *flag,
                    "is only used with --store etcd; add --store etcd (or drop it)",
                ));
            }
            return problems;
        }
        if self.etcd_endpoints.is_empty() {
            problems.push(Error::invalid(
                "--etcd-endpoints",
                "--store etcd needs etcd's client URLs, e.g. http://127.0.0.1:2379",
            ));
        }
        let tls = self.etcd_ca.is_some();
        for url in &self.etcd_endpoints {
            let scheme_ok = match url.split_once("://") {
                Some(("https", rest)) => tls && !rest.is_empty(),
                Some(("http", rest)) => !tls && !rest.is_empty(),
                _ => false,
            };
            if !scheme_ok {
                let want = if tls {
                    "https://HOST:PORT (TLS is on: --etcd-ca)"
                } else {
                    "http://HOST:PORT (https:// needs --etcd-ca)"
                };
                problems.push(Error::invalid(
                    "--etcd-endpoints",
                    format!("{url:?} is not {want}"),
                ));
            }
        }
        if self.etcd_prefix.trim_matches('/').is_empty() {
            problems.push(Error::invalid("--etcd-prefix", "must not be empty"));
        }
        let ttl = self.etcd_lease_ttl;
        if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
            problems.push(Error::invalid(
                "--etcd-lease-ttl",
                format!(
                    "{} is not a whole number of seconds of at least 1s (etcd leases count seconds)",
                    humantime::format_duration(ttl)
                ),
            ));
        }
        if self.etcd_max_txn_ops < 4 {
            problems.push(Error::invalid(
                "--etcd-max-txn-ops",
                "must be at least 4 (etcd's default is 128)",
            ));
        }
        match &self.advertise_url {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                problems.push(Error::invalid(
                    "--advertise-url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            None if self.listen.ip().is_unspecified() => problems.push(Error::invalid(
                "--advertise-url",
                format!(
                    "--listen {} says no address clients can reach: give the URL they use",
                    self.listen
                ),
            )),
            _ => {}
        }
        match (&self.etcd_cert, &self.etcd_key) {
            (Some(_), None) => problems.push(Error::invalid(
                "--etcd-cert",
                "--etcd-cert and --etcd-key must be given together (--etcd-key is missing)",
            )),
            (None, Some(_)) => problems.push(Error::invalid(
                "--etcd-key",
                "--etcd-cert and --etcd-key must be given together (--etcd-cert is missing)",
            )),
            _ => {}
        }
        if self.etcd_cert.is_some() && !tls {
            problems.push(Error::invalid(
                "--etcd-cert",
                "a client certificate needs TLS: give --etcd-ca too",
            ));
        }
        match (&self.etcd_user, &self.etcd_password_file) {
            (Some(_), None) => problems.push(Error::invalid(
                "--etcd-user",
                "needs its password: give --etcd-password-file",
            )),
            (None, Some(_)) => problems.push(Error::invalid(
                "--etcd-password-file",
                "is the password of --etcd-user: give it too",
            )),
            _ => {}
        }
        if self.dashboard_allow_actions {
            problems.push(Error::invalid(
                "--dashboard-allow-actions",
                "replicas serve /metrics and the probes but no dashboard yet",
            ));
        }
        if self.force_recover {
            problems.push(Error::invalid(
                "--force-recover",
                "repairs a sled data dir; etcd keeps its own replicas",
            ));
        }
        problems
    }

    /// `--advertise-url`, or the URL of `bound` (the address `--listen` bound).
    pub fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{bound}")
        })
    }

    /// What [`Config::problems`] leaves to the start: the auth file parses and the
    /// TLS files hold a key and certificates that go together. For `--check-config`.
    pub fn check_files(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        if let Some(path) = &self.auth_file
            && let Err(e) = crate::auth::Auth::load(path)
        {
            problems.push(e);
        }
        if let Err(e) = crate::tls::server_config(self) {
            problems.push(e);
        }
        if self.store == StoreKind::Etcd {
            if !cfg!(feature = "etcd") {
                problems.push(Error::invalid("--store", NO_ETCD));
            }
            for (flag, path) in [
                ("--etcd-password-file", &self.etcd_password_file),
                ("--etcd-ca", &self.etcd_ca),
                ("--etcd-cert", &self.etcd_cert),
                ("--etcd-key", &self.etcd_key),
            ] {
                if let Some(path) = path
                    && let Err(e) = std::fs::read(path)
                {
                    problems.push(Error::invalid(flag, format!("{}: {e}", path.display())));
                }
            }
        }
        problems
    }

    /// The templates as validated specs, by prefix.
    pub fn template_specs(&self) -> Result<Vec<(String, cbd_breaker::Spec)>, Error> {
        self.templates
            .iter()
            .map(|t| Ok((t.prefix.clone(), t.spec()?)))
            .collect()
    }

    /// The configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration `cbd <list>` would run with.
    fn load(list: &[&str]) -> Result<Config, Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Args::command()
            .try_get_matches_from(std::iter::once("cbd").chain(list.iter().copied()))
            .expect("flags parse");
        let args = Args::from_arg_matches(&matches).expect("flags parse");
        Config::load(&args, &matches)
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cbd.toml");
        std::fs::write(
            &path,
            "max_breakers = 7\nlisten = \"127.0.0.1:9000\"\n\n[[template]]\nprefix = \"payments/\"\nconsecutive_failures = 3\nopen_duration = \"10s\"\n",
        )
        .expect("write");
        let config = load(&[
            "--config",
            path.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
        ])
        .expect("valid");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.max_breakers, 7);
        assert_eq!(config.watch_retention, 100_000);
        let templates = config.template_specs().expect("valid templates");
        assert_eq!(templates[0].0, "payments/");
        assert_eq!(templates[0].1.consecutive_failures, Some(3));
        // --print-config output reads back as the same configuration.
        let back: Config = toml::from_str(&config.to_toml()).expect("round trip");
        assert_eq!(back, config);
    }

    #[test]
    fn non_loopback_needs_explicit_consent() {
        let err = load(&["--listen", "0.0.0.0:0"]).unwrap_err();
        assert!(err.to_string().contains("--allow-unauthenticated"), "{err}");
        assert!(load(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"]).is_ok());
    }

    #[test]
    fn dashboard_actions_need_the_listener_and_consent_beyond_loopback() {
        let err = load(&["--dashboard-allow-actions"]).unwrap_err();
        assert!(err.to_string().contains("--metrics-listen"), "{err}");
        let local = [
            "--dashboard-allow-actions",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        assert!(load(&local).expect("loopback").dashboard_allow_actions);
        let wide = ["--dashboard-allow-actions", "--metrics-listen", "0.0.0.0:0"];
        let err = load(&wide).unwrap_err();
        assert!(err.to_string().contains("--allow-unauthenticated"), "{err}");
        let mut consent = wide.to_vec();
        consent.push("--allow-unauthenticated");
        assert!(load(&consent).is_ok());
        let mut tokens = wide.to_vec();
        tokens.extend(["--auth-file", "tokens.toml"]);
        assert!(load(&tokens).is_ok());
    }

    #[test]
    fn an_auth_file_allows_non_loopback() {
        assert!(load(&["--listen", "0.0.0.0:0", "--auth-file", "tokens.toml"]).is_ok());
    }

    #[test]
    fn tls_flags_come_together() {
        let err = load(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let err = load(&["--tls-key", "k.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        let err = load(&["--tls-client-ca", "ca.pem"]).unwrap_err();
        assert!(err.to_string().starts_with("--tls-client-ca"), "{err}");
        let config = load(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .expect("valid");
        assert_eq!(config.tls_client_ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn limits_have_defaults_and_parse() {
        let config = load(&[]).expect("valid");
        assert_eq!(config.max_concurrent_streams, 1024);
        assert_eq!(config.max_concurrent_requests, 10_000);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.metrics_max_breakers, 1000);
        assert_eq!(config.metrics_listen, None);
        let config = load(&[
            "--request-timeout",
            "1m 500ms",
            "--metrics-listen",
            "127.0.0.1:9411",
            "--max-concurrent-requests",
            "5",
        ])
        .expect("valid");
        assert_eq!(config.request_timeout, Duration::from_millis(60_500));
        assert_eq!(config.max_concurrent_requests, 5);
        let back: Config = toml::from_str(&config.to_toml()).expect("round trip");
        assert_eq!(back, config);
        let err = load(&["--max-concurrent-requests", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("--max-concurrent-requests"),
            "{err}"
        );
    }

    #[test]
    fn connection_timeouts_have_defaults_and_the_idle_one_outlasts_keepalive() {
        let config = load(&[]).expect("valid");
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.http2_keepalive_timeout, Duration::from_secs(20));
        let err =
            load(&["--idle-timeout", "40s", "--http2-keepalive-interval", "30s"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--idle-timeout: 40s would close"),
            "{err}"
        );
        let err = load(&[
            "--http2-keepalive-interval",
            "500000000000y",
            "--http2-keepalive-timeout",
            "500000000000y",
        ])
        .unwrap_err();
        assert!(err.to_string().starts_with("--idle-timeout:"), "{err}");
        let err = load(&["--handshake-timeout", "0s"]).unwrap_err();
        assert!(err.to_string().starts_with("--handshake-timeout:"), "{err}");
    }

    #[test]
    fn unknown_file_keys_and_bad_templates_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cbd.toml");
        std::fs::write(&path, "max_breaker = 7\n").expect("write");
        assert!(Config::from_file(&path).is_err());
        std::fs::write(&path, "[[template]]\nprefix = \"a/\"\nfailure_rate = 500\n")
            .expect("write");
        let err = load(&["--config", path.to_str().expect("utf8")]).unwrap_err();
        // The key as the file wrote it, not the machine's field name.
        assert!(
            err.to_string()
                .starts_with("template \"a/\": failure_rate: "),
            "{err}"
        );
        assert!(!err.to_string().contains("failure_rate_percent"), "{err}");
        // A misspelt template key is named, never dropped.
        std::fs::write(&path, "[[template]]\nprefix = \"a/\"\nfailure_rat = 5\n").expect("write");
        let err = Config::from_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `failure_rat`"),
            "{err}"
        );
    }

    #[test]
    fn the_etcd_store_needs_its_endpoints_and_its_flags_need_it() {
        let config = load(&[
            "--store",
            "etcd",
            "--etcd-endpoints",
            "http://a:1,http://b:2",
        ])
        .expect("valid");
        assert_eq!(config.store, StoreKind::Etcd);
        assert_eq!(config.etcd_endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(config.etcd_prefix, "cbd");
        assert_eq!(config.etcd_lease_ttl, Duration::from_secs(2));
        let back: Config = toml::from_str(&config.to_toml()).expect("round trip");
        assert_eq!(back, config);
        assert_eq!(
            config.advertised("127.0.0.1:9".parse().expect("addr")),
            "http://127.0.0.1:9"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cbd.toml");
        std::fs::write(
            &file,
            "store = \"etcd\"\netcd_endpoints = [\"http://a:1\"]\n",
        )
        .expect("write");
        let from_file = load(&["--config", file.to_str().expect("utf-8")]).expect("valid");
        assert_eq!(from_file.store, StoreKind::Etcd);

        let first = |list: &[&str]| load(list).unwrap_err().to_string();
        assert!(first(&["--store", "etcd"]).starts_with("--etcd-endpoints: "));
        // A forgotten --store etcd is refused, not a lone daemon on sled.
        assert!(first(&["--etcd-endpoints", "http://a:1"]).contains("--store etcd"));
        let etcd = ["--store", "etcd", "--etcd-endpoints", "http://a:1"];
        let with = |extra: &[&str]| {
            let mut list = etcd.to_vec();
            list.extend_from_slice(extra);
            first(&list)
        };
        assert!(with(&["--etcd-lease-ttl", "1500ms"]).starts_with("--etcd-lease-ttl: "));
        assert!(with(&["--etcd-ca", "ca.pem"]).contains("https://"));
        assert!(with(&["--etcd-user", "u"]).starts_with("--etcd-user: "));
        assert!(with(&["--etcd-cert", "c.pem"]).starts_with("--etcd-cert: "));
        assert!(
            with(&["--listen", "0.0.0.0:7411", "--allow-unauthenticated"])
                .starts_with("--advertise-url: ")
        );
        assert!(with(&["--advertise-url", "10.0.0.1:7411"]).starts_with("--advertise-url: "));
        assert!(
            with(&[
                "--metrics-listen",
                "127.0.0.1:0",
                "--dashboard-allow-actions"
            ])
            .starts_with("--dashboard-allow-actions: ")
        );
        assert!(load(&[&etcd[..], &["--metrics-listen", "127.0.0.1:0"]].concat()).is_ok());
        assert!(with(&["--etcd-prefix", "/"]).starts_with("--etcd-prefix: "));
        assert!(with(&["--etcd-max-txn-ops", "3"]).starts_with("--etcd-max-txn-ops: "));
    }

    #[test]
    fn check_config_reads_the_etcd_files_and_knows_whether_etcd_is_built_in() {
        let config = load(&[
            "--store",
            "etcd",
            "--etcd-endpoints",
            "https://127.0.0.1:2379",
            "--etcd-ca",
            "/nonexistent/etcd-ca.pem",
        ])
        .expect("valid flags");
        let problems: Vec<String> = config
            .check_files()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("--etcd-ca: /nonexistent/etcd-ca.pem")),
            "{problems:?}"
        );
        let no_etcd = problems.iter().any(|p| p.contains("--features etcd"));
        assert_eq!(no_etcd, !cfg!(feature = "etcd"), "{problems:?}");
    }

    /// One non-default value per setting: the key in the file (TOML) and the flag's
    /// text. Every flag must have one (checked below, from clap's own list).
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("listen", "\"127.0.0.2:7\"", "127.0.0.2:7"),
        ("data_dir", "\"/sample/data\"", "/sample/data"),
        ("addr_file", "\"/sample/addr\"", "/sample/addr"),
        ("log_format", "\"json\"", "json"),
        ("log_level", "\"debug\"", "debug"),
        ("max_breakers", "7", "7"),
        ("max_message_size", "2048", "2048"),
        ("watch_retention", "9", "9"),
        ("max_watchers", "3", "3"),
        ("allow_unauthenticated", "true", ""),
        ("auth_file", "\"/sample/tokens\"", "/sample/tokens"),
        ("tls_cert", "\"/sample/cert\"", "/sample/cert"),
        ("tls_key", "\"/sample/key\"", "/sample/key"),
        ("tls_client_ca", "\"/sample/ca\"", "/sample/ca"),
        ("max_concurrent_streams", "5", "5"),
        ("max_concurrent_requests", "5", "5"),
        ("request_timeout", "\"7s\"", "7s"),
        ("handshake_timeout", "\"7s\"", "7s"),
        ("idle_timeout", "\"1h\"", "1h"),
        ("http2_keepalive_interval", "\"31s\"", "31s"),
        ("http2_keepalive_timeout", "\"21s\"", "21s"),
        ("metrics_listen", "\"127.0.0.1:9\"", "127.0.0.1:9"),
        ("metrics_max_breakers", "5", "5"),
        ("dashboard_allow_actions", "true", ""),
        (
            "etcd_endpoints",
            "[\"https://127.0.0.2:2379\"]",
            "https://127.0.0.2:2379",
        ),
        ("etcd_prefix", "\"other\"", "other"),
        (
            "advertise_url",
            "\"http://10.0.0.1:7411\"",
            "http://10.0.0.1:7411",
        ),
        ("etcd_lease_ttl", "\"5s\"", "5s"),
        ("etcd_user", "\"sample\"", "sample"),
        ("etcd_password_file", "\"/sample/pw\"", "/sample/pw"),
        ("etcd_ca", "\"/sample/etcd-ca\"", "/sample/etcd-ca"),
        ("etcd_cert", "\"/sample/etcd-cert\"", "/sample/etcd-cert"),
        ("etcd_key", "\"/sample/etcd-key\"", "/sample/etcd-key"),
        ("etcd_max_txn_ops", "64", "64"),
    ];

    /// The base file of the replica settings' samples: an etcd store with every
    /// setting that needs another given.
    const ETCD_BASE: &str = "tls_cert = \"/base/cert\"\ntls_key = \"/base/key\"\nstore = \"etcd\"\n\
        etcd_endpoints = [\"https://127.0.0.1:2379\"]\netcd_ca = \"/base/etcd-ca\"\n\
        etcd_cert = \"/base/etcd-cert\"\netcd_key = \"/base/etcd-key\"\n\
        etcd_user = \"base\"\netcd_password_file = \"/base/etcd-pw\"\n";

    /// Flags that are not in the file on purpose: the file itself, and recovery,
    /// which must be asked for at each start.
    const NOT_IN_THE_FILE: &[&str] = &["config", "force_recover"];

    /// Settings checked by a test of their own: `store` (it changes which other
    /// settings are valid).
    const CHECKED_APART: &[&str] = &["store"];

    #[test]
    fn every_flag_is_settable_from_the_file_and_the_environment_alike() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().expect("tempdir");
        // TLS keys and certs come in pairs; the base gives both so each sample validates.
        // The dashboard's actions need its listener: the base gives one.
        let base = "tls_cert = \"/base/cert\"\ntls_key = \"/base/key\"\nmetrics_listen = \"127.0.0.1:19\"\n";
        let write_base = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.to_str().expect("utf-8").to_owned()
        };
        let (base_file, etcd_base_file) = (
            write_base("base.toml", base),
            write_base("etcd-base.toml", ETCD_BASE),
        );
        let from = |base_file: &str, extra: &[&str]| {
            let mut list = vec!["--config", base_file];
            list.extend_from_slice(extra);
            load(&list).expect("valid").to_toml()
        };
        let command = Args::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            // Actions, not settings.
            if matches!(id, "help" | "version" | "print_config" | "check_config") {
                continue;
            }
            let long = arg.get_long().expect("every setting has a long flag");
            assert_eq!(long.replace('-', "_"), id, "flag --{long}");
            let env = format!("CBD_{}", id.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env.as_str()),
                "--{long} has its CBD_* variable"
            );
            if NOT_IN_THE_FILE.contains(&id) || CHECKED_APART.contains(&id) {
                continue;
            }
            let (base, base_file) = if id.starts_with("etcd_") || id == "advertise_url" {
                (ETCD_BASE, etcd_base_file.as_str())
            } else {
                (base, base_file.as_str())
            };
            let unchanged = from(base_file, &[]);
            let (_, toml_value, flag_value) = SAMPLES
                .iter()
                .find(|(key, _, _)| *key == id)
                .unwrap_or_else(|| panic!("--{long} has no sample: add it to SAMPLES"));
            let file = dir.path().join(format!("{id}.toml"));
            let others: String = base
                .lines()
                .filter(|line| !line.starts_with(&format!("{id} ")))
                .map(|line| format!("{line}\n"))
                .collect();
            std::fs::write(&file, format!("{others}{id} = {toml_value}\n")).expect("write");
            let from_file = load(&["--config", file.to_str().expect("utf-8")])
                .unwrap_or_else(|e| panic!("{id} in the file: {e}"))
                .to_toml();
            let flag = format!("--{long}");
            let from_flag = if flag_value.is_empty() {
                from(base_file, &[flag.as_str()])
            } else {
                from(base_file, &[flag.as_str(), flag_value])
            };
            assert_ne!(
                from_flag, unchanged,
                "--{long} is ignored: missing from the overlay?"
            );
            assert_eq!(
                from_flag, from_file,
                "--{long} and `{id}` in the file differ"
            );
        }
        // And no sample is stale.
        for (key, _, _) in SAMPLES {
            assert!(
                command.get_arguments().any(|a| a.get_id().as_str() == *key),
                "{key} is not a flag"
            );
        }
    }
}
