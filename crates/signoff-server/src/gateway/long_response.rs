//! Responses that last: event streams, long polls, large downloads. A
//! response to a signed-in request that is still streaming
//! [`LONG_AFTER`] after the request went upstream (an event stream at
//! once) is watched under its session, and is cut off when the session
//! ends (docs/security.md, invariant 10).
//!
//! Cut off means the body ends with an error: the connection is reset (an
//! HTTP/2 stream gets `RST_STREAM`), so the client sees a broken transfer,
//! never a complete but truncated file. An `EventSource` that reconnects
//! then gets 401.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Response, StatusCode};
use hyper::body::{Body as _, Frame, SizeHint};
use signoff::{EndReason, Session, SessionWatch};
use tokio::time::{Instant, Sleep};

/// How long after its request went upstream a response may stream before
/// it is watched. Short, so a cut comes within the close bound; long
/// enough that a plain page never costs a watch.
pub(super) const LONG_AFTER: Duration = Duration::from_millis(250);

/// The session of a cut response ended.
#[derive(Debug)]
struct SessionEnded(EndReason);

impl std::fmt::Display for SessionEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the session ended ({:?}); the response is cut off",
            self.0
        )
    }
}

impl std::error::Error for SessionEnded {}

/// `response`, cut off when `session` ends if it streams for long. A
/// response known here to be short (a switch of protocols, or a body whose
/// size hint is exact and small) is returned as it is; any other is
/// wrapped, which costs nothing until [`LONG_AFTER`] has passed since
/// `asked`, when its request went upstream (time spent before the answer
/// goes out, as the guard waits for a page's first bytes, counts).
pub(super) fn ends_with_session(
    watch: &SessionWatch,
    response: Response<Body>,
    session: Session,
    asked: Instant,
) -> Response<Body> {
    let hint = response.body().size_hint();
    let short = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || hint.exact().is_some_and(|n| n <= SHORT_BODY);
    if short {
        return response;
    }
    let stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        });
    response.map(|inner| {
        Body::new(Cut {
            inner,
            stage: Stage::Waiting {
                watch: watch.clone(),
                session: Box::new(session),
                started: asked,
                timer: None,
                at_once: stream,
            },
        })
    })
}

/// A body of known length up to this size goes out unwatched: it is gone
/// before a session could end under it.
const SHORT_BODY: u64 = 64 * 1024;

struct Cut {
    inner: Body,
    stage: Stage,
}

enum Stage {
    /// Not watched yet; watched once it has lasted [`LONG_AFTER`] (or at
    /// once).
    Waiting {
        watch: SessionWatch,
        session: Box<Session>,
        /// When its request went upstream.
        started: Instant,
        /// Wakes the body when it becomes long while the upstream is quiet.
        timer: Option<Pin<Box<Sleep>>>,
        at_once: bool,
    },
    /// Watched: ends when this does.
    Watching(Pin<Box<dyn Future<Output = EndReason> + Send>>),
    /// The session ended; the body is over.
    Over,
}

impl hyper::body::Body for Cut {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        // The session is checked first: nothing more goes out once it ended.
        match this.session_ended(cx) {
            Check::Ended(reason) => {
                this.stage = Stage::Over;
                tracing::info!(
                    target: "signoff::tunnel",
                    reason = ?reason,
                    "a streaming response was cut off: its session ended"
                );
                return Poll::Ready(Some(Err(SessionEnded(reason).into())));
            }
            Check::Over => return Poll::Ready(None),
            Check::Going => {}
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                // Done: stop watching.
                this.stage = Stage::Over;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => match this.wait_for_long(cx) {
                Some(reason) => {
                    this.stage = Stage::Over;
                    Poll::Ready(Some(Err(SessionEnded(reason).into())))
                }
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.stage, Stage::Over) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the watch of a [`Cut`] stands.
enum Check {
    /// Its session ended.
    Ended(EndReason),
    /// The body is over.
    Over,
    /// Keep going.
    Going,
}

impl Cut {
    /// Starts watching once the response has lasted long (or at once for
    /// an event stream), and polls the watch.
    fn session_ended(&mut self, cx: &mut Context<'_>) -> Check {
        if let Stage::Waiting {
            watch,
            session,
            started,
            at_once,
            ..
        } = &mut self.stage
        {
            if !*at_once && started.elapsed() < LONG_AFTER {
                return Check::Going;
            }
            let ended = watch.watch(session).into_ended();
            self.stage = Stage::Watching(Box::pin(ended));
        }
        match &mut self.stage {
            Stage::Watching(ended) => match ended.as_mut().poll(cx) {
                Poll::Ready(reason) => Check::Ended(reason),
                Poll::Pending => Check::Going,
            },
            Stage::Over => Check::Over,
            Stage::Waiting { .. } => Check::Going,
        }
    }

    /// The body is waiting for the upstream: make sure it is woken when it
    /// becomes long, and watch it from then on.
    fn wait_for_long(&mut self, cx: &mut Context<'_>) -> Option<EndReason> {
        let Stage::Waiting { started, timer, .. } = &mut self.stage else {
            return None;
        };
        let since = *started;
        let timer =
            timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + LONG_AFTER)));
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        match self.session_ended(cx) {
            Check::Ended(reason) => Some(reason),
            Check::Over | Check::Going => None,
        }
    }
}
