//! A real browser for the dashboard's tests: Debian's `chromedriver` on an
//! ephemeral port (it picks one and prints it), driving headless `chromium` over
//! WebDriver with fantoccini.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};

/// How long chromedriver and the browser may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to install when the browser is missing (CI installs them).
pub const DEBIAN_PACKAGES: &str = "chromium chromium-driver";

/// `$env` if set (and a file), else the first `candidates` entry found on `PATH`.
fn find_program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    candidates.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium session, and the chromedriver serving it. Dropping it kills
/// the chromedriver's process group (chromedriver and the browsers it started);
/// [`Browser::close`] ends the session cleanly first.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    /// `None` once killed, so that its process group is never signalled twice.
    driver: Option<Child>,
}

impl Browser {
    /// Starts chromedriver (`$CHROMEDRIVER`, or `chromedriver` on `PATH`) and a
    /// headless Chromium (`$CHROMIUM`, or `chromium` on `PATH`) with a
    /// `width`×`height` window. Panics, naming the packages to install, when either
    /// is missing: a browser test that cannot run must fail, not pass.
    pub async fn start(width: u32, height: u32) -> Self {
        let driver_bin = find_program("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver not found (set $CHROMEDRIVER or put it on PATH): the dashboard's \
                 browser tests need Debian's `{DEBIAN_PACKAGES}` \
                 (apt-get install -y {DEBIAN_PACKAGES})"
            )
        });
        let chromium =
            find_program("CHROMIUM", &["chromium", "chromium-browser"]).unwrap_or_else(|| {
                panic!(
                    "chromium not found (set $CHROMIUM or put it on PATH): the dashboard's \
                     browser tests need Debian's `{DEBIAN_PACKAGES}` \
                     (apt-get install -y {DEBIAN_PACKAGES})"
                )
            });
        let mut driver = Command::new(&driver_bin)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts are killed with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", driver_bin.display()));
        let port = read_port(&mut driver);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Root in CI containers: Chromium's sandbox needs user namespaces.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver said its port once listening; a refused session
                // (a browser still starting) is retried within the deadline.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    kill_group(&mut driver);
                    panic!("no WebDriver session from chromedriver at {url}: {e}");
                }
            }
        };
        Self {
            client,
            driver: Some(driver),
        }
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
        }
    }

    /// The number of elements matching `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// The text of the first element matching `css`, if there is one now.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Polls the DOM until `css` matches an element whose text satisfies `ok`, at
    /// most `timeout`; returns that text and how long it took. Panics with `what`,
    /// and the text last seen, after.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        let mut last = None;
        loop {
            let text = self.text(css).await;
            if let Some(t) = &text
                && ok(t)
            {
                return (t.clone(), start.elapsed());
            }
            last = text.or(last);
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?} (`{css}` last showed {last:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
        }
    }
}

/// The port chromedriver says it listens on ("... started successfully on port N.").
fn read_port(driver: &mut Child) -> u16 {
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent
                && let Some(port) = line
                    // Not the "Starting ChromeDriver ... on port 0" line before it.
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
            {
                let _ = tx.send(port);
                sent = true;
            }
            // Keep reading, so chromedriver never blocks on a full pipe.
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(port) => port,
        Err(_) => {
            kill_group(driver);
            panic!("chromedriver did not say its port within {START_TIMEOUT:?}");
        }
    }
}

/// SIGKILL to the process group `driver` leads (chromedriver and its browsers),
/// then reap chromedriver.
fn kill_group(driver: &mut Child) {
    // killpg(2) directly: `kill -KILL -PID` with procps-ng 4.0.2's kill signalled
    // far more than the group here (the CI runner died with it).
    let _ = crate::signal_group(driver.id(), crate::Signal::KILL);
    let _ = driver.kill();
    let _ = driver.wait();
}
