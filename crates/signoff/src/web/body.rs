//! Bodies sent to a form or a small JSON endpoint: read whole, bounded
//! ([`read`]), and due within a deadline ([`with_deadline`]), so a client
//! sending a byte now and then cannot hold a connection open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The body did not arrive in time.
#[derive(Debug)]
pub struct TooSlow;

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for TooSlow {}

/// A body that fails with [`TooSlow`] once its deadline passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(TooSlow.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives `req`'s body a deadline `within` from now (its headers are in),
/// and marks the request as having one ([`has_deadline`]). A request that
/// has no body (its headers say so: a GET, most often) is left as it is:
/// there is nothing to wait for, and no timer to pay for.
pub fn with_deadline(req: Request, within: Duration) -> Request {
    if http_body::Body::is_end_stream(req.body()) {
        return req;
    }
    let mut req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(within)),
        })
    });
    req.extensions_mut().insert(DeadlineSet);
    req
}

/// Marks a request whose body [`with_deadline`] gave a deadline.
#[derive(Clone, Copy)]
struct DeadlineSet;

/// Whether [`with_deadline`] gave the request's body a deadline already
/// (the server's own, which a reader should not shorten).
pub fn has_deadline(req: &Request) -> bool {
    req.extensions().get::<DeadlineSet>().is_some()
}

/// Why a body could not be read.
pub enum BodyError {
    /// Not of the expected `Content-Type`.
    WrongType,
    /// Larger than the limit (or broken off).
    TooLarge,
    /// Not all there by its deadline.
    TooSlow,
}

/// Reads a whole body of at most `limit` bytes whose `Content-Type` is
/// `media_type` (parameters aside); the type is checked first.
pub async fn read(req: Request, media_type: &str, limit: usize) -> Result<Bytes, BodyError> {
    let typed = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type));
    if !typed {
        return Err(BodyError::WrongType);
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<TooSlow>() {
                    return BodyError::TooSlow;
                }
                cause = c.source();
            }
            BodyError::TooLarge
        })
}

/// A body that never sends a byte, and never says it is over: a client
/// holding its request open (for the tests of this module and of
/// [`super::csrf_form`]).
#[cfg(test)]
pub(crate) struct Silent;

#[cfg(test)]
impl http_body::Body for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: Body) -> Request {
        let mut req = Request::new(body);
        req.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        req
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_comes_is_cut_at_its_deadline() {
        let req = with_deadline(form(Body::new(Silent)), Duration::from_secs(5));
        assert!(has_deadline(&req));
        let started = tokio::time::Instant::now();
        let read = read(req, "application/x-www-form-urlencoded", 1024).await;
        assert!(matches!(read, Err(BodyError::TooSlow)));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_request_without_a_body_gets_no_timer() {
        let req = with_deadline(form(Body::empty()), Duration::from_secs(5));
        assert!(!has_deadline(&req), "nothing to wait for: no deadline");
        let read = read(req, "application/x-www-form-urlencoded", 1024).await;
        assert!(matches!(read, Ok(b) if b.is_empty()));
    }
}
