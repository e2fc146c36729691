//! Disk full is a fault, not a permanent state: with its data on a small tmpfs that
//! fills up, cbd turns NOT_SERVING and answers writes UNAVAILABLE naming the cause,
//! then recovers by itself once space returns, and loses nothing it acknowledged.
//! Needs `mount` (root); skipped with a printed reason where it is not allowed.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, eventually};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Most puts tried while waiting for the disk to be full.
const MAX_PUTS: usize = 2000;
/// How long the daemon gets to notice the space and recover.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A tmpfs mounted for the test; unmounted when dropped, whatever happened.
#[derive(Debug)]
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts an `size` tmpfs on `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process in it): detach now, freed when it lets go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Appends to `path` until the file system has no space left; returns the bytes
/// written. Appending (never truncating) so that a top-up frees nothing.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Then the last partial chunk.
    while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {
        written += 512;
    }
    let _ = file.sync_all();
    written
}

fn spec(i: usize) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(1 + (i % 7) as u32),
        ..Default::default()
    }
}

async fn put(
    daemon: &Daemon,
    name: &str,
    i: usize,
) -> Result<pb::PutBreakerResponse, tonic::Status> {
    daemon
        .admin()
        .await
        .put_breaker(pb::PutBreakerRequest {
            name: name.into(),
            spec: Some(spec(i)),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(daemon: &Daemon, name: &str) -> Result<pb::BreakerStatus, tonic::Status> {
    daemon
        .admin()
        .await
        .get_breaker(pb::GetBreakerRequest { name: name.into() })
        .await
        .map(|r| r.into_inner().breaker.expect("breaker"))
}

#[tokio::test]
async fn a_full_disk_makes_cbd_unavailable_until_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The data dir is the mount point; the harness keeps its log beside it, off
    // the small file system.
    let data = dir.path().join("data");
    let tmpfs = match Tmpfs::mount(&data, "8m") {
        Ok(t) => t,
        Err(why) => {
            println!("skipped: cannot mount a tmpfs for the data dir: {why}");
            return;
        }
    };
    let mut daemon = Daemon::start(&data, &[]).await;
    let mut acked: Vec<(String, usize)> = Vec::new();
    for i in 0..5 {
        let name = format!("before/{i}");
        put(&daemon, &name, i)
            .await
            .expect("put before the disk is full");
        acked.push((name, i));
    }

    let filler = data.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took some space");

    // Puts succeed while sled still has room in pages it holds; then one fails.
    let mut refused = None;
    for i in 0..MAX_PUTS {
        let name = format!("full/{i}");
        match put(&daemon, &name, i).await {
            Ok(_) => acked.push((name, i)),
            Err(status) => {
                refused = Some((name, i, status));
                break;
            }
        }
    }
    let (refused_name, refused_i, status) =
        refused.unwrap_or_else(|| panic!("no put failed in {MAX_PUTS} on a full disk"));
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{status:?}\n{}",
        daemon.log()
    );
    assert!(
        status.message().contains("store cannot commit")
            && status.message().contains("No space left on device")
            && !status.message().contains("storage error: storage error"),
        "the message names the cause: {}",
        status.message()
    );
    // Take whatever sled may have freed meanwhile (it can truncate free segments
    // when it reopens), so that the disk stays full while this is checked.
    fill(&filler);
    assert_eq!(daemon.health().await, Some(ServingStatus::NotServing));
    let later = put(&daemon, "refused/while-full", 0)
        .await
        .expect_err("still full");
    assert_eq!(later.code(), Code::Unavailable, "{later:?}");
    assert_eq!(
        get(&daemon, &refused_name)
            .await
            .expect_err("not committed")
            .code(),
        Code::NotFound,
        "a put that was never committed is not shown"
    );
    assert_eq!(
        get(&daemon, "refused/while-full")
            .await
            .expect_err("refused")
            .code(),
        Code::NotFound
    );

    std::fs::remove_file(&filler).expect("remove filler");
    eventually(
        RECOVERY_TIMEOUT,
        "SERVING again once space returns",
        || async { (daemon.health().await == Some(ServingStatus::Serving)).then_some(()) },
    )
    .await;
    // The refused put was queued, not dropped: it was applied on recovery (so a
    // client's retry finds it unchanged).
    let retried = put(&daemon, &refused_name, refused_i)
        .await
        .expect("retry the refused put");
    assert!(retried.unchanged, "{retried:?}");
    acked.push((refused_name, refused_i));
    for i in 0..5 {
        let name = format!("after/{i}");
        put(&daemon, &name, i).await.expect("put after recovery");
        acked.push((name, i));
    }

    let log = daemon.log();
    let fault_log: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("commit") || l.contains("reopen") || l.contains("health"))
        .collect();
    println!(
        "filler {filled} bytes; {} puts acknowledged in all; the fault as logged:\n{}",
        acked.len(),
        fault_log.join("\n")
    );

    daemon.restart().await;
    for (name, i) in &acked {
        let status = get(&daemon, name)
            .await
            .unwrap_or_else(|e| panic!("{name} acknowledged but lost: {e:?}"));
        assert_eq!(
            status.spec.expect("spec").consecutive_failures,
            spec(*i).consecutive_failures,
            "{name}"
        );
    }
    assert_eq!(
        get(&daemon, "refused/while-full")
            .await
            .expect_err("never applied")
            .code(),
        Code::NotFound
    );
    drop(daemon);
    drop(tmpfs);
}
