//! The middleware [`Gateway::router`](super::Gateway::router) puts around
//! the routes: the access log, the headers of signoff's own answers, HSTS.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::pages::StaticAsset;
use super::proxy::no_store;

/// Every answer on an HTTPS site: `Strict-Transport-Security`, when on
/// (it replaces the upstream's own).
pub(super) fn with_hsts(mut response: Response, hsts: Option<HeaderValue>) -> Response {
    if let Some(value) = hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    response
}

/// Every response of signoff's own routes: no-store (but a
/// [`StaticAsset`]), and nosniff.
pub(super) async fn own_response(mut response: Response) -> Response {
    if response.extensions().get::<StaticAsset>().is_none() {
        no_store(response.headers_mut());
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// One line per request: method, path (never the query, which may hold
/// secrets), status, latency; at `info`, except granted forward-auth
/// checks ([`QuietLog`]), which are `debug`.
pub(super) async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let path = path.chars().take(200).collect::<String>();
    let status = response.status().as_u16();
    let latency_us = start.elapsed().as_micros() as u64;
    if response.extensions().get::<QuietLog>().is_some() {
        tracing::debug!(target: "signoff::access", %method, %path, status, latency_us);
    } else {
        tracing::info!(target: "signoff::access", %method, %path, status, latency_us);
    }
    response
}

/// Marks a response whose access-log line is only worth `debug`: granted
/// forward-auth checks, which the proxy in front logs as the request itself.
#[derive(Clone, Copy)]
pub(super) struct QuietLog;
