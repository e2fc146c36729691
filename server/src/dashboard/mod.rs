//! The live dashboard (`GET /dashboard` on `--metrics-listen`, docs/DESIGN.md §7.1):
//! one embedded page, a JSON API over the registry, a server-sent-event feed from
//! the Watch machinery, and operator actions behind the same token check as gRPC.
//!
//! One purpose per file: [`assets`] (the page), [`json`] (the wire shapes),
//! [`api`] (reads), [`feed`] (the live feed), [`actions`] (operator writes and who
//! may make them).

pub mod actions;
pub mod api;
pub mod assets;
pub mod feed;
pub mod json;

use std::sync::Arc;

use crate::{auth::Auth, registry::Registry, service::watch::Watcher};

/// What the dashboard's handlers read and call. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// The breakers: listed, looked up, and changed by actions.
    pub registry: Registry,
    /// The Watch machinery the feed streams from (its streams count as watchers).
    pub watcher: Watcher,
    /// Tokens when `--auth-file` is set: actions then need an admin one.
    pub auth: Option<Arc<Auth>>,
    /// `--dashboard-allow-actions`: actions without auth.
    pub allow_actions: bool,
}

impl Dashboard {
    /// The dashboard's routes, to merge into the HTTP listener's router.
    pub fn router(self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/dashboard", get(assets::page))
            .route("/dashboard/", get(assets::page))
            .route("/dashboard/dashboard.js", get(assets::script))
            .route("/dashboard/dashboard.css", get(assets::style))
            .route("/dashboard/api/mode", get(api::mode))
            .route("/dashboard/api/whoami", get(api::whoami))
            .route("/dashboard/api/breakers", get(api::breakers))
            .route("/dashboard/api/feed", get(feed::feed))
            .route("/dashboard/api/actions", post(actions::act))
            .with_state(self)
    }
}
