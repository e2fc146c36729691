//! Timers (docs/DESIGN.md §3): OPEN → HALF_OPEN when the open duration elapses, and expiry
//! of half-open probes, with no traffic needed. One task keeps the deadlines of
//! every breaker in order and ticks each breaker when its deadline comes.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use cbd_breaker::Timestamp;
use tokio::{sync::mpsc, time::Instant};

use super::{Shared, entry::Entry};

/// A request to tick `entry` at `at`.
pub(crate) type Schedule = (Timestamp, Arc<Entry>);

/// Runs until every sender of `schedule` is gone, or the registry is closed.
pub(crate) async fn run(shared: Arc<Shared>, mut schedule: mpsc::UnboundedReceiver<Schedule>) {
    // Keyed by (deadline, entry address) so that two breakers due at once both stay.
    let mut due: BTreeMap<(Timestamp, usize), Arc<Entry>> = BTreeMap::new();
    let mut closed = shared.closed.subscribe();
    loop {
        let sleep_for = due.first_key_value().map(|((at, _), _)| {
            at.saturating_duration_since(shared.config.clock.now()) + Duration::from_millis(1)
        });
        tokio::select! {
            msg = schedule.recv() => match msg {
                Some((at, entry)) => {
                    let key = (at, Arc::as_ptr(&entry) as usize);
                    due.insert(key, entry);
                }
                None => break,
            },
            _ = closed.wait_for(|closed| *closed) => break,
            () = sleep(sleep_for) => {
                let now = shared.config.clock.now();
                while let Some(entry) = due.first_entry().and_then(|e| (e.key().0 <= now).then(|| e.remove())) {
                    shared.tick(&entry);
                }
            }
        }
    }
}

async fn sleep(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep_until(Instant::now() + d).await,
        None => std::future::pending().await,
    }
}
