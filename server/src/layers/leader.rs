//! Only the leader decides (docs/DESIGN.md §11.3): on a replica, every guarded call
//! is first asked whether this replica still leads, so that in the instants between
//! its lease's deadline passing and its connections being cut nothing is decided.
//! A daemon on its own store has no check.

use std::sync::Arc;

use http::Request;
use tonic::body::Body;

use super::{Answer, Around, Next, reject, rpc_path};
use crate::{error::Error, methods};

/// Whether this replica may decide now.
pub trait Leading: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` while it leads; [`Error::NotLeader`] naming who leads, as far as known.
    fn check(&self) -> Result<(), Error>;
}

/// Refuses guarded calls while `.0` says this replica does not lead; `None`: always
/// leads (one daemon on its own store).
#[derive(Clone, Debug)]
pub struct LeaderOnly(pub Option<Arc<dyn Leading>>);

impl Around for LeaderOnly {
    fn around<S: Next>(&self, request: Request<Body>, mut next: S) -> Answer<S::Error> {
        if let Some(leading) = &self.0
            && methods::is_guarded(rpc_path(&request))
            && let Err(e) = leading.check()
        {
            return Box::pin(async move { Ok(reject(e)) });
        }
        Box::pin(next.call(request))
    }
}
