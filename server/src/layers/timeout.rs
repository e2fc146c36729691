//! `--request-timeout` over guarded unary paths. Streams have no deadline (watch
//! streams have their own cap, `--max-watchers`).

use std::time::Duration;

use http::Request;
use tonic::body::Body;

use super::{Answer, Around, Next, reject, rpc_path};
use crate::{error::Error, methods};

/// Answers DEADLINE_EXCEEDED naming the flag once a unary call runs past `.0`.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

impl Around for RequestTimeout {
    fn around<S: Next>(&self, request: Request<Body>, mut next: S) -> Answer<S::Error> {
        let rpc = rpc_path(&request);
        if !methods::is_guarded(rpc) || methods::is_streaming(rpc) {
            return Box::pin(next.call(request));
        }
        let after = self.0;
        let answered = next.call(request);
        Box::pin(async move {
            match tokio::time::timeout(after, answered).await {
                Ok(answered) => answered,
                Err(_) => Ok(reject(Error::RequestTimeout { after })),
            }
        })
    }
}
