//! Where a login may send the browser: only to a path on this origin.

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

/// Longest `next` accepted.
pub const MAX_NEXT_LEN: usize = 2048;

/// Returns `next` if it is a same-origin path, else `None`.
///
/// Refused: anything not starting with exactly one `/` (`//host`,
/// `https://host`, `javascript:`), a backslash anywhere (browsers read `\`
/// as `/`, so `/\host` is `//host`), control characters and whitespace
/// (URL parsers drop tabs and newlines, so `/\t/host` is `//host`),
/// non-ASCII, and values that turn into one of those after one or two
/// rounds of percent-decoding (`/%2F%2Fhost`, `%2F%2Fhost`, `/%5Chost`).
pub fn safe_next(next: &str) -> Option<&str> {
    if next.len() > MAX_NEXT_LEN {
        return None;
    }
    let raw = next.as_bytes();
    if !raw.iter().all(|&c| (0x21..0x7f).contains(&c)) {
        return None;
    }
    // Whatever decodes it, once or twice, must still see a plain path.
    let mut layer = next.to_owned();
    for _ in 0..3 {
        if !plain_path(&layer) {
            return None;
        }
        let decoded = percent_decode(&layer)?;
        if decoded == layer {
            break;
        }
        layer = decoded;
    }
    Some(next)
}

/// `next` if it is a same-origin path, else `/`.
pub fn next_or_root(next: Option<&str>) -> &str {
    next.and_then(safe_next).unwrap_or("/")
}

/// One slash, then no backslash or control character.
fn plain_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && !s.chars().any(|c| c == '\\' || c.is_control())
}

/// Percent-decodes; `None` if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_pass() {
        for ok in [
            "/",
            "/private/a",
            "/search?q=a+b&x=%20y",
            "/a/b#frag",
            "/.signoff/sessions",
            "/caf%C3%A9",
        ] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn open_redirect_vectors_are_refused() {
        for bad in [
            "",
            "//evil.example",
            "//evil.example/path",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\\/evil.example",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "%2F%2Fevil.example",
            "/%2Fevil.example",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "%252F%252Fevil.example",
            "/%252Fevil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/caf\u{e9}",
            "/\u{ff0f}evil.example",
            "/%ff",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?} was accepted");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_LEN))), None);
    }
}
