//! Connecting to the daemon: endpoint parsing, the bearer token, deadlines.

use std::{future::Future, time::Duration};

use cbd_client::TokenInterceptor;
use cbd_proto::v1::{admin_client::AdminClient, breakers_client::BreakersClient};
use tonic::{
    Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::health_client::HealthClient;

use crate::{Output, error::Error};

/// The daemon's default address (`cbd --listen`'s default).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7411";

/// The port an endpoint without one gets (`cbd --listen`'s default port).
pub const DEFAULT_PORT: u16 = 7411;

/// The health service SERVING only where calls are decided (`cbd::standby`).
pub const LEADER_HEALTH_SERVICE: &str = "cbd.v1.Leader";

/// A channel with the bearer token attached to every request (cbd-client's
/// interceptor: one implementation for the library and cbctl).
pub type Svc = InterceptedService<Channel, TokenInterceptor>;

/// The bearer token of `--token`: printable ASCII without spaces; empty means none.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<String>,
    interceptor: TokenInterceptor,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("interceptor", &self.interceptor)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The token of `--token` (none or empty: sends nothing).
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let bad = || Error::Usage("--token: must be printable ASCII without spaces".into());
        let token = token.filter(|t| !t.is_empty());
        if token.is_some_and(|t| !t.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(bad());
        }
        Ok(Self {
            interceptor: TokenInterceptor::new(token).map_err(|_| bad())?,
            token: token.map(str::to_owned),
        })
    }

    /// The token, for `cbd-client`'s builder.
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The interceptor that sends it.
    pub fn interceptor(&self) -> TokenInterceptor {
        self.interceptor.clone()
    }
}

/// What every command needs: where the daemon is, how long to wait, how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The endpoint commands go to, as a URI (`http://host:port`): with several, the
    /// leader's (see [`Ctx::leader`]).
    pub endpoint: String,
    /// Every endpoint of `--endpoint`, in order (replicas).
    pub endpoints: Vec<String>,
    /// Deadline for connecting and for each unary call.
    pub timeout: Duration,
    /// Output format.
    pub output: Output,
    /// The bearer token, if any.
    pub auth: Auth,
    /// TLS, when `--tls-ca` is given.
    pub tls: Option<ClientTlsConfig>,
}

/// TLS from the global flags: `None` without `--tls-ca`. Unreadable files are exit 1
/// naming the flag; a client certificate without a CA is a usage error.
pub fn tls_config(global: &crate::GlobalArgs) -> Result<Option<ClientTlsConfig>, Error> {
    let Some(ca) = &global.tls_ca else {
        if global.tls_cert.is_some() || global.tls_server_name.is_some() {
            return Err(Error::Usage(
                "--tls-cert/--tls-key/--tls-server-name need --tls-ca".into(),
            ));
        }
        return Ok(None);
    };
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Other(format!("{flag} {}: {e}", path.display())))
    };
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
    if let (Some(cert), Some(key)) = (&global.tls_cert, &global.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    if let Some(name) = &global.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(Some(tls))
}

/// `host:port` → `http://host:port` (`https://` with TLS); URIs with a scheme are
/// kept; a trailing `/` is dropped. TLS and an `http://` URI do not go together.
pub fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Error::Usage("--endpoint: must not be empty".into()));
    }
    let scheme = if tls { "https" } else { "http" };
    let uri = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("{scheme}://{raw}")
    };
    if tls && uri.starts_with("http://") {
        return Err(Error::Usage(format!(
            "--endpoint {raw:?}: use https:// (or no scheme) with --tls-ca"
        )));
    }
    if !tls && uri.starts_with("https://") {
        return Err(Error::Usage(format!(
            "--endpoint {raw:?}: https needs --tls-ca"
        )));
    }
    let uri = uri.trim_end_matches('/').to_owned();
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        return Err(Error::Usage(format!(
            "--endpoint {raw:?}: the scheme must be http or https"
        )));
    }
    let parsed: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|e| Error::Usage(format!("--endpoint {raw:?}: {e}")))?;
    // No port: cbd's, not the scheme's 80/443 (`--endpoint 127.0.0.1`).
    let uri = match parsed.authority() {
        Some(authority) if authority.port().is_none() => {
            let path = parsed.path_and_query().map_or("", |p| p.as_str());
            let path = if path == "/" { "" } else { path };
            format!("{scheme}://{authority}:{DEFAULT_PORT}{path}")
        }
        _ => uri,
    };
    Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::Usage(format!("--endpoint {raw:?}: {e}")))?;
    Ok(uri)
}

impl Ctx {
    /// The tonic endpoint with the connect and request deadlines.
    pub fn endpoint(&self) -> Result<Endpoint, Error> {
        let ep = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| Error::Usage(format!("--endpoint: {e}")))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        match &self.tls {
            Some(tls) => ep
                .tls_config(tls.clone())
                .map_err(|e| Error::Usage(format!("TLS: {e}"))),
            None => Ok(ep),
        }
    }

    /// A connected channel; exit 4 when the daemon cannot be reached in time.
    pub async fn channel(&self) -> Result<Channel, Error> {
        let ep = self.endpoint()?.timeout(self.timeout);
        match tokio::time::timeout(self.timeout, ep.connect()).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => Err(Error::from_transport(&e, &self.endpoint)),
            Err(_) => Err(Error::deadline(&self.endpoint, self.timeout)),
        }
    }

    /// The endpoint among [`Ctx::endpoints`] whose `cbd.v1.Leader` health is SERVING
    /// (asked in order, each within `--timeout`); the first endpoint when none is,
    /// so that the command's own error says what is wrong there.
    pub async fn leader(&self) -> String {
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        for endpoint in &self.endpoints {
            let one = Ctx {
                endpoint: endpoint.clone(),
                ..self.clone()
            };
            let Ok(channel) = one.channel().await else {
                continue;
            };
            let mut health = one.health_on(channel);
            let check = health.check(HealthCheckRequest {
                service: LEADER_HEALTH_SERVICE.into(),
            });
            if let Ok(Ok(answer)) = tokio::time::timeout(self.timeout, check).await
                && answer.into_inner().status() == ServingStatus::Serving
            {
                return endpoint.clone();
            }
        }
        self.endpoints[0].clone()
    }

    /// The Admin service over `channel` (bench: its own connections, raw stubs).
    pub fn admin_on(&self, channel: Channel) -> AdminClient<Svc> {
        AdminClient::with_interceptor(channel, self.auth.interceptor())
    }

    /// The Breakers service over `channel`.
    pub fn breakers_on(&self, channel: Channel) -> BreakersClient<Svc> {
        BreakersClient::with_interceptor(channel, self.auth.interceptor())
    }

    /// The health service over `channel`.
    pub fn health_on(&self, channel: Channel) -> HealthClient<Svc> {
        HealthClient::with_interceptor(channel, self.auth.interceptor())
    }

    /// A `cbd-client` connected to the daemon (token and TLS included); exit 4
    /// when it cannot be reached in time.
    pub async fn client(&self) -> Result<cbd_client::Client, Error> {
        self.client_as(None).await
    }

    /// [`Ctx::client`] whose calls name `caller` (`None`: the token's name, if any).
    pub async fn client_as(&self, caller: Option<String>) -> Result<cbd_client::Client, Error> {
        // Dialled here, so that connect failures read as they always have.
        let channel = self.channel().await?;
        self.client_builder()
            .caller(caller)
            .build_on(channel)
            .map_err(|e| Error::from_client(&e, &self.endpoint))
    }

    /// The `cbd-client` options of these flags: endpoint, token, TLS, timeout.
    pub fn client_builder(&self) -> cbd_client::ClientBuilder {
        let builder = cbd_client::Client::builder(self.endpoint.clone())
            .token(self.auth.token())
            .connect_timeout(self.timeout);
        match &self.tls {
            Some(tls) => builder.tls_config(tls.clone()),
            None => builder,
        }
    }

    /// Runs one `cbd-client` call with the deadline, classifying its failure.
    pub async fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, cbd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::from_client(&e, &self.endpoint)),
            Err(_) => Err(Error::deadline(&self.endpoint, self.timeout)),
        }
    }

    /// Runs one unary call with the deadline, classifying its failure.
    pub async fn call<T>(
        &self,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(&status, &self.endpoint)),
            Err(_) => Err(Error::deadline(&self.endpoint, self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_a_scheme_get_http() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7411", false).unwrap(),
            "http://127.0.0.1:7411"
        );
        assert_eq!(
            normalize_endpoint("http://localhost:1/", false).unwrap(),
            "http://localhost:1"
        );
        assert!(normalize_endpoint("ftp://x:1", false).is_err());
        assert!(normalize_endpoint("", false).is_err());
        assert_eq!(
            normalize_endpoint("localhost:1", true).unwrap(),
            "https://localhost:1"
        );
        assert!(normalize_endpoint("http://localhost:1", true).is_err());
        assert!(normalize_endpoint("https://localhost:1", false).is_err());
    }

    #[test]
    fn endpoints_without_a_port_get_cbds_port() {
        for (raw, tls, want) in [
            ("127.0.0.1", false, "http://127.0.0.1:7411"),
            ("http://localhost", false, "http://localhost:7411"),
            ("http://localhost/", false, "http://localhost:7411"),
            ("[::1]", false, "http://[::1]:7411"),
            ("cbd.internal", true, "https://cbd.internal:7411"),
            ("[::1]:9000", false, "http://[::1]:9000"),
        ] {
            assert_eq!(normalize_endpoint(raw, tls).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn the_token_is_never_printed() {
        let auth = Auth::new(Some("s3cret")).unwrap();
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(Auth::new(Some("a b")).is_err());
    }
}
