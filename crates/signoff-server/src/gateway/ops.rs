//! Operations: `healthz`, `metrics` (with `--metrics`), and the 404 for
//! any other path under the prefix.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use super::error_pages::error_page;
use super::proxy::no_store;
use super::{AppState, Gateway};

/// `healthz`, `metrics`, and the catch-all under the prefix.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/healthz"), get(healthz))
        .route(&format!("{p}/metrics"), get(metrics))
        .route(&format!("{p}/{{*rest}}"), any(not_found))
        .route(p, any(not_found))
}

async fn metrics(State(gw): AppState) -> Response {
    if !gw.settings.metrics {
        return not_found(State(gw)).await;
    }
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&gw.metrics, &gw.counters),
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn not_found(State(gw): AppState) -> Response {
    error_page(
        &gw,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}
