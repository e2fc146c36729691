//! Bearer token and role, for guarded paths when `--auth-file` is set; the caller's
//! [`Identity`](crate::auth::Identity) goes into the request's extensions.

use std::sync::Arc;

use http::Request;
use tonic::body::Body;

use super::{Answer, Around, Next, reject, rpc_path};
use crate::{auth::Auth, methods};

/// Answers UNAUTHENTICATED or PERMISSION_DENIED before calling through; `None`
/// (no `--auth-file`) lets every request through.
#[derive(Clone, Debug)]
pub struct Authenticate(pub Option<Arc<Auth>>);

impl Around for Authenticate {
    fn around<S: Next>(&self, mut request: Request<Body>, mut next: S) -> Answer<S::Error> {
        let rpc = rpc_path(&request);
        if let Some(auth) = self.0.as_ref().filter(|_| methods::is_guarded(rpc)) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match auth.check(header, rpc) {
                // Handlers read it to name the actor of an operator change.
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                }
                Err(e) => return Box::pin(async move { Ok(reject(e)) }),
            }
        }
        Box::pin(next.call(request))
    }
}
