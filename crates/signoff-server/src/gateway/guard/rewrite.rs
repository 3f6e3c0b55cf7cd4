//! The streaming rewrite: upstream body chunks (already decoded) go through
//! a [`lol_html`] rewriter that places the guard's tag, in slices, and once
//! it is placed the rest of the body passes unparsed. A body whose start
//! does not sniff as HTML, or that begins with a UTF-16 byte-order mark,
//! passes unchanged.

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

use super::document;
use super::encoding::ByteStream;

/// Hard cap on the memory one HTML rewriter may use for its internal buffers
/// (a start tag split across chunks is buffered until it is complete). Only
/// the part of the page before the injection point is parsed at all.
pub(super) const MAX_REWRITER_MEMORY: usize = 1024 * 1024;

/// Bytes handed to the HTML parser at a time before the guard is placed.
const PARSE_SLICE: usize = 1024;

/// The rewritten body of a page: `input` (decoded) with the guard's `tag`
/// placed before the first element other than `<html>` (inside `<head>`),
/// or at the end of a page without elements. `sniff`: no usable
/// `Content-Type`, so rewrite only if the start sniffs as HTML.
pub(super) fn body(
    input: ByteStream,
    selector: &Selector,
    tag: &Arc<str>,
    sniff: bool,
) -> BoxStream<'static, io::Result<Bytes>> {
    let injected = Arc::new(AtomicBool::new(false));
    let output = Arc::new(Mutex::new(Vec::new()));
    let rewriter = rewriter(selector, tag, &injected, &output);
    let state = Rewrite {
        input,
        stage: Stage::Sniffing(Box::new(rewriter), Vec::new()),
        output,
        injected,
        sniff,
    };
    stream::try_unfold(state, next_chunk).boxed()
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
    Sniffing(Box<HtmlRewriter<'static, Sink>>, Vec<u8>),
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
    /// No usable `Content-Type`: rewrite only if the start sniffs as HTML.
    sniff: bool,
}

impl Rewrite {
    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.output.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn rewrite_error(error: lol_html::errors::RewritingError) -> io::Error {
    io::Error::other(format!("pageshow guard: HTML rewriting failed: {error}"))
}

/// Feeds one chunk, or the end of the body (`None`), to the rewriter. The
/// stage becomes `Rewriting` while the script is still to be placed,
/// `Passthrough` once it is, and `Done` at the end.
fn feed(
    state: &mut Rewrite,
    mut rewriter: Box<HtmlRewriter<'static, Sink>>,
    chunk: Option<&[u8]>,
) -> io::Result<()> {
    match chunk {
        Some(chunk) => {
            // In slices, stopping at the injection: the rest of a large
            // chunk goes on unparsed (parsing it is most of the cost).
            for (i, slice) in chunk.chunks(PARSE_SLICE).enumerate() {
                rewriter.write(slice).map_err(rewrite_error)?;
                if state.injected.load(Ordering::Relaxed) {
                    // Flush what the rewriter holds back; the rest skips it.
                    rewriter.end().map_err(rewrite_error)?;
                    let rest = &chunk[((i + 1) * PARSE_SLICE).min(chunk.len())..];
                    state
                        .output
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(rest);
                    state.stage = Stage::Passthrough;
                    return Ok(());
                }
            }
            state.stage = Stage::Rewriting(rewriter);
        }
        None => {
            rewriter.end().map_err(rewrite_error)?;
            state.stage = Stage::Done;
        }
    }
    Ok(())
}

/// The next chunk of the rewritten body. After an error the stream ends
/// (`try_unfold` drops the state), so a failed rewriter is never used again.
async fn next_chunk(mut state: Rewrite) -> io::Result<Option<(Bytes, Rewrite)>> {
    loop {
        match std::mem::replace(&mut state.stage, Stage::Done) {
            Stage::Passthrough => {
                state.stage = Stage::Passthrough;
                match state.input.next().await {
                    Some(Ok(chunk)) if chunk.is_empty() => continue,
                    Some(Ok(chunk)) => return Ok(Some((chunk, state))),
                    Some(Err(error)) => return Err(error),
                    None => return Ok(None),
                }
            }
            Stage::Done => {
                let output = state.take_output();
                if output.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((Bytes::from(output), state)));
            }
            Stage::Sniffing(rewriter, mut held) => {
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
                    state.stage = Stage::Sniffing(rewriter, held);
                    continue;
                }
                if html == Some(false) {
                    state.stage = if ended {
                        Stage::Done
                    } else {
                        Stage::Passthrough
                    };
                    if held.is_empty() {
                        continue;
                    }
                    return Ok(Some((Bytes::from(held), state)));
                }
                if starts_with_utf16_bom(&held) {
                    tracing::warn!(
                        "pageshow guard not injected: the page is UTF-16 (byte-order mark)"
                    );
                    state.stage = if ended {
                        Stage::Done
                    } else {
                        Stage::Passthrough
                    };
                    return Ok(Some((Bytes::from(held), state)));
                }
                if !held.is_empty() {
                    feed(&mut state, rewriter, Some(&held))?;
                    if ended {
                        match std::mem::replace(&mut state.stage, Stage::Done) {
                            Stage::Rewriting(rewriter) => feed(&mut state, rewriter, None)?,
                            _ => state.stage = Stage::Done,
                        }
                    }
                } else {
                    feed(&mut state, rewriter, None)?;
                }
            }
            Stage::Rewriting(rewriter) => match state.input.next().await {
                Some(Ok(chunk)) => feed(&mut state, rewriter, Some(&chunk))?,
                Some(Err(error)) => return Err(error),
                None => feed(&mut state, rewriter, None)?,
            },
        }
        if matches!(state.stage, Stage::Done) {
            continue;
        }
        let output = state.take_output();
        if !output.is_empty() {
            return Ok(Some((Bytes::from(output), state)));
        }
    }
}
