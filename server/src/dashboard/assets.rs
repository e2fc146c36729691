//! The page, its script and its style, compiled into the binary: no CDN, nothing
//! fetched at run time, no front-end build step (plain HTML, CSS and JavaScript).

use axum::response::IntoResponse;

const PAGE: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Headers every asset gets: its type, no caching (a new daemon version serves new
/// assets at the same path), and no framing or sniffing.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (http::header::X_FRAME_OPTIONS, "DENY"),
            // Only our own script and style: an injected inline script would not run.
            (
                http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
}

/// `GET /dashboard`.
pub async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/dashboard.js`.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/dashboard.css`.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
