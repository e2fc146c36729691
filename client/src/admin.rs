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
    /// Sent with every write as its `reason` (see [`Admin::with_reason`]).
    reason: String,
}

impl Client {
    /// The control plane on this client's channel; see [`Admin`].
    pub fn admin(&self) -> Admin {
        Admin {
            rpc: self.admin_client(),
            reason: String::new(),
        }
    }

    /// One `Acquire` straight to the daemon: no fallback policy, no cache, no
    /// deadline of its own (for operator tools; services use [`Client::breaker`]).
    pub async fn acquire_once(&self, name: &str) -> Result<pb::AcquireResponse, Error> {
        let request = pb::AcquireRequest {
            name: name.into(),
            caller: self.inner.caller.clone(),
        };
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
            caller: self.inner.caller.clone(),
        };
        Ok(self.breakers_client().report(request).await?.into_inner())
    }
}

impl Admin {
    /// Gives every write made through this handle (put, delete, override, reset)
    /// `reason`, which the daemon keeps in the event log with the actor (the
    /// token's name) and, for an override, with the breaker. At most 256 bytes.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

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
            reason: self.reason.clone(),
        };
        Ok(self.rpc.put_breaker(request).await?.into_inner())
    }

    /// Deletes `name`; its outstanding permits become invalid.
    pub async fn delete(&mut self, name: &str) -> Result<pb::DeleteBreakerResponse, Error> {
        let request = pb::DeleteBreakerRequest {
            name: name.into(),
            reason: self.reason.clone(),
        };
        Ok(self.rpc.delete_breaker(request).await?.into_inner())
    }

    /// Sets the operator override of `name` until cleared (`Override::Unspecified`
    /// clears it).
    pub async fn set_override(
        &mut self,
        name: &str,
        r#override: pb::Override,
    ) -> Result<pb::SetOverrideResponse, Error> {
        self.set_override_for(name, r#override, None).await
    }

    /// [`Admin::set_override`] that clears itself `lasts` after it is set (`None`:
    /// until cleared), on the daemon's timer, with an `OVERRIDE_EXPIRED` event.
    pub async fn set_override_for(
        &mut self,
        name: &str,
        r#override: pb::Override,
        lasts: Option<std::time::Duration>,
    ) -> Result<pb::SetOverrideResponse, Error> {
        let request = pb::SetOverrideRequest {
            name: name.into(),
            r#override: r#override as i32,
            reason: self.reason.clone(),
            duration: lasts.map(cbd_proto::convert::duration_to_proto),
        };
        Ok(self.rpc.set_override(request).await?.into_inner())
    }

    /// Back to CLOSED with an empty window and no backoff (an override stays).
    pub async fn reset(&mut self, name: &str) -> Result<pb::ResetBreakerResponse, Error> {
        let request = pb::ResetBreakerRequest {
            name: name.into(),
            reason: self.reason.clone(),
        };
        Ok(self.rpc.reset_breaker(request).await?.into_inner())
    }

    /// One page of `name`'s history from the daemon's event log, oldest first:
    /// events at or after `since` (`None`: the oldest retained), at most
    /// `page_size` (0: the daemon's default), from `page_token` (empty: the first
    /// page; then the previous page's `next_page_token`).
    pub async fn events_page(
        &mut self,
        name: &str,
        since: Option<std::time::SystemTime>,
        page_size: u32,
        page_token: String,
    ) -> Result<pb::ListEventsResponse, Error> {
        let request = pb::ListEventsRequest {
            name: name.into(),
            since: since.map(Into::into),
            page_size,
            page_token,
        };
        Ok(self.rpc.list_events(request).await?.into_inner())
    }

    /// The daemon's own status: version, uptime, revisions, breakers, streams,
    /// leases, store size and last commit (`cbctl status`). The `client` role may
    /// call it.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, Error> {
        Ok(self.rpc.status(pb::StatusRequest {}).await?.into_inner())
    }
}
