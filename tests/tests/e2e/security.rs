//! Security end to end: TLS and mTLS with certificates made here (rcgen), bearer
//! tokens with roles and their reload on SIGHUP, and the listen policy.

use std::{path::Path, process::Command, time::Duration};

use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use cbd_tests::{Daemon, Options, Pki, cbd_bin, eventually, with_token};
use sha2::{Digest, Sha256};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(10);

/// Whether a health check over `channel` (if it connected at all) succeeds.
async fn health_ok(channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

fn flags(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn tls_clients_connect_and_plaintext_clients_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&dir.path().join("pki"));
    let tls_flags = pki.server_flags(false);
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        &flags(&tls_flags),
        Options {
            tls: Some(pki.client_tls(false)),
            ..Options::default()
        },
    )
    .await;

    // Over TLS, the whole API works.
    let mut admin = daemon.admin().await;
    cbd_tests::put(&mut admin, "tls", pb::BreakerSpec::default()).await;
    let mut client = daemon.breakers().await;
    assert!(cbd_tests::acquire(&mut client, "tls").await.allowed);

    // Plaintext to a TLS port: no answer.
    assert!(
        !health_ok(daemon.try_channel_with(None).await).await,
        "a plaintext client must not get an answer from a TLS daemon"
    );
    // A client that does not trust the server's CA: refused.
    let other = Pki::generate(&dir.path().join("other-pki"));
    assert!(!health_ok(daemon.try_channel_with(Some(other.client_tls(false))).await).await);
    // Still serving TLS clients.
    assert!(health_ok(daemon.try_channel_with(Some(pki.client_tls(false))).await).await);

    // Without --auth-file, SIGHUP is logged and ignored: the daemon stays up.
    daemon.signal(cbd_tests::Signal::HUP);
    let d = &daemon;
    eventually(WAIT, "SIGHUP logged", || async move {
        d.log().contains("nothing to reload").then_some(())
    })
    .await;
    assert!(cbd_tests::acquire(&mut client, "tls").await.allowed);
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_signed_by_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&dir.path().join("pki"));
    let tls_flags = pki.server_flags(true);
    let daemon = Daemon::start_with(
        &dir.path().join("data"),
        &flags(&tls_flags),
        Options {
            tls: Some(pki.client_tls(true)),
            ..Options::default()
        },
    )
    .await;

    // No client certificate: refused at the handshake.
    assert!(
        !health_ok(daemon.try_channel_with(Some(pki.client_tls(false))).await).await,
        "a client without a certificate must be refused"
    );
    // A client certificate from another CA: refused too.
    let other = Pki::generate(&dir.path().join("other-pki"));
    let read = |p: &Path| std::fs::read(p).expect("read pem");
    let foreign = pki
        .client_tls(false)
        .identity(tonic::transport::Identity::from_pem(
            read(&other.client_cert),
            read(&other.client_key),
        ));
    assert!(!health_ok(daemon.try_channel_with(Some(foreign)).await).await);

    // With the right certificate: served.
    let channel = daemon
        .try_channel_with(Some(pki.client_tls(true)))
        .await
        .expect("mTLS connect");
    let mut admin = AdminClient::new(channel.clone());
    cbd_tests::put(&mut admin, "mtls", pb::BreakerSpec::default()).await;
    assert!(
        cbd_tests::acquire(&mut BreakersClient::new(channel), "mtls")
            .await
            .allowed
    );
}

fn write_tokens(path: &Path, text: &str) {
    // Atomically, as an operator's deploy tool would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write tokens");
    std::fs::rename(&tmp, path).expect("rename tokens");
}

async fn put_as(
    admin: &mut AdminClient<Channel>,
    token: Option<&str>,
    name: &str,
) -> Result<pb::PutBreakerResponse, tonic::Status> {
    let msg = pb::PutBreakerRequest {
        name: name.into(),
        spec: Some(pb::BreakerSpec::default()),
        ..Default::default()
    };
    let request = match token {
        Some(t) => with_token(msg, t),
        None => tonic::Request::new(msg),
    };
    admin.put_breaker(request).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn tokens_have_roles_and_sighup_reloads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    let client_hash = hex::encode(Sha256::digest(b"client-token-1"));
    write_tokens(
        &tokens,
        &format!(
            "[[token]]\nrole = \"admin\"\ntoken = \"admin-token-1\"\n\n\
             [[token]]\nrole = \"client\"\nsha256 = \"{client_hash}\"\n"
        ),
    );
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &["--auth-file", tokens.to_str().expect("utf8")],
    )
    .await;
    // Health needed no token (the harness's readiness check has none). One
    // connection for everything below: a reload must not drop it.
    let channel = daemon.channel().await;
    let mut admin = AdminClient::new(channel.clone());
    let mut client = BreakersClient::new(channel.clone());

    // No token, an unknown token, a malformed header: UNAUTHENTICATED.
    let status = put_as(&mut admin, None, "a").await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = put_as(&mut admin, Some("nope"), "a")
        .await
        .expect_err("unknown token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .acquire(pb::AcquireRequest {
            name: "a".into(),
            caller: String::new(),
        })
        .await
        .expect_err("no token on the data plane either");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The client role may not put: PERMISSION_DENIED naming the RPC.
    let status = put_as(&mut admin, Some("client-token-1"), "a")
        .await
        .expect_err("client may not put");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("cbd.v1.Admin/PutBreaker"),
        "{status:?}"
    );

    // The admin role may; the client role may acquire, report, get and list.
    put_as(&mut admin, Some("admin-token-1"), "a")
        .await
        .expect("admin puts");
    let a = client
        .acquire(with_token(
            pb::AcquireRequest {
                name: "a".into(),
                caller: String::new(),
            },
            "client-token-1",
        ))
        .await
        .expect("client acquires")
        .into_inner();
    assert!(a.allowed);
    client
        .report(with_token(
            pb::ReportRequest {
                permit: a.permit,
                outcome: pb::Outcome::Success as i32,
                duration: None,
                caller: String::new(),
            },
            "client-token-1",
        ))
        .await
        .expect("client reports");
    admin
        .get_breaker(with_token(
            pb::GetBreakerRequest { name: "a".into() },
            "client-token-1",
        ))
        .await
        .expect("client gets");
    admin
        .list_breakers(with_token(
            pb::ListBreakersRequest::default(),
            "client-token-1",
        ))
        .await
        .expect("client lists");
    let status = admin
        .delete_breaker(with_token(
            pb::DeleteBreakerRequest {
                name: "a".into(),
                ..Default::default()
            },
            "client-token-1",
        ))
        .await
        .expect_err("client may not delete");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("cbd.v1.Admin/DeleteBreaker"));

    // SIGHUP with a new file: the old admin token is revoked, the new one works,
    // on the same connection.
    write_tokens(
        &tokens,
        "[[token]]\nrole = \"admin\"\ntoken = \"admin-token-2\"\n",
    );
    daemon.signal(cbd_tests::Signal::HUP);
    eventually(WAIT, "old admin token revoked after SIGHUP", || {
        let mut admin = admin.clone();
        async move {
            let r = put_as(&mut admin, Some("admin-token-1"), "b").await;
            matches!(r, Err(s) if s.code() == Code::Unauthenticated).then_some(())
        }
    })
    .await;
    put_as(&mut admin, Some("admin-token-2"), "b")
        .await
        .expect("new admin token works");
    let status = client
        .acquire(with_token(
            pb::AcquireRequest {
                name: "a".into(),
                caller: String::new(),
            },
            "client-token-1",
        ))
        .await
        .expect_err("client token gone too");
    assert_eq!(status.code(), Code::Unauthenticated);

    // A bad file on SIGHUP keeps the tokens in force, and says so in the log.
    write_tokens(&tokens, "this is [ not toml");
    daemon.signal(cbd_tests::Signal::HUP);
    let d = &daemon;
    eventually(WAIT, "reload failure logged", || async move {
        d.log().contains("auth file not reloaded").then_some(())
    })
    .await;
    put_as(&mut admin, Some("admin-token-2"), "c")
        .await
        .expect("tokens kept after a bad reload");

    // The daemon is still the same process, and no token ever reached the log.
    assert!(daemon.health().await.is_some());
    let log = daemon.log();
    for secret in ["admin-token-1", "admin-token-2", "client-token-1"] {
        assert!(!log.contains(secret), "token {secret} logged:\n{log}");
    }
}

#[tokio::test]
async fn non_loopback_needs_auth_or_explicit_consent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(cbd_bin())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("refused"))
        .env_remove("CBD_CONFIG")
        .env_remove("CBD_ALLOW_UNAUTHENTICATED")
        .env_remove("CBD_AUTH_FILE")
        .output()
        .expect("run cbd");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    assert!(
        lines[0].contains("non-loopback") && lines[0].contains("--allow-unauthenticated"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("refused").exists(),
        "refused before touching the data directory"
    );

    // With --allow-unauthenticated it starts (on 0.0.0.0; we talk to it on 127.0.0.1,
    // and stop it at once).
    let mut daemon = Daemon::start_with(
        &dir.path().join("data"),
        &["--allow-unauthenticated"],
        Options {
            listen: Some("0.0.0.0:0".into()),
            ..Options::default()
        },
    )
    .await;
    assert!(daemon.log().contains("0.0.0.0"));
    daemon.kill9();
}
