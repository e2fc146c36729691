//! `cbd.v1.Admin`: put, get, list, delete, override, reset, a breaker's history, and
//! the daemon's status.

use cbd_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{error::Error, registry::Registry, status::StatusSources};

/// The control-plane service.
#[derive(Clone, Debug)]
pub struct AdminService {
    registry: Registry,
    status: StatusSources,
}

impl AdminService {
    /// Serves `registry`; `Status` answers from `status`.
    pub fn new(registry: Registry, status: StatusSources) -> Self {
        Self { registry, status }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn put_breaker(
        &self,
        request: Request<pb::PutBreakerRequest>,
    ) -> Result<Response<pb::PutBreakerResponse>, Status> {
        let req = request.get_ref();
        cbd_breaker::validate_name(&req.name).map_err(Error::from)?;
        let spec = convert::spec(req.spec.as_ref())?;
        let operator = convert::operator(&request, &req.reason)?;
        let put = self.registry.put(&req.name, spec, &operator).await?;
        Ok(Response::new(pb::PutBreakerResponse {
            breaker: Some(put.breaker),
            created: put.created,
            unchanged: put.unchanged,
            revision: put.revision,
        }))
    }

    async fn get_breaker(
        &self,
        request: Request<pb::GetBreakerRequest>,
    ) -> Result<Response<pb::GetBreakerResponse>, Status> {
        let (breaker, revision) = self.registry.get(&request.get_ref().name)?;
        Ok(Response::new(pb::GetBreakerResponse {
            breaker: Some(breaker),
            revision,
        }))
    }

    async fn list_breakers(
        &self,
        request: Request<pb::ListBreakersRequest>,
    ) -> Result<Response<pb::ListBreakersResponse>, Status> {
        let req = request.get_ref();
        convert::prefix("prefix", &req.prefix)?;
        convert::prefix("page_token", &req.page_token)?;
        let page_size = convert::page_size(req.page_size)?;
        let page = self
            .registry
            .list(&req.prefix, page_size, &req.page_token)?;
        Ok(Response::new(pb::ListBreakersResponse {
            breakers: page.breakers,
            next_page_token: page.next_page_token,
            revision: page.revision,
        }))
    }

    async fn delete_breaker(
        &self,
        request: Request<pb::DeleteBreakerRequest>,
    ) -> Result<Response<pb::DeleteBreakerResponse>, Status> {
        let req = request.get_ref();
        let operator = convert::operator(&request, &req.reason)?;
        let revision = self.registry.delete(&req.name, &operator).await?;
        Ok(Response::new(pb::DeleteBreakerResponse { revision }))
    }

    async fn set_override(
        &self,
        request: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::SetOverrideResponse>, Status> {
        let req = request.get_ref();
        let value = convert::override_(req.r#override)?;
        let lasts = convert::override_duration(req.duration.as_ref(), value.is_none())?;
        let operator = convert::operator(&request, &req.reason)?;
        let (breaker, revision) = self
            .registry
            .set_override(&req.name, value, lasts, &operator)
            .await?;
        Ok(Response::new(pb::SetOverrideResponse {
            breaker: Some(breaker),
            revision,
        }))
    }

    async fn reset_breaker(
        &self,
        request: Request<pb::ResetBreakerRequest>,
    ) -> Result<Response<pb::ResetBreakerResponse>, Status> {
        let req = request.get_ref();
        let operator = convert::operator(&request, &req.reason)?;
        let (breaker, revision) = self.registry.reset(&req.name, &operator).await?;
        Ok(Response::new(pb::ResetBreakerResponse {
            breaker: Some(breaker),
            revision,
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.get_ref();
        let page_size = convert::page_size(req.page_size)?;
        let after = convert::revision_token(&req.page_token)?;
        let since = req.since.as_ref().map(convert::since).transpose()?;
        let history = self
            .registry
            .history(&req.name, since, page_size, after)
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: history.events,
            next_page_token: history.next_page_token,
            revision: history.revision,
            oldest_retained_revision: history.oldest_retained,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(convert::status_response(
            self.status.gather().await,
        )))
    }
}
