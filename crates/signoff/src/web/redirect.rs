//! Where a sign-in may send the browser: only to a path on this origin
//! ([`safe_next`]).

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

/// One slash, then no backslash or control character, and no `.` or
/// `..` segment (`/.//host` is the path `//host` once a browser or a
/// router resolves it).
fn plain_path(s: &str) -> bool {
    let b = s.as_bytes();
    let path = s.split(['?', '#']).next().unwrap_or(s);
    b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && !s.chars().any(|c| c == '\\' || c.is_control())
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
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
            "/.//evil.example",
            "/./",
            "/%2e//evil.example",
            "/%2E%2E//evil.example",
            "/a/..//evil.example",
            "/a/%2e%2e/%2fevil.example",
            "/..",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?} was accepted");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_LEN))), None);
    }
}
