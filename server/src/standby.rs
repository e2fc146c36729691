//! What a standby replica serves (docs/DESIGN.md §11): gRPC health, and for every
//! other call `UNAVAILABLE` naming the leader in `cbd-leader` metadata, so a client
//! goes there. A standby decides nothing and writes nothing.

use axum::body::Body;
use cbd_proto::LEADER_METADATA;
use tokio::sync::watch;
use tonic::{Code, Status, metadata::MetadataMap, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};

/// The named health service that is SERVING only on the replica that decides: the
/// leader, or a daemon on its own store. Load balancers and Kubernetes route on it.
pub const LEADER_HEALTH_SERVICE: &str = "cbd.v1.Leader";

/// Who leads, as a standby last saw it: the leader's URL; `None` while no leader is
/// known (an election is under way).
pub type LeaderHint = watch::Receiver<Option<String>>;

/// The answer to a call a standby cannot serve. `leader`: where to go instead.
pub fn not_leader(leader: Option<&str>) -> Status {
    // Present even when empty: it tells a client this came from a standby (go
    // elsewhere), not from a leader whose store is failing (stay).
    let leader = leader.and_then(|url| url.parse().ok().map(|v| (url, v)));
    let mut metadata = MetadataMap::new();
    let message = match leader {
        Some((url, value)) => {
            metadata.insert(LEADER_METADATA, value);
            format!("this cbd replica is a standby; the leader is {url}")
        }
        None => {
            metadata.insert(LEADER_METADATA, "".parse().expect("empty is a valid value"));
            "this cbd replica is a standby and no leader is elected yet".to_owned()
        }
    };
    Status::with_metadata(Code::Unavailable, message, metadata)
}

/// Routes of a standby: `health` as given, anything else answered by [`not_leader`]
/// with the leader `hint` holds at the time of the call.
pub fn routes<H: Health>(health: HealthServer<H>, hint: LeaderHint) -> Routes {
    let router = Routes::new(health).into_axum_router().fallback(move || {
        let leader = hint.borrow().clone();
        async move {
            let (parts, ()) = not_leader(leader.as_deref()).into_http::<()>().into_parts();
            http::Response::from_parts(parts, Body::empty())
        }
    });
    Routes::from(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_leader_in_metadata_and_message() {
        let status = not_leader(Some("http://127.0.0.1:7411"));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.metadata().get(LEADER_METADATA).unwrap(),
            "http://127.0.0.1:7411"
        );
        assert!(status.message().contains("http://127.0.0.1:7411"));
    }

    #[test]
    fn without_a_leader_the_metadata_is_empty() {
        let status = not_leader(None);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(LEADER_METADATA).unwrap(), "");
        assert!(status.message().contains("no leader"));
    }
}
