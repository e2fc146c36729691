//! A standby's warm copy (docs/DESIGN.md §11.3): every record of the cluster, read
//! once and then kept current by an etcd watch of the prefix, so that a replica that
//! wins the election serves without first reading every record from etcd.
//!
//! The copy knows the etcd revision it is complete up to. A replica that won with
//! `P/leader` created at etcd revision `C` takes the copy once it has seen `C`: the
//! key is under the watched prefix, and every commit of the old leader landed before
//! it (later ones fail on the fence), so the copy then holds exactly what a fresh
//! read would.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{EventType, WatchOptions};
use parking_lot::Mutex;
use prost::Message;
use tokio::{sync::watch, task::JoinHandle};

use super::{Connection, EtcdStore, Keys, parse_u64};
use crate::store::{Loaded, StoredBreaker};

/// Longest a new leader waits for a warm copy's first read to finish.
pub const FIRST_READ: Duration = Duration::from_secs(30);

/// The copy as last applied.
#[derive(Debug, Default)]
struct Copy {
    breakers: BTreeMap<String, StoredBreaker>,
    revision: u64,
    /// `None`: `P/oldest` not written yet (an empty store).
    oldest_retained: Option<u64>,
}

/// A warm copy that follows etcd until dropped.
#[derive(Debug)]
pub struct Warm {
    copy: Arc<Mutex<Copy>>,
    /// The etcd revision the copy is complete up to; 0 before the first read.
    complete_at: watch::Receiver<i64>,
    follower: JoinHandle<()>,
}

impl Warm {
    /// Starts following the cluster under `prefix`.
    pub fn follow(conn: &Connection, prefix: &str) -> Self {
        let copy = Arc::new(Mutex::new(Copy::default()));
        let (complete_at_tx, complete_at) = watch::channel(0);
        let follower = conn.runtime.handle().spawn(follow(
            conn.client(),
            Keys::new(prefix),
            copy.clone(),
            complete_at_tx,
        ));
        Self {
            copy,
            complete_at,
            follower,
        }
    }

    /// The copy as a [`Loaded`], once it is complete up to etcd revision `at_least`;
    /// `None` if it is not within `wait` of its first read (the caller reads etcd
    /// instead). The first read itself is waited for up to [`FIRST_READ`]: it is
    /// what the caller would do instead (at 100k breakers, waiting a fixed second
    /// for a copy still reading and then reading again cost 2.7 s instead of 1.7).
    pub async fn loaded_at(&self, at_least: i64, wait: Duration) -> Option<Loaded> {
        let mut complete_at = self.complete_at.clone();
        tokio::time::timeout(FIRST_READ, complete_at.wait_for(|at| *at > 0))
            .await
            .ok()?
            .ok()?;
        tokio::time::timeout(wait, complete_at.wait_for(|at| *at >= at_least))
            .await
            .ok()?
            .ok()?;
        let copy = self.copy.lock();
        Some(Loaded {
            breakers: copy
                .breakers
                .iter()
                .map(|(name, record)| (name.clone(), record.clone()))
                .collect(),
            revision: copy.revision,
            oldest_retained: copy.oldest_retained.unwrap_or(copy.revision + 1),
        })
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Reads everything, then applies the prefix's watch events; reads again after any
/// break of the watch (a compaction, etcd restarting).
async fn follow(
    client: etcd_client::Client,
    keys: Keys,
    copy: Arc<Mutex<Copy>>,
    complete_at: watch::Sender<i64>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let (loaded, at) = match EtcdStore::load_at(client.clone(), keys.clone()).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(error = %e, "warm copy: reading etcd");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        {
            let mut copy = copy.lock();
            copy.revision = loaded.revision;
            copy.oldest_retained = Some(loaded.oldest_retained);
            copy.breakers = loaded.breakers.into_iter().collect();
        }
        complete_at.send_replace(at);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(at + 1);
        let Ok(mut stream) = client.clone().watch(keys.key(""), Some(options)).await else {
            tokio::time::sleep(pause).await;
            continue;
        };
        pause = Duration::from_millis(50);
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() || response.compact_revision() > 0 {
                break;
            }
            let mut last = None;
            let mut undecodable = false;
            {
                let mut copy = copy.lock();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    if apply(&keys, &mut copy, event.event_type(), kv).is_err() {
                        undecodable = true;
                        break;
                    }
                    last = Some(kv.mod_revision());
                }
            }
            if undecodable {
                tracing::warn!("warm copy: an undecodable record; reading everything again");
                break;
            }
            if let Some(at) = last {
                complete_at.send_replace(at);
            }
        }
        tracing::debug!("warm copy: the watch ended; reading everything again");
    }
}

/// Applies one event under the prefix to the copy.
fn apply(
    keys: &Keys,
    copy: &mut Copy,
    kind: EventType,
    kv: &etcd_client::KeyValue,
) -> Result<(), crate::error::Error> {
    let breakers = keys.breakers();
    if let Some(name) = kv.key().strip_prefix(breakers.as_slice()) {
        let name = String::from_utf8_lossy(name).into_owned();
        match kind {
            EventType::Put => {
                copy.breakers
                    .insert(name, StoredBreaker::decode(kv.value())?);
            }
            EventType::Delete => {
                copy.breakers.remove(&name);
            }
        }
    } else if kv.key() == keys.rev().as_slice() && kind == EventType::Put {
        copy.revision = parse_u64("rev", kv.value())?;
    } else if kv.key() == keys.oldest().as_slice() && kind == EventType::Put {
        copy.oldest_retained = Some(parse_u64("oldest", kv.value())?);
    }
    Ok(())
}
