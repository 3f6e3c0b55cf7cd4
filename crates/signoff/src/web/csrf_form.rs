//! Forms: [`read_form`] (bounded; a deadline comes from
//! [`body::with_deadline`]), and the [`CsrfForm`] extractor, which also
//! checks that the form shows the user's intent.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::body::{self, BodyError};
use super::origin::{self, Arrival, Intent};
use super::GateRef;

/// Largest form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// How long a form's body may take to arrive when the server set no
/// deadline of its own ([`body::with_deadline`]; the gateway's is its
/// client timeout): a client sending a byte now and then cannot hold a
/// handler.
pub const FORM_DEADLINE: Duration = Duration::from_secs(10);

/// Reads a urlencoded form of at most [`MAX_FORM_BYTES`], due within the
/// request's deadline or [`FORM_DEADLINE`]; `Err` is the status to answer
/// (415, 413, 408 or 400).
pub async fn read_form<T: DeserializeOwned>(req: Request) -> Result<T, StatusCode> {
    let req = match body::has_deadline(&req) {
        true => req,
        false => body::with_deadline(req, FORM_DEADLINE),
    };
    let bytes = body::read(req, "application/x-www-form-urlencoded", MAX_FORM_BYTES)
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
pub enum Proof {
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
pub trait IntentForm: DeserializeOwned + Default + Send {
    /// What proves intent for this form.
    const PROOF: Proof;
    /// The CSRF token the form carries.
    fn csrf(&self) -> Option<&str> {
        None
    }
}

/// Why [`CsrfForm`] refused a request.
pub enum FormRefusal {
    /// The body could not be read: this status (415, 413, 408 or 400).
    Unreadable(StatusCode),
    /// The form did not show intent as its [`Proof`] asks; where it says
    /// it came from.
    NoIntent(Proof, Arrival),
}

/// A form whose sender is shown to mean it ([`IntentForm::PROOF`]).
pub struct CsrfForm<T>(pub T);

impl<S: Send + Sync, T: IntentForm> FromRequest<S> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let state = GateRef::of(&parts)?;
        let req = Request::from_parts(parts, body);
        let headers = req.headers();
        let arrival = Arrival::of(headers, req.uri());
        let intent = origin::intent(headers, &state.origin_for(headers, req.uri()));
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
                    .any(|c| crate::csrf::verify(t, c))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;
    use crate::web::body::Silent;

    fn silent_form() -> Request {
        Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::new(Silent))
            .unwrap()
    }

    #[derive(serde::Deserialize, Debug)]
    struct Anything {}

    #[tokio::test(start_paused = true)]
    async fn a_form_that_never_arrives_is_given_up_on() {
        let started = tokio::time::Instant::now();
        let read = read_form::<Anything>(silent_form()).await;
        assert_eq!(read.unwrap_err(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed().as_secs(), FORM_DEADLINE.as_secs());
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_own_deadline_is_kept() {
        let req = body::with_deadline(silent_form(), Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let read = read_form::<Anything>(req).await;
        assert_eq!(read.unwrap_err(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test]
    async fn a_form_too_large_or_of_another_type_is_refused() {
        let big = Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(vec![b'a'; MAX_FORM_BYTES + 1]))
            .unwrap();
        assert_eq!(
            read_form::<Anything>(big).await.unwrap_err(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let json = Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(
            read_form::<Anything>(json).await.unwrap_err(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
