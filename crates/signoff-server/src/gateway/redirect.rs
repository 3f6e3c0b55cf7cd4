//! The hops of a sign-in between hosts and providers ([`away`]), and where
//! a login may send the browser: only to a path on this origin (the
//! library's `signoff::web::redirect::safe_next`).

pub(super) use signoff::web::redirect::next_or_root;

/// A 303 to `location`, `no-store`, passing no `Referer` on: for the
/// hops of a sign-in between hosts and providers, whose URLs may hold a
/// code or a hand-over token.
pub(super) fn away(location: &str) -> axum::response::Response {
    use axum::http::header::{self, HeaderValue};
    use axum::response::IntoResponse as _;
    let mut r = axum::http::StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    super::proxy::no_store(r.headers_mut());
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// `text` as one query component (`application/x-www-form-urlencoded`).
pub(super) fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
