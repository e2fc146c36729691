//! `cbd.v1.Admin`: put, get, list, delete, override, reset, and the daemon's status.

use cbd_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{error::Error, registry::Registry, status::StatusSources};

/// Page size when the request leaves it at 0.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page.
const MAX_PAGE_SIZE: u32 = 1000;

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
        let put = self.registry.put(&req.name, spec).await?;
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
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(
                    Error::invalid("page_size", format!("{n} is above {MAX_PAGE_SIZE}")).into(),
                );
            }
            n => n,
        };
        let page = self
            .registry
            .list(&req.prefix, page_size as usize, &req.page_token)?;
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
        let revision = self.registry.delete(&request.get_ref().name).await?;
        Ok(Response::new(pb::DeleteBreakerResponse { revision }))
    }

    async fn set_override(
        &self,
        request: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::SetOverrideResponse>, Status> {
        let req = request.get_ref();
        let value = convert::override_(req.r#override)?;
        let (breaker, revision) = self.registry.set_override(&req.name, value).await?;
        Ok(Response::new(pb::SetOverrideResponse {
            breaker: Some(breaker),
            revision,
        }))
    }

    async fn reset_breaker(
        &self,
        request: Request<pb::ResetBreakerRequest>,
    ) -> Result<Response<pb::ResetBreakerResponse>, Status> {
        let (breaker, revision) = self.registry.reset(&request.get_ref().name).await?;
        Ok(Response::new(pb::ResetBreakerResponse {
            breaker: Some(breaker),
            revision,
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
