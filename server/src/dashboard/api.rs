//! Reads: the page's mode, who a token is, and a page of breakers by prefix.
//!
//! Reads need no token, like `/metrics` on the same listener, which shows the same
//! names and states: bind `--metrics-listen` where only operators reach it.

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};

use super::{Dashboard, actions::Mode, json::Breaker};
use crate::{error::Error, service::convert};

/// Page size when the request leaves it out.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page (as Admin ListBreakers).
const MAX_PAGE_SIZE: usize = 1000;

/// `GET /dashboard/api/mode`: whether the page offers actions, and how.
#[derive(Debug, Serialize)]
pub struct ModeAnswer {
    /// `read_only`, `token` (admin bearer token) or `open`.
    pub actions: Mode,
    pub version: &'static str,
    pub commit: &'static str,
}

/// `GET /dashboard/api/mode`.
pub async fn mode(State(d): State<Dashboard>) -> Json<ModeAnswer> {
    Json(ModeAnswer {
        actions: d.mode(),
        version: crate::VERSION,
        commit: crate::GIT_COMMIT,
    })
}

/// `GET /dashboard/api/whoami` answer.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// `admin` or `client`.
    pub role: &'static str,
    /// Whether this token may use the dashboard's actions.
    pub may_act: bool,
}

/// `GET /dashboard/api/whoami` with `Authorization: Bearer <token>`: the token's
/// role, so that the page shows action buttons only for an admin token.
pub async fn whoami(State(d): State<Dashboard>, headers: HeaderMap) -> Result<Json<WhoAmI>, Error> {
    let role = d.role_of(&headers)?;
    Ok(Json(WhoAmI {
        role: role.as_str(),
        may_act: role == crate::auth::Role::Admin,
    }))
}

/// Query of `GET /dashboard/api/breakers`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub prefix: String,
    pub page_size: Option<usize>,
    #[serde(default)]
    pub page_token: String,
}

/// `GET /dashboard/api/breakers` answer.
#[derive(Debug, Serialize)]
pub struct ListAnswer {
    pub breakers: Vec<Breaker>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// The revision the page is at least as new as: the feed resumes after it.
    pub revision: u64,
    /// The oldest revision the feed can replay from.
    pub oldest_retained: u64,
    /// The daemon's clock, for countdowns that do not trust the browser's.
    pub now_unix_ms: i64,
    /// Breakers held in all (not only under the prefix).
    pub total_breakers: usize,
}

/// `GET /dashboard/api/breakers?prefix=&page_size=&page_token=`: one page of the
/// registry's ordered list, so a page costs its size whatever the number of
/// breakers.
pub async fn breakers(
    State(d): State<Dashboard>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListAnswer>, Error> {
    convert::prefix("prefix", &q.prefix)?;
    convert::prefix("page_token", &q.page_token)?;
    let page_size = match q.page_size {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) if n > MAX_PAGE_SIZE => {
            return Err(Error::invalid(
                "page_size",
                format!("{n} is above {MAX_PAGE_SIZE}"),
            ));
        }
        Some(n) => n,
    };
    let oldest_retained = d.registry.oldest_retained();
    let page = d.registry.list(&q.prefix, page_size, &q.page_token)?;
    Ok(Json(ListAnswer {
        breakers: page.breakers.into_iter().map(Breaker::from).collect(),
        next_page_token: page.next_page_token,
        revision: page.revision,
        oldest_retained,
        now_unix_ms: (d.registry.clock().now().unix_nanos() / 1_000_000) as i64,
        total_breakers: d.registry.len(),
    }))
}
