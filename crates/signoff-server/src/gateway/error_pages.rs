//! signoff's own error pages (HTML, no-store).

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::origin::Arrival;
use super::pages;
use super::proxy::no_store;
use super::Gateway;

/// A page saying what went wrong.
pub(super) fn error_page(gw: &Gateway, status: StatusCode, heading: &str, text: &str) -> Response {
    let mut r = pages::render(
        status,
        &pages::MessagePage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            heading,
            text,
        },
    );
    no_store(r.headers_mut());
    r
}

pub(super) fn bad_gateway(gw: &Gateway) -> Response {
    error_page(
        gw,
        StatusCode::BAD_GATEWAY,
        "The application is not reachable",
        "The application behind this gateway is not answering. Try again in a moment.",
    )
}

pub(super) fn unavailable(gw: &Gateway) -> Response {
    let mut r = error_page(
        gw,
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "Sessions cannot be checked right now. Try again in a moment.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// The page for a form that could not be read (`status` from
/// [`read_form`](super::csrf_form::read_form)).
pub(super) fn form_error(gw: &Gateway, status: StatusCode) -> Response {
    let text = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The form is too large.",
        StatusCode::REQUEST_TIMEOUT => "The form took too long to arrive.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "Expected an HTML form (application/x-www-form-urlencoded)."
        }
        _ => "The form could not be read.",
    };
    error_page(gw, status, "Bad request", text)
}

/// The answer to a sign-in form that does not show it came from this
/// origin. A browser on a loopback twin of a loopback public origin (it
/// sent the form from `localhost` to `localhost`, the public URL says
/// `127.0.0.1`) is sent to the sign-in page at the public origin, with
/// nothing it posted; everything else is refused, naming the origin
/// expected, the one that arrived and the setting that fixes a set-up's
/// mismatch, on the page and in the log.
pub(super) fn sign_in_refused(gw: &Gateway, arrival: &Arrival) -> Response {
    let expected = gw.settings.public_origin.as_str();
    let prefix = gw.settings.prefix.as_str();
    let arrived = arrival.shown();
    if arrival.loopback_twin_of(expected) {
        tracing::warn!(
            target: "signoff::auth",
            expected = %expected,
            arrived = ?arrived,
            "a sign-in form came from a loopback address other than the public URL's: \
             sent the browser to the sign-in page there (--public-url names the address \
             signoff is reached at)"
        );
        return to_public_origin(gw, &format!("{prefix}/login"));
    }
    let fix = arrival.fix(expected);
    tracing::warn!(
        target: "signoff::auth",
        expected = %expected,
        arrived = ?arrived,
        fix = ?fix,
        "refused a sign-in form from another origin"
    );
    let mut r = pages::render(
        StatusCode::FORBIDDEN,
        &pages::SignInRefusedPage {
            prefix,
            brand: &gw.settings.branding,
            expected,
            arrived: &arrived,
            fix: &fix,
        },
    );
    no_store(r.headers_mut());
    r
}

/// 303 to `path_and_query` at the public origin (never a host taken from
/// the request), `no-store`.
pub(super) fn to_public_origin(gw: &Gateway, path_and_query: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let location = format!("{}{path_and_query}", gw.settings.public_origin);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r.headers_mut());
    r
}
