//! Forms sent to signoff's own pages: [`read_form`] (bounded, with the
//! deadline of [`own_body`](super::own_body)), and the [`CsrfForm`]
//! extractor, which also checks that the form shows the user's intent.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;
use signoff::SessionToken;

use super::origin::{self, Arrival, Intent};
use super::own_body::{self, BodyError};

/// Largest form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Reads a urlencoded form of at most [`MAX_FORM_BYTES`]; `Err` is the
/// status to answer (415, 413, 408 or 400).
pub(super) async fn read_form<T: DeserializeOwned>(req: Request) -> Result<T, StatusCode> {
    let bytes = own_body::read(req, "application/x-www-form-urlencoded", MAX_FORM_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::WrongType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
        })?;
    serde_urlencoded::from_bytes(&bytes).map_err(|_| StatusCode::BAD_REQUEST)
}

/// What proves that the user meant to send a form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    /// The session's CSRF token in the form, from a browser that does not
    /// say another site sent it (account changes).
    Token,
    /// The CSRF token (form field or `X-Signoff-CSRF`) or a browser saying
    /// this origin, and no browser saying another site; the body may be
    /// left out (sign-out).
    TokenOrSameOrigin,
    /// No browser saying another site, and no bare `Origin: null`, checked
    /// before the body is read (sign-in: there is no session yet).
    NotForeign,
}

/// A form [`CsrfForm`] reads.
pub(super) trait IntentForm: DeserializeOwned + Default + Send {
    /// What proves intent for this form.
    const PROOF: Proof;
    /// The CSRF token the form carries.
    fn csrf(&self) -> Option<&str> {
        None
    }
}

/// What [`CsrfForm`] needs from the app state.
pub(super) trait FormGate: Send + Sync {
    /// The origin a form sent to this request's host must come from
    /// (`https://host:port`): the public one, or an app host's own.
    fn origin_for(&self, headers: &HeaderMap) -> &str;
    /// The session token in the request's cookie, if any.
    fn session_token(&self, headers: &HeaderMap) -> Option<SessionToken>;
    /// The answer to a form refused.
    fn refuse_form(&self, why: FormRefusal) -> Response;
}

impl<T: FormGate> FormGate for Arc<T> {
    fn origin_for(&self, headers: &HeaderMap) -> &str {
        (**self).origin_for(headers)
    }

    fn session_token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        (**self).session_token(headers)
    }

    fn refuse_form(&self, why: FormRefusal) -> Response {
        (**self).refuse_form(why)
    }
}

/// Why [`CsrfForm`] refused a request.
pub(super) enum FormRefusal {
    /// The body could not be read: this status (415, 413, 408 or 400).
    Unreadable(StatusCode),
    /// The form did not show intent as its [`Proof`] asks; where it says
    /// it came from.
    NoIntent(Proof, Arrival),
}

/// A form whose sender is shown to mean it ([`IntentForm::PROOF`]).
pub(super) struct CsrfForm<T>(pub T);

impl<S: FormGate, T: IntentForm> FromRequest<S> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let headers = req.headers();
        let arrival = Arrival::of(headers, req.uri());
        let intent = origin::intent(headers, state.origin_for(headers));
        if T::PROOF == Proof::NotForeign
            && (intent == Intent::Foreign || origin::bare_null_origin(headers))
        {
            return Err(state.refuse_form(FormRefusal::NoIntent(T::PROOF, arrival)));
        }
        let token = state.session_token(headers);
        let header_csrf = headers
            .get("x-signoff-csrf")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let optional =
            T::PROOF == Proof::TokenOrSameOrigin && !headers.contains_key(header::CONTENT_TYPE);
        let form: T = if optional {
            T::default()
        } else {
            read_form(req)
                .await
                .map_err(|status| state.refuse_form(FormRefusal::Unreadable(status)))?
        };
        let verified = |candidates: &[Option<&str>]| {
            token.as_ref().is_some_and(|t| {
                candidates
                    .iter()
                    .flatten()
                    .any(|c| signoff::csrf::verify(t, c))
            })
        };
        let shown = intent != Intent::Foreign
            && match T::PROOF {
                Proof::NotForeign => true,
                Proof::Token => verified(&[form.csrf()]),
                Proof::TokenOrSameOrigin => {
                    verified(&[form.csrf(), header_csrf.as_deref()]) || intent == Intent::SameOrigin
                }
            };
        if !shown {
            return Err(state.refuse_form(FormRefusal::NoIntent(T::PROOF, arrival)));
        }
        Ok(CsrfForm(form))
    }
}
