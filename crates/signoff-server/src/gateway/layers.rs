//! The middleware [`Gateway::router`](super::Gateway::router) puts around
//! the routes: the access log and HSTS, the headers of signoff's own answers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, Uri};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Level;

use super::assets::StaticAsset;
use super::own_body;
use super::proxy::no_store;
use crate::log_output;

/// Around signoff's own routes: each request's body due within `within`
/// of its headers ([`own_body::with_deadline`]), and each answer
/// `no-store` (but a [`StaticAsset`]) and `nosniff`. A plain tower
/// service, like [`Outermost`], so a request costs no boxed future here.
#[derive(Clone)]
pub(super) struct OwnRoutes {
    pub(super) within: Duration,
}

impl<S> Layer<S> for OwnRoutes {
    type Service = OwnRoutesService<S>;

    fn layer(&self, inner: S) -> OwnRoutesService<S> {
        OwnRoutesService {
            inner,
            within: self.within,
        }
    }
}

#[derive(Clone)]
pub(super) struct OwnRoutesService<S> {
    inner: S,
    within: Duration,
}

impl<S> Service<Request> for OwnRoutesService<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = OwnAnswer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> OwnAnswer<S::Future> {
        OwnAnswer {
            inner: self.inner.call(own_body::with_deadline(req, self.within)),
        }
    }
}

/// The answer of one of signoff's own routes on its way out of
/// [`OwnRoutesService`].
pub(super) struct OwnAnswer<F> {
    inner: F,
}

impl<F, E> Future for OwnAnswer<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        if response.extensions().get::<StaticAsset>().is_none() {
            no_store(response.headers_mut());
        }
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Poll::Ready(Ok(response))
    }
}

/// The outermost layer, on every answer: `Strict-Transport-Security`
/// when on (it replaces the upstream's own), then the access log line:
/// method, path (never the query, which may hold secrets), status,
/// latency; at `info`, except granted forward-auth checks ([`QuietLog`]),
/// which are `debug`. A plain tower service around the whole router
/// ([`App`](super::App)), not a `Router::layer`: axum wraps each route
/// of a layered router in one more boxed service, which costs a clone
/// and a boxed future per request.
#[derive(Clone)]
pub(super) struct Outermost {
    pub(super) hsts: Option<HeaderValue>,
}

impl<S> Layer<S> for Outermost {
    type Service = OutermostService<S>;

    fn layer(&self, inner: S) -> OutermostService<S> {
        OutermostService {
            inner,
            hsts: self.hsts.clone(),
        }
    }
}

/// The service of [`Outermost`].
#[derive(Clone)]
pub struct OutermostService<S> {
    inner: S,
    hsts: Option<HeaderValue>,
}

impl<S, B> Service<axum::http::Request<B>> for OutermostService<S>
where
    S: Service<axum::http::Request<B>, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Logged<S::Future> {
        Logged {
            start: Instant::now(),
            method: req.method().clone(),
            // A clone of the URI shares its bytes: no copy of the path.
            uri: req.uri().clone(),
            hsts: self.hsts.clone(),
            inner: self.inner.call(req),
        }
    }
}

/// The answer on its way out of [`OutermostService`].
pub struct Logged<F> {
    inner: F,
    start: Instant,
    method: Method,
    uri: Uri,
    hsts: Option<HeaderValue>,
}

impl<F, E> Future for Logged<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        if let Some(value) = self.hsts.take() {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
        // A path may hold characters that read as a line break or a
        // field separator (log_output::one_line); the log gets them encoded.
        let path = log_output::one_line(first_chars(self.uri.path(), 200));
        let path = path.as_ref();
        let method = &self.method;
        let status = response.status().as_u16();
        let latency_us = self.start.elapsed().as_micros() as u64;
        // The line is written by hand where main set that up (the same
        // text; log_output.rs), through tracing otherwise.
        if response.extensions().get::<QuietLog>().is_some() {
            if tracing::enabled!(target: "signoff::access", Level::DEBUG)
                && !log_output::access_line(Level::DEBUG, method.as_str(), path, status, latency_us)
            {
                tracing::debug!(target: "signoff::access", %method, %path, status, latency_us);
            }
        } else if tracing::enabled!(target: "signoff::access", Level::INFO)
            && !log_output::access_line(Level::INFO, method.as_str(), path, status, latency_us)
        {
            tracing::info!(target: "signoff::access", %method, %path, status, latency_us);
        }
        Poll::Ready(Ok(response))
    }
}

/// The first `n` characters of `text`.
fn first_chars(text: &str, n: usize) -> &str {
    text.char_indices()
        .nth(n)
        .map_or(text, |(end, _)| &text[..end])
}

/// Marks a response whose access-log line is only worth `debug`: granted
/// forward-auth checks, which the proxy in front logs as the request itself.
#[derive(Clone, Copy)]
pub(super) struct QuietLog;

/// An HTTP/2 request names its host in the URI (`:authority`), not in a
/// `Host` header: give it one, so everything that reads the host (which
/// app, which site, which origin a form must come from) reads the same
/// one whatever the protocol.
pub(super) async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.headers().contains_key(axum::http::header::HOST) {
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(axum::http::header::HOST, host);
        }
    }
    req
}

/// signoff's pages let their forms lead on where a sign-in or sign-out
/// goes next: Chromium applies a page's `form-action` to every redirect
/// after the form is sent. A sign-in that started on an app host ends with
/// a redirect to that host's callback (docs/apps.md), and a provider's
/// user's sign-out with one to the provider (docs/oidc.md). So
/// `form-action 'self'` becomes `form-action 'self'` and those origins
/// (nothing else of the policy changes).
pub(super) async fn let_forms_lead_on(
    axum::extract::State(gw): super::AppState,
    mut r: axum::response::Response,
) -> axum::response::Response {
    const SELF_ONLY: &str = "form-action 'self'";
    use axum::http::header::CONTENT_SECURITY_POLICY;
    let Some(csp) = r
        .headers()
        .get(CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .filter(|csp| csp.contains(SELF_ONLY))
        .map(str::to_owned)
    else {
        return r;
    };
    let mut targets = gw.routes.site_origins();
    for origin in gw.oidc.form_targets().await {
        if !targets.split(' ').any(|t| t == origin) {
            if !targets.is_empty() {
                targets.push(' ');
            }
            targets.push_str(&origin);
        }
    }
    if targets.is_empty() {
        return r;
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(
        &csp.replace(SELF_ONLY, &format!("{SELF_ONLY} {targets}")),
    ) {
        r.headers_mut().insert(CONTENT_SECURITY_POLICY, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::first_chars;

    #[test]
    fn paths_are_cut_at_200_characters() {
        assert_eq!(first_chars("/a/b", 200), "/a/b");
        let long = "é".repeat(300);
        assert_eq!(first_chars(&long, 200), "é".repeat(200));
        assert_eq!(first_chars(&"x".repeat(200), 200).len(), 200);
        assert_eq!(first_chars(&"x".repeat(201), 200).len(), 200);
    }
}
