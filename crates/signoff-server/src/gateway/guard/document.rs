//! Whether a response is a page a browser will render as HTML, decided the
//! way browsers decide it: the `Content-Type` as Fetch extracts it (every
//! value, the last valid one wins), sniffing when there is none (WHATWG
//! MIME Sniffing), and `Content-Disposition`. A page the guard misjudges as
//! "not HTML" would go out without it.

use http::header::{self, HeaderMap, HeaderValue};

/// The WHATWG encoding labels of UTF-16LE and UTF-16BE. Such a page is not
/// ASCII-compatible: an ASCII tag appended to it would be garbage.
const UTF16_LABELS: [&str; 9] = [
    "csunicode",
    "iso-10646-ucs-2",
    "ucs-2",
    "unicode",
    "unicodefeff",
    "unicodefffe",
    "utf-16",
    "utf-16be",
    "utf-16le",
];

/// What a browser will do with a response body.
#[derive(Debug, PartialEq, Eq)]
pub enum Document {
    /// HTML (or XHTML) the guard can go into; the `Content-Type` value the
    /// browser will use.
    Html(HeaderValue),
    /// HTML declared in a UTF-16 charset.
    Utf16Html,
    /// No usable `Content-Type`: the browser sniffs the first bytes.
    Sniffed,
    /// Anything else, downloads included.
    Other,
}

/// Classifies a response by its headers.
pub fn classify(headers: &HeaderMap) -> Document {
    match plain_html(headers) {
        Some(page) => page,
        None => classify_by_parsing(headers),
    }
}

/// The `Content-Type` values most pages carry, which need no parsing.
const PLAIN_HTML: [&[u8]; 3] = [
    b"text/html",
    b"text/html; charset=utf-8",
    b"text/html;charset=utf-8",
];

/// The common case, decided without parsing or allocating: one
/// `Content-Type`, one of [`PLAIN_HTML`] in any case, and no
/// `Content-Disposition`. Parsing decides the same for these
/// (`plain_html_is_what_parsing_decides`); anything else is parsed.
fn plain_html(headers: &HeaderMap) -> Option<Document> {
    if headers.contains_key(header::CONTENT_DISPOSITION) {
        return None;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let value = types.next()?;
    if types.next().is_some() {
        return None;
    }
    PLAIN_HTML
        .iter()
        .any(|plain| value.as_bytes().eq_ignore_ascii_case(plain))
        .then(|| Document::Html(value.clone()))
}

/// Classifies a response by its headers, parsing every value.
fn classify_by_parsing(headers: &HeaderMap) -> Document {
    if is_download(headers) {
        return Document::Other;
    }
    let Some(mime) = extract_mime(headers).filter(|m| {
        // MIME Sniffing §7: these say "unknown", and browsers sniff them.
        !matches!(
            m.essence.as_str(),
            "unknown/unknown" | "application/unknown"
        )
    }) else {
        // With `nosniff`, a typeless body is shown as text, never as HTML.
        let nosniff = headers
            .get_all(header::X_CONTENT_TYPE_OPTIONS)
            .iter()
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"nosniff"));
        return if nosniff {
            Document::Other
        } else {
            Document::Sniffed
        };
    };
    if mime.essence != "text/html" && mime.essence != "application/xhtml+xml" {
        return Document::Other;
    }
    if mime
        .charset
        .as_deref()
        .is_some_and(|c| UTF16_LABELS.iter().any(|l| l.eq_ignore_ascii_case(c)))
    {
        return Document::Utf16Html;
    }
    // The charset an earlier value carried stays (Fetch), so it is written
    // out: the browser must not be left to guess the page's encoding.
    let text = match (
        &mime.charset,
        mime.text.to_ascii_lowercase().contains("charset"),
    ) {
        (Some(charset), false) => format!("{}; charset={charset}", mime.text),
        _ => mime.text.clone(),
    };
    match HeaderValue::from_str(text.trim()) {
        Ok(value) => Document::Html(value),
        Err(_) => Document::Other,
    }
}

/// A download: a `Content-Disposition` whose type is a token other than
/// `inline` (`attachment`, and unknown types, which RFC 6266 and browsers
/// treat alike). A value without a type (empty, or a bare `filename=…`) is
/// rendered by Chromium and Firefox, so it still gets the guard.
fn is_download(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_DISPOSITION)
        .iter()
        .any(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let kind = text.split(';').next().unwrap_or_default().trim();
            is_token(kind) && !kind.eq_ignore_ascii_case("inline")
        })
}

struct Mime {
    /// `type/subtype`, lower case.
    essence: String,
    charset: Option<String>,
    /// The value as the server wrote it.
    text: String,
}

/// Fetch's "extract a MIME type": every `Content-Type` value, split on
/// commas outside quotes; the last one that parses (and is not `*/*`) wins,
/// keeping an earlier charset when the essence repeats without one.
fn extract_mime(headers: &HeaderMap) -> Option<Mime> {
    let joined = headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",");
    let mut result: Option<Mime> = None;
    for value in split_outside_quotes(&joined) {
        let Some(mut mime) = parse_mime(value) else {
            continue;
        };
        if mime.essence == "*/*" {
            continue;
        }
        if let Some(previous) = &result {
            if previous.essence == mime.essence && mime.charset.is_none() {
                mime.charset.clone_from(&previous.charset);
            }
        }
        result = Some(mime);
    }
    result
}

fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// WHATWG "parse a MIME type", keeping what the guard needs.
fn parse_mime(text: &str) -> Option<Mime> {
    let trimmed = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    let (essence, params) = trimmed.split_once(';').unwrap_or((trimmed, ""));
    let (kind, subtype) = essence.split_once('/')?;
    let subtype = subtype.trim_end_matches([' ', '\t', '\r', '\n']);
    if !is_token(kind) || !is_token(subtype) {
        return None;
    }
    let charset = params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim_start()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    });
    Some(Mime {
        essence: format!("{kind}/{subtype}").to_ascii_lowercase(),
        charset,
        text: trimmed.to_owned(),
    })
}

/// How many leading bytes a browser sniffs (WHATWG MIME Sniffing's
/// resource header).
pub const SNIFF_BYTES: usize = 1445;

/// The HTML patterns of WHATWG MIME Sniffing §7.1, and the tags Firefox's
/// sniffer adds, each followed by a space or `>` (except the comment and
/// `<!`, which Firefox takes as HTML whatever follows): the union, so a
/// page any of them renders as HTML gets the guard.
const HTML_PATTERNS: [&[u8]; 30] = [
    b"<!",
    b"<META",
    b"<FORM",
    b"<PRE",
    b"<IMG",
    b"<LINK",
    b"<CENTER",
    b"<H2",
    b"<H3",
    b"<H4",
    b"<H5",
    b"<H6",
    b"<BASE",
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
];

/// Whether a browser sniffing `bytes` (the start of a body without a
/// usable type) sees HTML: `None` while more bytes could change the
/// answer and the body has not `ended`.
pub fn sniffs_as_html(bytes: &[u8], ended: bool) -> Option<bool> {
    let rest = bytes
        .iter()
        .position(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' '))
        .map(|start| &bytes[start..]);
    let Some(rest) = rest else {
        // Only whitespace so far.
        return (ended || bytes.len() >= SNIFF_BYTES).then_some(false);
    };
    let mut undecided = false;
    for pattern in HTML_PATTERNS {
        let needs_end = pattern != b"<!--" && pattern != b"<!";
        let wanted = pattern.len() + usize::from(needs_end);
        if rest.len() < wanted {
            let prefix_matches = rest
                .iter()
                .zip(pattern.iter())
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
            if prefix_matches && !ended && bytes.len() < SNIFF_BYTES {
                undecided = true;
            }
            continue;
        }
        let head_matches = rest[..pattern.len()].eq_ignore_ascii_case(pattern);
        if head_matches && (!needs_end || matches!(rest[pattern.len()], b' ' | b'>')) {
            return Some(true);
        }
    }
    if undecided {
        None
    } else {
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn html(value: &'static str) -> Document {
        Document::Html(HeaderValue::from_static(value))
    }

    #[test]
    fn content_types_are_read_as_browsers_read_them() {
        for (pairs, expected) in [
            (vec![("content-type", "text/html")], html("text/html")),
            (
                vec![("content-type", "Text/HTML ; Charset=\"UTF-8\"")],
                html("Text/HTML ; Charset=\"UTF-8\""),
            ),
            (
                vec![("content-type", "application/xhtml+xml")],
                html("application/xhtml+xml"),
            ),
            // Several values: the last valid one wins.
            (
                vec![("content-type", "text/html"), ("content-type", "text/html")],
                html("text/html"),
            ),
            (
                vec![("content-type", "text/plain, text/html")],
                html("text/html"),
            ),
            (
                vec![
                    ("content-type", "text/plain"),
                    ("content-type", "text/html"),
                ],
                html("text/html"),
            ),
            (
                vec![("content-type", "text/html, text/plain")],
                Document::Other,
            ),
            (vec![("content-type", "text/html, */*")], html("text/html")),
            (
                vec![("content-type", "text/html, nonsense")],
                html("text/html"),
            ),
            (
                vec![("content-type", "text/html; a=\"x,y\"")],
                html("text/html; a=\"x,y\""),
            ),
            // UTF-16 in any label, also from an earlier value.
            (
                vec![("content-type", "text/html; charset=unicode")],
                Document::Utf16Html,
            ),
            (
                vec![("content-type", "text/html; charset=utf-16le, text/html")],
                Document::Utf16Html,
            ),
            // No usable type: sniffed.
            (vec![], Document::Sniffed),
            (vec![("content-type", "")], Document::Sniffed),
            (vec![("content-type", "html")], Document::Sniffed),
            (vec![("content-type", "*/*")], Document::Sniffed),
            (vec![("content-type", "text/")], Document::Sniffed),
            (vec![("content-type", "unknown/unknown")], Document::Sniffed),
            (
                vec![("content-type", "application/unknown")],
                Document::Sniffed,
            ),
            (vec![("content-type", "text/plain")], Document::Other),
            (
                vec![("content-type", "text/html-sandboxed")],
                Document::Other,
            ),
            // A charset from an earlier value is written out.
            (
                vec![
                    ("content-type", "text/html; charset=iso-2022-jp"),
                    ("content-type", "text/html"),
                ],
                html("text/html; charset=iso-2022-jp"),
            ),
            // Typeless with nosniff: shown as text.
            (vec![("x-content-type-options", "nosniff")], Document::Other),
        ] {
            assert_eq!(classify(&headers(&pairs)), expected, "{pairs:?}");
        }
    }

    #[test]
    fn plain_html_is_what_parsing_decides() {
        for value in [
            "text/html",
            "TEXT/HTML",
            "text/html; charset=utf-8",
            "Text/Html; Charset=UTF-8",
            "text/html;charset=utf-8",
        ] {
            let h = headers(&[("content-type", value)]);
            assert_eq!(plain_html(&h), Some(html(value)), "{value}");
            assert_eq!(classify_by_parsing(&h), html(value), "{value}");
        }
        // Everything else is left to parsing.
        for pairs in [
            vec![
                ("content-type", "text/html"),
                ("content-disposition", "inline"),
            ],
            vec![
                ("content-type", "text/html"),
                ("content-type", "text/plain"),
            ],
            vec![("content-type", " text/html")],
            vec![("content-type", "text/html; charset=utf-16")],
            vec![("content-type", "text/html; charset=latin1")],
            vec![("content-type", "text/plain")],
            vec![],
        ] {
            assert_eq!(plain_html(&headers(&pairs)), None, "{pairs:?}");
        }
    }

    #[test]
    fn only_typed_dispositions_other_than_inline_are_downloads() {
        let page = ("content-type", "text/html");
        for (disposition, download) in [
            ("attachment", true),
            ("Attachment; filename=\"page.html\"", true),
            ("form-data; name=x", true),
            ("something-new", true),
            ("inline", false),
            ("inline; filename=\"page.html\"", false),
            ("filename=\"r.html\"", false),
            ("", false),
        ] {
            let classified = classify(&headers(&[page, ("content-disposition", disposition)]));
            assert_eq!(classified == Document::Other, download, "{disposition:?}");
        }
    }

    #[test]
    fn sniffing_follows_the_mime_sniffing_standard() {
        for (body, ended, expected) in [
            (&b"<!DOCTYPE html><html>"[..], false, Some(true)),
            (b"  \n\t<html>", false, Some(true)),
            (b"<HtMl lang=en>", false, Some(true)),
            (b"<p>hi", false, Some(true)),
            (b"<!--x-->", false, Some(true)),
            (b"<!x", false, Some(true)),
            (b"<meta charset=\"utf-8\"><title>Account", false, Some(true)),
            (b"<form action=x>", false, Some(true)),
            (b"<h2>Orders</h2>", false, Some(true)),
            (b"<b>", true, Some(true)),
            (b"<br/>", true, Some(false)),
            (b"<bx", true, Some(false)),
            (b"{\"json\":1}", false, Some(false)),
            (b"%PDF-1.7", false, Some(false)),
            (b"<?xml version=\"1.0\"?>", false, Some(false)),
            // Too early to tell.
            (b"<ht", false, None),
            (b"   ", false, None),
            (b"<", false, None),
            (b"<h", true, Some(false)),
            (b"", true, Some(false)),
        ] {
            assert_eq!(
                sniffs_as_html(body, ended),
                expected,
                "{:?} ended={ended}",
                String::from_utf8_lossy(body)
            );
        }
        // Whitespace past the sniffed window: not HTML.
        assert_eq!(sniffs_as_html(&[b' '; SNIFF_BYTES], false), Some(false));
    }
}
