//! An acknowledged change is on the platter: a real commit is traced with strace, and
//! the `fdatasync` of sled's `db` file and of `MANIFEST` must both finish after the
//! commit's last write to `db` and before the answer goes out on the socket.

use std::{path::Path, process::Command, time::Duration};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, Options, put};

/// A name that shows up in the answer's bytes, so its socket write can be found.
const PROBE: &str = "fsync-probe-7c1e";

/// One traced syscall: where it started and finished in the trace, and its fd's path.
#[derive(Debug)]
struct Call {
    name: String,
    start: usize,
    end: usize,
    fd: String,
    text: String,
}

/// Parses `strace -f -yy` output into calls, joining `<unfinished ...>` with `resumed`.
fn calls(trace: &str) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::new();
    let mut open: std::collections::HashMap<&str, usize> = Default::default();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("<... ") {
            if let Some(k) = open.remove(pid) {
                out[k].end = i;
                out[k].text.push_str(rest);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        // The fd decoration: `12</path>` or `7<TCP:[...]>`.
        let fd = args
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        if rest.ends_with("<unfinished ...>") {
            open.insert(pid, out.len());
        }
        out.push(Call {
            name: name.to_owned(),
            start: i,
            end: i,
            fd,
            text: rest.to_owned(),
        });
    }
    out
}

/// The pid of the (only) child of `pid`.
fn child_of(pid: u32) -> u32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks {
        let children = std::fs::read_to_string(task.expect("task").path().join("children"))
            .unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().expect("pid");
        }
    }
    panic!("strace {pid} has no child");
}

#[tokio::test]
async fn a_commit_is_fdatasynced_before_it_is_answered() {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let trace_path = dir.path().join("trace");
    let mut daemon = Daemon::start_with(
        &data,
        &[],
        Options {
            wrapper: [
                "strace",
                "-f",
                "-qq",
                "-yy",
                "-s",
                "65536",
                "-e",
                "trace=pwrite64,pwritev,pwritev2,write,writev,sendmsg,sendto,fdatasync,fsync",
                "-o",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([trace_path.display().to_string()])
            .collect(),
            ..Options::default()
        },
    )
    .await;
    let mut admin = daemon.admin().await;
    put(&mut admin, PROBE, pb::BreakerSpec::default()).await;

    let cbd = child_of(daemon.pid());
    cbd_tests::signal_process(cbd, cbd_tests::Signal::TERM);
    daemon.wait_exit(Duration::from_secs(20)).await;
    check(&std::fs::read_to_string(&trace_path).expect("trace"), &data);
}

fn check(trace: &str, data: &Path) {
    let calls = calls(trace);
    let db = data.join("db").display().to_string();
    let manifest = data.join("MANIFEST").display().to_string();
    let answer = calls
        .iter()
        .find(|c| c.fd.starts_with("TCP:") && c.text.contains(PROBE))
        .unwrap_or_else(|| panic!("no socket write with {PROBE} in the trace:\n{trace}"));
    let last_db_write = calls
        .iter()
        .rfind(|c| c.name.starts_with("pwrite") && c.fd == db && c.start < answer.start)
        .unwrap_or_else(|| panic!("no write to {db} before the answer:\n{trace}"));
    for (file, what) in [(&db, "sled's db file"), (&manifest, "MANIFEST")] {
        assert!(
            calls.iter().any(|c| {
                (c.name == "fdatasync" || c.name == "fsync")
                    && &c.fd == file
                    && c.start > last_db_write.start
                    && c.end < answer.start
            }),
            "no fdatasync of {what} between the commit's write (trace line {}) and the \
             answer (trace line {}):\n{trace}",
            last_db_write.start + 1,
            answer.start + 1
        );
    }
}
