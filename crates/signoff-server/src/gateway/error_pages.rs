//! signoff's own error pages (HTML, no-store).

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;

use super::pages;
use super::proxy::no_store;
use super::Gateway;

/// A page saying what went wrong.
pub(super) fn error_page(gw: &Gateway, status: StatusCode, heading: &str, text: &str) -> Response {
    let mut r = pages::render(
        status,
        &pages::MessagePage {
            prefix: &gw.settings.prefix,
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
