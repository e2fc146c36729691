//! [`WatchStream`]: a Watch that survives daemon restarts and network loss by
//! resuming from the revision after the last one it delivered.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use cbd_proto::{
    convert,
    v1::{self as pb, watch_response::Kind},
};
use futures::{Stream, stream::BoxStream};
use tonic::Streaming;

use crate::{Client, Error};

/// First reconnect delay; it doubles on each failed attempt up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `d` scaled by a random factor in [0.8, 1.2), so that the watchers of a restarted
/// daemon do not all come back at the same instant.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// Which breakers a watch follows: names starting with `prefix`, or exactly `names`
/// (the two combined by OR when both are set). Empty: every breaker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Breakers whose name starts with this.
    pub prefix: String,
    /// Exactly these breakers.
    pub names: Vec<String>,
}

impl WatchFilter {
    /// Every breaker whose name starts with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            names: Vec::new(),
        }
    }

    /// Exactly the breakers `names`.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            prefix: String::new(),
            names: names.into_iter().map(Into::into).collect(),
        }
    }
}

/// One item of a [`WatchStream`].
// `Event` is the big variant and the common one: boxing it would only add an
// allocation per event (and `cbctl` matches on `WatchEvent::Event(pb::Event)`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// Every matching breaker at `revision` (the daemon's chunks joined into one).
    /// Events after `revision` follow. `resync` is true when the snapshot replaces a
    /// resume that the daemon could no longer serve (`OUT_OF_RANGE`: the revision was
    /// compacted away): events between the last one delivered and `revision` were
    /// lost, and the caller should rebuild its view from this snapshot.
    Snapshot {
        /// The breakers, sorted by name.
        breakers: Vec<pb::BreakerStatus>,
        /// The revision the snapshot is taken at.
        revision: u64,
        /// Delivered after `OUT_OF_RANGE` rather than as the stream's first message.
        resync: bool,
    },
    /// One change, in revision order.
    Event(pb::Event),
    /// Nothing matched up to `revision`; the stream is alive.
    Progress {
        /// The daemon's revision.
        revision: u64,
    },
    /// The stream broke (connection lost, daemon restarting or silent); the watch
    /// is reconnecting by itself. Yielded once per outage, not per retry.
    Interrupted {
        /// Why, in one line.
        reason: String,
    },
    /// A stream is open again after [`WatchEvent::Interrupted`]; nothing was missed.
    Resumed {
        /// The revision the watch resumes at (`None`: it starts over with a snapshot).
        revision: Option<u64>,
    },
}

/// What a watch does when the revision it must resume at was compacted away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCompaction {
    /// Start over with a [`WatchEvent::Snapshot`] marked `resync` (the default).
    #[default]
    Resync,
    /// Yield the `OUT_OF_RANGE` error (it names the oldest retained revision) and
    /// end the stream, as `etcdctl watch --rev` does.
    Fail,
}

/// The stream of [`Client::watch`]: `Stream<Item = Result<WatchEvent, Error>>`.
///
/// It reconnects by itself (backoff from 50 ms doubling to 2 s, ±20 % jitter, reset
/// once a message arrives) when the connection breaks, the daemon restarts or stops answering (no
/// message for twice the progress interval plus a second), and resumes from the
/// revision after the last event, snapshot or progress message it delivered, so
/// nothing is missed or repeated; it says so with [`WatchEvent::Interrupted`] and
/// [`WatchEvent::Resumed`]. `OUT_OF_RANGE` turns into a fresh
/// [`WatchEvent::Snapshot`] with `resync: true` (or, with [`OnCompaction::Fail`], is
/// yielded and ends the stream). An error that retrying cannot fix
/// (`INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`, `PERMISSION_DENIED`, ...) is
/// yielded once and ends the stream. `RESOURCE_EXHAUSTED` (the daemon's watcher cap)
/// is retried with backoff.
///
/// Dropping the stream cancels the watch. The stream does its work when polled; it
/// needs a Tokio runtime.
pub struct WatchStream {
    inner: BoxStream<'static, Result<WatchEvent, Error>>,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl WatchStream {
    pub(crate) fn new(
        client: Client,
        filter: WatchFilter,
        start_revision: Option<u64>,
        on_compaction: OnCompaction,
    ) -> Self {
        let progress = client.inner.watch_progress_interval;
        let state = Resumer {
            filter: pb::WatchFilter {
                prefix: filter.prefix,
                names: filter.names,
            },
            next: start_revision,
            resync: false,
            on_compaction,
            interrupted: None,
            last_error: String::new(),
            stream: None,
            parts: Vec::new(),
            backoff: INITIAL_BACKOFF,
            retry_after: None,
            idle_timeout: progress * 2 + Duration::from_secs(1),
            open_timeout: client.inner.connect_timeout + Duration::from_secs(1),
            progress,
            done: false,
            client,
        };
        let inner = futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

/// The watch's state between messages.
struct Resumer {
    client: Client,
    filter: pb::WatchFilter,
    /// Where the next stream starts: `None` for a snapshot, `Some(r)` to resume at
    /// `r` (one past everything delivered so far).
    next: Option<u64>,
    /// The next snapshot is a resync (after `OUT_OF_RANGE`).
    resync: bool,
    on_compaction: OnCompaction,
    /// `Some(told)` while the stream is down: whether the caller was told yet.
    interrupted: Option<bool>,
    /// Why the stream went down, until the caller is told.
    last_error: String,
    stream: Option<Streaming<pb::WatchResponse>>,
    /// Snapshot chunks received so far (delivered joined, on `done`).
    parts: Vec<pb::BreakerStatus>,
    backoff: Duration,
    /// Wait this long before the next attempt.
    retry_after: Option<Duration>,
    idle_timeout: Duration,
    open_timeout: Duration,
    progress: Duration,
    done: bool,
}

impl Resumer {
    async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(false) = self.interrupted {
                self.interrupted = Some(true);
                let reason = std::mem::take(&mut self.last_error);
                return Some(Ok(WatchEvent::Interrupted { reason }));
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Some(delay) = self.retry_after.take() {
                    tokio::time::sleep(delay).await;
                }
                match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        if self.interrupted.take().is_some() {
                            return Some(Ok(WatchEvent::Resumed {
                                revision: self.next,
                            }));
                        }
                    }
                    Err(e) => {
                        if let Some(fatal) = self.on_error(e) {
                            return Some(Err(fatal));
                        }
                    }
                }
                continue;
            };
            match tokio::time::timeout(self.idle_timeout, stream.message()).await {
                Ok(Ok(Some(msg))) => {
                    self.backoff = INITIAL_BACKOFF;
                    if let Some(event) = self.accept(msg) {
                        return Some(Ok(event));
                    }
                }
                Ok(Ok(None)) => {
                    tracing::debug!("watch stream ended by cbd; resuming");
                    self.interrupt("the stream was closed by cbd".into());
                }
                Ok(Err(status)) => {
                    if let Some(fatal) = self.on_error(Error::from(status)) {
                        return Some(Err(fatal));
                    }
                }
                Err(_) => {
                    tracing::warn!(idle = ?self.idle_timeout, "watch stream silent; reconnecting");
                    self.interrupt(format!("no message for {:?}", self.idle_timeout));
                }
            }
        }
    }

    async fn open(&mut self) -> Result<Streaming<pb::WatchResponse>, Error> {
        self.parts.clear();
        let request = pb::WatchRequest {
            filter: Some(self.filter.clone()),
            start_revision: self.next,
            progress_interval: Some(convert::duration_to_proto(self.progress)),
        };
        let mut rpc = self.client.breakers_client();
        match tokio::time::timeout(self.open_timeout, rpc.watch(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(Error::from(status)),
            Err(_) => Err(Error::deadline("Watch", self.open_timeout)),
        }
    }

    /// Handles an error: `Some(e)` to yield and end the stream, `None` to go on.
    fn on_error(&mut self, e: Error) -> Option<Error> {
        self.stream = None;
        if matches!(e, Error::Compacted { .. }) && self.on_compaction == OnCompaction::Resync {
            tracing::warn!(error = %e, "watch revision compacted away; starting over with a snapshot");
            self.next = None;
            self.resync = true;
            return None;
        }
        if e.is_transient() || matches!(e, Error::ResourceExhausted(_)) {
            tracing::debug!(error = %e, next = ?self.next, "watch interrupted; resuming");
            self.interrupt(e.to_string());
            return None;
        }
        self.done = true;
        Some(e)
    }

    /// The stream is down: retry with backoff, and tell the caller once per outage.
    fn interrupt(&mut self, reason: String) {
        if self.interrupted.is_none() {
            self.interrupted = Some(false);
            self.last_error = reason;
        }
        self.schedule_retry();
    }

    fn schedule_retry(&mut self) {
        self.stream = None;
        self.retry_after = Some(jitter(self.backoff));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Takes one message in; returns what to deliver, if anything.
    fn accept(&mut self, msg: pb::WatchResponse) -> Option<WatchEvent> {
        match msg.kind? {
            Kind::Snapshot(s) => {
                if self.next.is_some() {
                    // Only a snapshot stream sends these; a resume never does.
                    return None;
                }
                self.parts.extend(s.breakers);
                if !s.done {
                    return None;
                }
                self.next = Some(s.revision + 1);
                Some(WatchEvent::Snapshot {
                    breakers: std::mem::take(&mut self.parts),
                    revision: s.revision,
                    resync: std::mem::take(&mut self.resync),
                })
            }
            Kind::Event(e) => {
                match self.next {
                    // Before the snapshot is complete: not part of this stream's order.
                    None => return None,
                    // Already delivered.
                    Some(next) if e.revision < next => return None,
                    Some(_) => {}
                }
                self.next = Some(e.revision + 1);
                Some(WatchEvent::Event(e))
            }
            Kind::ProgressRevision(revision) => {
                let next = self.next?;
                self.next = Some(next.max(revision + 1));
                Some(WatchEvent::Progress { revision })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resumer(client: Client, next: Option<u64>) -> Resumer {
        Resumer {
            client,
            filter: pb::WatchFilter::default(),
            next,
            resync: false,
            on_compaction: OnCompaction::Resync,
            interrupted: None,
            last_error: String::new(),
            stream: None,
            parts: Vec::new(),
            backoff: INITIAL_BACKOFF,
            retry_after: None,
            idle_timeout: Duration::from_secs(1),
            open_timeout: Duration::from_secs(1),
            progress: Duration::from_secs(1),
            done: false,
        }
    }

    fn event(revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            kind: Some(Kind::Event(pb::Event {
                revision,
                name: "a".into(),
                ..Default::default()
            })),
        }
    }

    fn snapshot(names: &[&str], revision: u64, done: bool) -> pb::WatchResponse {
        pb::WatchResponse {
            kind: Some(Kind::Snapshot(pb::Snapshot {
                breakers: names
                    .iter()
                    .map(|n| pb::BreakerStatus {
                        name: (*n).into(),
                        ..Default::default()
                    })
                    .collect(),
                revision,
                done,
            })),
        }
    }

    fn progress(revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            kind: Some(Kind::ProgressRevision(revision)),
        }
    }

    fn client() -> Client {
        Client::builder("http://127.0.0.1:1")
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn snapshot_chunks_are_joined_and_resume_after_them() {
        let mut r = resumer(client(), None);
        assert!(r.accept(snapshot(&["a", "b"], 7, false)).is_none());
        match r.accept(snapshot(&["c"], 7, true)) {
            Some(WatchEvent::Snapshot {
                breakers,
                revision,
                resync,
            }) => {
                let names: Vec<_> = breakers.iter().map(|b| b.name.as_str()).collect();
                assert_eq!(names, ["a", "b", "c"]);
                assert_eq!(revision, 7);
                assert!(!resync);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert_eq!(r.next, Some(8));
    }

    #[tokio::test]
    async fn replayed_events_are_not_delivered_twice() {
        let mut r = resumer(client(), Some(5));
        assert!(r.accept(event(4)).is_none(), "before the start");
        assert!(matches!(r.accept(event(5)), Some(WatchEvent::Event(_))));
        assert!(matches!(r.accept(event(9)), Some(WatchEvent::Event(_))));
        assert!(r.accept(event(9)).is_none(), "a duplicate");
        assert!(
            r.accept(event(6)).is_none(),
            "older than the last delivered"
        );
        assert_eq!(r.next, Some(10));
    }

    #[tokio::test]
    async fn progress_moves_the_resume_point_forward_only() {
        let mut r = resumer(client(), Some(5));
        assert!(matches!(
            r.accept(progress(20)),
            Some(WatchEvent::Progress { revision: 20 })
        ));
        assert_eq!(r.next, Some(21));
        r.accept(progress(3));
        assert_eq!(r.next, Some(21));
    }

    #[tokio::test]
    async fn errors_sort_into_retry_resync_and_fail() {
        let mut r = resumer(client(), Some(5));
        assert!(
            r.on_error(Error::from(tonic::Status::unavailable("x")))
                .is_none()
        );
        assert!(r.retry_after.is_some());
        assert!(!r.done);

        assert!(
            r.on_error(Error::from(tonic::Status::out_of_range("x")))
                .is_none()
        );
        assert_eq!(r.next, None, "starts over with a snapshot");
        assert!(r.resync);
        match r.accept(snapshot(&[], 30, true)) {
            Some(WatchEvent::Snapshot { resync, .. }) => assert!(resync),
            other => panic!("expected a snapshot, got {other:?}"),
        }

        let fatal = r.on_error(Error::from(tonic::Status::invalid_argument("x")));
        assert!(matches!(fatal, Some(Error::InvalidArgument(_))));
        assert!(r.done);
    }

    #[test]
    fn backoff_jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(
                d >= Duration::from_millis(800) && d < Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }
}
