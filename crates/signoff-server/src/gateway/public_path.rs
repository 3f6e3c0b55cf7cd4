//! Public paths (`--public-path`): which request paths need no session.

use crate::config::Settings;

/// Whether `path` needs no session: it is one of the public paths and
/// can mean nothing else to the upstream ([`is_plain_path`]).
pub(super) fn is_public(settings: &Settings, path: &str) -> bool {
    if settings.public_paths.is_empty() || !is_plain_path(path) {
        return false;
    }
    settings.public_paths.iter().any(|p| {
        if p.len() > 1 && p.ends_with('/') {
            path.starts_with(p.as_str())
        } else {
            path == p
        }
    })
}

/// Whether a request path means the same to every upstream, however it
/// decodes and normalises it: only when it holds no dot segment, empty
/// segment, backslash or `;` (`/static/..;/admin` in Java servers),
/// neither as it is nor once percent-decoded, and every escape is a plain
/// `%XX` of a printable ASCII character other than `%` (so no double
/// encoding, no IIS `%u002e`, no overlong UTF-8 such as `%c0%ae`, no
/// full-width dots). Anything else may reach another path upstream, so it
/// is never public; it still works for a signed-in user.
pub(super) fn is_plain_path(path: &str) -> bool {
    let raw = path.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return false;
            };
            let byte = (hi * 16 + lo) as u8;
            // An escaped separator or dot means something else to each server.
            if !(0x20..0x7f).contains(&byte) || b"%/\\.;?#".contains(&byte) {
                return false;
            }
            decoded.push(byte);
            i += 3;
        } else {
            if !(0x21..0x7f).contains(&b) {
                return false;
            }
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.first() != Some(&b'/') || decoded.iter().any(|b| matches!(b, b'\\' | b';')) {
        return false;
    }
    let segments: Vec<&[u8]> = decoded[1..].split(|b| *b == b'/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(n, segment)| {
        // Only the last segment may be empty: `/static/` is a directory.
        if segment.is_empty() {
            n == last
        } else {
            *segment != b"." && !segment.starts_with(b"..")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_can_be_public() {
        for plain in [
            "/",
            "/public",
            "/static/",
            "/static/app.js",
            "/a%20b",
            "/.well-known/x",
            "/a/b.c",
        ] {
            assert!(is_plain_path(plain), "{plain}");
        }
        for tricky in [
            // Dot segments, plain and encoded in every spelling.
            "/static/../admin",
            "/static/./x",
            "/static/%2e%2e/admin",
            "/static/%2E./admin",
            "/static/.%2e/admin",
            // Overlong UTF-8 and IIS %u forms of a dot or slash.
            "/static/%c0%ae%c0%ae/admin",
            "/static/%c0%2e%c0%2e/admin",
            "/static/%e0%80%ae/admin",
            "/static/%c0%af",
            "/static/%u002e%u002e/admin",
            "/static/%U002E",
            // Full-width dots and slashes, which some servers fold.
            "/static/%ef%bc%8e%ef%bc%8e/admin",
            "/static/%ef%bc%8fadmin",
            // Encoded separators, double encoding, broken escapes.
            "/static%2fadmin",
            "/static/%5c..%5cadmin",
            "/static/%252e%252e/admin",
            "/static/%2",
            "/static/%zz",
            "/static/%00",
            "/static/%0a",
            "/static/%3b/admin",
            // Separators that Java and Windows servers honour.
            "/static/..;/admin",
            "/static;/x",
            "/static\\..\\admin",
            "//static/x",
            "/static//x",
            "static/x",
            "",
        ] {
            assert!(!is_plain_path(tricky), "{tricky}");
        }
    }
}
