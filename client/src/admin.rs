//! Typed calls of the control plane (`cbd.v1.Admin`) and the raw data-plane calls
//! an operator tool makes, on a [`Client`]'s channel with its token.

use crate::{AuthChannel, Client, Error, pb};

/// The `cbd.v1.Admin` service of a [`Client`]: specs, overrides, resets, and the
/// daemon's own status. Each call sends the client's token and fails with [`Error`],
/// sorted by gRPC code. There is no deadline of its own: wrap a call in
/// `tokio::time::timeout` to bound it.
///
/// ```no_run
/// # async fn run() -> Result<(), cbd_client::Error> {
/// let client = cbd_client::Client::connect("http://127.0.0.1:7411").await?;
/// let spec = cbd_client::pb::BreakerSpec { consecutive_failures: Some(3), ..Default::default() };
/// let put = client.admin().put("payments", spec).await?;
/// println!("created: {}, revision {}", put.created, put.revision);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    rpc: pb::admin_client::AdminClient<AuthChannel>,
}

impl Client {
    /// The control plane on this client's channel; see [`Admin`].
    pub fn admin(&self) -> Admin {
        Admin {
            rpc: self.admin_client(),
        }
    }

    /// One `Acquire` straight to the daemon: no fallback policy, no cache, no
    /// deadline of its own (for operator tools; services use [`Client::breaker`]).
    pub async fn acquire_once(&self, name: &str) -> Result<pb::AcquireResponse, Error> {
        let request = pb::AcquireRequest { name: name.into() };
        Ok(self.breakers_client().acquire(request).await?.into_inner())
    }

    /// One `Report` of a permit from [`Client::acquire_once`]; `duration` is how
    /// long the call took (`None`: unknown, never slow).
    pub async fn report_once(
        &self,
        permit: Vec<u8>,
        outcome: pb::Outcome,
        duration: Option<std::time::Duration>,
    ) -> Result<pb::ReportResponse, Error> {
        let request = pb::ReportRequest {
            permit,
            outcome: outcome as i32,
            duration: duration.map(cbd_proto::convert::duration_to_proto),
        };
        Ok(self.breakers_client().report(request).await?.into_inner())
    }
}

impl Admin {
    /// The breaker `name`'s spec and status (`NotFound` when there is none).
    pub async fn get(&mut self, name: &str) -> Result<pb::GetBreakerResponse, Error> {
        let request = pb::GetBreakerRequest { name: name.into() };
        Ok(self.rpc.get_breaker(request).await?.into_inner())
    }

    /// One page of the breakers whose name starts with `prefix`, in name order:
    /// at most `page_size` (0: the daemon's default), from `page_token` (empty: the
    /// first page; then the previous page's `next_page_token`).
    pub async fn list_page(
        &mut self,
        prefix: &str,
        page_size: u32,
        page_token: String,
    ) -> Result<pb::ListBreakersResponse, Error> {
        let request = pb::ListBreakersRequest {
            prefix: prefix.into(),
            page_size,
            page_token,
        };
        Ok(self.rpc.list_breakers(request).await?.into_inner())
    }

    /// Creates `name` or replaces its whole spec (unset fields take their
    /// defaults); says whether it was created or left unchanged.
    pub async fn put(
        &mut self,
        name: &str,
        spec: pb::BreakerSpec,
    ) -> Result<pb::PutBreakerResponse, Error> {
        let request = pb::PutBreakerRequest {
            name: name.into(),
            spec: Some(spec),
        };
        Ok(self.rpc.put_breaker(request).await?.into_inner())
    }

    /// Deletes `name`; its outstanding permits become invalid.
    pub async fn delete(&mut self, name: &str) -> Result<pb::DeleteBreakerResponse, Error> {
        let request = pb::DeleteBreakerRequest { name: name.into() };
        Ok(self.rpc.delete_breaker(request).await?.into_inner())
    }

    /// Sets the operator override of `name` (`Override::Unspecified` clears it).
    pub async fn set_override(
        &mut self,
        name: &str,
        r#override: pb::Override,
    ) -> Result<pb::SetOverrideResponse, Error> {
        let request = pb::SetOverrideRequest {
            name: name.into(),
            r#override: r#override as i32,
        };
        Ok(self.rpc.set_override(request).await?.into_inner())
    }

    /// Back to CLOSED with an empty window and no backoff (an override stays).
    pub async fn reset(&mut self, name: &str) -> Result<pb::ResetBreakerResponse, Error> {
        let request = pb::ResetBreakerRequest { name: name.into() };
        Ok(self.rpc.reset_breaker(request).await?.into_inner())
    }

    /// The daemon's own status: version, uptime, revisions, breakers, streams,
    /// leases, store size and last commit (`cbctl status`). The `client` role may
    /// call it.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, Error> {
        Ok(self.rpc.status(pb::StatusRequest {}).await?.into_inner())
    }
}
