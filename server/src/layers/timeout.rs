//! `--request-timeout` over guarded unary paths. Streams have no deadline (watch
//! streams have their own cap, `--max-watchers`).

use std::time::Duration;

use http::{Request, Response};
use tonic::body::Body;
use tower::Service;

use super::{Around, BoxFuture, reject, rpc_path};
use crate::{error::Error, methods};

/// Answers DEADLINE_EXCEEDED naming the flag once a unary call runs past `.0`.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeout(pub Duration);

impl Around for RequestTimeout {
    fn around<S>(
        &self,
        request: Request<Body>,
        mut next: S,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
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
