//! The daemon's configuration: flags, `CBD_*` environment variables, and an optional
//! TOML file. Precedence: flag > environment > file > default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use cbd_proto::spec_fields::SpecFields;
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default gRPC listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";

/// cbd, the circuit-breaker daemon: named circuit breakers in an embedded sled
/// database, served over gRPC (cbd.v1.Breakers, cbd.v1.Admin, health, reflection).
///
/// Every flag can also be set with its CBD_* environment variable or in the TOML
/// file given with --config (keys as the long flags, in snake_case); a flag beats
/// the environment, which beats the file.
#[derive(Debug, Parser)]
#[command(name = "cbd", version = crate::LONG_VERSION, about, long_about)]
pub struct Args {
    /// TOML configuration file (same keys as the flags, plus [[template]] tables).
    #[arg(long, env = "CBD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// gRPC listen address [default: 127.0.0.1:7411]. Port 0 picks a free port
    /// (see --addr-file). Non-loopback addresses need --allow-unauthenticated.
    #[arg(long, env = "CBD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory of the sled database [default: ./cbd-data].
    #[arg(long, env = "CBD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write the bound address to this file once serving (for port 0).
    #[arg(long, env = "CBD_ADDR_FILE", value_name = "PATH")]
    pub addr_file: Option<PathBuf>,

    /// Log format [default: text].
    #[arg(long, env = "CBD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, env = "CBD_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Most breakers the daemon holds; past it, RESOURCE_EXHAUSTED [default: 100000].
    #[arg(long, env = "CBD_MAX_BREAKERS", value_name = "N")]
    pub max_breakers: Option<usize>,

    /// Largest gRPC message accepted, in bytes [default: 65536].
    #[arg(long, env = "CBD_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// Events kept in the watch log; older ones are compacted [default: 100000].
    #[arg(long, env = "CBD_WATCH_RETENTION", value_name = "N")]
    pub watch_retention: Option<u64>,

    /// Most concurrent Watch streams; past it, RESOURCE_EXHAUSTED [default: 10000].
    #[arg(long, env = "CBD_MAX_WATCHERS", value_name = "N")]
    pub max_watchers: Option<usize>,

    /// Allow listening on a non-loopback address without authentication.
    #[arg(long, env = "CBD_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Bearer tokens and their roles: TOML, one [[token]] table per token with
    /// `role = "admin"|"client"` and `token = "..."` or `sha256 = "<hex>"`.
    /// Re-read on SIGHUP. With it, non-loopback addresses are allowed.
    #[arg(long, env = "CBD_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Server certificate chain (PEM); turns TLS on. Needs --tls-key.
    #[arg(long, env = "CBD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM). Needs --tls-cert.
    #[arg(long, env = "CBD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate(s) (PEM) that client certificates must be signed by (mTLS):
    /// a client without one is refused at the handshake. Needs --tls-cert.
    #[arg(long, env = "CBD_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Most concurrent HTTP/2 streams per connection [default: 1024].
    #[arg(long, env = "CBD_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub max_concurrent_streams: Option<u32>,

    /// Most cbd.v1 requests being handled at once, over all connections; past it,
    /// RESOURCE_EXHAUSTED at once [default: 10000].
    #[arg(long, env = "CBD_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub max_concurrent_requests: Option<usize>,

    /// Longest a unary cbd.v1 request may take; past it, DEADLINE_EXCEEDED
    /// [default: 30s]. Not applied to Watch streams.
    #[arg(long, env = "CBD_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,

    /// Close a connection that has not sent the start of its HTTP/2 preface (or
    /// TLS handshake) this long after it was accepted [default: 10s].
    #[arg(long, env = "CBD_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Option<Duration>,

    /// Close a connection the client has sent nothing on for this long [default:
    /// 5m]. Live clients answer the keepalive PINGs, so only dead or silent ones
    /// reach it; must be above --http2-keepalive-interval + --http2-keepalive-timeout.
    #[arg(long, env = "CBD_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Send an HTTP/2 PING on every connection this often [default: 30s].
    #[arg(long, env = "CBD_HTTP2_KEEPALIVE_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Option<Duration>,

    /// Close a connection whose PING is not answered within this [default: 20s].
    #[arg(long, env = "CBD_HTTP2_KEEPALIVE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Option<Duration>,

    /// Serve Prometheus metrics over HTTP on this address (GET /metrics) [default: off].
    #[arg(long, env = "CBD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Most breakers with their own metric series; the rest are summed under
    /// breaker="_other" [default: 1000].
    #[arg(long, env = "CBD_METRICS_MAX_BREAKERS", value_name = "N")]
    pub metrics_max_breakers: Option<usize>,

    /// Serve a data dir that holds less than was committed (see the log for what was
    /// lost) instead of refusing to start. The revision moves past every revision
    /// handed out before and the watch log starts over. Not read from --config.
    #[arg(long, env = "CBD_FORCE_RECOVER")]
    pub force_recover: bool,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
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

/// The effective configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// sled directory.
    pub data_dir: PathBuf,
    /// Where to write the bound address, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Breaker cap.
    pub max_breakers: usize,
    /// Largest message, bytes.
    pub max_message_size: usize,
    /// Events kept in the log.
    pub watch_retention: u64,
    /// Watch stream cap.
    pub max_watchers: usize,
    /// Non-loopback without auth allowed.
    pub allow_unauthenticated: bool,
    /// Token file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
    /// TLS certificate chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA for client certificates (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Requests in progress overall.
    pub max_concurrent_requests: usize,
    /// Unary request timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time to start the HTTP/2 preface or TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Longest silence on a connection.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// HTTP/2 PING answer timeout.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// Metrics HTTP address, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Breakers with their own metric series.
    pub metrics_max_breakers: usize,
    /// Serve a damaged data dir anyway (`--force-recover`); never from the file.
    #[serde(skip)]
    pub force_recover: bool,
    /// Specs for unknown names by prefix.
    #[serde(rename = "template", skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from("cbd-data"),
            addr_file: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            max_breakers: 100_000,
            max_message_size: 64 * 1024,
            watch_retention: 100_000,
            max_watchers: 10_000,
            allow_unauthenticated: false,
            auth_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            max_concurrent_streams: 1024,
            max_concurrent_requests: 10_000,
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            metrics_listen: None,
            metrics_max_breakers: 1000,
            force_recover: false,
            templates: Vec::new(),
        }
    }
}

impl Config {
    /// The file (if any), then the environment and flags on top, then checked.
    pub fn from_args(args: &Args) -> Result<Self, Error> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => {$(
                if let Some(v) = &args.$field { config.$field = v.clone(); }
            )*};
        }
        overlay!(
            listen,
            data_dir,
            log_format,
            log_level,
            max_breakers,
            max_message_size,
            watch_retention,
            max_watchers,
            max_concurrent_streams,
            max_concurrent_requests,
            request_timeout,
            handshake_timeout,
            idle_timeout,
            http2_keepalive_interval,
            http2_keepalive_timeout,
            metrics_max_breakers
        );
        macro_rules! overlay_option {
            ($($field:ident),*) => {$(
                if args.$field.is_some() { config.$field.clone_from(&args.$field); }
            )*};
        }
        overlay_option!(
            addr_file,
            auth_file,
            tls_cert,
            tls_key,
            tls_client_ca,
            metrics_listen
        );
        config.allow_unauthenticated |= args.allow_unauthenticated;
        config.force_recover = args.force_recover;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("--config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| Error::invalid("--config", format!("{}: {e}", path.display())))
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.listen.ip().is_loopback()
            && self.auth_file.is_none()
            && !self.allow_unauthenticated
        {
            return Err(Error::invalid(
                "--listen",
                format!(
                    "refusing to listen on non-loopback address {} without authentication; \
                     give --auth-file, or pass --allow-unauthenticated to do it anyway",
                    self.listen
                ),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(Error::invalid(
                    "--tls-cert",
                    "--tls-cert and --tls-key must be given together (--tls-key is missing)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "--tls-key",
                    "--tls-cert and --tls-key must be given together (--tls-cert is missing)",
                ));
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(Error::invalid(
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
                return Err(Error::invalid(field, "must be above zero"));
            }
        }
        // Saturating: an absurd flag is an error below, never a panic.
        let keepalive = self
            .http2_keepalive_interval
            .saturating_add(self.http2_keepalive_timeout);
        if self.idle_timeout <= keepalive {
            return Err(Error::invalid(
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
                return Err(Error::invalid(field, "must be at least 1"));
            }
        }
        if self.max_message_size < 1024 {
            return Err(Error::invalid(
                "--max-message-size",
                "must be at least 1024 bytes",
            ));
        }
        self.template_specs()?;
        Ok(())
    }

    /// The templates as validated specs, by prefix.
    pub fn template_specs(&self) -> Result<Vec<(String, cbd_breaker::Spec)>, Error> {
        self.templates
            .iter()
            .map(|t| {
                let field = format!("template {:?}", t.prefix);
                if t.prefix.is_empty() {
                    return Err(Error::invalid(field, "prefix must not be empty"));
                }
                let wire = t.spec.to_proto().map_err(|e| Error::invalid(&field, e))?;
                // Named as the file names it: `failure_rate`, not `failure_rate_percent`.
                let spec = cbd_proto::convert::spec_from_proto(&wire)
                    .map_err(|e| Error::invalid(&field, cbd_proto::spec_fields::spec_error(&e)))?;
                Ok((t.prefix.clone(), spec))
            })
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

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("cbd").chain(list.iter().copied()))
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
        let config = Config::from_args(&args(&[
            "--config",
            path.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
        ]))
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
        let err = Config::from_args(&args(&["--listen", "0.0.0.0:0"])).unwrap_err();
        assert!(err.to_string().contains("--allow-unauthenticated"), "{err}");
        assert!(
            Config::from_args(&args(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"])).is_ok()
        );
    }

    #[test]
    fn an_auth_file_allows_non_loopback() {
        assert!(
            Config::from_args(&args(&[
                "--listen",
                "0.0.0.0:0",
                "--auth-file",
                "tokens.toml"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn tls_flags_come_together() {
        let err = Config::from_args(&args(&["--tls-cert", "c.pem"])).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let err = Config::from_args(&args(&["--tls-key", "k.pem"])).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        let err = Config::from_args(&args(&["--tls-client-ca", "ca.pem"])).unwrap_err();
        assert!(err.to_string().starts_with("--tls-client-ca"), "{err}");
        let config = Config::from_args(&args(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]))
        .expect("valid");
        assert_eq!(config.tls_client_ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn limits_have_defaults_and_parse() {
        let config = Config::from_args(&args(&[])).expect("valid");
        assert_eq!(config.max_concurrent_streams, 1024);
        assert_eq!(config.max_concurrent_requests, 10_000);
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.metrics_max_breakers, 1000);
        assert_eq!(config.metrics_listen, None);
        let config = Config::from_args(&args(&[
            "--request-timeout",
            "1m 500ms",
            "--metrics-listen",
            "127.0.0.1:9411",
            "--max-concurrent-requests",
            "5",
        ]))
        .expect("valid");
        assert_eq!(config.request_timeout, Duration::from_millis(60_500));
        assert_eq!(config.max_concurrent_requests, 5);
        let back: Config = toml::from_str(&config.to_toml()).expect("round trip");
        assert_eq!(back, config);
        let err = Config::from_args(&args(&["--max-concurrent-requests", "0"])).unwrap_err();
        assert!(
            err.to_string().contains("--max-concurrent-requests"),
            "{err}"
        );
    }

    #[test]
    fn connection_timeouts_have_defaults_and_the_idle_one_outlasts_keepalive() {
        let config = Config::from_args(&args(&[])).expect("valid");
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(config.http2_keepalive_timeout, Duration::from_secs(20));
        let err = Config::from_args(&args(&[
            "--idle-timeout",
            "40s",
            "--http2-keepalive-interval",
            "30s",
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--idle-timeout: 40s would close"),
            "{err}"
        );
        let err = Config::from_args(&args(&[
            "--http2-keepalive-interval",
            "500000000000y",
            "--http2-keepalive-timeout",
            "500000000000y",
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("--idle-timeout:"), "{err}");
        let err = Config::from_args(&args(&["--handshake-timeout", "0s"])).unwrap_err();
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
        let err =
            Config::from_args(&args(&["--config", path.to_str().expect("utf8")])).unwrap_err();
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
    ];

    /// Flags that are not in the file on purpose: the file itself, and recovery,
    /// which must be asked for at each start.
    const NOT_IN_THE_FILE: &[&str] = &["config", "force_recover"];

    #[test]
    fn every_flag_is_settable_from_the_file_and_the_environment_alike() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().expect("tempdir");
        // TLS keys and certs come in pairs; the base gives both so each sample validates.
        let base = "tls_cert = \"/base/cert\"\ntls_key = \"/base/key\"\n";
        let base_file = dir.path().join("base.toml");
        std::fs::write(&base_file, base).expect("write");
        let base_file = base_file.to_str().expect("utf-8").to_owned();
        let from = |extra: &[&str]| {
            let mut list = vec!["--config", base_file.as_str()];
            list.extend_from_slice(extra);
            Config::from_args(&args(&list)).expect("valid").to_toml()
        };
        let unchanged = from(&[]);
        let command = Args::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            // Actions, not settings.
            if matches!(id, "help" | "version" | "print_config") {
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
            if NOT_IN_THE_FILE.contains(&id) {
                continue;
            }
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
            let from_file = Config::from_args(&args(&["--config", file.to_str().expect("utf-8")]))
                .unwrap_or_else(|e| panic!("{id} in the file: {e}"))
                .to_toml();
            let flag = format!("--{long}");
            let from_flag = if flag_value.is_empty() {
                from(&[flag.as_str()])
            } else {
                from(&[flag.as_str(), flag_value])
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
