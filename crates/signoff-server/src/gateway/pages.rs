//! signoff's own pages: plain HTML that works without JavaScript, with a
//! strict Content-Security-Policy of their own.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem;line-height:1.5}\
label{display:block;margin-top:1rem}input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem}\
button{margin-top:1.2rem;padding:.6rem 1.2rem;font-size:1rem}.error{color:#a00}";

/// The CSP of every signoff page: nothing but this stylesheet; forms post
/// only to this origin; no framing.
fn csp() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        let value = format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    })
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete page. `body` must already be escaped.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp().clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The login form. `next` is kept in a hidden field.
pub fn login(prefix: &str, next: &str, username: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<main><h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"{p}/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"username\">User name</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" \
         spellcheck=\"false\" required value=\"{user}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form></main>",
        p = escape(prefix),
        next = escape(next),
        user = escape(username),
    )
}

/// The confirmation asked by `GET /logout`, which itself changes nothing.
pub fn logout_confirm(prefix: &str, csrf: Option<&str>) -> String {
    let csrf = csrf
        .map(|t| {
            format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                escape(t)
            )
        })
        .unwrap_or_default();
    format!(
        "<main><h1>Sign out</h1><form method=\"post\" action=\"{p}/logout\">{csrf}\
         <button type=\"submit\">Sign out</button></form></main>",
        p = escape(prefix)
    )
}

/// After logout.
pub fn signed_out(prefix: &str) -> String {
    format!(
        "<main><h1>You are signed out</h1><p>Your session has ended on this device and \
         on the server.</p><p><a href=\"{}/login\">Sign in again</a></p></main>",
        escape(prefix)
    )
}

/// A plain message with an optional link.
pub fn message(heading: &str, text: &str) -> String {
    format!(
        "<main><h1>{}</h1><p>{}</p></main>",
        escape(heading),
        escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn login_page_escapes_what_the_client_sent() {
        let html = login("/.signoff", "/\"><script>x</script>", "<b>", Some("<i>"));
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
        assert!(
            html.contains("<label for=\"username\">") && html.contains("<label for=\"password\">")
        );
    }
}
