//! Following the leader among replicas (docs/DESIGN.md §11). Every RPC of a
//! [`Client`](crate::Client) goes through [`Follow`], the channel to the endpoint in
//! use. When an answer is `UNAVAILABLE` with `cbd-leader` naming the leader, it
//! switches there. When the value is empty (a standby that knows no leader) or the
//! endpoint cannot be reached, it switches to the next configured endpoint. The call
//! that found out still fails (its fallback policy applies); the next goes to the new
//! place.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use cbd_proto::LEADER_METADATA;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tonic::{body::Body, codegen::http, transport::Channel};
use tower::Service;

use crate::Error;

/// Dials (lazily) the channel for a URL, with the client's TLS and timeouts.
pub(crate) type Dial = Arc<dyn Fn(&str) -> Result<Channel, Error> + Send + Sync>;

/// The channel to the endpoint in use, switched on a leader hint or an unreachable
/// endpoint. Cheap to clone: clones share the choice.
#[derive(Clone)]
pub struct Follow {
    shared: Arc<Shared>,
}

struct Shared {
    /// The configured endpoints, in order.
    endpoints: Vec<String>,
    /// `None`: one channel given by the caller, never switched.
    dial: Option<Dial>,
    current: RwLock<Current>,
}

struct Current {
    url: String,
    channel: Channel,
    /// Bumped at every switch, so that the calls that failed on one endpoint move
    /// the client on once, not once each.
    generation: u64,
    /// The configured endpoint tried last (the next is the one after it).
    index: usize,
    /// Channels dialled so far, by URL: switching back reuses the connection.
    dialled: HashMap<String, Channel>,
}

impl Follow {
    /// Over `endpoints` (at least one URL), starting with the first, or with
    /// `start`: the index of an endpoint and a channel already connected to it.
    pub(crate) fn new(
        endpoints: Vec<String>,
        dial: Dial,
        start: Option<(usize, Channel)>,
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("endpoint: none given".into()));
        }
        let mut dialled = HashMap::new();
        for url in &endpoints {
            // Every endpoint is checked now, so a bad one fails the build, not a switch.
            dialled.insert(url.clone(), dial(url)?);
        }
        let (index, channel) = match start {
            Some((index, channel)) => {
                dialled.insert(endpoints[index].clone(), channel.clone());
                (index, channel)
            }
            None => (0, dialled[&endpoints[0]].clone()),
        };
        Ok(Self::with(endpoints, Some(dial), index, channel, dialled))
    }

    /// One channel the caller dialled, never switched.
    pub(crate) fn fixed(url: String, channel: Channel) -> Self {
        Self::with(vec![url], None, 0, channel, HashMap::new())
    }

    /// Starting at `endpoints[index]`, over `channel`.
    fn with(
        endpoints: Vec<String>,
        dial: Option<Dial>,
        index: usize,
        channel: Channel,
        dialled: HashMap<String, Channel>,
    ) -> Self {
        let url = endpoints[index].clone();
        Self {
            shared: Arc::new(Shared {
                endpoints,
                dial,
                current: RwLock::new(Current {
                    url,
                    channel,
                    generation: 0,
                    index,
                    dialled,
                }),
            }),
        }
    }

    /// The endpoint in use now.
    pub fn current(&self) -> String {
        self.shared.current.read().url.clone()
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }
}

impl Shared {
    fn choose(&self) -> (u64, Channel) {
        let current = self.current.read();
        (current.generation, current.channel.clone())
    }

    /// After a call on `generation` failed to reach its endpoint, or a standby knew
    /// no leader: the next configured endpoint.
    fn next(&self, generation: u64) {
        let Some(dial) = &self.dial else { return };
        let mut current = self.current.write();
        if current.generation != generation || self.endpoints.len() < 2 {
            return;
        }
        let index = (current.index + 1) % self.endpoints.len();
        let url = self.endpoints[index].clone();
        tracing::debug!(from = %current.url, to = %url, "cbd endpoint unreachable or a standby: trying the next");
        current.index = index;
        switch(&mut current, dial, url);
    }

    /// A standby named the leader: go there.
    fn leader(&self, generation: u64, url: &str) {
        let Some(dial) = &self.dial else { return };
        let mut current = self.current.write();
        if current.generation != generation || current.url == url {
            return;
        }
        tracing::info!(from = %current.url, to = %url, "cbd: following the leader");
        if let Some(index) = self.endpoints.iter().position(|e| e == url) {
            current.index = index;
        }
        switch(&mut current, dial, url.to_owned());
    }
}

/// Points `current` at `url`, dialling it if it is new. A URL that cannot be dialled
/// (a leader advertising nonsense) leaves the choice as it was.
fn switch(current: &mut Current, dial: &Dial, url: String) {
    let channel = match current.dialled.get(&url) {
        Some(channel) => channel.clone(),
        None => match dial(&url) {
            Ok(channel) => {
                current.dialled.insert(url.clone(), channel.clone());
                channel
            }
            Err(e) => {
                tracing::warn!(leader = %url, error = %e, "cbd: cannot follow the leader's URL");
                return;
            }
        },
    };
    current.url = url;
    current.channel = channel;
    current.generation += 1;
}

/// What an answer says about where to go.
fn hint(response: &http::Response<Body>) -> Option<Option<&str>> {
    // A standby answers trailers-only, so status and hint are in the headers.
    let headers = response.headers();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"14") {
        return None;
    }
    let leader = headers.get(LEADER_METADATA)?;
    Some(leader.to_str().ok().filter(|url| !url.is_empty()))
}

impl Service<http::Request<Body>> for Follow {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the chosen channel's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let (generation, mut channel) = shared.choose();
        Box::pin(async move {
            let result = match std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
                Ok(()) => channel.call(request).await,
                Err(e) => Err(e),
            };
            match &result {
                Err(_) => shared.next(generation),
                Ok(response) => match hint(response) {
                    Some(Some(leader)) => shared.leader(generation, leader),
                    Some(None) => shared.next(generation),
                    None => {}
                },
            }
            result
        })
    }
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("endpoints", &self.shared.endpoints)
            .field("current", &self.current())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<&str>, leader: Option<&str>) -> http::Response<Body> {
        let mut response = http::Response::new(Body::empty());
        if let Some(status) = status {
            response
                .headers_mut()
                .insert("grpc-status", status.parse().unwrap());
        }
        if let Some(leader) = leader {
            response
                .headers_mut()
                .insert(LEADER_METADATA, leader.parse().unwrap());
        }
        response
    }

    #[test]
    fn only_a_standbys_unavailable_is_a_hint() {
        let to = answer(Some("14"), Some("http://10.0.0.7:7411"));
        assert_eq!(hint(&to), Some(Some("http://10.0.0.7:7411")));
        // A standby that knows no leader: go to the next endpoint.
        assert_eq!(hint(&answer(Some("14"), Some(""))), Some(None));
        // The leader's own UNAVAILABLE (its store fails): stay.
        assert_eq!(hint(&answer(Some("14"), None)), None);
        // Anything but UNAVAILABLE, or a response whose status comes in trailers.
        assert_eq!(hint(&answer(Some("5"), Some("http://x:1"))), None);
        assert_eq!(hint(&answer(None, Some("http://x:1"))), None);
    }

    fn follow(urls: &[&str]) -> Follow {
        let dial: Dial = Arc::new(|url: &str| {
            Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
                .map_err(|e| Error::Config(e.to_string()))?
                .connect_lazy())
        });
        Follow::new(urls.iter().map(|u| (*u).to_owned()).collect(), dial, None).unwrap()
    }

    #[tokio::test]
    async fn calls_failing_on_one_endpoint_move_the_client_once() {
        let f = follow(&[
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
        ]);
        let (generation, _) = f.shared.choose();
        f.shared.next(generation);
        f.shared.next(generation); // a second call that failed on the first endpoint
        assert_eq!(f.current(), "http://127.0.0.1:2");
        let (generation, _) = f.shared.choose();
        f.shared.next(generation);
        f.shared.next(generation + 1);
        assert_eq!(
            f.current(),
            "http://127.0.0.1:1",
            "round and back to the first"
        );
    }

    #[tokio::test]
    async fn a_named_leader_outside_the_list_is_followed_then_the_list_resumes() {
        let f = follow(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        f.shared.leader(0, "http://127.0.0.1:9");
        assert_eq!(f.current(), "http://127.0.0.1:9");
        let (generation, _) = f.shared.choose();
        f.shared.next(generation); // the leader went away
        assert_eq!(f.current(), "http://127.0.0.1:2");
        // A leader URL that cannot be dialled leaves the choice as it was.
        let (generation, _) = f.shared.choose();
        f.shared.leader(generation, "not a url");
        assert_eq!(f.current(), "http://127.0.0.1:2");
    }

    #[tokio::test]
    async fn a_fixed_channel_never_moves() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let f = Follow::fixed("http://127.0.0.1:1".into(), channel);
        f.shared.next(0);
        f.shared.leader(0, "http://127.0.0.1:9");
        assert_eq!(f.current(), "http://127.0.0.1:1");
    }
}
