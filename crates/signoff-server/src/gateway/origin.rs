//! Where a browser says a request came from (`Origin`, `Sec-Fetch-Site`):
//! the intent checks of signoff's own forms.

use axum::http::header::{self, HeaderMap};

/// What the browser says about a request's origin.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Intent {
    /// Origin or Sec-Fetch-Site says this origin.
    SameOrigin,
    /// A browser says another site sent it.
    Foreign,
    /// No such header: not a browser, or an old one.
    Unknown,
}

/// Reads the request's intent against the public origin.
pub(super) fn intent(headers: &HeaderMap, public_origin: &str) -> Intent {
    // `Origin: null` (privacy-sensitive contexts, `no-referrer` pages)
    // says nothing either way; Sec-Fetch-Site then decides.
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null");
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Intent::Foreign;
    }
    match origin {
        Some(o) if o.eq_ignore_ascii_case(public_origin) => Intent::SameOrigin,
        Some(_) => Intent::Foreign,
        None if site == Some("same-origin") => Intent::SameOrigin,
        None => Intent::Unknown,
    }
}

/// `Origin: null` without `Sec-Fetch-Site`: maybe an old browser on an
/// attacker's no-referrer page.
pub(super) fn bare_null_origin(headers: &HeaderMap) -> bool {
    headers.get(header::ORIGIN).is_some_and(|o| o == "null")
        && !headers.contains_key("sec-fetch-site")
}

/// The host (and port) of a public origin (`https://host:port`).
pub(super) fn host_of(public_origin: &str) -> &str {
    public_origin
        .split_once("://")
        .map_or(public_origin, |(_, h)| h)
}
