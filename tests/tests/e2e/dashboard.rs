//! The dashboard end to end: a real cbd serving `/dashboard` on `--metrics-listen`,
//! opened in headless Chromium (Debian's `chromium` and `chromium-driver`) over
//! WebDriver, with breakers changed over real gRPC. Without chromedriver these tests
//! fail, naming the packages to install.
//!
//! `CBD_WRITE_SCREENSHOT=1` also writes the page, as the actions test leaves it, to
//! `docs/dashboard.png` (the README's screenshot).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use cbd_tests::{Daemon, browser::Browser, eventually, ms, with_token};
use fantoccini::Locator;
use tonic::transport::Channel;

use crate::metrics::metrics_addr;

/// Bound on anything that is not the one-second trip deadline.
const WAIT: Duration = Duration::from_secs(10);
/// A trip made over gRPC must be on the page within this.
const LIVE: Duration = Duration::from_secs(1);

const ADMIN_TOKEN: &str = "dash-admin-token";
const CLIENT_TOKEN: &str = "dash-client-token";

fn trips_once(open_ms: u64) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(1),
        open_duration: Some(ms(open_ms)),
        ..Default::default()
    }
}

/// `message`, with `authorization: Bearer <token>` when a token is given.
fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(t) => with_token(message, t),
        None => tonic::Request::new(message),
    }
}

/// Puts `name`, with `token` when given.
async fn put(
    admin: &mut AdminClient<Channel>,
    token: Option<&str>,
    name: &str,
    spec: pb::BreakerSpec,
) {
    let msg = pb::PutBreakerRequest {
        name: name.into(),
        spec: Some(spec),
        reason: String::new(),
    };
    admin.put_breaker(request(msg, token)).await.expect("put");
}

/// Trips `name` (a breaker that opens on one failure): Acquire, then Report a
/// failure. Returns the state the report answered.
async fn trip(client: &mut BreakersClient<Channel>, token: Option<&str>, name: &str) -> pb::State {
    call(client, token, name, pb::Outcome::Failure).await
}

/// One allowed call of `name`: Acquire (it must be allowed), then Report `outcome`.
/// Returns the state the report answered.
async fn call(
    client: &mut BreakersClient<Channel>,
    token: Option<&str>,
    name: &str,
    outcome: pb::Outcome,
) -> pb::State {
    let acquired = client
        .acquire(request(
            pb::AcquireRequest {
                name: name.into(),
                caller: String::new(),
            },
            token,
        ))
        .await
        .expect("acquire")
        .into_inner();
    assert!(acquired.allowed, "{name} is closed before the call");
    let report = pb::ReportRequest {
        permit: acquired.permit,
        outcome: outcome as i32,
        duration: None,
        caller: String::new(),
    };
    client
        .report(request(report, token))
        .await
        .expect("report")
        .into_inner()
        .state()
}

/// The status of `name` over gRPC, with `token` when given.
async fn get(
    admin: &mut AdminClient<Channel>,
    token: Option<&str>,
    name: &str,
) -> pb::BreakerStatus {
    let msg = pb::GetBreakerRequest { name: name.into() };
    admin
        .get_breaker(request(msg, token))
        .await
        .expect("get")
        .into_inner()
        .breaker
        .expect("breaker")
}

/// A token file with one admin and one client token, in `dir`.
fn tokens(dir: &Path) -> String {
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!(
            "[[token]]\nrole = \"admin\"\ntoken = \"{ADMIN_TOKEN}\"\nname = \"oncall\"\n\n\
             [[token]]\nrole = \"client\"\ntoken = \"{CLIENT_TOKEN}\"\n"
        ),
    )
    .expect("write tokens");
    path.display().to_string()
}

/// `method path` on the HTTP listener with `headers` and `body`: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// `POST /dashboard/api/actions` for `action` on `breaker`, with `bearer` if given.
fn post_action(
    addr: SocketAddr,
    bearer: Option<&str>,
    breaker: &str,
    action: &str,
) -> (u16, String) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let body = format!("{{\"breaker\":\"{breaker}\",\"action\":\"{action}\"}}");
    http(addr, "POST", "/dashboard/api/actions", &headers, &body)
}

/// The CSS selector of `name`'s row, or of `cell` in it.
fn row(name: &str) -> String {
    format!("tr[data-name=\"{name}\"]")
}

fn cell(name: &str, cell: &str) -> String {
    format!("{} td.{cell}", row(name))
}

#[tokio::test]
async fn dashboard_lists_breakers_shows_a_grpc_trip_within_a_second_and_read_only_has_no_buttons() {
    let daemon = Daemon::fresh(&["--metrics-listen", "127.0.0.1:0"]).await;
    let http_addr = metrics_addr(&daemon);
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    for name in ["shop/cart", "shop/pay", "other/search"] {
        put(&mut admin, None, name, trips_once(30_000)).await;
    }

    let browser = Browser::start(1280, 800).await;
    browser
        .client
        .goto(&format!("http://{http_addr}/dashboard"))
        .await
        .expect("open the dashboard");
    for name in ["shop/cart", "shop/pay", "other/search"] {
        browser
            .wait_text(&cell(name, "state"), WAIT, "listed", |t| t == "CLOSED")
            .await;
    }
    // Read-only: the page learned its mode and shows no action buttons at all.
    eventually(WAIT, "the page in read-only mode", || async {
        let mode = browser
            .client
            .find(Locator::Css("body"))
            .await
            .ok()?
            .attr("data-mode")
            .await
            .ok()??;
        (mode == "read_only").then_some(())
    })
    .await;
    assert_eq!(
        browser.count("button.action").await,
        0,
        "read-only page has buttons"
    );
    assert_eq!(
        browser.count("#auth:not([hidden])").await,
        0,
        "token form shown"
    );

    // The feed is live once the page says so; then a trip over gRPC shows within 1 s.
    browser
        .wait_text("#conn", WAIT, "the feed connected", |t| t == "live")
        .await;
    assert_eq!(trip(&mut client, None, "shop/pay").await, pb::State::Open);
    let (_, took) = browser
        .wait_text(
            &cell("shop/pay", "state"),
            LIVE,
            "the trip on the page",
            |t| t == "OPEN",
        )
        .await;
    println!("dashboard: trip on the page {took:?} after the Report answered");
    // With its countdown, and in the transitions list with its reason.
    browser
        .wait_text(&cell("shop/pay", "open-until"), WAIT, "a countdown", |t| {
            t.ends_with(" s")
                && t.trim_end_matches(" s")
                    .parse::<f64>()
                    .is_ok_and(|s| s > 0.0 && s <= 30.0)
        })
        .await;
    let event = "#events li[data-name=\"shop/pay\"][data-kind=\"STATE_CHANGED\"]";
    browser
        .wait_text(
            &format!("{event} .ev-what"),
            WAIT,
            "the transition listed",
            |t| t == "CLOSED → OPEN",
        )
        .await;
    let reason = browser
        .text(&format!("{event} .ev-reason"))
        .await
        .expect("the transition's reason");
    assert!(reason.contains("failure"), "{reason}");
    // The other rows did not change.
    assert_eq!(
        browser.text(&cell("shop/cart", "state")).await.as_deref(),
        Some("CLOSED")
    );

    // Filtering by prefix leaves only the matching rows.
    browser
        .client
        .find(Locator::Css("#prefix"))
        .await
        .expect("prefix box")
        .send_keys("shop/")
        .await
        .expect("type a prefix");
    eventually(WAIT, "only shop/ rows", || async {
        let rows = browser.count("#rows tr").await;
        let other = browser.count(&row("other/search")).await;
        (rows == 2 && other == 0).then_some(())
    })
    .await;

    // And the API refuses actions on a read-only daemon, whatever the caller sends.
    let (status, body) = post_action(http_addr, None, "shop/cart", "force_open");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert_eq!(
        get(&mut admin, None, "shop/cart").await.r#override(),
        pb::Override::Unspecified
    );
    browser.close().await;
}

#[tokio::test]
async fn dashboard_actions_need_an_admin_token_and_change_the_breaker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth_file = tokens(dir.path());
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0", "--auth-file", &auth_file],
    )
    .await;
    let http_addr = metrics_addr(&daemon);
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    let admin_token = Some(ADMIN_TOKEN);
    let names = [
        "checkout/cart",
        "checkout/payments",
        "checkout/shipping",
        "inventory/reserve",
        "inventory/stock",
        "search/query",
        "search/suggest",
    ];
    for name in names {
        put(&mut admin, admin_token, name, trips_once(45_000)).await;
    }
    assert_eq!(
        trip(&mut client, admin_token, "checkout/payments").await,
        pb::State::Open
    );

    let browser = Browser::start(1400, 760).await;
    browser
        .client
        .goto(&format!("http://{http_addr}/dashboard"))
        .await
        .expect("open the dashboard");
    browser
        .wait_text(&cell("checkout/payments", "state"), WAIT, "listed", |t| {
            t == "OPEN"
        })
        .await;
    // Token mode: the form is there, and no buttons until a token says admin.
    browser
        .wait_text("#whoami", WAIT, "no token yet", |t| t.contains("read-only"))
        .await;
    assert_eq!(
        browser.count("button.action").await,
        0,
        "buttons without a token"
    );
    let use_token = |token: &'static str| {
        let browser = &browser;
        async move {
            let input = browser
                .client
                .find(Locator::Css("#token"))
                .await
                .expect("token box");
            input.clear().await.expect("clear");
            input.send_keys(token).await.expect("type the token");
            browser
                .client
                .find(Locator::Css("#token-use"))
                .await
                .expect("use token")
                .click()
                .await
                .expect("click");
        }
    };
    use_token(CLIENT_TOKEN).await;
    browser
        .wait_text("#whoami", WAIT, "a client token", |t| {
            t.starts_with("client token")
        })
        .await;
    assert_eq!(
        browser.count("button.action").await,
        0,
        "buttons for a client token"
    );
    use_token(ADMIN_TOKEN).await;
    let force_open = format!(
        "{} button[data-action=\"force_open\"]",
        row("checkout/cart")
    );
    eventually(WAIT, "buttons for the admin token", || async {
        (browser.count(&force_open).await == 1).then_some(())
    })
    .await;

    // Force open from the page: the daemon has the override (over gRPC), and the
    // page shows it.
    browser
        .client
        .find(Locator::Css(&force_open))
        .await
        .expect("force-open button")
        .click()
        .await
        .expect("click force open");
    let status = eventually(WAIT, "FORCED_OPEN over gRPC", || async {
        let status = get(&mut admin.clone(), admin_token, "checkout/cart").await;
        (status.r#override() == pb::Override::ForcedOpen).then_some(status)
    })
    .await;
    assert_eq!(status.state(), pb::State::Open);
    // Recorded as made by the page's token, like a cbctl force-open with it.
    let operator = status.override_operator.expect("who set it");
    assert_eq!(operator.actor, "oncall");
    browser
        .wait_text(
            &cell("checkout/cart", "ovr"),
            WAIT,
            "the override shown",
            |t| t == "FORCED_OPEN",
        )
        .await;
    browser
        .wait_text(
            &cell("checkout/cart", "state"),
            WAIT,
            "forced open shown",
            |t| t == "OPEN",
        )
        .await;

    // Reset from the page closes the tripped one.
    let reset = format!("{} button[data-action=\"reset\"]", row("checkout/payments"));
    browser
        .client
        .find(Locator::Css(&reset))
        .await
        .expect("reset button")
        .click()
        .await
        .expect("click reset");
    eventually(WAIT, "reset over gRPC", || async {
        let status = get(&mut admin.clone(), admin_token, "checkout/payments").await;
        (status.state() == pb::State::Closed).then_some(())
    })
    .await;

    // Window counts change without events (reports that trip nothing): the page
    // re-reads them.
    for _ in 0..3 {
        call(
            &mut client,
            admin_token,
            "inventory/reserve",
            pb::Outcome::Success,
        )
        .await;
    }
    browser
        .wait_text(
            &cell("inventory/reserve", "window"),
            WAIT,
            "window counts refreshed",
            |t| t == "3 / 0 / 0",
        )
        .await;

    // The API itself: no token is UNAUTHENTICATED, a client token PERMISSION_DENIED.
    let (status, body) = post_action(http_addr, None, "search/query", "force_closed");
    assert_eq!(status, 401, "{body}");
    let (status, body) = post_action(
        http_addr,
        Some(CLIENT_TOKEN),
        "search/query",
        "force_closed",
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        get(&mut admin, admin_token, "search/query")
            .await
            .r#override(),
        pb::Override::Unspecified
    );
    // A form post (not JSON) is refused before anything is checked or changed.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _) = http(
        http_addr,
        "POST",
        "/dashboard/api/actions",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        "breaker=search/query&action=force_open",
    );
    assert_eq!(status, 415);
    // An admin token over the API works like the button; unknown breakers are 404.
    let (status, body) = post_action(http_addr, admin_token, "search/query", "force_closed");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&mut admin, admin_token, "search/query")
            .await
            .r#override(),
        pb::Override::ForcedClosed
    );
    let (status, body) = post_action(http_addr, admin_token, "no/such", "reset");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("NOT_FOUND"), "{body}");

    if std::env::var_os("CBD_WRITE_SCREENSHOT").is_some_and(|v| v == "1") {
        // A few more states for the picture: one more trip, and the list settled.
        assert_eq!(
            trip(&mut client, admin_token, "inventory/stock").await,
            pb::State::Open
        );
        browser
            .wait_text(&cell("inventory/stock", "state"), WAIT, "tripped", |t| {
                t == "OPEN"
            })
            .await;
        browser
            .wait_text(&cell("search/query", "ovr"), WAIT, "forced closed", |t| {
                t == "FORCED_CLOSED"
            })
            .await;
        eventually(WAIT, "rows settled (no change highlight)", || async {
            (browser.count("tr.flash").await == 0).then_some(())
        })
        .await;
        let png = browser.client.screenshot().await.expect("screenshot");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&path, png).expect("write docs/dashboard.png");
        println!("dashboard: screenshot written to {}", path.display());
    }
    browser.close().await;
}

#[tokio::test]
async fn dashboard_allow_actions_opens_actions_without_auth() {
    let daemon = Daemon::fresh(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--dashboard-allow-actions",
    ])
    .await;
    let http_addr = metrics_addr(&daemon);
    let mut admin = daemon.admin().await;
    put(&mut admin, None, "open/one", trips_once(30_000)).await;
    let (status, body) = http(http_addr, "GET", "/dashboard/api/mode", &[], "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"actions\":\"open\""), "{body}");
    let (status, body) = post_action(http_addr, None, "open/one", "force_open");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&mut admin, None, "open/one").await.r#override(),
        pb::Override::ForcedOpen
    );
    let (status, body) = post_action(http_addr, None, "open/one", "release");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&mut admin, None, "open/one").await.r#override(),
        pb::Override::Unspecified
    );
    // A bad action or a bad name is a 400 naming the problem, not a change.
    let (status, body) = post_action(http_addr, None, "open/one", "explode");
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, body) = post_action(http_addr, None, "", "reset");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("INVALID_ARGUMENT"), "{body}");
}

#[tokio::test]
async fn dashboard_pages_ten_thousand_breakers() {
    const N: usize = 10_000;
    let daemon = Daemon::fresh(&["--metrics-listen", "127.0.0.1:0"]).await;
    let http_addr = metrics_addr(&daemon);
    let admin = daemon.admin().await;
    let name = |i: usize| format!("fleet/svc-{i:05}");
    let created = Instant::now();
    // Many puts in flight at once, so that they share group commits.
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        futures::future::join_all(chunk.iter().map(|&i| {
            let mut admin = admin.clone();
            let name = name(i);
            async move { put(&mut admin, None, &name, trips_once(30_000)).await }
        }))
        .await;
    }
    println!("dashboard: {N} breakers put in {:?}", created.elapsed());

    // One page from the API, timed.
    let timed = Instant::now();
    let (status, body) = http(
        http_addr,
        "GET",
        "/dashboard/api/breakers?prefix=fleet/&page_size=100&page_token=fleet/svc-05000",
        &[],
        "",
    );
    let took = timed.elapsed();
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(page["breakers"].as_array().map(Vec::len), Some(100));
    assert_eq!(page["breakers"][0]["name"], "fleet/svc-05001");
    assert_eq!(page["next_page_token"], "fleet/svc-05100");
    println!("dashboard: one 100-breaker page of {N} over HTTP in {took:?}");

    let browser = Browser::start(1280, 800).await;
    let opened = Instant::now();
    browser
        .client
        .goto(&format!("http://{http_addr}/dashboard"))
        .await
        .expect("open the dashboard");
    browser
        .wait_text(&cell(&name(99), "state"), WAIT, "the first page", |t| {
            t == "CLOSED"
        })
        .await;
    println!(
        "dashboard: first page of {N} breakers drawn {:?} after opening",
        opened.elapsed()
    );
    // Only one page is in the DOM.
    assert_eq!(browser.count("#rows tr").await, 100);
    browser
        .wait_text("#count", WAIT, "the total", |t| t.starts_with("10000 "))
        .await;
    // Next: the second page, rows 101–200.
    browser
        .client
        .find(Locator::Css("#next"))
        .await
        .expect("next button")
        .click()
        .await
        .expect("click next");
    browser
        .wait_text(&cell(&name(199), "state"), WAIT, "the second page", |t| {
            t == "CLOSED"
        })
        .await;
    assert_eq!(browser.count("#rows tr").await, 100);
    assert_eq!(
        browser.count(&row(&name(0))).await,
        0,
        "first page still shown"
    );
    browser
        .wait_text("#conn", WAIT, "the feed connected", |t| t == "live")
        .await;
    // Live on a later page too.
    let mut client = daemon.breakers().await;
    assert_eq!(trip(&mut client, None, &name(150)).await, pb::State::Open);
    let (_, took) = browser
        .wait_text(
            &cell(&name(150), "state"),
            LIVE,
            "the trip on page 2",
            |t| t == "OPEN",
        )
        .await;
    println!("dashboard: trip on page 2 of {N} breakers shown in {took:?}");
    // A prefix finds one breaker among them.
    browser
        .client
        .find(Locator::Css("#prefix"))
        .await
        .expect("prefix box")
        .send_keys(&name(9876))
        .await
        .expect("type a prefix");
    eventually(WAIT, "one row for the prefix", || async {
        let one = browser.count("#rows tr").await == 1;
        let it = browser.count(&row(&name(9876))).await == 1;
        (one && it).then_some(())
    })
    .await;
    browser.close().await;
}
