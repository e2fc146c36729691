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

/// `cbd --print-config` with `env` set and a file holding `file`.
fn effective(file: &str, env: &[(&str, &str)], args: &[&str]) -> cbd::config::Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cbd.toml");
    std::fs::write(&path, file).expect("write");
    let mut command = Command::new(CBD);
    command
        .arg("--print-config")
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("CBD_MAX_WATCHERS")
        .env_remove("CBD_MAX_BREAKERS");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("run cbd");
    assert!(out.status.success(), "{out:?}");
    toml::from_str(&String::from_utf8(out.stdout).expect("utf8")).expect("valid TOML")
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let file = "max_watchers = 5\nmax_breakers = 6\n";
    let config = effective(file, &[], &[]);
    assert_eq!((config.max_watchers, config.max_breakers), (5, 6));
    let config = effective(file, &[("CBD_MAX_WATCHERS", "7")], &[]);
    assert_eq!((config.max_watchers, config.max_breakers), (7, 6));
    let config = effective(file, &[("CBD_MAX_WATCHERS", "7")], &["--max-watchers", "9"]);
    assert_eq!((config.max_watchers, config.max_breakers), (9, 6));
    // A flag given with the default's own value still beats the file.
    let config = effective(file, &[], &["--max-breakers", "100000"]);
    assert_eq!(config.max_breakers, 100_000);
    let config = effective("", &[], &[]);
    assert_eq!(config.max_watchers, 10_000);
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cbd.toml");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "[[token]]\nrole = \"root\"\ntoken = \"x\"\n").expect("write");
    std::fs::write(
        &path,
        format!(
            "max_watchers = 0\nauth_file = {:?}\n\n[[template]]\nprefix = \"a/\"\nfailure_rate = 500\n",
            tokens.to_str().expect("utf8")
        ),
    )
    .expect("write");
    let out = cbd(&[
        "--check-config",
        "--config",
        path.to_str().expect("utf8"),
        "--log-level",
        "info,=bogus[",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).expect("utf8");
    let lines: Vec<&str> = err.lines().collect();
    for start in [
        "cbd: error: --log-level: ",
        "cbd: error: --tls-key: ",
        "cbd: error: --max-watchers: must be at least 1",
        "cbd: error: template \"a/\": failure_rate: ",
        "cbd: error: --auth-file: ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(start)),
            "no line starting {start:?} in:\n{err}"
        );
    }
    assert_eq!(lines.last(), Some(&"cbd: 5 problem(s) found"), "{err}");
}

#[test]
fn check_config_passes_a_good_configuration_and_names_a_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cbd.toml");
    std::fs::write(&path, "max_watchers = 3\n").expect("write");
    let data = dir.path().join("data");
    let out = cbd(&[
        "--check-config",
        "--config",
        path.to_str().expect("utf8"),
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.starts_with("cbd: configuration is valid"), "{text}");
    assert!(!data.exists(), "--check-config opened the data dir");
    std::fs::write(&path, "max_watchers = \n").expect("write");
    let out = cbd(&["--check-config", "--config", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert!(err.starts_with("cbd: error: --config: "), "{err}");
    assert!(err.contains("line 1"), "the file's line is named: {err}");
}
