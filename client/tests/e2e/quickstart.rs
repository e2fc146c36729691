//! The README's Rust quickstart (`client/examples/quickstart.rs`) runs as written
//! against a real daemon, and the README shows exactly that file.

use std::path::{Path, PathBuf};

use crate::support::daemon;

const EXAMPLE: &str = include_str!("../../examples/quickstart.rs");

/// The example binary `cargo test` builds next to this test, in target/<profile>/examples
/// (a test-name filter skips building examples).
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe.parent().and_then(Path::parent).expect("profile dir");
    let bin = profile.join("examples").join("quickstart");
    assert!(
        bin.exists(),
        "{} not found: `cargo test` builds it unless given a test-name filter; \
         run `cargo build -p cbd-client --example quickstart` first",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_quickstart_runs_against_a_daemon() {
    let (_dir, cbd) = daemon(&[]).await;
    let run = tokio::process::Command::new(example_bin())
        .env("CBD_ENDPOINT", cbd.endpoint())
        .output()
        .await
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "charged 4242",
            "failed: payment provider timed out",
            "failed: payment provider timed out",
            "payments are OPEN, retry in 30 s",
            "1 payments.charge STATE_CLOSED spec put",
            "2 payments.charge STATE_OPEN 2 consecutive failures",
        ],
        "{stdout}"
    );
}

#[test]
fn the_readme_shows_this_file() {
    let readme = include_str!("../../../README.md");
    let marker = "<!-- client/examples/quickstart.rs -->\n```rust\n";
    let (_, after) = readme
        .split_once(marker)
        .expect("the README's Rust block is marked");
    let (block, _) = after.split_once("```\n").expect("the block ends");
    assert_eq!(block, EXAMPLE);
}
