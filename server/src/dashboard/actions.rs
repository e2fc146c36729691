//! Operator writes from the page: force open, force closed, release, reset. They
//! call the registry functions the Admin service calls, and who may make them is
//! decided by the gRPC token check for the matching Admin RPC.

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use cbd_breaker::Override;
use cbd_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    Dashboard,
    json::{Breaker, ErrorBody},
};
use crate::{
    auth::{Identity, Role},
    error::Error,
    registry::Registry,
    service::convert,
};

/// Whether and how the page may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No `--auth-file` and no `--dashboard-allow-actions`: no actions at all.
    ReadOnly,
    /// `--auth-file`: actions with an admin bearer token.
    Token,
    /// No `--auth-file`, `--dashboard-allow-actions`: actions for anyone.
    Open,
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Override FORCED_OPEN: reject every call.
    ForceOpen,
    /// Override FORCED_CLOSED: allow every call.
    ForceClosed,
    /// Clear the override.
    Release,
    /// Back to CLOSED with an empty window; the override stays.
    Reset,
}

impl Action {
    /// The Admin RPC this action is, for the role check.
    fn rpc(self) -> &'static str {
        match self {
            Self::ForceOpen | Self::ForceClosed | Self::Release => "cbd.v1.Admin/SetOverride",
            Self::Reset => "cbd.v1.Admin/ResetBreaker",
        }
    }
}

/// The one place the dashboard calls the registry's operator writes, so that a
/// change to their signatures is one edit here.
async fn apply(
    registry: &Registry,
    name: &str,
    action: Action,
    operator: &pb::Operator,
) -> Result<(pb::BreakerStatus, u64), Error> {
    let set = |o| registry.set_override(name, o, None, operator);
    match action {
        Action::ForceOpen => set(Some(Override::ForcedOpen)).await,
        Action::ForceClosed => set(Some(Override::ForcedClosed)).await,
        Action::Release => set(None).await,
        Action::Reset => registry.reset(name, operator).await,
    }
}

impl Dashboard {
    /// The page's mode, from the flags.
    pub fn mode(&self) -> Mode {
        match (&self.auth, self.allow_actions) {
            (Some(_), _) => Mode::Token,
            (None, true) => Mode::Open,
            (None, false) => Mode::ReadOnly,
        }
    }

    /// The role of the request's bearer token (any valid token: the check is the
    /// one for a method every role may call). Without `--auth-file` there are no
    /// tokens: UNAUTHENTICATED.
    pub fn role_of(&self, headers: &HeaderMap) -> Result<Role, Error> {
        let auth = self.auth.as_ref().ok_or(Error::Unauthenticated {
            reason: "no --auth-file: this daemon has no tokens",
        })?;
        auth.check(authorization(headers), "cbd.v1.Admin/GetBreaker")
            .map(|id| id.role)
    }

    /// Whether this request may do `action`: the gRPC check for its Admin RPC when
    /// `--auth-file` is set, else the flag. `Some`: who the token says the caller is
    /// (the actor of the event); `None`: anonymous (no `--auth-file`).
    fn permit(&self, headers: &HeaderMap, action: Action) -> Result<Option<Identity>, Refused> {
        match (self.mode(), &self.auth) {
            (Mode::Token, Some(auth)) => auth
                .check(authorization(headers), action.rpc())
                .map(Some)
                .map_err(Refused::Token),
            (Mode::Open, _) => Ok(None),
            _ => Err(Refused::ReadOnly),
        }
    }
}

/// Why an action was refused.
#[derive(Debug)]
enum Refused {
    /// The token check failed (UNAUTHENTICATED or PERMISSION_DENIED).
    Token(Error),
    /// No auth and no `--dashboard-allow-actions`.
    ReadOnly,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Token(e) => e.into_response(),
            Self::ReadOnly => (
                http::StatusCode::FORBIDDEN,
                Json(ErrorBody {
                    code: "PERMISSION_DENIED",
                    message: "the dashboard is read-only: start cbd with --auth-file (then \
                              actions need an admin token) or --dashboard-allow-actions"
                        .into(),
                }),
            )
                .into_response(),
        }
    }
}

fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
}

/// Body of `POST /dashboard/api/actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// The breaker's name.
    pub breaker: String,
    pub action: Action,
    /// Why, for the event log (as SetOverride's `reason`); empty: none given.
    #[serde(default)]
    pub reason: String,
}

/// Answer of `POST /dashboard/api/actions`: the breaker after the action, and the
/// revision it is durable at.
#[derive(Debug, Serialize)]
pub struct ActionAnswer {
    pub breaker: Breaker,
    pub revision: u64,
}

/// `POST /dashboard/api/actions` with a JSON body. The JSON content type is
/// required (axum answers 415 otherwise): a cross-site form cannot send it, and a
/// cross-site script cannot without a CORS preflight, which is never granted.
pub async fn act(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Json(req): Json<ActionRequest>,
) -> Response {
    let identity = match d.permit(&headers, req.action) {
        Ok(identity) => identity,
        Err(refused) => return refused.into_response(),
    };
    // The metrics listener does not keep peer addresses: the actor is the token's.
    let actor = identity.as_ref().map_or("anonymous", Identity::actor);
    let operator = match convert::operator_from(actor, String::new(), &req.reason) {
        Ok(operator) => operator,
        Err(e) => return e.into_response(),
    };
    match apply(&d.registry, &req.breaker, req.action, &operator).await {
        Ok((breaker, revision)) => {
            tracing::info!(breaker = %req.breaker, action = ?req.action, "dashboard action");
            Json(ActionAnswer {
                breaker: breaker.into(),
                revision,
            })
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}
