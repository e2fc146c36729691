//! `GET /dashboard/api/feed`: the live feed as server-sent events, streamed from the
//! Watch machinery the gRPC Watch uses ([`Watcher::start`](crate::service::watch::Watcher::start)):
//! the same resume-by-revision, catch-up from the log for a slow reader, progress
//! on a quiet stream, end at shutdown, and the same `--max-watchers` count.
//!
//! Each committed event is sent as `event: change` with `id:` its revision (so a
//! reconnecting `EventSource` resumes after it with `Last-Event-ID`) and the
//! breaker's status at sending time: state, override, generation, window counts,
//! open-until. A quiet stream gets `event: progress`; a stream that cannot go on
//! (its next revision was compacted) gets `event: reset` and ends, and the page
//! reloads.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::sse::{Event as SseEvent, Sse},
};
use cbd_proto::v1::{self as pb, watch_response::Kind};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;

use super::{
    Dashboard,
    json::{ErrorBody, Event},
};
use crate::error::Error;

/// How often a quiet feed gets a progress event (also what keeps proxies from
/// closing it).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Data of a `progress` event: everything up to `revision` has been considered.
#[derive(Debug, serde::Serialize)]
struct Progress {
    revision: u64,
}

/// Query of `GET /dashboard/api/feed`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Only breakers whose names start with this.
    #[serde(default)]
    pub prefix: String,
    /// Send the events after this revision (the `revision` of a breakers page);
    /// unset: from now on. `Last-Event-ID` beats it.
    pub after: Option<u64>,
}

/// `GET /dashboard/api/feed?prefix=&after=`.
pub async fn feed(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Error> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::invalid("Last-Event-ID", "not a revision"))
        })
        .transpose()?;
    let after = resume.or(q.after).unwrap_or_else(|| d.registry.revision());
    let watch = d.watcher.start(pb::WatchRequest {
        filter: Some(pb::WatchFilter {
            prefix: q.prefix,
            names: Vec::new(),
        }),
        start_revision: Some(after.saturating_add(1)),
        progress_interval: Some(cbd_proto::convert::duration_to_proto(PROGRESS_INTERVAL)),
    })?;
    let registry = d.registry.clone();
    let events = watch
        // Stop after the first error, once it is sent as `reset`.
        .scan(false, |ended, item| {
            let out = (!*ended).then_some(item);
            *ended |= matches!(&out, Some(Err(_)));
            std::future::ready(out)
        })
        .filter_map(move |item| {
            let sent = match item {
                Ok(pb::WatchResponse {
                    kind: Some(Kind::Event(event)),
                }) => {
                    // The status now, not at the event: what the page shows for the
                    // row; window counts are only in memory, never in events.
                    let status = registry.get(&event.name).ok().map(|(s, _)| s);
                    let id = event.revision.to_string();
                    Some(
                        SseEvent::default()
                            .event("change")
                            .id(id)
                            .json_data(Event::new(event, status)),
                    )
                }
                Ok(pb::WatchResponse {
                    kind: Some(Kind::ProgressRevision(revision)),
                }) => Some(
                    SseEvent::default()
                        .event("progress")
                        .json_data(Progress { revision }),
                ),
                // Never sent on a stream with a start revision.
                Ok(_) => None,
                Err(status) => Some(SseEvent::default().event("reset").json_data(ErrorBody {
                    code: "RESET",
                    message: status.message().to_owned(),
                })),
            };
            // Serialising these shapes cannot fail; an error would only drop the item.
            std::future::ready(sent.and_then(Result::ok).map(Ok))
        });
    Ok(Sse::new(events))
}
