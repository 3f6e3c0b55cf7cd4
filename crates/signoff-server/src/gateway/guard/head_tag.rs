//! The quick way to place the guard: a plain byte scan of the start of a
//! page for its `<head>` start tag, which is where almost every page wants
//! the guard. It accepts only the simplest start, where there is no doubt
//! about what an HTML tokenizer makes of it:
//!
//! ```text
//! [whitespace] [<!DOCTYPE …>] [whitespace] [<html …>] [whitespace] <head …>
//! ```
//!
//! (tag names and `DOCTYPE` in any case, attributes with any quoting).
//! Anything else before the head (a comment, a byte-order mark, text, an XML
//! declaration, another element, a NUL byte), a `<head/>`, or a head tag
//! that does not end within the bytes given, and the scan gives up: the
//! caller then runs the full HTML rewriter (`rewrite.rs`), which places the
//! guard exactly as it always did. Where the scan does answer, the answer is
//! the rewriter's own: right after the `<head …>` tag.

/// HTML whitespace (the tokenizer turns CR into LF, so CR is one too).
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).copied().is_some_and(is_space) {
        at += 1;
    }
    at
}

/// A start tag at `at`: its name (the bytes after `<`, up to whitespace,
/// `/` or `>`). `None` if there is no start tag there.
fn start_tag_name(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = bytes.get(at..)?;
    if rest.first() != Some(&b'<') || !rest.get(1)?.is_ascii_alphabetic() {
        return None;
    }
    let len = rest[1..]
        .iter()
        .position(|&b| is_space(b) || b == b'/' || b == b'>')?;
    Some(&rest[1..=len])
}

/// Where the start tag at `at` (whose name is `name_len` bytes) ends: the
/// index just past its `>`, and whether it is self-closing (`/>`). Follows
/// the tokenizer's attribute states, so a `>` inside a quoted value does
/// not end the tag. `None` if the tag does not end within `bytes`.
fn start_tag_end(bytes: &[u8], at: usize, name_len: usize) -> Option<(usize, bool)> {
    #[derive(Clone, Copy)]
    enum State {
        BeforeName,
        Name,
        AfterName,
        BeforeValue,
        Quoted(u8),
        AfterQuoted,
        Unquoted,
        SelfClosing,
    }
    let mut state = State::BeforeName;
    let mut i = at + 1 + name_len;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        state = match state {
            _ if b == 0 => return None,
            State::Quoted(q) if b == q => State::AfterQuoted,
            State::Quoted(q) => State::Quoted(q),
            State::Unquoted if b == b'>' => return Some((i, false)),
            State::Unquoted if is_space(b) => State::BeforeName,
            State::Unquoted => State::Unquoted,
            State::BeforeValue if b == b'"' || b == b'\'' => State::Quoted(b),
            State::BeforeValue if b == b'>' => return Some((i, false)),
            State::BeforeValue if is_space(b) => State::BeforeValue,
            State::BeforeValue => State::Unquoted,
            State::SelfClosing if b == b'>' => return Some((i, true)),
            _ if b == b'>' => return Some((i, false)),
            _ if b == b'/' => State::SelfClosing,
            State::Name if b == b'=' => State::BeforeValue,
            State::AfterName if b == b'=' => State::BeforeValue,
            State::Name if is_space(b) => State::AfterName,
            State::Name => State::Name,
            State::AfterName if is_space(b) => State::AfterName,
            // The rest reconsume in "before attribute name": whitespace
            // is skipped, anything else (`=` included) starts a name.
            State::BeforeName | State::AfterName | State::AfterQuoted | State::SelfClosing => {
                if is_space(b) {
                    State::BeforeName
                } else {
                    State::Name
                }
            }
        };
    }
    None
}

/// The index in `bytes` (the start of a page) right after its `<head …>`
/// start tag, if the page starts simply enough to be sure (see the module
/// doc); `None` means "use the full rewriter".
pub(super) fn after_head(bytes: &[u8]) -> Option<usize> {
    let mut at = skip_space(bytes, 0);
    if bytes
        .get(at..at + 9)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"<!doctype"))
    {
        // A doctype ends at its first `>`, quoted identifiers or not.
        let end = bytes[at..].iter().position(|&b| b == b'>')?;
        if bytes[at..at + end].contains(&0) {
            return None;
        }
        at = skip_space(bytes, at + end + 1);
    }
    let mut name = start_tag_name(bytes, at)?;
    if name.eq_ignore_ascii_case(b"html") {
        let (end, _) = start_tag_end(bytes, at, name.len())?;
        at = skip_space(bytes, end);
        name = start_tag_name(bytes, at)?;
    }
    if !name.eq_ignore_ascii_case(b"head") {
        return None;
    }
    match start_tag_end(bytes, at, name.len())? {
        (end, false) => Some(end),
        // `<head/>`: the rewriter puts the guard before it.
        (_, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::after_head;

    /// The text before the guard, if the scan places it.
    fn before(page: &str) -> Option<&str> {
        after_head(page.as_bytes()).map(|at| &page[..at])
    }

    #[test]
    fn finds_simple_heads() {
        for (page, head_ends_after) in [
            ("<head><title>x</title>", "<head>"),
            ("<HEAD><TITLE>x</TITLE>", "<HEAD>"),
            ("<HTML><HEAD><TITLE>x</TITLE>", "<HTML><HEAD>"),
            (
                "<!DOCTYPE html>\n<html lang=\"en\">\n  <head>\n<meta charset=utf-8>",
                "<!DOCTYPE html>\n<html lang=\"en\">\n  <head>",
            ),
            (
                "\r\n <!doctype html><html><head data-x=\"1\">x",
                "\r\n <!doctype html><html><head data-x=\"1\">",
            ),
            (
                "<html data-a='<head>' b=\"x>y\" c=d><head\tid=h class = 'a>b' e>",
                "<html data-a='<head>' b=\"x>y\" c=d><head\tid=h class = 'a>b' e>",
            ),
            ("<html/><head x=/>", "<html/><head x=/>"),
            ("<head / id=x>rest", "<head / id=x>"),
            ("<head a=b\"c>rest", "<head a=b\"c>"),
            ("<hEaD>", "<hEaD>"),
        ] {
            assert_eq!(before(page), Some(head_ends_after), "{page:?}");
        }
    }

    #[test]
    fn gives_up_on_anything_less_simple() {
        for page in [
            // Not the head element.
            "<header><h1>x</h1></header>",
            "<html><header>x</header><head>",
            "<heading>",
            "<head-x>",
            // A comment, script or text before the real head.
            "<!-- <head> --><html><head>",
            "<html><!-- x --><head>",
            "<script>document.write('<head>')</script><head>",
            "hello <head>",
            "<html>text<head>",
            "\u{feff}<head>",
            "<?xml version=\"1.0\"?><html><head>",
            "<!doctype html><!-- <head> --><head>",
            // Self-closing: the guard goes before it, the rewriter's job.
            "<html><head/><body>",
            // Not complete within the bytes given.
            "<html><he",
            "<html><head",
            "<html><head data-x=\"1",
            "<html lang=\"en",
            "<!doctype html",
            "",
            "   ",
            // NUL bytes.
            "<html\0><head>",
            "<head a=\"\0\">",
            "<!doctype\0html><head>",
            // No head at all.
            "<html><body>x</body></html>",
            "<body>",
            "just text",
        ] {
            assert_eq!(before(page), None, "{page:?}");
        }
    }
}
