//! The "pageshow guard": a tiny inline script injected into upstream HTML pages.
//!
//! When a user signs out, pages they viewed may still sit in the browser's
//! back/forward cache (bfcache) and be shown again, fully rendered, by the Back
//! button without any request reaching the gateway. The guard script listens
//! for `pageshow` events with `event.persisted === true` (the page came back
//! from the bfcache), hides the page at once, asks signoff whether the session
//! is still alive (`GET {prefix}/status`) and either shows the page again
//! (answer 200) or replaces it with the login page
//! (`{prefix}/login?next=…`) on any other answer or a network error.
//!
//! [`Guard::inject`] streams the rewrite (`rewrite.rs`): a page whose first
//! chunk plainly starts with its `<head …>` tag gets the script spliced in
//! right after it (`head_tag.rs`); otherwise upstream body chunks are fed
//! into a [`lol_html`] rewriter as they arrive and its output is forwarded
//! as soon as it is produced. Once the script has been placed, the rest of
//! the body is passed through without parsing. Compressed bodies (gzip, deflate, br,
//! zstd) are decoded and compressed again for the client
//! ([`encoding`]); a page in a coding the guard cannot read is handed back
//! as [`Unreadable`], so the caller can refuse it rather than send a private
//! page without its guard.
//!
//! The script is allowed to run, and its status request to be made, under
//! the upstream's Content-Security-Policy by adding the script's hash
//! ([`Guard::csp_source`]) and the status URL to the policy headers
//! ([`csp::extend_csp`]). Policies delivered in the page itself, through
//! `<meta http-equiv="Content-Security-Policy">`, are out of scope: they are
//! left as they are, and a page whose meta policy forbids inline scripts
//! simply does not run the guard (the page is not otherwise affected).

#![forbid(unsafe_code)]

pub mod csp;
pub mod document;
pub mod encoding;
mod head_tag;
mod rewrite;

use std::borrow::Cow;
use std::sync::Arc;

use askama::Template;
use axum::body::{Body, HttpBody as _};
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt as _;
use lol_html::Selector;
use sha2::{Digest as _, Sha256};

use document::Document;
use encoding::{Coding, Unsupported};

/// Headers that describe the exact bytes of the upstream body and become
/// false once the body is rewritten. Names, not text: a `&str` name is
/// parsed again at every removal, five per page.
const STALE_BODY_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
    header::ACCEPT_RANGES,
];

/// The tag injected into upstream pages: the script as it is, our own
/// JavaScript (no user text in it), hence not escaped.
#[derive(Template)]
#[template(path = "guard.html")]
struct GuardTag<'a> {
    script: &'a str,
}

/// The guard for one gateway: its script text and CSP hash, built once at startup.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The script source (what `{prefix}/guard.js` serves).
    script: Arc<str>,
    /// `<script>` + script + `</script>`, exactly what is injected.
    tag: Arc<str>,
    /// `'sha256-…'` of `script`.
    csp_source: String,
    /// The universal selector `*`, parsed once.
    any_element: Option<Arc<Selector>>,
}

/// What the gateway knows of the request whose answer is rewritten.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    /// A HEAD request: there is no body to rewrite.
    pub is_head: bool,
    /// How to compress a page that was decoded ([`encoding::for_client`]).
    pub compress: Coding,
    /// The status endpoint's absolute URL as the browser fetches it, added
    /// to a `connect-src` that would block it.
    pub status_url: Option<Arc<str>>,
}

/// A page that should get the guard but is in a content coding the guard
/// cannot read. The response is handed back untouched.
#[derive(Debug)]
pub struct Unreadable {
    pub response: Response<Body>,
    pub coding: Unsupported,
}

impl Guard {
    /// `prefix` is the URL prefix of signoff's own endpoints, e.g. "/.signoff" (no trailing slash).
    pub fn new(prefix: &str) -> Guard {
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() || prefix.starts_with('/') {
            Cow::Borrowed(prefix)
        } else {
            Cow::Owned(format!("/{prefix}"))
        };
        let script =
            signoff::web::guard::script(&format!("{prefix}/status"), &format!("{prefix}/login"));
        let digest = Sha256::digest(script.as_bytes());
        let csp_source = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        let tag = GuardTag { script: &script }
            .render()
            .unwrap_or_else(|e| unreachable!("rendering to a String cannot fail: {e}"));
        let any_element = match "*".parse::<Selector>() {
            Ok(selector) => Some(Arc::new(selector)),
            Err(error) => {
                tracing::error!(%error, "pageshow guard disabled: selector did not parse");
                None
            }
        };
        Guard {
            script: script.into(),
            tag: tag.into(),
            csp_source,
            any_element,
        }
    }

    /// The JavaScript source served at GET {prefix}/guard.js (for people who include it by hand) — exactly the same code that is inlined.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The CSP source expression, e.g. "'sha256-…'" of the inline script's exact text.
    pub fn csp_source(&self) -> &str {
        &self.csp_source
    }

    /// Rewrites an upstream response: if it is an HTML document with a body,
    /// injects `<script>…</script>` as the first child of `<head>` (or, if the
    /// page has no `<head>` tag, just before its first element other than
    /// `<html>`, or at the end of a page without elements), removes
    /// `Content-Length` and body digests, decodes gzip/deflate/br/zstd
    /// bodies (and compresses them again as `request.compress` says), and
    /// extends every `Content-Security-Policy` and
    /// `Content-Security-Policy-Report-Only` header for the script and its
    /// status request.
    ///
    /// Everything else is returned unchanged, byte for byte:
    /// - `is_head` requests and statuses without a body (1xx, 204, 205, 304),
    ///   206 partial content and any response with `Content-Range`;
    /// - a `Content-Type` other than exactly one `text/html` or
    ///   `application/xhtml+xml` value (compared case-insensitively,
    ///   parameters ignored), including a missing one;
    /// - a download: any `Content-Disposition` other than `inline`;
    /// - UTF-16 HTML, which is not ASCII-compatible: declared with any
    ///   WHATWG label for UTF-16, or starting with a UTF-16 byte-order mark
    ///   (then decoded and compressed again, but not otherwise changed);
    /// - a body known to be empty.
    ///
    /// A page that should get the guard but is in another content coding,
    /// or in several stacked ones, is handed back as [`Unreadable`].
    ///
    /// An upstream body error, a corrupt compressed body, one that decodes
    /// past [`encoding::MAX_DECODED_BYTES`], or a page that makes the
    /// rewriter exceed its memory cap ends the new body with an error.
    pub fn inject(
        &self,
        response: Response<Body>,
        request: &PageRequest,
    ) -> Result<Response<Body>, Box<Unreadable>> {
        let Some(selector) = self.any_element.as_ref() else {
            return Ok(response);
        };
        if no_body_to_guard(&response, request) {
            return Ok(response);
        }
        // `Some(type)`: declared HTML; `None`: to be sniffed.
        let content_type = match document::classify(response.headers()) {
            Document::Other => return Ok(response),
            Document::Utf16Html => {
                tracing::warn!("pageshow guard not injected: the page is declared UTF-16");
                return Ok(response);
            }
            Document::Html(value) => Some(value),
            Document::Sniffed => None,
        };
        let sniff = content_type.is_none();
        let coding = match encoding::content_coding(response.headers()) {
            Ok(coding) => coding,
            Err(coding) => return Err(Box::new(Unreadable { response, coding })),
        };
        let (mut parts, body) = response.into_parts();
        if let Some(value) = content_type {
            // One value, the one the browser would pick among several.
            parts.headers.insert(header::CONTENT_TYPE, value);
        }
        let input = encoding::decode(body, coding);

        let headers = &mut parts.headers;
        headers.remove(header::CONTENT_LENGTH);
        let compress = if coding == Coding::Identity {
            Coding::Identity
        } else {
            request.compress
        };
        if coding != Coding::Identity {
            headers.remove(header::CONTENT_ENCODING);
            if compress != Coding::Identity {
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(compress.name()),
                );
            }
            let varies = headers
                .get_all(header::VARY)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case("accept-encoding"));
            if !varies {
                headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
        }
        self.mark_rewritten(headers, request);

        let rewritten = rewrite::body(input, selector, &self.tag, sniff);
        Ok(Response::from_parts(
            parts,
            Body::from_stream(encoding::encode(rewritten, compress)),
        ))
    }
}

impl Guard {
    /// [`Guard::inject`], for a page that may arrive whole: a page of
    /// declared HTML in no content coding whose first bytes, there within
    /// [`FIRST_BYTES_WITHIN`], are all of it and hold a plain `<head …>`
    /// gets the guard spliced in (the bytes [`Guard::inject`] would give)
    /// and goes out whole with its `Content-Length`: no chunked coding, no
    /// stream to run, nothing to watch (long_response.rs). Any other page
    /// is [`Guard::inject`]ed, its first bytes put back in front.
    pub async fn inject_page(
        &self,
        response: Response<Body>,
        request: &PageRequest,
    ) -> Result<Response<Body>, Box<Unreadable>> {
        let Some(content_type) = self.may_arrive_whole(&response, request) else {
            return self.inject(response, request);
        };
        let (mut parts, mut body) = response.into_parts();
        let first = match tokio::time::timeout(FIRST_BYTES_WITHIN, body.frame()).await {
            Ok(Some(first)) => first,
            // Over at once, or not there yet: it streams.
            Ok(None) | Err(_) => return self.inject(Response::from_parts(parts, body), request),
        };
        let whole = match &first {
            Ok(frame) if body.is_end_stream() => frame
                .data_ref()
                .and_then(|page| rewrite::splice_whole(page, &self.tag)),
            _ => None,
        };
        let Some(page) = whole else {
            let body = Body::new(rewrite::Resumed {
                first: Some(first),
                rest: body,
            });
            return self.inject(Response::from_parts(parts, body), request);
        };
        let headers = &mut parts.headers;
        // One value, the one the browser would pick among several.
        headers.insert(header::CONTENT_TYPE, content_type);
        self.mark_rewritten(headers, request);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        Ok(Response::from_parts(parts, Body::from(page)))
    }

    /// The declared type of a page [`Guard::inject_page`] may find whole:
    /// one with a body, declared HTML, in no content coding.
    fn may_arrive_whole(
        &self,
        response: &Response<Body>,
        request: &PageRequest,
    ) -> Option<HeaderValue> {
        self.any_element.as_ref()?;
        if no_body_to_guard(response, request) {
            return None;
        }
        let Document::Html(value) = document::classify(response.headers()) else {
            return None;
        };
        matches!(
            encoding::content_coding(response.headers()),
            Ok(Coding::Identity)
        )
        .then_some(value)
    }

    /// The headers a rewritten page can no longer keep (digests, ranges
    /// and the like of the old bytes) gone, and every CSP extended for the
    /// guard's script and its status request.
    fn mark_rewritten(&self, headers: &mut HeaderMap, request: &PageRequest) {
        super::proxy::remove_each(headers, &STALE_BODY_HEADERS);
        let status_url = request.status_url.as_deref();
        for name in [
            header::CONTENT_SECURITY_POLICY,
            header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
        ] {
            csp::extend_headers(headers, name, &self.csp_source, status_url);
        }
    }
}

/// How long [`Guard::inject_page`] waits for a page's first bytes before
/// the page streams as [`Guard::inject`] makes it: the time a response may
/// stream before it is watched (long_response.rs), so a page that is whole
/// by then goes out as it would have gone unwatched.
const FIRST_BYTES_WITHIN: std::time::Duration = super::long_response::LONG_AFTER;

/// A HEAD request, a status without a body, a part of a body, or a body
/// known to be empty: nothing the guard could go into.
fn no_body_to_guard(response: &Response<Body>, request: &PageRequest) -> bool {
    request.is_head
        || !status_has_body(response.status())
        || response.headers().contains_key(header::CONTENT_RANGE)
        || response.body().size_hint().exact() == Some(0)
}

fn status_has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::RESET_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests {
    use std::io;

    use bytes::Bytes;
    use futures_util::stream;
    use futures_util::StreamExt as _;

    use super::rewrite::MAX_REWRITER_MEMORY;
    use super::*;
    use async_compression::tokio::bufread::{
        BrotliEncoder, DeflateEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder,
    };
    use futures_util::TryStreamExt as _;
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;

    const PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><!-- <head> -->\n<head data-x=\"1\">\
        <meta charset=\"utf-8\"><title>T &amp; t</title><script>var s = \"<head>\";</script>\
        </head><body class=a><p>Hello <b>world</b></p><img src=x.png/></body></html>\n";

    fn guard() -> Guard {
        Guard::new("/.signoff")
    }

    /// `inject` for a GET (or HEAD) whose client takes no compression.
    trait InjectPlain {
        fn inject_plain(&self, response: Response<Body>, is_head: bool) -> Response<Body>;
    }

    impl InjectPlain for Guard {
        fn inject_plain(&self, response: Response<Body>, is_head: bool) -> Response<Body> {
            let request = PageRequest {
                is_head,
                ..PageRequest::default()
            };
            self.inject(response, &request)
                .unwrap_or_else(|u| panic!("unreadable: {:?}", u.coding))
        }
    }

    fn tag(guard: &Guard) -> String {
        format!("<script>{}</script>", guard.script())
    }

    /// `PAGE` as it must come out: the tag right after `<head …>`, nothing else changed.
    fn expected_page(guard: &Guard) -> String {
        PAGE.replacen(
            "<head data-x=\"1\">",
            &format!("<head data-x=\"1\">{}", tag(guard)),
            1,
        )
    }

    fn response(body: Body, content_type: &str) -> Response<Body> {
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        response
    }

    fn html(body: impl Into<Body>) -> Response<Body> {
        response(body.into(), "text/html; charset=utf-8")
    }

    /// `data` in chunks of 1 to 7 bytes, sizes from a fixed pseudo-random sequence.
    fn tiny_chunks(data: &[u8], seed: u32) -> Body {
        let mut chunks = Vec::new();
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut rest = data;
        while !rest.is_empty() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let size = ((state >> 16) % 7 + 1) as usize;
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(Ok::<_, io::Error>(Bytes::copy_from_slice(chunk)));
            rest = tail;
        }
        Body::from_stream(stream::iter(chunks))
    }

    async fn read_body(response: Response<Body>) -> Result<Bytes, axum::Error> {
        tokio::time::timeout(
            Duration::from_secs(10),
            axum::body::to_bytes(response.into_body(), usize::MAX),
        )
        .await
        .expect("body did not end")
    }

    async fn text(response: Response<Body>) -> String {
        String::from_utf8(read_body(response).await.unwrap().to_vec()).unwrap()
    }

    async fn inject_text(guard: &Guard, body: impl Into<Body>) -> String {
        text(guard.inject_plain(html(body), false)).await
    }

    #[tokio::test]
    async fn injects_right_after_head_once() {
        let guard = guard();
        let out = inject_text(&guard, PAGE).await;
        assert_eq!(out, expected_page(&guard));
        assert_eq!(out.matches(guard.script()).count(), 1);
    }

    #[tokio::test]
    async fn head_variants() {
        let guard = guard();
        let t = tag(&guard);
        for (input, expected) in [
            (
                "<HTML><HEAD><TITLE>x</TITLE>",
                format!("<HTML><HEAD>{t}<TITLE>x</TITLE>"),
            ),
            (
                "<head><title>x</title></head>",
                format!("<head>{t}<title>x</title></head>"),
            ),
            // `<head/>` keeps its slash; the script goes before it.
            (
                "<html><head/><body>b</body>",
                format!("<html>{t}<head/><body>b</body>"),
            ),
        ] {
            assert_eq!(inject_text(&guard, input).await, expected, "{input}");
        }
    }

    #[tokio::test]
    async fn page_without_head() {
        let guard = guard();
        let t = tag(&guard);
        for (input, expected) in [
            (
                "<!doctype html><html lang=en><meta charset=utf-8><title>x</title>hi",
                format!("<!doctype html><html lang=en>{t}<meta charset=utf-8><title>x</title>hi"),
            ),
            ("<body><p>x</p></body>", format!("{t}<body><p>x</p></body>")),
            ("just text &amp; more", format!("just text &amp; more{t}")),
            ("<html>text</html>", format!("<html>text</html>{t}")),
            // A body known to be empty is left alone.
            ("", String::new()),
        ] {
            assert_eq!(inject_text(&guard, input).await, expected, "{input}");
        }
    }

    #[tokio::test]
    async fn tiny_chunks_give_the_same_output() {
        let guard = guard();
        let docs = [
            PAGE,
            "<!doctype html><html lang=en><meta charset=utf-8><title>x</title>hi",
            "<!-- <head> --><html\n  data-a='<head>'><head\tid=h><title>x</title></head>",
            "plain text, no elements at all <",
            "<html><head/><body>b</body>",
            "<html><head><script>if (a<b) { document.write('<head>') }</script>",
        ];
        for doc in docs {
            let whole = inject_text(&guard, doc).await;
            assert_eq!(whole.matches(guard.script()).count(), 1, "{doc}");
            for seed in 0..40 {
                let chunked =
                    text(guard.inject_plain(html(tiny_chunks(doc.as_bytes(), seed)), false)).await;
                assert_eq!(chunked, whole, "{doc} / seed {seed}");
            }
        }
        // And the exact expected text for the full page.
        let chunked = text(guard.inject_plain(html(tiny_chunks(PAGE.as_bytes(), 7)), false)).await;
        assert_eq!(chunked, expected_page(&guard));
    }

    #[tokio::test]
    async fn streams_without_buffering_the_page() {
        let guard = guard();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let body = Body::from_stream(stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut out = guard
            .inject_plain(html(body), false)
            .into_body()
            .into_data_stream();
        async fn next(out: &mut axum::body::BodyDataStream) -> Option<Result<Bytes, axum::Error>> {
            tokio::time::timeout(Duration::from_secs(5), out.next())
                .await
                .expect("no output while upstream is still open")
        }
        tx.send(Ok(Bytes::from_static(b"<html><head><ti")))
            .await
            .unwrap();
        let first = next(&mut out).await.unwrap().unwrap();
        assert_eq!(first, format!("<html><head>{}<ti", tag(&guard)).as_bytes());
        for chunk in ["tle>x</title></head>", "<body>", "<p>more</p>"] {
            tx.send(Ok(Bytes::from(chunk))).await.unwrap();
            assert_eq!(next(&mut out).await.unwrap().unwrap(), chunk.as_bytes());
        }
        drop(tx);
        assert!(next(&mut out).await.is_none());
    }

    async fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
            "zlib" => ZlibEncoder::new(data).read_to_end(&mut out).await,
            "deflate" => DeflateEncoder::new(data).read_to_end(&mut out).await,
            "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
            "zstd" => ZstdEncoder::new(data).read_to_end(&mut out).await,
            _ => unreachable!(),
        }
        .unwrap();
        out
    }

    fn encoded(body: Body, encoding: &str, length: usize) -> Response<Body> {
        let mut response = html(body);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        response
    }

    #[tokio::test]
    async fn compressed_bodies_are_decoded_and_rewritten() {
        let guard = guard();
        for (coding, header_value) in [
            ("gzip", "gzip"),
            ("gzip", "X-GZIP"),
            ("zlib", "deflate"),
            ("deflate", "deflate"),
            ("br", "br"),
            ("br", "identity, br"),
            ("zstd", "zstd"),
            ("zstd", "ZSTD"),
        ] {
            let data = compress(coding, PAGE.as_bytes()).await;
            for chunked in [false, true] {
                let body = if chunked {
                    tiny_chunks(&data, 3)
                } else {
                    Body::from(data.clone())
                };
                let out = guard.inject_plain(encoded(body, header_value, data.len()), false);
                let headers = out.headers();
                assert!(
                    headers.get(header::CONTENT_ENCODING).is_none(),
                    "{header_value}"
                );
                assert!(
                    headers.get(header::CONTENT_LENGTH).is_none(),
                    "{header_value}"
                );
                assert_eq!(headers[header::VARY], "Accept-Encoding");
                assert_eq!(text(out).await, expected_page(&guard), "{header_value}");
            }
        }
    }

    #[tokio::test]
    async fn concatenated_gzip_members_are_all_decoded() {
        let guard = guard();
        let (a, b) = PAGE.split_at(PAGE.len() / 2);
        let mut data = compress("gzip", a.as_bytes()).await;
        data.extend(compress("gzip", b.as_bytes()).await);
        let out = guard.inject_plain(encoded(Body::from(data.clone()), "gzip", data.len()), false);
        assert_eq!(text(out).await, expected_page(&guard));
    }

    #[tokio::test]
    async fn identity_html_loses_content_length_and_digests() {
        let guard = guard();
        let mut input = html(PAGE);
        let headers = input.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(PAGE.len()));
        // Each named by its text, so a wrong name in the list fails here.
        let stale = [
            "content-md5",
            "digest",
            "content-digest",
            "repr-digest",
            "accept-ranges",
        ];
        for name in stale {
            headers.insert(name, HeaderValue::from_static("sha-256=abc"));
        }
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let out = guard.inject_plain(input, false);
        assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
        for name in stale {
            assert!(out.headers().get(name).is_none(), "{name}");
        }
        assert_eq!(out.headers()[header::ETAG], "\"v1\"");
        assert_eq!(text(out).await, expected_page(&guard));
    }

    #[tokio::test]
    async fn html_content_types() {
        let guard = guard();
        for (content_type, injected) in [
            ("text/html", true),
            ("Text/HTML ; Charset=\"UTF-8\"", true),
            ("application/xhtml+xml", true),
            ("APPLICATION/XHTML+XML;charset=iso-8859-1", true),
            ("text/html; charset=utf-16le", false),
            ("text/plain", false),
            ("text/html-sandboxed", false),
            ("application/json", false),
        ] {
            let out =
                text(guard.inject_plain(response(Body::from(PAGE), content_type), false)).await;
            assert_eq!(out.contains(guard.script()), injected, "{content_type}");
        }
        // Several values: the browser takes the last valid one, and so does
        // the guard, leaving only that one.
        for values in [
            &["text/html", "text/html"][..],
            &["text/plain, text/html"],
            &["text/plain", "text/html; charset=utf-8"],
        ] {
            let mut input = Response::new(Body::from(PAGE));
            for value in values {
                input
                    .headers_mut()
                    .append(header::CONTENT_TYPE, HeaderValue::from_static(value));
            }
            let out = guard.inject_plain(input, false);
            assert_eq!(
                out.headers().get_all(header::CONTENT_TYPE).iter().count(),
                1
            );
            assert_eq!(text(out).await, expected_page(&guard), "{values:?}");
        }
        let mut input = html(PAGE);
        input
            .headers_mut()
            .append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_untouched(input, PAGE.as_bytes(), false).await;
    }

    #[tokio::test]
    async fn pages_without_a_type_are_sniffed_like_browsers_do() {
        let guard = guard();
        // HTML by its first bytes: the guard goes in, in any chunking.
        for seed in 0..10 {
            let out = guard.inject_plain(Response::new(tiny_chunks(PAGE.as_bytes(), seed)), false);
            assert_eq!(text(out).await, expected_page(&guard), "seed {seed}");
        }
        let out = guard.inject_plain(Response::new(Body::from("\n  <p>private</p>")), false);
        assert_eq!(
            text(out).await,
            format!("\n  {}<p>private</p>", tag(&guard))
        );
        let mut invalid = Response::new(Body::from(PAGE));
        invalid
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("html"));
        assert_eq!(
            text(guard.inject_plain(invalid, false)).await,
            expected_page(&guard)
        );
        // Anything else passes as it came.
        for body in [
            &b"{\"a\":\"<head>\"}"[..],
            b"%PDF-1.7 <head>",
            b"plain <html> text",
            b"",
        ] {
            let out = guard.inject_plain(Response::new(tiny_chunks(body, 3)), false);
            assert_eq!(read_body(out).await.unwrap(), body);
        }
    }

    /// Asserts `inject` leaves the response exactly as it was.
    async fn assert_untouched(input: Response<Body>, body: &[u8], is_head: bool) {
        let status = input.status();
        let headers = input.headers().clone();
        let out = guard().inject_plain(input, is_head);
        assert_eq!(out.status(), status);
        assert_eq!(out.headers(), &headers);
        assert_eq!(read_body(out).await.unwrap(), body);
    }

    #[tokio::test]
    async fn non_html_is_passed_byte_for_byte() {
        let mut png = b"\x89PNG\r\n\x1a\n<head>".to_vec();
        let mut state = 99u32;
        for _ in 0..5000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            png.push((state >> 24) as u8);
        }
        let mut input = response(Body::from(png.clone()), "image/png");
        input
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(png.len()));
        input.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("script-src 'self'"),
        );
        assert_untouched(input, &png, false).await;

        let json = br#"{"html":"<html><head></head></html>"}"#;
        let mut input = response(Body::from(&json[..]), "application/json");
        input
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
        assert_untouched(input, json, false).await;
    }

    #[tokio::test]
    async fn head_and_bodiless_statuses_are_untouched() {
        let with_length = |status: StatusCode, body: &'static str| {
            let mut input = html(body);
            *input.status_mut() = status;
            input
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(PAGE.len()));
            input.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("script-src 'self'"),
            );
            input
        };
        assert_untouched(with_length(StatusCode::OK, ""), b"", true).await;
        assert_untouched(with_length(StatusCode::OK, PAGE), PAGE.as_bytes(), true).await;
        for status in [
            StatusCode::NOT_MODIFIED,
            StatusCode::NO_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::RESET_CONTENT,
        ] {
            assert_untouched(with_length(status, ""), b"", false).await;
            // Even if a broken upstream sends a body with it.
            assert_untouched(with_length(status, PAGE), PAGE.as_bytes(), false).await;
        }
        // Statuses with a body are rewritten, errors included.
        let out = guard().inject_plain(with_length(StatusCode::NOT_FOUND, PAGE), false);
        assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(text(out).await, expected_page(&guard()));
    }

    #[tokio::test]
    async fn unreadable_codings_are_handed_back_untouched() {
        let gzipped = compress("gzip", PAGE.as_bytes()).await;
        let guard = guard();
        for (encoding, named) in [
            ("dcz", "dcz"),
            ("gzip, br", "gzip, br"),
            ("gzip, gzip", "gzip, gzip"),
            ("compress", "compress"),
        ] {
            let input = encoded(Body::from(gzipped.clone()), encoding, gzipped.len());
            let headers = input.headers().clone();
            let unreadable = *guard.inject(input, &PageRequest::default()).unwrap_err();
            assert_eq!(unreadable.coding.0, named);
            assert_eq!(unreadable.response.headers(), &headers);
            assert_eq!(read_body(unreadable.response).await.unwrap(), gzipped);
        }
        let mut input = encoded(Body::from(gzipped.clone()), "gzip", gzipped.len());
        input
            .headers_mut()
            .append(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(guard.inject(input, &PageRequest::default()).is_err());
        // Not HTML: no guard is due, so any coding passes untouched.
        let mut input = encoded(Body::from(gzipped.clone()), "dcz", gzipped.len());
        input.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        assert_untouched(input, &gzipped, false).await;
    }

    #[tokio::test]
    async fn decoded_pages_are_compressed_again_for_the_client() {
        let guard = guard();
        let gzipped = compress("gzip", PAGE.as_bytes()).await;
        for coding in [Coding::Zstd, Coding::Brotli, Coding::Gzip] {
            let request = PageRequest {
                compress: coding,
                ..PageRequest::default()
            };
            let mut input = encoded(Body::from(gzipped.clone()), "gzip", gzipped.len());
            input.headers_mut().remove(header::VARY);
            let out = guard.inject(input, &request).unwrap();
            assert_eq!(out.headers()[header::CONTENT_ENCODING], coding.name());
            assert_eq!(out.headers()[header::VARY], "Accept-Encoding");
            assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
            let body = read_body(out).await.unwrap();
            let decoded: Vec<Bytes> = encoding::decode(Body::from(body), coding)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(
                decoded.concat(),
                expected_page(&guard).as_bytes(),
                "{coding:?}"
            );
        }
        // A page that came uncompressed is not compressed here.
        let request = PageRequest {
            compress: Coding::Zstd,
            ..PageRequest::default()
        };
        let out = guard.inject(html(PAGE), &request).unwrap();
        assert!(out.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(text(out).await, expected_page(&guard));
    }

    #[tokio::test]
    async fn utf16_pages_are_passed_through() {
        let guard = guard();
        // Any WHATWG label of UTF-16 in the header.
        for charset in [
            "utf-16",
            "UTF-16LE",
            "utf-16be",
            "unicode",
            "ucs-2",
            "csUnicode",
            "iso-10646-ucs-2",
            "unicodefffe",
            "\"unicodeFEFF\"",
        ] {
            let content_type = format!("text/html; charset={charset}");
            let input = response(Body::from(PAGE), &content_type);
            assert_untouched(input, PAGE.as_bytes(), false).await;
        }
        // A byte-order mark, whatever the header says, in any chunking.
        let utf16le: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(PAGE.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let utf16be: Vec<u8> = [0xfe, 0xff]
            .into_iter()
            .chain(PAGE.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        for page in [utf16le, utf16be] {
            for seed in 0..5 {
                let out = guard.inject_plain(html(tiny_chunks(&page, seed)), false);
                assert_eq!(read_body(out).await.unwrap(), page);
            }
            let gzipped = compress("gzip", &page).await;
            let out = guard.inject_plain(encoded(Body::from(gzipped.clone()), "gzip", 0), false);
            assert_eq!(read_body(out).await.unwrap(), page);
        }
        // A UTF-8 byte-order mark is ASCII-compatible: the guard goes in.
        let out = inject_text(&guard, format!("\u{feff}{PAGE}")).await;
        assert_eq!(out, format!("\u{feff}{}", expected_page(&guard)));
        // One byte, then the end: not a mark, and still rewritten.
        assert_eq!(inject_text(&guard, "x").await, format!("x{}", tag(&guard)));
    }

    #[tokio::test]
    async fn downloads_are_not_rewritten() {
        let guard = guard();
        for disposition in [
            "attachment",
            "Attachment; filename=\"page.html\"",
            "attachment;filename*=UTF-8''p%C3%A4ge.html",
            "form-data; name=x",
            "something-new",
        ] {
            let mut input = html(PAGE);
            input.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(disposition),
            );
            assert_untouched(input, PAGE.as_bytes(), false).await;
        }
        // What browsers render inline gets the guard.
        for disposition in ["inline; filename=\"page.html\"", "filename=\"r.html\"", ""] {
            let mut input = html(PAGE);
            input.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(disposition),
            );
            assert_eq!(
                text(guard.inject_plain(input, false)).await,
                expected_page(&guard),
                "{disposition:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_blocking_connect_src_lets_the_status_request_through() {
        let guard = guard();
        let status = "https://app.example/.signoff/status";
        let request = PageRequest {
            status_url: Some(status.into()),
            ..PageRequest::default()
        };
        let mut input = html(PAGE);
        input.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; connect-src https://api.example"),
        );
        let out = guard.inject(input, &request).unwrap();
        assert_eq!(
            out.headers()[header::CONTENT_SECURITY_POLICY],
            format!(
                "default-src 'none'; connect-src https://api.example {status}; script-src {}",
                guard.csp_source()
            )
            .as_str()
        );
    }

    fn failing_body(chunks: Vec<Bytes>) -> Body {
        let items = chunks
            .into_iter()
            .map(Ok)
            .chain([Err(io::Error::other("upstream reset"))]);
        Body::from_stream(stream::iter(items))
    }

    #[tokio::test]
    async fn upstream_errors_end_the_body_with_an_error() {
        let guard = guard();
        for chunks in [
            vec![],
            vec![Bytes::from_static(b"<html><he")],
            vec![
                Bytes::from_static(b"<html><head>"),
                Bytes::from_static(b"<p>"),
            ],
        ] {
            let out = guard.inject_plain(html(failing_body(chunks.clone())), false);
            assert!(read_body(out).await.is_err(), "{chunks:?}");
        }
        let gzipped = Bytes::from(compress("gzip", PAGE.as_bytes()).await);
        let half = gzipped.slice(..gzipped.len() / 2);
        let out = guard.inject_plain(encoded(failing_body(vec![half.clone()]), "gzip", 0), false);
        assert!(read_body(out).await.is_err());
        // A truncated or corrupt compressed body is an error too.
        for bad in [half, Bytes::from_static(b"not gzip at all")] {
            let out = guard.inject_plain(encoded(Body::from(bad), "gzip", 0), false);
            assert!(read_body(out).await.is_err());
        }
    }

    #[tokio::test]
    async fn rewriter_memory_is_capped() {
        let guard = guard();
        let mut page = b"<html data-x=\"".to_vec();
        page.resize(page.len() + 2 * MAX_REWRITER_MEMORY, b'a');
        page.extend_from_slice(b"\"><head><title>x</title>");
        let chunks: Vec<_> = page
            .chunks(8 * 1024)
            .map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c)))
            .collect();
        let out = guard.inject_plain(html(Body::from_stream(stream::iter(chunks))), false);
        assert!(read_body(out).await.is_err());
        // The parser is fed in slices, so one chunk holding it all is no way
        // round the cap.
        let out = guard.inject_plain(html(page.clone()), false);
        assert!(read_body(out).await.is_err());
        // A long tag within the cap is fine.
        let mut page = b"<html data-x=\"".to_vec();
        page.resize(page.len() + MAX_REWRITER_MEMORY / 4, b'a');
        page.extend_from_slice(b"\"><head><title>x</title>");
        let out = guard.inject_plain(html(page.clone()), false);
        assert_eq!(
            read_body(out).await.unwrap().len(),
            page.len() + tag(&guard).len()
        );
    }

    #[tokio::test]
    async fn csp_headers_are_extended() {
        let guard = guard();
        let source = guard.csp_source().to_owned();
        let mut input = html(PAGE);
        let headers = input.headers_mut();
        for policy in ["script-src 'self'", "default-src 'none'"] {
            headers.append(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(policy),
            );
        }
        headers.append(
            header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
            HeaderValue::from_static("script-src 'none'"),
        );
        let out = guard.inject_plain(input, false);
        let policies: Vec<_> = out
            .headers()
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            policies,
            [
                format!("script-src 'self' {source}"),
                format!("default-src 'none'; script-src {source}"),
            ]
        );
        assert_eq!(
            out.headers()[header::CONTENT_SECURITY_POLICY_REPORT_ONLY],
            format!("script-src {source}").as_str()
        );
    }

    #[tokio::test]
    async fn guard_placed_by_the_byte_scan_or_the_parser() {
        let guard = guard();
        let t = tag(&guard);
        for (input, expected) in [
            // Found by the byte scan.
            (
                "<!DOCTYPE html>\n<HTML LANG=EN>\n<HEAD PROFILE=\"x\"><TITLE>x</TITLE>",
                format!("<!DOCTYPE html>\n<HTML LANG=EN>\n<HEAD PROFILE=\"x\">{t}<TITLE>x</TITLE>"),
            ),
            (
                "<html data-a='<head>' b=\"x>y\"><head class = 'a>b' id=h><meta charset=utf-8>",
                format!(
                    "<html data-a='<head>' b=\"x>y\"><head class = 'a>b' id=h>{t}<meta charset=utf-8>"
                ),
            ),
            // `<header>` is not the head: the parser puts the guard before it.
            (
                "<html><header>h</header><head></head>",
                format!("<html>{t}<header>h</header><head></head>"),
            ),
            // `<head` in a comment or a script before the real one.
            (
                "<!-- <head> --><html><head><title>x</title>",
                format!("<!-- <head> --><html><head>{t}<title>x</title>"),
            ),
            (
                "<!doctype html><script>var h = '<head>';</script><head>",
                format!("<!doctype html>{t}<script>var h = '<head>';</script><head>"),
            ),
            // Text before the head.
            ("hi <head>x", format!("hi <head>{t}x")),
        ] {
            assert_eq!(inject_text(&guard, input).await, expected, "{input}");
        }
    }

    #[tokio::test]
    async fn a_head_split_across_chunks_is_found_by_the_parser() {
        let guard = guard();
        let page = "<!doctype html><html><head data-x=\"1\"><title>x</title>";
        let expected = page.replacen(
            "<head data-x=\"1\">",
            &format!("<head data-x=\"1\">{}", tag(&guard)),
            1,
        );
        // Cut before the head tag ends (the parser's job), right after it
        // and later (the byte scan's).
        for cut in [5, 14, 18, 24, 27, 33, 37, 38, 40] {
            let chunks = vec![
                Ok::<_, io::Error>(Bytes::copy_from_slice(&page.as_bytes()[..cut])),
                Ok(Bytes::copy_from_slice(&page.as_bytes()[cut..])),
            ];
            let body = Body::from_stream(stream::iter(chunks));
            assert_eq!(
                text(guard.inject_plain(html(body), false)).await,
                expected,
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn csp_is_the_same_whichever_way_the_guard_is_placed() {
        let guard = guard();
        let request = PageRequest {
            status_url: Some("https://app.example/.signoff/status".into()),
            ..PageRequest::default()
        };
        let with_policies = |page: &'static str| {
            let mut input = html(page);
            let headers = input.headers_mut();
            for policy in [
                "script-src 'nonce-abc' 'strict-dynamic'",
                "default-src 'none'; connect-src 'self'",
            ] {
                headers.append(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(policy),
                );
            }
            headers.append(
                header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
                HeaderValue::from_static("script-src 'nonce-abc'"),
            );
            input
        };
        // The first by the byte scan, the second by the parser.
        let scanned = guard
            .inject(with_policies("<html><head><title>x</title>"), &request)
            .unwrap();
        let parsed = guard
            .inject(
                with_policies("<!-- c --><html><head><title>x</title>"),
                &request,
            )
            .unwrap();
        assert_eq!(scanned.headers(), parsed.headers());
        let policy = |r: &Response<Body>| {
            r.headers()
                .get_all(header::CONTENT_SECURITY_POLICY)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(policy(&scanned)[0].contains(guard.csp_source()));
        let scanned_body = text(scanned).await;
        let parsed_body = text(parsed).await;
        assert_eq!(
            scanned_body,
            format!("<html><head>{}<title>x</title>", tag(&guard))
        );
        assert_eq!(parsed_body, format!("<!-- c -->{scanned_body}"));
    }

    #[test]
    fn csp_source_is_the_sha256_of_the_script() {
        let guard = guard();
        let digest = Sha256::digest(guard.script().as_bytes());
        let expected = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(guard.csp_source(), expected);
        assert_eq!(guard.csp_source().len(), "'sha256-'".len() + 44);
        assert_eq!(tag(&guard), *guard.tag);
    }

    #[test]
    fn script_does_what_it_should() {
        let script = guard().script().to_owned();
        for needle in [
            "\"pageshow\"",
            "persisted!==true",
            "\"hidden\"",
            "\"/.signoff/status\"",
            "cache:\"no-store\"",
            "credentials:\"same-origin\"",
            "location.replace(",
            "\"/.signoff/login?next=\"",
            "encodeURIComponent(location.pathname+location.search)",
            "r.status===200",
        ] {
            assert!(script.contains(needle), "{needle} missing from {script}");
        }
        assert!(!script.contains("unload"));
        assert!(!script.contains('`'));
        // Safe inline in HTML and XHTML, and the hash is charset-independent.
        assert!(script.bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert!(!script.contains('<') && !script.contains('&'));
    }

    #[test]
    fn prefix_is_escaped() {
        let script = Guard::new("/a\"b\\c</script>&\u{2028}é😀/")
            .script()
            .to_owned();
        assert!(script
            .contains(r#""/a\"b\\c\u003c/script\u003e\u0026\u2028\u00e9\ud83d\ude00/status""#));
        assert!(script.bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert!(!script.contains('<') && !script.contains('&'));
        assert!(Guard::new("auth").script().contains("\"/auth/status\""));
        assert!(Guard::new("/x/").script().contains("\"/x/status\""));
    }

    /// `inject_page` for a GET whose client takes no compression.
    async fn inject_page(guard: &Guard, response: Response<Body>) -> Response<Body> {
        guard
            .inject_page(response, &PageRequest::default())
            .await
            .unwrap_or_else(|u| panic!("unreadable: {:?}", u.coding))
    }

    /// A page that arrives whole gets the very bytes `inject` gives it, and
    /// keeps a `Content-Length` (its own plus the tag's) where the byte scan
    /// places the tag; where it does not (no plain `<head>`, a UTF-16
    /// byte-order mark) the page streams as `inject` makes it. Headers other
    /// than the length are the same either way.
    #[tokio::test]
    async fn a_page_that_arrives_whole_gets_the_bytes_inject_gives_and_a_length() {
        let guard = guard();
        let csp = "default-src 'self'; script-src 'self'";
        let pages: [(&[u8], bool); 8] = [
            (
                b"<!doctype html><html><head><meta charset=utf-8></head><body>x</body></html>",
                true,
            ),
            // A comment before `<head>`: the parser's to place.
            (PAGE.as_bytes(), false),
            (
                b"<HTML><HEAD>\n<title>x</title></HEAD><body>y</body></HTML>",
                true,
            ),
            (b"<head >", true),
            (b"<!doctype html><p>no head at all</p>", false),
            (
                b"<!-- c --><html><head><title>t</title></head></html>",
                false,
            ),
            (b"\xff\xfe<\x00h\x00", false),
            (b"x", false),
        ];
        // Whatever `inject` decides from the headers, `inject_page` decides
        // the same: sniffed, UTF-16, downloads and XHTML included.
        let variants: [(&[(&str, &str)], bool); 6] = [
            (&[], false),
            (&[("content-type", "text/html; charset=utf-16")], false),
            (
                &[
                    ("content-type", "text/html"),
                    ("content-disposition", "attachment"),
                ],
                false,
            ),
            (&[("content-type", "application/xhtml+xml")], true),
            (&[("content-type", "text/plain")], false),
            (
                &[
                    ("content-type", "text/html"),
                    ("content-disposition", "inline"),
                ],
                true,
            ),
        ];
        let simple: &[u8] = b"<!doctype html><html><head><title>t</title></head><p>x</p>";
        for (headers, whole) in variants {
            let with_headers = || {
                let mut r = Response::new(Body::from(simple.to_vec()));
                for (name, value) in headers {
                    r.headers_mut().insert(
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    );
                }
                r
            };
            let streamed = guard.inject_plain(with_headers(), false);
            let sent = inject_page(&guard, with_headers()).await;
            assert_eq!(
                sent.headers().get(header::CONTENT_LENGTH).is_some(),
                whole,
                "{headers:?}"
            );
            let (mut sent_head, sent_body) = sent.into_parts();
            let (streamed_head, streamed_body) = streamed.into_parts();
            sent_head.headers.remove(header::CONTENT_LENGTH);
            assert_eq!(sent_head.headers, streamed_head.headers, "{headers:?}");
            assert_eq!(
                read_body(Response::new(sent_body)).await.unwrap(),
                read_body(Response::new(streamed_body)).await.unwrap(),
                "{headers:?}"
            );
        }
        for (page, whole) in pages {
            let with_headers = || {
                let mut r = html(Body::from(page.to_vec()));
                let h = r.headers_mut();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(csp),
                );
                h.insert("digest", HeaderValue::from_static("sha-256=x"));
                r
            };
            let streamed = guard.inject_plain(with_headers(), false);
            let sent = inject_page(&guard, with_headers()).await;
            let (mut streamed_head, streamed_body) = streamed.into_parts();
            let (mut sent_head, sent_body) = sent.into_parts();
            let streamed_body = read_body(Response::new(streamed_body)).await.unwrap();
            let sent_body = read_body(Response::new(sent_body)).await.unwrap();
            assert_eq!(
                sent_body,
                streamed_body,
                "{:?}",
                String::from_utf8_lossy(page)
            );
            let length = sent_head.headers.remove(header::CONTENT_LENGTH);
            if whole {
                assert_eq!(
                    length,
                    Some(HeaderValue::from(page.len() + tag(&guard).len())),
                    "{:?}",
                    String::from_utf8_lossy(page)
                );
                assert_eq!(sent_body.len(), page.len() + tag(&guard).len());
            } else {
                assert_eq!(length, None, "{:?}", String::from_utf8_lossy(page));
            }
            assert!(streamed_head
                .headers
                .remove(header::CONTENT_LENGTH)
                .is_none());
            assert_eq!(sent_head.headers, streamed_head.headers);
        }
    }

    /// A page that comes in pieces, or later than `FIRST_BYTES_WITHIN`,
    /// streams as `inject` makes it (no length, the tag in place); a body
    /// that fails fails the page, also when its first frame is the error.
    #[tokio::test(start_paused = true)]
    async fn a_page_in_pieces_late_or_failing_streams_as_inject_makes_it() {
        let guard = guard();
        let pieces = inject_page(&guard, html(tiny_chunks(PAGE.as_bytes(), 7))).await;
        assert!(pieces.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(text(pieces).await, expected_page(&guard));

        // Whole, but later than `FIRST_BYTES_WITHIN`: not waited for.
        let simple = "<html><head><title>t</title></head>";
        let late = inject_page(&guard, html(Body::new(Late::new(simple)))).await;
        assert!(late.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(
            text(late).await,
            simple.replacen("<head>", &format!("<head>{}", tag(&guard)), 1)
        );
        // The same page on time keeps its length.
        let on_time = inject_page(&guard, html(simple)).await;
        assert!(on_time.headers().get(header::CONTENT_LENGTH).is_some());

        // `<head>` in the first piece, and more to come: all of it goes.
        let two = stream::iter([
            Ok::<_, io::Error>(Bytes::from_static(b"<html><head>")),
            Ok(Bytes::from_static(b"<title>x</title></head><p>y")),
        ]);
        let two = inject_page(&guard, html(Body::from_stream(two))).await;
        assert!(two.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(
            text(two).await,
            format!("<html><head>{}<title>x</title></head><p>y", tag(&guard))
        );

        for failing in [
            stream::iter([Err(io::Error::other("upstream reset"))]).boxed(),
            stream::iter([
                Ok(Bytes::from_static(b"<head>")),
                Err(io::Error::other("upstream reset")),
            ])
            .boxed(),
        ] {
            let out = inject_page(&guard, html(Body::from_stream(failing))).await;
            assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
            assert!(read_body(out).await.is_err());
        }

        // HEAD, and a page in a content coding, are `inject`'s to handle.
        let head = guard
            .inject_page(
                html(PAGE),
                &PageRequest {
                    is_head: true,
                    ..PageRequest::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(text(head).await, PAGE);
        let gzip = compress("gzip", PAGE.as_bytes()).await;
        let length = gzip.len();
        let gzipped = inject_page(&guard, encoded(Body::from(gzip), "gzip", length)).await;
        assert!(gzipped.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(gzipped.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(text(gzipped).await, expected_page(&guard));
    }

    /// A whole page that comes `2 × FIRST_BYTES_WITHIN` late and says when
    /// it has ended, as an upstream body of known length does.
    struct Late {
        wait: std::pin::Pin<Box<tokio::time::Sleep>>,
        page: Option<Bytes>,
    }

    impl Late {
        fn new(page: &'static str) -> Late {
            Late {
                wait: Box::pin(tokio::time::sleep(FIRST_BYTES_WITHIN * 2)),
                page: Some(Bytes::from_static(page.as_bytes())),
            }
        }
    }

    impl hyper::body::Body for Late {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
            std::task::ready!(std::future::Future::poll(self.wait.as_mut(), cx));
            std::task::Poll::Ready(self.page.take().map(|p| Ok(hyper::body::Frame::data(p))))
        }

        fn is_end_stream(&self) -> bool {
            self.page.is_none()
        }
    }
}
