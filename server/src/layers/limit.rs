//! `--max-concurrent-requests` over guarded paths: past it a request is answered
//! RESOURCE_EXHAUSTED at once, never queued. A stream holds its slot only while it
//! is being opened.

use std::sync::Arc;

use http::Request;
use tokio::sync::Semaphore;
use tonic::body::Body;

use super::{Answer, Around, Next, reject, rpc_path};
use crate::{error::Error, methods};

/// The request slots.
#[derive(Clone, Debug)]
pub struct RequestLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl RequestLimit {
    /// `max` requests at a time.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

impl Around for RequestLimit {
    fn around<S: Next>(&self, request: Request<Body>, mut next: S) -> Answer<S::Error> {
        if !methods::is_guarded(rpc_path(&request)) {
            return Box::pin(next.call(request));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let e = Error::LimitReached {
                limit: "--max-concurrent-requests",
                max: self.max as u64,
            };
            return Box::pin(async move { Ok(reject(e)) });
        };
        let answered = next.call(request);
        Box::pin(async move {
            let answered = answered.await;
            drop(slot);
            answered
        })
    }
}
