//! Who a request is from: [`SignedIn`] for the handlers that need a live
//! session, [`MaybeSignedIn`] for those that serve both.
//!
//! A handler cannot get the user any other way: [`Authenticated`] is not an
//! extractor, and what the layer learned about the request is kept in a
//! private field of [`GateRef`](super::GateRef), which only the library
//! sets and reads.
//!
//! ```compile_fail
//! use axum::{routing::get, Router};
//! use signoff::web::Authenticated;
//! // Does not compile: only `SignedIn` (or `MaybeSignedIn`) hands out the user.
//! let app: Router = Router::new().route("/", get(|who: Authenticated| async move { who.user }));
//! ```
//!
//! ```
//! use axum::{routing::get, Router};
//! use signoff::web::SignedIn;
//! let app: Router = Router::new().route("/", get(|who: SignedIn| async move { who.0.user }));
//! ```

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;

use super::GateRef;
use crate::{Session, SessionToken};

/// A request with a live, signed-in session.
#[derive(Clone)]
pub struct Authenticated {
    /// The token the client presented.
    pub token: SessionToken,
    /// Its session.
    pub session: Session,
    /// The user's login name.
    pub user: String,
}

impl std::fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Authenticated")
            .field("user", &self.user)
            .field("session", &self.session.handle)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a request's session.
#[derive(Clone)]
// Made once per request and moved, never stored in bulk: a box would cost
// every signed-in request an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Auth {
    /// A live session.
    SignedIn(Authenticated),
    /// No usable session; `stale` if the client sent a cookie anyway.
    Anonymous {
        /// A session cookie was sent, but it is not (or no longer) good.
        stale: bool,
    },
    /// The store could not answer: fail closed.
    Unavailable,
}

/// Why [`SignedIn`] refused a request.
pub enum NotSignedIn {
    /// No live session: sign in, then come back to `back_to` (for
    /// [`Here`]: `None`, the request's own path); `stale` if a cookie was
    /// sent anyway.
    Anonymous {
        /// Where to come back to after signing in, if not here.
        back_to: Option<&'static str>,
        /// A session cookie was sent, but it is not (or no longer) good.
        stale: bool,
    },
    /// The store could not answer.
    Unavailable,
}

/// Where a handler sends the browser back after the sign-in it asks for.
pub trait BackTo: Send + Sync + 'static {
    /// A path, or `None` for the request's own.
    const PATH: Option<&'static str>;
}

/// Back to the page that asked.
pub struct Here;

impl BackTo for Here {
    const PATH: Option<&'static str> = None;
}

/// The signed-in user. Without a live session the handler does not run:
/// a browser is sent to the login page (coming back to `B`, by default
/// the page it asked for), any other client gets 401, and when the store
/// cannot answer, 503 `no-store`.
pub struct SignedIn<B = Here>(pub Authenticated, pub PhantomData<B>);

impl<B> Deref for SignedIn<B> {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

impl<S: Send + Sync, B: BackTo> FromRequestParts<S> for SignedIn<B> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let why = match GateRef::check(parts).await? {
            Auth::SignedIn(auth) => return Ok(SignedIn(auth, PhantomData)),
            Auth::Anonymous { stale } => NotSignedIn::Anonymous {
                back_to: B::PATH,
                stale,
            },
            Auth::Unavailable => NotSignedIn::Unavailable,
        };
        Err(GateRef::of(parts)?.refuse(why, parts))
    }
}

/// The signed-in user, if any. Refused (503) only when the store cannot
/// answer: a page that shows more to a signed-in user must not show the
/// anonymous version because the store is down.
pub struct MaybeSignedIn(pub Option<Authenticated>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeSignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match GateRef::check(parts).await? {
            Auth::SignedIn(auth) => Ok(MaybeSignedIn(Some(auth))),
            Auth::Anonymous { .. } => Ok(MaybeSignedIn(None)),
            Auth::Unavailable => Err(GateRef::of(parts)?.refuse(NotSignedIn::Unavailable, parts)),
        }
    }
}

impl<S: Send + Sync, B: BackTo> OptionalFromRequestParts<S> for SignedIn<B> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Response> {
        let MaybeSignedIn(who) =
            <MaybeSignedIn as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        Ok(who.map(|a| SignedIn(a, PhantomData)))
    }
}
