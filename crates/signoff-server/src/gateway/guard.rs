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
//! [`Guard::inject`] streams the rewrite: upstream body chunks are fed into a
//! [`lol_html`] rewriter as they arrive and its output is forwarded as soon as
//! it is produced; once the script has been placed, the rest of the body is
//! passed through without parsing. Compressed bodies (gzip, deflate, br) are
//! decoded and sent on uncompressed.
//!
//! The script is allowed to run under the upstream's Content-Security-Policy
//! by adding its hash ([`Guard::csp_source`]) to the policy headers with
//! [`extend_csp`]. Policies delivered in the page itself, through
//! `<meta http-equiv="Content-Security-Policy">`, are out of scope: they are
//! left as they are, and a page whose meta policy forbids inline scripts
//! simply does not run the guard (the page is not otherwise affected).

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder};
use axum::body::{Body, HttpBody as _};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use lol_html::html_content::{ContentType, DocumentEnd};
use lol_html::send::{DocumentContentHandlers, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{MemorySettings, OutputSink, Selector};
use sha2::{Digest as _, Sha256};
use tokio_util::io::{ReaderStream, StreamReader};

/// Hard cap on the memory one HTML rewriter may use for its internal buffers
/// (a start tag split across chunks is buffered until it is complete). Only
/// the part of the page before the injection point is parsed at all.
const MAX_REWRITER_MEMORY: usize = 1024 * 1024;

/// Read size for decompressed output.
const DECODE_CHUNK: usize = 16 * 1024;

/// Headers that describe the exact bytes of the upstream body and become
/// false once the body is rewritten.
const STALE_BODY_HEADERS: [&str; 5] = [
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "accept-ranges",
];

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
    any_element: Option<Selector>,
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
        let script = build_script(&prefix);
        let digest = Sha256::digest(script.as_bytes());
        let csp_source = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        let tag = format!("<script>{script}</script>");
        let any_element = match "*".parse::<Selector>() {
            Ok(selector) => Some(selector),
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
    /// `Content-Length` and body digests, decodes gzip/deflate/br bodies and
    /// adds the script's hash to every `Content-Security-Policy` and
    /// `Content-Security-Policy-Report-Only` header.
    ///
    /// Everything else is returned unchanged, byte for byte:
    /// - `is_head` requests and statuses without a body (1xx, 204, 205, 304),
    ///   206 partial content and any response with `Content-Range`;
    /// - a `Content-Type` other than exactly one `text/html` or
    ///   `application/xhtml+xml` value (compared case-insensitively,
    ///   parameters ignored), including a missing one; and HTML declared as
    ///   UTF-16, which is not ASCII-compatible;
    /// - a body known to be empty;
    /// - a `Content-Encoding` other than identity, gzip, x-gzip, deflate or
    ///   br, or several stacked encodings (logged as a warning).
    ///
    /// An upstream body error, a corrupt compressed body or a page that
    /// makes the rewriter exceed its memory cap ends the new body with an error.
    pub fn inject(&self, response: Response<Body>, is_head: bool) -> Response<Body> {
        let Some(selector) = self.any_element.as_ref() else {
            return response;
        };
        if is_head
            || !status_has_body(response.status())
            || response.headers().contains_key(header::CONTENT_RANGE)
            || !is_injectable_html(response.headers())
            || response.body().size_hint().exact() == Some(0)
        {
            return response;
        }
        let coding = match content_coding(response.headers()) {
            Ok(coding) => coding,
            Err(Unsupported) => {
                let encodings = response
                    .headers()
                    .get_all(header::CONTENT_ENCODING)
                    .iter()
                    .count();
                tracing::warn!(
                    header_lines = encodings,
                    "pageshow guard not injected: unsupported or stacked Content-Encoding"
                );
                return response;
            }
        };
        let (mut parts, body) = response.into_parts();
        let injected = Arc::new(AtomicBool::new(false));
        let output = Arc::new(Mutex::new(Vec::new()));
        let rewriter = self.rewriter(selector, &injected, &output);
        let input = decode(body, coding);

        let headers = &mut parts.headers;
        headers.remove(header::CONTENT_LENGTH);
        if coding != Coding::Identity {
            headers.remove(header::CONTENT_ENCODING);
        }
        for name in STALE_BODY_HEADERS {
            headers.remove(name);
        }
        self.extend_csp_headers(headers, header::CONTENT_SECURITY_POLICY);
        self.extend_csp_headers(headers, header::CONTENT_SECURITY_POLICY_REPORT_ONLY);

        let state = Rewrite {
            input,
            stage: Stage::Rewriting(Box::new(rewriter)),
            output,
            injected,
        };
        Response::from_parts(
            parts,
            Body::from_stream(stream::try_unfold(state, next_chunk)),
        )
    }

    /// A rewriter that places the script tag and raises `injected` when done.
    fn rewriter(
        &self,
        selector: &Selector,
        injected: &Arc<AtomicBool>,
        output: &Arc<Mutex<Vec<u8>>>,
    ) -> HtmlRewriter<'static, Sink> {
        let on_element = {
            let injected = Arc::clone(injected);
            let tag = Arc::clone(&self.tag);
            move |el: &mut lol_html::send::Element<'_, '_>| {
                if injected.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let name = el.tag_name();
                if name.eq_ignore_ascii_case("html") {
                    return Ok(());
                }
                // `<head/>` (harmless in HTML, meaningful in XHTML) cannot take
                // content without losing its slash: put the script before it.
                if name.eq_ignore_ascii_case("head")
                    && el.can_have_content()
                    && !el.is_self_closing()
                {
                    el.prepend(&tag, ContentType::Html);
                } else {
                    el.before(&tag, ContentType::Html);
                }
                injected.store(true, Ordering::Relaxed);
                Ok(())
            }
        };
        let on_end = {
            let injected = Arc::clone(injected);
            let tag = Arc::clone(&self.tag);
            move |end: &mut DocumentEnd<'_>| {
                if !injected.swap(true, Ordering::Relaxed) {
                    end.append(&tag, ContentType::Html);
                }
                Ok(())
            }
        };
        let settings = Settings {
            element_content_handlers: vec![(
                Cow::Borrowed(selector),
                ElementContentHandlers::default().element(on_element),
            )],
            document_content_handlers: vec![DocumentContentHandlers::default().end(on_end)],
            memory_settings: MemorySettings {
                preallocated_parsing_buffer_size: 1024,
                max_allowed_memory_usage: MAX_REWRITER_MEMORY,
            },
            ..Settings::new_send()
        };
        HtmlRewriter::new(settings, Sink(Arc::clone(output)))
    }

    fn extend_csp_headers(&self, headers: &mut HeaderMap, name: HeaderName) {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if values.is_empty() {
            return;
        }
        headers.remove(&name);
        for value in values {
            let extended = value.to_str().ok().and_then(|policy| {
                HeaderValue::from_str(&extend_csp(policy, &self.csp_source)).ok()
            });
            match extended {
                Some(extended) => headers.append(&name, extended),
                None => {
                    tracing::warn!(header = %name, "CSP header is not visible ASCII; left as is");
                    headers.append(&name, value)
                }
            };
        }
    }
}

/// Builds the guard script. ES5, pure ASCII, and free of `<` and `&` so it
/// is valid inline in both HTML and XHTML and its hash does not depend on
/// the page's charset.
fn build_script(prefix: &str) -> String {
    let status = js_string(&format!("{prefix}/status"));
    let login = js_string(&format!("{prefix}/login?next="));
    format!(
        concat!(
            "(function(){{var h=false,v;",
            "window.addEventListener(\"pageshow\",function(e){{",
            "if(e.persisted!==true){{return;}}",
            "var s=document.documentElement.style,o=location.origin;",
            "function out(){{location.replace(o+{login}+",
            "encodeURIComponent(location.pathname+location.search));}}",
            "if(!h){{v=s.visibility;h=true;}}",
            "s.visibility=\"hidden\";",
            "try{{fetch(o+{status},",
            "{{cache:\"no-store\",credentials:\"same-origin\",redirect:\"manual\"}})",
            ".then(function(r){{if(r.status===200){{s.visibility=v;h=false;}}else{{out();}}}},out);}}",
            "catch(x){{out();}}",
            "}});}})();"
        ),
        login = login,
        status = status
    )
}

/// A double-quoted JavaScript string literal holding `text`, using only
/// printable ASCII other than `<`, `>` and `&`.
fn js_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' if !matches!(c, '<' | '>' | '&') => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

fn status_has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::RESET_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Exactly one Content-Type, `text/html` or `application/xhtml+xml`, not UTF-16.
fn is_injectable_html(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut fields = value.split(';');
    let essence = fields.next().unwrap_or_default().trim();
    if !(essence.eq_ignore_ascii_case("text/html")
        || essence.eq_ignore_ascii_case("application/xhtml+xml"))
    {
        return false;
    }
    !fields.any(|param| {
        let Some((name, charset)) = param.split_once('=') else {
            return false;
        };
        let charset = charset.trim().trim_matches('"').as_bytes();
        name.trim().eq_ignore_ascii_case("charset")
            && charset
                .get(..6)
                .is_some_and(|start| start.eq_ignore_ascii_case(b"utf-16"))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

struct Unsupported;

/// The body's single content coding, ignoring `identity` entries.
fn content_coding(headers: &HeaderMap) -> Result<Coding, Unsupported> {
    let mut coding = Coding::Identity;
    let mut seen = false;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| Unsupported)?;
        for token in value.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            }
            if seen {
                return Err(Unsupported);
            }
            seen = true;
            coding = if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else if token.eq_ignore_ascii_case("br") {
                Coding::Brotli
            } else {
                return Err(Unsupported);
            };
        }
    }
    Ok(coding)
}

type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The body's decoded bytes. Decoding starts at the first non-empty chunk,
/// so an empty compressed body decodes to nothing rather than an error.
fn decode(body: Body, coding: Coding) -> ByteStream {
    let raw = body.into_data_stream().map_err(io::Error::other).boxed();
    if coding == Coding::Identity {
        return raw;
    }
    stream::once(async move {
        let mut raw = raw;
        let first = loop {
            match raw.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => break chunk,
                Some(Err(error)) => return stream::iter([Err(error)]).boxed(),
                None => return stream::empty().boxed(),
            }
        };
        // "deflate" is meant to be zlib-wrapped, but some servers send raw
        // deflate; browsers accept both, so tell them apart like they do.
        let zlib = looks_like_zlib(&first);
        let reader = StreamReader::new(stream::iter([Ok(first)]).chain(raw));
        match coding {
            Coding::Gzip => {
                let mut decoder = GzipDecoder::new(reader);
                decoder.multiple_members(true);
                ReaderStream::with_capacity(decoder, DECODE_CHUNK).boxed()
            }
            Coding::Deflate if zlib => {
                ReaderStream::with_capacity(ZlibDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Deflate => {
                ReaderStream::with_capacity(DeflateDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Brotli => {
                ReaderStream::with_capacity(BrotliDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Identity => reader.into_inner().boxed(),
        }
    })
    .flatten()
    .boxed()
}

/// A zlib header: compression method 8, window ≤ 32 KiB, check bits valid.
fn looks_like_zlib(bytes: &[u8]) -> bool {
    match *bytes {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && ((u16::from(cmf) << 8) | u16::from(flg)) % 31 == 0
        }
        // Too little to tell: zlib is what the standard says.
        _ => true,
    }
}

/// Collects the rewriter's output between reads.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(chunk);
    }
}

enum Stage {
    /// Parsing until the script is placed.
    Rewriting(Box<HtmlRewriter<'static, Sink>>),
    /// Script placed: the rest of the body is forwarded as it is.
    Passthrough,
    /// The input has ended.
    Done,
}

struct Rewrite {
    input: ByteStream,
    stage: Stage,
    output: Arc<Mutex<Vec<u8>>>,
    injected: Arc<AtomicBool>,
}

impl Rewrite {
    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.output.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn rewrite_error(error: lol_html::errors::RewritingError) -> io::Error {
    io::Error::other(format!("pageshow guard: HTML rewriting failed: {error}"))
}

/// The next chunk of the rewritten body. After an error the stream ends
/// (`try_unfold` drops the state), so a failed rewriter is never used again.
async fn next_chunk(mut state: Rewrite) -> io::Result<Option<(Bytes, Rewrite)>> {
    loop {
        let rewriter = match std::mem::replace(&mut state.stage, Stage::Passthrough) {
            Stage::Passthrough => match state.input.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => return Ok(Some((chunk, state))),
                Some(Err(error)) => return Err(error),
                None => return Ok(None),
            },
            Stage::Done => return Ok(None),
            Stage::Rewriting(rewriter) => rewriter,
        };
        let finished = match state.input.next().await {
            Some(Ok(chunk)) => {
                let mut rewriter = rewriter;
                rewriter.write(&chunk).map_err(rewrite_error)?;
                if state.injected.load(Ordering::Relaxed) {
                    // Flush what the rewriter holds back; later chunks skip it.
                    rewriter.end().map_err(rewrite_error)?;
                } else {
                    state.stage = Stage::Rewriting(rewriter);
                }
                false
            }
            Some(Err(error)) => return Err(error),
            None => {
                rewriter.end().map_err(rewrite_error)?;
                state.stage = Stage::Done;
                true
            }
        };
        let output = state.take_output();
        if !output.is_empty() {
            return Ok(Some((Bytes::from(output), state)));
        }
        if finished {
            return Ok(None);
        }
    }
}

/// Adds `source` (the hash expression) to a CSP header value so the inline script may run, without weakening the policy.
///
/// The value may hold several comma-separated policies; each is handled on
/// its own. In each policy the list that governs inline `<script>` elements
/// is `script-src-elem`, else `script-src`, else `default-src` (only the
/// first occurrence of a directive counts, as in browsers). `source` is
/// added to `script-src-elem` and to `script-src` where present; when only
/// `default-src` governs, a `script-src` directive is appended that copies
/// its sources plus `source`. A list that already allows every inline script
/// (`'unsafe-inline'` without nonces, hashes or `'strict-dynamic'`) is left
/// alone, since a hash would switch `'unsafe-inline'` off; a `'none'` is
/// replaced by `source`. Everything else is kept byte for byte.
pub fn extend_csp(policy: &str, source: &str) -> String {
    policy
        .split(',')
        .map(|one| extend_one_policy(one, source))
        .collect::<Vec<_>>()
        .join(",")
}

/// A directive's place in the policy text.
#[derive(Clone, Copy)]
struct Directive<'a> {
    /// Where its source list starts (just after the name).
    value_start: usize,
    /// Where its text ends, trailing whitespace excluded.
    end: usize,
    value: &'a str,
}

/// One text edit: replace `start..end` by `text`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

fn extend_one_policy(policy: &str, source: &str) -> String {
    let mut script_src_elem = None;
    let mut script_src = None;
    let mut default_src = None;
    let mut offset = 0;
    for segment in policy.split(';') {
        let start = offset;
        offset += segment.len() + 1;
        let trimmed_start = segment.trim_start_matches(is_csp_space);
        let trimmed = trimmed_start.trim_end_matches(is_csp_space);
        if trimmed.is_empty() {
            continue;
        }
        let lead = segment.len() - trimmed_start.len();
        let name_len = trimmed.find(is_csp_space).unwrap_or(trimmed.len());
        let name = &trimmed[..name_len];
        let directive = Directive {
            value_start: start + lead + name_len,
            end: start + lead + trimmed.len(),
            value: &trimmed[name_len..],
        };
        let slot = if name.eq_ignore_ascii_case("script-src-elem") {
            &mut script_src_elem
        } else if name.eq_ignore_ascii_case("script-src") {
            &mut script_src
        } else if name.eq_ignore_ascii_case("default-src") {
            &mut default_src
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(directive);
        }
    }

    let mut edits: Vec<Edit> = [script_src, script_src_elem]
        .into_iter()
        .flatten()
        .filter_map(|directive| list_edit(&directive, source))
        .collect();

    if script_src_elem.is_none() && script_src.is_none() {
        if let Some(default) = default_src {
            if let Some(edit) = list_edit(&default, source) {
                // The new list: default-src's own, with the same edit applied.
                let mut list = String::new();
                list.push_str(&policy[default.value_start..edit.start]);
                list.push_str(&edit.text);
                list.push_str(&policy[edit.end..default.end]);
                let body = policy.trim_end_matches(is_csp_space);
                let separator = if body.ends_with(';') { " " } else { "; " };
                edits.push(Edit {
                    start: body.len(),
                    end: body.len(),
                    text: format!("{separator}script-src{list}"),
                });
            }
        }
    }

    edits.sort_by_key(|edit| std::cmp::Reverse(edit.start));
    let mut out = policy.to_owned();
    for edit in edits {
        out.replace_range(edit.start..edit.end, &edit.text);
    }
    out
}

/// How to let `source` into one directive's source list, or `None` if the
/// list already allows it (or every inline script).
fn list_edit(directive: &Directive<'_>, source: &str) -> Option<Edit> {
    let tokens = || {
        directive
            .value
            .split(is_csp_space)
            .filter(|t| !t.is_empty())
    };
    let has = |keyword: &str| tokens().any(|t| t.eq_ignore_ascii_case(keyword));
    let has_prefix = |prefix: &str| {
        tokens().any(|t| {
            t.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        })
    };
    let restricts_inline = has_prefix("'nonce-")
        || has_prefix("'sha256-")
        || has_prefix("'sha384-")
        || has_prefix("'sha512-")
        || has("'strict-dynamic'");
    if (has("'unsafe-inline'") && !restricts_inline) || tokens().any(|t| t == source) {
        return None;
    }
    // `'none'` cannot stand beside other sources: replace it.
    let mut position = 0;
    for token in directive.value.split(is_csp_space) {
        if token.eq_ignore_ascii_case("'none'") {
            let start = directive.value_start + position;
            return Some(Edit {
                start,
                end: start + token.len(),
                text: source.to_owned(),
            });
        }
        position += token.len() + 1;
    }
    Some(Edit {
        start: directive.end,
        end: directive.end,
        text: format!(" {source}"),
    })
}

/// ASCII whitespace as CSP and the HTTP header grammar see it.
fn is_csp_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{
        BrotliEncoder, DeflateEncoder, GzipEncoder, ZlibEncoder,
    };
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;

    const H: &str = "'sha256-HASH='";
    const PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><!-- <head> -->\n<head data-x=\"1\">\
        <meta charset=\"utf-8\"><title>T &amp; t</title><script>var s = \"<head>\";</script>\
        </head><body class=a><p>Hello <b>world</b></p><img src=x.png/></body></html>\n";

    fn guard() -> Guard {
        Guard::new("/.signoff")
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
        text(guard.inject(html(body), false)).await
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
                    text(guard.inject(html(tiny_chunks(doc.as_bytes(), seed)), false)).await;
                assert_eq!(chunked, whole, "{doc} / seed {seed}");
            }
        }
        // And the exact expected text for the full page.
        let chunked = text(guard.inject(html(tiny_chunks(PAGE.as_bytes(), 7)), false)).await;
        assert_eq!(chunked, expected_page(&guard));
    }

    #[tokio::test]
    async fn streams_without_buffering_the_page() {
        let guard = guard();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
        let body = Body::from_stream(stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut out = guard
            .inject(html(body), false)
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
        ] {
            let data = compress(coding, PAGE.as_bytes()).await;
            for chunked in [false, true] {
                let body = if chunked {
                    tiny_chunks(&data, 3)
                } else {
                    Body::from(data.clone())
                };
                let out = guard.inject(encoded(body, header_value, data.len()), false);
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
        let out = guard.inject(encoded(Body::from(data.clone()), "gzip", data.len()), false);
        assert_eq!(text(out).await, expected_page(&guard));
    }

    #[tokio::test]
    async fn identity_html_loses_content_length_and_digests() {
        let guard = guard();
        let mut input = html(PAGE);
        let headers = input.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(PAGE.len()));
        headers.insert("content-md5", HeaderValue::from_static("abc"));
        headers.insert("digest", HeaderValue::from_static("sha-256=abc"));
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let out = guard.inject(input, false);
        assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(out.headers().get("content-md5").is_none());
        assert!(out.headers().get("digest").is_none());
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
            let out = text(guard.inject(response(Body::from(PAGE), content_type), false)).await;
            assert_eq!(out.contains(guard.script()), injected, "{content_type}");
        }
        // No Content-Type at all, and two of them.
        let out = text(guard.inject(Response::new(Body::from(PAGE)), false)).await;
        assert_eq!(out, PAGE);
        let mut twice = html(PAGE);
        twice
            .headers_mut()
            .append(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(text(guard.inject(twice, false)).await, PAGE);
    }

    /// Asserts `inject` leaves the response exactly as it was.
    async fn assert_untouched(input: Response<Body>, body: &[u8], is_head: bool) {
        let status = input.status();
        let headers = input.headers().clone();
        let out = guard().inject(input, is_head);
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
        let out = guard().inject(with_length(StatusCode::NOT_FOUND, PAGE), false);
        assert!(out.headers().get(header::CONTENT_LENGTH).is_none());
        assert_eq!(text(out).await, expected_page(&guard()));
    }

    #[tokio::test]
    async fn unknown_or_stacked_encodings_are_untouched() {
        let gzipped = compress("gzip", PAGE.as_bytes()).await;
        for encoding in ["zstd", "gzip, br", "gzip, gzip", "compress"] {
            let input = encoded(Body::from(gzipped.clone()), encoding, gzipped.len());
            assert_untouched(input, &gzipped, false).await;
        }
        let mut input = encoded(Body::from(gzipped.clone()), "gzip", gzipped.len());
        input
            .headers_mut()
            .append(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_untouched(input, &gzipped, false).await;
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
            let out = guard.inject(html(failing_body(chunks.clone())), false);
            assert!(read_body(out).await.is_err(), "{chunks:?}");
        }
        let gzipped = Bytes::from(compress("gzip", PAGE.as_bytes()).await);
        let half = gzipped.slice(..gzipped.len() / 2);
        let out = guard.inject(encoded(failing_body(vec![half.clone()]), "gzip", 0), false);
        assert!(read_body(out).await.is_err());
        // A truncated or corrupt compressed body is an error too.
        for bad in [half, Bytes::from_static(b"not gzip at all")] {
            let out = guard.inject(encoded(Body::from(bad), "gzip", 0), false);
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
        let out = guard.inject(html(Body::from_stream(stream::iter(chunks))), false);
        assert!(read_body(out).await.is_err());
        // The same tag in one chunk needs no buffering and is fine.
        let out = guard.inject(html(page.clone()), false);
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
        let out = guard.inject(input, false);
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

    fn ext(policy: &str) -> String {
        extend_csp(policy, H)
    }

    #[test]
    fn csp_script_src() {
        assert_eq!(
            ext("default-src 'self'; script-src 'self' https://cdn.example"),
            format!("default-src 'self'; script-src 'self' https://cdn.example {H}")
        );
        assert_eq!(
            ext("script-src 'nonce-abc' 'strict-dynamic'; object-src 'none'"),
            format!("script-src 'nonce-abc' 'strict-dynamic' {H}; object-src 'none'")
        );
        // An empty list allows nothing, like 'none'.
        assert_eq!(
            ext("script-src; img-src *"),
            format!("script-src {H}; img-src *")
        );
    }

    #[test]
    fn csp_script_src_elem_and_script_src() {
        assert_eq!(
            ext("script-src 'self'; script-src-elem 'self' https://a"),
            format!("script-src 'self' {H}; script-src-elem 'self' https://a {H}")
        );
        // script-src-elem governs: no script-src is made up from default-src.
        assert_eq!(
            ext("default-src 'self'; script-src-elem 'self'"),
            format!("default-src 'self'; script-src-elem 'self' {H}")
        );
        // Each list on its own merits.
        assert_eq!(
            ext("script-src 'nonce-a'; script-src-elem 'unsafe-inline'"),
            format!("script-src 'nonce-a' {H}; script-src-elem 'unsafe-inline'")
        );
    }

    #[test]
    fn csp_default_src_only() {
        assert_eq!(
            ext("default-src 'self' https:; img-src *"),
            format!("default-src 'self' https:; img-src *; script-src 'self' https: {H}")
        );
        assert_eq!(
            ext("default-src 'none'"),
            format!("default-src 'none'; script-src {H}")
        );
        assert_eq!(
            ext("default-src 'self' 'unsafe-inline'; img-src *"),
            "default-src 'self' 'unsafe-inline'; img-src *"
        );
        assert_eq!(
            ext("default-src 'unsafe-inline' 'nonce-x'"),
            format!(
                "default-src 'unsafe-inline' 'nonce-x'; script-src 'unsafe-inline' 'nonce-x' {H}"
            )
        );
    }

    #[test]
    fn csp_unsafe_inline() {
        for policy in [
            "script-src 'self' 'unsafe-inline'",
            "script-src 'UNSAFE-INLINE' https:",
            "script-src-elem 'unsafe-inline'; script-src 'unsafe-inline'",
        ] {
            assert_eq!(ext(policy), policy);
        }
        for list in [
            "'unsafe-inline' 'nonce-abc'",
            "'unsafe-inline' 'sha384-xyz'",
            "'unsafe-inline' 'SHA512-xyz'",
            "'unsafe-inline' 'strict-dynamic'",
        ] {
            assert_eq!(
                ext(&format!("script-src {list}")),
                format!("script-src {list} {H}")
            );
        }
    }

    #[test]
    fn csp_none() {
        assert_eq!(
            ext("script-src 'none'; object-src 'none'"),
            format!("script-src {H}; object-src 'none'")
        );
        assert_eq!(ext("script-src  'NONE' "), format!("script-src  {H} "));
        assert_eq!(
            ext("script-src-elem 'none'; script-src 'none'"),
            format!("script-src-elem {H}; script-src {H}")
        );
    }

    #[test]
    fn csp_without_script_directive() {
        for policy in [
            "",
            "  ",
            "img-src 'self'; frame-ancestors 'none'",
            "script-src-attr 'none'; style-src 'self'",
            "upgrade-insecure-requests;",
        ] {
            assert_eq!(ext(policy), policy);
        }
    }

    #[test]
    fn csp_whitespace_case_and_trailing_semicolons() {
        assert_eq!(
            ext("  Script-Src\t'self'   ;  DEFAULT-SRC 'none' "),
            format!("  Script-Src\t'self' {H}   ;  DEFAULT-SRC 'none' ")
        );
        assert_eq!(ext("script-src 'self';"), format!("script-src 'self' {H};"));
        assert_eq!(
            ext("default-src 'self';"),
            format!("default-src 'self'; script-src 'self' {H}")
        );
        assert_eq!(
            ext("Default-Src\t'self' ;; "),
            format!("Default-Src\t'self' ;; script-src\t'self' {H} ")
        );
        assert_eq!(ext(";;script-src;;"), format!(";;script-src {H};;"));
    }

    #[test]
    fn csp_duplicates_lists_and_repeats() {
        // Only the first occurrence of a directive counts.
        assert_eq!(
            ext("script-src 'self'; script-src 'none'"),
            format!("script-src 'self' {H}; script-src 'none'")
        );
        // Comma-separated policies are each enforced: each is extended.
        assert_eq!(
            ext("script-src 'self', default-src 'none'"),
            format!("script-src 'self' {H}, default-src 'none'; script-src {H}")
        );
        // Adding twice changes nothing more.
        for policy in [
            "script-src 'self'",
            "default-src 'none'",
            "script-src 'none'",
        ] {
            assert_eq!(ext(&ext(policy)), ext(policy));
        }
    }
}
