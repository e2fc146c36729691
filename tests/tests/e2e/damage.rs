//! A damaged data dir never serves as if healthy: cbd refuses it (exit 3, one line
//! naming the data dir, files untouched) unless started with `--force-recover`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, Refused, put};

/// Breakers put before the damage.
const BREAKERS: usize = 300;
/// Starts per damaged dir: each must refuse it the same way.
const STARTS: usize = 3;

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir").to_owned();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

fn write_files(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for (rel, bytes) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
}

/// Every breaker and the revision.
async fn contents(daemon: &Daemon) -> (usize, u64) {
    let mut admin = daemon.admin().await;
    let (mut n, mut token, mut revision) = (0, String::new(), 0);
    loop {
        let page = admin
            .list_breakers(pb::ListBreakersRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        n += page.breakers.len();
        revision = revision.max(page.revision);
        if page.next_page_token.is_empty() {
            return (n, revision);
        }
        token = page.next_page_token;
    }
}

/// A data dir with `BREAKERS` acknowledged puts, stopped cleanly; its files and the
/// acknowledged revision.
async fn populated(data: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, u64) {
    let mut daemon = Daemon::start(data, &[]).await;
    let admin = daemon.admin().await;
    let mut revision = 0;
    for chunk in (0..BREAKERS).collect::<Vec<_>>().chunks(50) {
        let puts = chunk.iter().map(|i| {
            let mut admin = admin.clone();
            async move {
                put(
                    &mut admin,
                    &format!("svc/{i:03}"),
                    pb::BreakerSpec {
                        consecutive_failures: Some(3),
                        ..Default::default()
                    },
                )
                .await
                .revision
            }
        });
        revision = revision.max(
            futures::future::join_all(puts)
                .await
                .into_iter()
                .max()
                .unwrap_or(0),
        );
    }
    assert_eq!(contents(&daemon).await, (BREAKERS, revision));
    daemon.signal(cbd_tests::Signal::TERM);
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    (files(data), revision)
}

/// Starts cbd on `data` `STARTS` times and checks each start refuses it and
/// changes no file; or, if the damage hit nothing in use, serves everything.
async fn assert_never_serves_less(case: &str, data: &Path, acknowledged: u64) -> usize {
    let damaged = files(data);
    let mut refusals = 0;
    for start in 0..STARTS {
        match Daemon::try_start(data, &[]).await {
            Err(Refused { status, stderr }) => {
                refusals += 1;
                assert_eq!(status.code(), Some(3), "{case}, start {start}: {stderr}");
                // sled may log warnings before; the verdict is one line, the last.
                let errors: Vec<_> = stderr
                    .lines()
                    .filter(|l| l.starts_with("cbd: error:"))
                    .collect();
                assert_eq!(errors.len(), 1, "{case}: one error line: {stderr}");
                let line = errors[0];
                assert_eq!(stderr.lines().last(), Some(line), "{case}: {stderr}");
                if start == 0 {
                    println!("{case}: {line}");
                }
                assert!(
                    line.starts_with(&format!(
                        "cbd: error: data dir {} is damaged: ",
                        data.display()
                    )),
                    "{case}: {line}"
                );
                assert!(line.contains("--force-recover"), "{case}: {line}");
                assert!(
                    files(data) == damaged,
                    "{case}, start {start}: a refused start changed the files"
                );
            }
            Ok(mut daemon) => {
                let (n, revision) = contents(&daemon).await;
                assert!(
                    n >= BREAKERS && revision >= acknowledged,
                    "{case}, start {start}: SERVING with {n} breakers at revision {revision}, \
                     but {BREAKERS} at revision {acknowledged} were acknowledged"
                );
                daemon.signal(cbd_tests::Signal::TERM);
                daemon.wait_exit(Duration::from_secs(20)).await;
                return refusals;
            }
        }
    }
    refusals
}

/// Damage done to a data dir's files; in the cases: what, how, and whether every
/// start must refuse it.
type Damage = dyn Fn(&mut BTreeMap<PathBuf, Vec<u8>>);

fn flip(bytes: &mut [u8], at: usize, len: usize) {
    for b in &mut bytes[at..at + len] {
        *b ^= 0xff;
    }
}

#[tokio::test]
async fn damaged_stores_are_refused_and_left_as_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (healthy, acknowledged) = populated(&dir.path().join("origin")).await;
    let db = PathBuf::from("db");
    let db_len = healthy[&db].len();
    let cases: Vec<(&str, Box<Damage>, bool)> = vec![
        (
            "one byte flipped at offset 100 of db",
            Box::new(|f| flip(f.get_mut(Path::new("db")).expect("db"), 100, 1)),
            true,
        ),
        (
            "64 bytes flipped in the middle of db",
            Box::new(move |f| flip(f.get_mut(Path::new("db")).expect("db"), db_len / 2, 64)),
            false,
        ),
        (
            "db truncated to half",
            Box::new(move |f| f.get_mut(Path::new("db")).expect("db").truncate(db_len / 2)),
            true,
        ),
        (
            "the last segment of db zeroed (a deleted segment)",
            Box::new(move |f| {
                // sled's default segment size is 512 KiB.
                let seg = 512 * 1024;
                let bytes = f.get_mut(Path::new("db")).expect("db");
                let start = (bytes.len() - 1) / seg * seg;
                bytes[start..].fill(0);
            }),
            true,
        ),
        (
            "db deleted",
            Box::new(|f| {
                f.remove(Path::new("db"));
            }),
            true,
        ),
        (
            "garbage conf",
            Box::new(|f| {
                *f.get_mut(Path::new("conf")).expect("conf") =
                    b"garbage, not a sled config".repeat(4);
            }),
            true,
        ),
    ];
    for (i, (case, damage, must_refuse)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("case{i}"));
        let mut damaged = healthy.clone();
        damage(&mut damaged);
        write_files(&data, &damaged);
        let refusals = assert_never_serves_less(case, &data, acknowledged).await;
        if *must_refuse {
            assert_eq!(refusals, STARTS, "{case}: refused every start");
        }
    }
}

#[tokio::test]
async fn force_recover_serves_what_is_left_with_fresh_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (mut damaged, acknowledged) = populated(&data).await;
    flip(damaged.get_mut(Path::new("db")).expect("db"), 100, 1);
    write_files(&data, &damaged);
    let refused = Daemon::try_start(&data, &[]).await.expect_err("refused");
    assert_eq!(refused.status.code(), Some(3), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "but revision {acknowledged} and {BREAKERS} breakers were committed"
        )),
        "{}",
        refused.stderr
    );

    let mut daemon = Daemon::start(&data, &["--force-recover"]).await;
    assert!(
        daemon
            .log()
            .contains("--force-recover: serving what is left"),
        "{}",
        daemon.log()
    );
    let (_, revision) = contents(&daemon).await;
    assert!(
        revision > acknowledged,
        "revision {revision} after recovery, {acknowledged} was handed out"
    );
    // A watcher resuming from any earlier revision must resync: those are gone.
    let err = daemon
        .breakers()
        .await
        .watch(pb::WatchRequest {
            start_revision: Some(acknowledged),
            ..Default::default()
        })
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    let mut admin = daemon.admin().await;
    let next = put(&mut admin, "after/recovery", pb::BreakerSpec::default()).await;
    assert!(next.revision > revision, "{} > {revision}", next.revision);
    daemon.signal(cbd_tests::Signal::TERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).await.success());

    // Recovered is healthy again: a plain start serves it.
    let daemon = Daemon::start(&data, &[]).await;
    assert_eq!(contents(&daemon).await.1, next.revision);
}

#[tokio::test]
async fn a_store_without_a_manifest_is_adopted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_, acknowledged) = populated(&data).await;
    std::fs::remove_file(data.join("MANIFEST")).expect("remove manifest");
    let mut daemon = Daemon::start(&data, &[]).await;
    assert_eq!(contents(&daemon).await, (BREAKERS, acknowledged));
    assert!(data.join("MANIFEST").exists(), "a manifest is written");
    daemon.signal(cbd_tests::Signal::TERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).await.success());
}
