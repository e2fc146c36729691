//! The client over TLS with bearer tokens, against a daemon with `--tls-*` and
//! `--auth-file`.

use cbd_client::{Client, Error};
use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, Options, Pki};

use crate::support::{RELAXED_DEADLINE, spec};

const ADMIN: &str = "admin-secret-token";
const CLIENT: &str = "client-secret-token";

async fn secured_daemon(dir: &std::path::Path) -> (Daemon, Pki) {
    let pki = Pki::generate(&dir.join("pki"));
    let auth = dir.join("tokens.toml");
    std::fs::write(
        &auth,
        format!(
            "[[token]]\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n\n[[token]]\nrole = \"client\"\ntoken = \"{CLIENT}\"\n"
        ),
    )
    .expect("write auth file");
    let mut flags = pki.server_flags(false);
    flags.extend(["--auth-file".to_owned(), auth.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let options = Options {
        tls: Some(pki.client_tls(false)),
        ..Options::default()
    };
    let daemon = Daemon::start_with(&dir.join("data"), &flags, options).await;
    (daemon, pki)
}

fn client(daemon: &Daemon, pki: &Pki, token: Option<&str>) -> Client {
    Client::builder(format!("https://{}", daemon.addr))
        .tls_config(pki.client_tls(false))
        .token(token.map(str::to_owned))
        .acquire_deadline(RELAXED_DEADLINE)
        .build()
        .expect("client")
}

#[tokio::test]
async fn tls_and_tokens_by_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, pki) = secured_daemon(dir.path()).await;

    let admin = client(&daemon, &pki, Some(ADMIN));
    admin
        .admin_client()
        .put_breaker(pb::PutBreakerRequest {
            name: "secure".into(),
            spec: Some(spec(3, 1000)),
            ..Default::default()
        })
        .await
        .expect("admin may put over TLS");

    // A client token may acquire and report, but not change specs.
    let user = client(&daemon, &pki, Some(CLIENT));
    let permit = user
        .breaker("secure")
        .acquire()
        .await
        .expect("client role may acquire");
    permit.success().await.expect("client role may report");
    let denied = user
        .admin_client()
        .put_breaker(pb::PutBreakerRequest {
            name: "secure".into(),
            spec: None,
            ..Default::default()
        })
        .await
        .expect_err("client role may not put");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // No token: UNAUTHENTICATED, typed — and not mistaken for an unreachable daemon.
    let anonymous = client(&daemon, &pki, None);
    match anonymous.breaker("secure").acquire().await {
        Err(Error::Unauthenticated(_)) => {}
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    assert_eq!(anonymous.fallback_decisions(), 0);

    // The token never shows up in the client's Debug output.
    assert!(!format!("{admin:?}").contains(ADMIN));
}
