//! The streaming rewrite: the first chunk of the (decoded) body is scanned
//! for a plain `<head …>` start tag ([`head_tag`]) and, when found, the
//! guard's tag is spliced in right after it. Otherwise the chunks go through
//! a [`lol_html`] rewriter that places the tag, in slices. Either way, once
//! the tag is placed the rest of the body passes unparsed. A body whose
//! start does not sniff as HTML, or that begins with a UTF-16 byte-order
//! mark, passes unchanged.

use std::borrow::Cow;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt as _;
use lol_html::html_content::{ContentType, DocumentEnd};
use lol_html::send::{DocumentContentHandlers, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{MemorySettings, OutputSink, Selector};

use super::encoding::ByteStream;
use super::{document, head_tag};

/// Hard cap on the memory one HTML rewriter may use for its internal buffers
/// (a start tag split across chunks is buffered until it is complete). Only
/// the part of the page before the injection point is parsed at all.
pub(super) const MAX_REWRITER_MEMORY: usize = 1024 * 1024;

/// Bytes handed to the HTML parser at a time before the guard is placed.
const PARSE_SLICE: usize = 1024;

/// How far into the first chunk the byte scan looks for `<head>`; past
/// that the parser (and its memory cap) takes over.
const SCAN_LIMIT: usize = 8 * 1024;

/// The rewritten body of a page: `input` (decoded) with the guard's `tag`
/// placed before the first element other than `<html>` (inside `<head>`),
/// or at the end of a page without elements. `sniff`: no usable
/// `Content-Type`, so rewrite only if the start sniffs as HTML.
pub(super) fn body(
    input: ByteStream,
    selector: &Arc<Selector>,
    tag: &Arc<str>,
    sniff: bool,
) -> BoxStream<'static, io::Result<Bytes>> {
    let state = Rewrite {
        input,
        stage: Stage::Sniffing(Vec::new()),
        selector: Arc::clone(selector),
        tag: Arc::clone(tag),
        sniff,
        scan: true,
    };
    stream::try_unfold(state, next_chunk).boxed()
}

/// [`body`] without the byte scan: every page goes through the rewriter.
#[cfg(test)]
pub(super) fn body_parsed(
    input: ByteStream,
    selector: &Arc<Selector>,
    tag: &Arc<str>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let state = Rewrite {
        input,
        stage: Stage::Sniffing(Vec::new()),
        selector: Arc::clone(selector),
        tag: Arc::clone(tag),
        sniff: false,
        scan: false,
    };
    stream::try_unfold(state, next_chunk).boxed()
}

/// The full HTML rewriter, with where its output collects and the flag it
/// raises once the tag is placed.
struct Parser {
    rewriter: HtmlRewriter<'static, Sink>,
    output: Arc<Mutex<Vec<u8>>>,
    injected: Arc<AtomicBool>,
}

impl Parser {
    fn new(selector: &Selector, tag: &Arc<str>) -> Box<Parser> {
        let injected = Arc::new(AtomicBool::new(false));
        let output = Arc::new(Mutex::new(Vec::new()));
        let rewriter = rewriter(selector, tag, &injected, &output);
        Box::new(Parser {
            rewriter,
            output,
            injected,
        })
    }

    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.output.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A rewriter that places the script tag and raises `injected` when done.
fn rewriter(
    selector: &Selector,
    tag: &Arc<str>,
    injected: &Arc<AtomicBool>,
    output: &Arc<Mutex<Vec<u8>>>,
) -> HtmlRewriter<'static, Sink> {
    let on_element = {
        let injected = Arc::clone(injected);
        let tag = Arc::clone(tag);
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
            if name.eq_ignore_ascii_case("head") && el.can_have_content() && !el.is_self_closing() {
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
        let tag = Arc::clone(tag);
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

/// A UTF-16 byte-order mark (either order) at the start of the body.
fn starts_with_utf16_bom(bytes: &[u8]) -> bool {
    matches!(bytes, [0xfe, 0xff, ..] | [0xff, 0xfe, ..])
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
    /// Holding the first bytes until a UTF-16 byte-order mark can be ruled out.
    Sniffing(Vec<u8>),
    /// Parsing until the script is placed.
    Rewriting(Box<Parser>),
    /// Script placed: the rest of the body is forwarded as it is.
    Passthrough,
    /// The input has ended and all output has gone.
    Done,
}

struct Rewrite {
    input: ByteStream,
    stage: Stage,
    selector: Arc<Selector>,
    tag: Arc<str>,
    /// No usable `Content-Type`: rewrite only if the start sniffs as HTML.
    sniff: bool,
    /// Try the byte scan for `<head>` first (off only in tests).
    scan: bool,
}

fn rewrite_error(error: lol_html::errors::RewritingError) -> io::Error {
    io::Error::other(format!("pageshow guard: HTML rewriting failed: {error}"))
}

/// Ends the parser (flushing what it holds back) and hands back all its output.
fn finish(parser: Box<Parser>) -> io::Result<Vec<u8>> {
    let Parser {
        rewriter, output, ..
    } = *parser;
    rewriter.end().map_err(rewrite_error)?;
    let output = std::mem::take(&mut *output.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(output)
}

/// Feeds one chunk, or the end of the body (`None`), to the parser and
/// returns its output so far. The stage becomes `Rewriting` while the
/// script is still to be placed, `Passthrough` once it is, and `Done` at
/// the end.
fn feed(state: &mut Rewrite, parser: Box<Parser>, chunk: Option<&[u8]>) -> io::Result<Vec<u8>> {
    let Some(chunk) = chunk else {
        state.stage = Stage::Done;
        return finish(parser);
    };
    let mut parser = parser;
    // In slices, stopping at the injection: the rest of a large chunk goes
    // on unparsed (parsing it is most of the cost).
    for (i, slice) in chunk.chunks(PARSE_SLICE).enumerate() {
        parser.rewriter.write(slice).map_err(rewrite_error)?;
        if parser.injected.load(Ordering::Relaxed) {
            let mut output = finish(parser)?;
            output.extend_from_slice(&chunk[((i + 1) * PARSE_SLICE).min(chunk.len())..]);
            state.stage = Stage::Passthrough;
            return Ok(output);
        }
    }
    let output = parser.take_output();
    state.stage = Stage::Rewriting(parser);
    Ok(output)
}

/// A whole page (declared HTML) with `tag` spliced in after a plainly
/// found `<head …>`, exactly as [`body`] makes it; `None` when the byte
/// scan does not place the tag (a UTF-16 byte-order mark, no plain
/// `<head>` in the first [`SCAN_LIMIT`] bytes): then [`body`] must.
pub(super) fn splice_whole(page: &[u8], tag: &str) -> Option<Bytes> {
    if page.len() < 2 || starts_with_utf16_bom(page) {
        return None;
    }
    let at = head_tag::after_head(&page[..page.len().min(SCAN_LIMIT)])?;
    let mut output = Vec::with_capacity(page.len() + tag.len());
    output.extend_from_slice(&page[..at]);
    output.extend_from_slice(tag.as_bytes());
    output.extend_from_slice(&page[at..]);
    Some(Bytes::from(output))
}

/// A body whose first frame was taken to look at: that frame, then the
/// rest of the body, as if it had never been taken.
pub(super) struct Resumed {
    pub(super) first: Option<Result<hyper::body::Frame<Bytes>, axum::Error>>,
    pub(super) rest: axum::body::Body,
}

impl hyper::body::Body for Resumed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(first) => std::task::Poll::Ready(Some(first)),
            None => std::pin::Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}

/// The first bytes of an HTML page (all of them if `ended`): the guard
/// spliced in after a plainly found `<head …>`, or else the full parser's
/// output for them.
fn start(state: &mut Rewrite, held: &[u8], ended: bool) -> io::Result<Vec<u8>> {
    if state.scan {
        if let Some(at) = head_tag::after_head(&held[..held.len().min(SCAN_LIMIT)]) {
            let mut output = Vec::with_capacity(held.len() + state.tag.len());
            output.extend_from_slice(&held[..at]);
            output.extend_from_slice(state.tag.as_bytes());
            output.extend_from_slice(&held[at..]);
            state.stage = if ended {
                Stage::Done
            } else {
                Stage::Passthrough
            };
            return Ok(output);
        }
    }
    let parser = Parser::new(&state.selector, &state.tag);
    if held.is_empty() {
        return feed(state, parser, None);
    }
    let mut output = feed(state, parser, Some(held))?;
    if ended {
        if let Stage::Rewriting(parser) = std::mem::replace(&mut state.stage, Stage::Done) {
            output.extend_from_slice(&feed(state, parser, None)?);
        }
    }
    Ok(output)
}

/// The next chunk of the rewritten body. After an error the stream ends
/// (`try_unfold` drops the state), so a failed rewriter is never used again.
async fn next_chunk(mut state: Rewrite) -> io::Result<Option<(Bytes, Rewrite)>> {
    loop {
        let output = match std::mem::replace(&mut state.stage, Stage::Done) {
            Stage::Passthrough => {
                state.stage = Stage::Passthrough;
                match state.input.next().await {
                    Some(Ok(chunk)) if chunk.is_empty() => continue,
                    Some(Ok(chunk)) => return Ok(Some((chunk, state))),
                    Some(Err(error)) => return Err(error),
                    None => return Ok(None),
                }
            }
            Stage::Done => return Ok(None),
            Stage::Sniffing(mut held) => {
                let ended = match state.input.next().await {
                    Some(Ok(chunk)) => {
                        held.extend_from_slice(&chunk);
                        false
                    }
                    Some(Err(error)) => return Err(error),
                    None => true,
                };
                let html = if state.sniff {
                    document::sniffs_as_html(&held, ended)
                } else {
                    Some(true)
                };
                if (held.len() < 2 || html.is_none()) && !ended {
                    state.stage = Stage::Sniffing(held);
                    continue;
                }
                if html == Some(false) {
                    state.stage = if ended {
                        Stage::Done
                    } else {
                        Stage::Passthrough
                    };
                    held
                } else if starts_with_utf16_bom(&held) {
                    tracing::warn!(
                        "pageshow guard not injected: the page is UTF-16 (byte-order mark)"
                    );
                    state.stage = if ended {
                        Stage::Done
                    } else {
                        Stage::Passthrough
                    };
                    held
                } else {
                    start(&mut state, &held, ended)?
                }
            }
            Stage::Rewriting(parser) => match state.input.next().await {
                Some(Ok(chunk)) => feed(&mut state, parser, Some(&chunk))?,
                Some(Err(error)) => return Err(error),
                None => feed(&mut state, parser, None)?,
            },
        };
        if !output.is_empty() {
            return Ok(Some((Bytes::from(output), state)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::{stream, StreamExt as _, TryStreamExt as _};
    use lol_html::Selector;

    use super::{body, body_parsed, head_tag};

    async fn collect(
        out: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
    ) -> Vec<u8> {
        out.try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap()
    }

    fn chunks(page: &[u8], size: usize) -> super::ByteStream {
        let parts: Vec<_> = page
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(parts).boxed()
    }

    /// Wherever the byte scan places the guard, the full parser places it
    /// in the same spot: pages from pieces the scan accepts and pieces it
    /// must not, whole and in chunks.
    #[tokio::test]
    async fn the_byte_scan_agrees_with_the_parser() {
        let selector = Arc::new("*".parse::<Selector>().unwrap());
        let tag: Arc<str> = Arc::from("<script>G</script>");
        let starts = [
            "",
            " \n",
            "<!DOCTYPE html>",
            "<!doctype HTML>\r\n",
            "<!-- c -->",
            "x",
        ];
        let htmls = [
            "",
            "<html>",
            "<HTML lang=en>",
            "<html data-a='<head>' b=\"x>y\" c=d/e>",
            "<html/>",
            "<htmlx>",
        ];
        let gaps = ["", "\n  ", "<!-- <head> -->", "t", "\t\x0c"];
        let heads = [
            "<head>",
            "<HEAD>",
            "<head data-x=\"1\">",
            "<head/>",
            "<head x=/>",
            "<head / =\">\" a>",
            "<head a=b\"c>",
            "<header>",
            "<head\tid=h class = 'a>b'>",
            "<body>",
            "",
        ];
        let mut scanned = 0;
        let mut pages = 0;
        for start in starts {
            for html in htmls {
                for gap in gaps {
                    for head in heads {
                        let page = format!("{start}{html}{gap}{head}<title>x</title></head><p>b");
                        pages += 1;
                        if head_tag::after_head(page.as_bytes()).is_some() {
                            scanned += 1;
                        }
                        let parsed =
                            collect(body_parsed(chunks(page.as_bytes(), 4096), &selector, &tag))
                                .await;
                        for size in [4096, 7, 1] {
                            let out = collect(body(
                                chunks(page.as_bytes(), size),
                                &selector,
                                &tag,
                                false,
                            ))
                            .await;
                            assert_eq!(
                                String::from_utf8_lossy(&out),
                                String::from_utf8_lossy(&parsed),
                                "{page:?} in chunks of {size}"
                            );
                        }
                    }
                }
            }
        }
        // The scan did place the guard in many of them.
        assert!(scanned > pages / 10, "{scanned} of {pages}");
    }
}
