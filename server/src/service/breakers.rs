//! `cbd.v1.Breakers`: Acquire, Report, their batches, Watch and Session.

use std::{pin::Pin, sync::Arc};

use cbd_proto::v1::{self as pb, breakers_server::Breakers};
use futures::{Stream, future::join_all};
use tonic::{Request, Response, Status, Streaming};

use super::{convert, session::Sessions, watch::Watcher};
use crate::{auth::Identity, error::Error, permit::Permits, registry::Registry};

/// The data-plane service.
#[derive(Clone, Debug)]
pub struct BreakersService {
    registry: Registry,
    watcher: Watcher,
    permits: Arc<Permits>,
    sessions: Sessions,
}

impl BreakersService {
    /// Serves `registry`; `watcher` runs Watch streams; `permits` mints and checks permits.
    pub fn new(registry: Registry, watcher: Watcher, permits: Arc<Permits>) -> Self {
        Self {
            registry,
            watcher,
            permits,
            sessions: Sessions::default(),
        }
    }

    /// The count of its open Session streams (shared with clones).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The registry it serves.
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The permit (and lease) minter.
    pub(super) fn permits(&self) -> &Permits {
        &self.permits
    }

    pub(super) async fn acquire_one(
        &self,
        req: &pb::AcquireRequest,
        identity: Option<&Identity>,
    ) -> Result<pb::AcquireResponse, Error> {
        // Carried in the permit: a report without a caller is attributed to it.
        let caller = convert::caller(identity, &req.caller)?;
        let answer = self.registry.acquire(&req.name).await?;
        Ok(convert::acquire_response(&self.permits, &answer, caller))
    }

    pub(super) async fn report_one(
        &self,
        req: &pb::ReportRequest,
        identity: Option<&Identity>,
    ) -> Result<pb::ReportResponse, Error> {
        let checked = convert::caller(identity, &req.caller)?;
        let permit = self.permits.decode(&req.permit)?;
        let caller = convert::report_caller(checked, &req.caller, permit.caller);
        let outcome = convert::outcome(req.outcome)?;
        let duration = convert::duration(req.duration.as_ref())?;
        let answer = if permit.this_boot {
            self.registry
                .report_as(permit.name, permit.token, outcome, duration, caller)
                .await?
        } else {
            self.registry.report_of_earlier_boot(permit.name, outcome)?
        };
        Ok(pb::ReportResponse {
            state: cbd_proto::convert::state_to_proto(answer.reported.state) as i32,
            stale: answer.reported.stale,
            revision: answer.revision,
            generation: answer.reported.generation,
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Breakers for BreakersService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let identity = request.extensions().get::<Identity>();
        Ok(Response::new(
            self.acquire_one(request.get_ref(), identity).await?,
        ))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let identity = request.extensions().get::<Identity>();
        Ok(Response::new(
            self.report_one(request.get_ref(), identity).await?,
        ))
    }

    async fn acquire_batch(
        &self,
        request: Request<pb::AcquireBatchRequest>,
    ) -> Result<Response<pb::AcquireBatchResponse>, Status> {
        let items = &request.get_ref().items;
        let identity = request.extensions().get::<Identity>();
        convert::batch_size(items.len())?;
        let results = join_all(items.iter().map(|item| async {
            match self.acquire_one(item, identity).await {
                Ok(r) => pb::AcquireResult {
                    response: Some(r),
                    error: None,
                },
                Err(e) => pb::AcquireResult {
                    response: None,
                    error: Some(convert::item_error(e)),
                },
            }
        }))
        .await;
        Ok(Response::new(pb::AcquireBatchResponse {
            results,
            revision: self.registry.revision(),
        }))
    }

    async fn report_batch(
        &self,
        request: Request<pb::ReportBatchRequest>,
    ) -> Result<Response<pb::ReportBatchResponse>, Status> {
        let items = &request.get_ref().items;
        let identity = request.extensions().get::<Identity>();
        convert::batch_size(items.len())?;
        let results = join_all(items.iter().map(|item| async {
            match self.report_one(item, identity).await {
                Ok(r) => pb::ReportResult {
                    response: Some(r),
                    error: None,
                },
                Err(e) => pb::ReportResult {
                    response: None,
                    error: Some(convert::item_error(e)),
                },
            }
        }))
        .await;
        Ok(Response::new(pb::ReportBatchResponse {
            results,
            revision: self.registry.revision(),
        }))
    }

    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.watcher.start(request.into_inner())?;
        Ok(Response::new(Box::pin(stream)))
    }

    type SessionStream = BoxStream<pb::SessionResponse>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let identity = request.extensions().get::<Identity>().cloned();
        let stream = super::session::run(self.clone(), request.into_inner(), identity);
        Ok(Response::new(Box::pin(stream)))
    }
}
