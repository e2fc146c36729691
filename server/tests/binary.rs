//! The `cbd` binary's command line: `--print-config`, `--help`, and refusing a bad
//! configuration with one clear line. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the end-to-end tests start.)

use std::process::Command;

const CBD: &str = env!("CARGO_BIN_EXE_cbd");

fn cbd(args: &[&str]) -> std::process::Output {
    Command::new(CBD)
        .args(args)
        .env_remove("CBD_CONFIG")
        .env_remove("CBD_LISTEN")
        .output()
        .expect("run cbd")
}

#[test]
fn print_config_shows_the_effective_configuration_as_toml() {
    let out = cbd(&["--print-config", "--max-breakers", "42"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let config: cbd::config::Config = toml::from_str(&text).expect("valid TOML");
    assert_eq!(config.max_breakers, 42);
    assert_eq!(config.listen.to_string(), cbd::config::DEFAULT_LISTEN);
}

#[test]
fn version_names_the_version_and_the_commit() {
    let out = cbd(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let expected = format!("cbd {} (commit {})\n", cbd::VERSION, cbd::GIT_COMMIT);
    assert_eq!(text, expected);
    assert!(
        cbd::GIT_COMMIT == "unknown"
            || (cbd::GIT_COMMIT.len() == 12
                && cbd::GIT_COMMIT.bytes().all(|b| b.is_ascii_hexdigit())),
        "{}",
        cbd::GIT_COMMIT
    );
}

#[test]
fn environment_variables_are_read() {
    let out = Command::new(CBD)
        .args(["--print-config"])
        .env("CBD_MAX_WATCHERS", "7")
        .output()
        .expect("run cbd");
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("max_watchers = 7"), "{text}");
}

#[test]
fn a_bad_configuration_exits_2_with_one_line() {
    let out = cbd(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
}

#[test]
fn help_explains_flags_and_their_environment_variables() {
    let out = cbd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf8");
    for needle in [
        "--listen",
        "CBD_LISTEN",
        "--data-dir",
        "--print-config",
        "127.0.0.1:7411",
    ] {
        assert!(help.contains(needle), "--help should mention {needle}");
    }
}

#[test]
fn a_bad_log_filter_is_an_error_not_a_silent_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cbd(&[
        "--log-level",
        "info,=bogus[",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert!(err.contains("--log-level"), "{err}");
}

#[test]
fn a_port_in_use_is_one_line_and_the_store_is_not_touched() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = cbd(&[
        "--listen",
        &addr,
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("cbd: error: --listen: cannot bind {addr}: ")),
        "{stderr}"
    );
    assert!(!data.exists(), "the data dir was created");
}

#[test]
fn a_data_dir_in_use_is_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf8");
    let addr_file = dir.path().join("addr");
    let mut first = Command::new(CBD)
        .args(["--listen", "127.0.0.1:0", "--data-dir", data_arg])
        .arg("--addr-file")
        .arg(&addr_file)
        .env_remove("CBD_CONFIG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("first cbd");
    // The address file is written once the first cbd holds the data dir and serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !addr_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first cbd did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = cbd(&["--listen", "127.0.0.1:0", "--data-dir", data_arg]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(
        stderr,
        format!("cbd: error: --data-dir: data dir {data_arg} is in use by another cbd\n")
    );
}
