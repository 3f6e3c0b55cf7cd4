//! The upstream's Content-Security-Policy, extended just enough for the
//! guard: its script may run (the script's hash) and its status request
//! may be made (the status URL), and nothing else is allowed.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Extends a CSP header value so the guard can work, without weakening the
/// policy for anything else: `script` (the hash expression of the guard
/// script) may run inline, and `connect` (the absolute URL of the status
/// endpoint, if given) may be fetched.
///
/// The value may hold several comma-separated policies; each is handled on
/// its own, and only the first occurrence of a directive counts, as in
/// browsers.
///
/// Scripts: the list that governs inline `<script>` elements is
/// `script-src-elem`, else `script-src`, else `default-src`. `script` is
/// added to `script-src-elem` and to `script-src` where present; when only
/// `default-src` governs, a `script-src` directive is appended that copies
/// its sources plus `script`. A list that already allows every inline
/// script (`'unsafe-inline'` without nonces, hashes or `'strict-dynamic'`)
/// is left alone, since a hash would switch `'unsafe-inline'` off.
///
/// The status request: the governing list is `connect-src`, else
/// `default-src`. Unless it already allows same-origin requests (`'self'`
/// or `*`), `connect` is added to `connect-src`, or a `connect-src` that
/// copies `default-src` plus `connect` is appended. A URL with a path
/// allows exactly that URL, nothing else on the origin.
///
/// In either list a `'none'` is replaced by the new source. Everything else
/// is kept byte for byte.
pub fn extend_csp(policy: &str, script: &str, connect: Option<&str>) -> String {
    policy
        .split(',')
        .map(|one| extend_one_policy(one, script, connect))
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

impl Directive<'_> {
    fn tokens(&self) -> impl Iterator<Item = &str> {
        self.value.split(is_csp_space).filter(|t| !t.is_empty())
    }

    fn has(&self, keyword: &str) -> bool {
        self.tokens().any(|t| t.eq_ignore_ascii_case(keyword))
    }
}

/// One text edit: replace `start..end` by `text`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// The first occurrence of each directive the guard cares about.
#[derive(Default)]
struct Governing<'a> {
    script_src_elem: Option<Directive<'a>>,
    script_src: Option<Directive<'a>>,
    connect_src: Option<Directive<'a>>,
    default_src: Option<Directive<'a>>,
}

fn governing(policy: &str) -> Governing<'_> {
    let mut found = Governing::default();
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
            &mut found.script_src_elem
        } else if name.eq_ignore_ascii_case("script-src") {
            &mut found.script_src
        } else if name.eq_ignore_ascii_case("connect-src") {
            &mut found.connect_src
        } else if name.eq_ignore_ascii_case("default-src") {
            &mut found.default_src
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(directive);
        }
    }
    found
}

fn extend_one_policy(policy: &str, script: &str, connect: Option<&str>) -> String {
    let found = governing(policy);
    let mut edits: Vec<Edit> = [found.script_src, found.script_src_elem]
        .into_iter()
        .flatten()
        .filter_map(|directive| script_edit(&directive, script))
        .collect();
    // Directives to append, copied from default-src with the source added.
    let mut appended = Vec::new();
    if let Some(default) = found.default_src {
        if found.script_src_elem.is_none() && found.script_src.is_none() {
            if let Some(edit) = script_edit(&default, script) {
                appended.push(("script-src", copy_with(policy, &default, &edit)));
            }
        }
        if let (Some(connect), None) = (connect, found.connect_src) {
            if let Some(edit) = connect_edit(&default, connect) {
                appended.push(("connect-src", copy_with(policy, &default, &edit)));
            }
        }
    }
    if let (Some(connect), Some(directive)) = (connect, found.connect_src) {
        edits.extend(connect_edit(&directive, connect));
    }
    if !appended.is_empty() {
        let body = policy.trim_end_matches(is_csp_space);
        let mut text = String::new();
        for (i, (name, list)) in appended.iter().enumerate() {
            let separator = if i == 0 && body.ends_with(';') {
                " "
            } else {
                "; "
            };
            text.push_str(separator);
            text.push_str(name);
            text.push_str(list);
        }
        // First, so the stable sort applies it before an edit at the same
        // place (the end of the last directive), which then lands before it.
        edits.insert(
            0,
            Edit {
                start: body.len(),
                end: body.len(),
                text,
            },
        );
    }

    edits.sort_by_key(|edit| std::cmp::Reverse(edit.start));
    let mut out = policy.to_owned();
    for edit in edits {
        out.replace_range(edit.start..edit.end, &edit.text);
    }
    out
}

/// `directive`'s source list with `edit` applied, for a new directive.
fn copy_with(policy: &str, directive: &Directive<'_>, edit: &Edit) -> String {
    let mut list = String::new();
    list.push_str(&policy[directive.value_start..edit.start]);
    list.push_str(&edit.text);
    list.push_str(&policy[edit.end..directive.end]);
    list
}

/// How to let the inline script `source` into one directive's source
/// list, or `None` if the list already allows it (or every inline script).
fn script_edit(directive: &Directive<'_>, source: &str) -> Option<Edit> {
    let has_prefix = |prefix: &str| {
        directive.tokens().any(|t| {
            t.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        })
    };
    let restricts_inline = has_prefix("'nonce-")
        || has_prefix("'sha256-")
        || has_prefix("'sha384-")
        || has_prefix("'sha512-")
        || directive.has("'strict-dynamic'");
    if (directive.has("'unsafe-inline'") && !restricts_inline)
        || directive.tokens().any(|t| t == source)
    {
        return None;
    }
    Some(add_source(directive, source))
}

/// How to let a fetch of the URL `source` through one directive, or `None`
/// if same-origin requests are already allowed.
fn connect_edit(directive: &Directive<'_>, source: &str) -> Option<Edit> {
    if directive.has("'self'") || directive.has("*") || directive.tokens().any(|t| t == source) {
        return None;
    }
    Some(add_source(directive, source))
}

/// Adds `source` to a list: in place of `'none'` (which cannot stand beside
/// other sources), or at its end.
fn add_source(directive: &Directive<'_>, source: &str) -> Edit {
    let mut position = 0;
    for token in directive.value.split(is_csp_space) {
        if token.eq_ignore_ascii_case("'none'") {
            let start = directive.value_start + position;
            return Edit {
                start,
                end: start + token.len(),
                text: source.to_owned(),
            };
        }
        position += token.len() + 1;
    }
    Edit {
        start: directive.end,
        end: directive.end,
        text: format!(" {source}"),
    }
}

/// ASCII whitespace as CSP and the HTTP header grammar see it.
fn is_csp_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Extends every `name` header (a CSP or its report-only twin) for the
/// guard: its script's `source` and, where requests are blocked, the
/// `status` URL ([`extend_csp`]).
pub fn extend_headers(
    headers: &mut HeaderMap,
    name: HeaderName,
    source: &str,
    status: Option<&str>,
) {
    let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    headers.remove(&name);
    for value in values {
        let extended = value
            .to_str()
            .ok()
            .and_then(|policy| HeaderValue::from_str(&extend_csp(policy, source, status)).ok());
        match extended {
            Some(extended) => headers.append(&name, extended),
            None => {
                tracing::warn!(header = %name, "CSP header is not visible ASCII; left as is");
                headers.append(&name, value)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "'sha256-HASH='";

    fn ext(policy: &str) -> String {
        extend_csp(policy, H, None)
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

    const S: &str = "https://app.example/.signoff/status";

    fn con(policy: &str) -> String {
        extend_csp(policy, H, Some(S))
    }

    #[test]
    fn csp_connect_src() {
        // No rule for requests: nothing to add.
        assert_eq!(con("script-src 'self'"), format!("script-src 'self' {H}"));
        assert_eq!(con("img-src 'none'"), format!("img-src 'none'"));
        // connect-src without the origin gets exactly the status URL.
        assert_eq!(con("connect-src 'none'"), format!("connect-src {S}"));
        assert_eq!(
            con("connect-src https://api.example"),
            format!("connect-src https://api.example {S}")
        );
        assert_eq!(
            con("Connect-Src\thttps://api.example ; script-src 'none'"),
            format!("Connect-Src\thttps://api.example {S} ; script-src {H}")
        );
        // Same-origin requests already allowed: left alone.
        for policy in [
            "connect-src 'self'",
            "connect-src *",
            "connect-src 'SELF' x",
        ] {
            assert_eq!(con(policy), policy);
        }
        // default-src governs: connect-src copies it, beside script-src.
        assert_eq!(
            con("default-src 'none'"),
            format!("default-src 'none'; script-src {H}; connect-src {S}")
        );
        assert_eq!(
            con("default-src x;"),
            format!("default-src x; script-src x {H}; connect-src x {S}")
        );
        assert_eq!(
            con("default-src 'self'"),
            format!("default-src 'self'; script-src 'self' {H}")
        );
        assert_eq!(
            con("default-src https://cdn.example; connect-src 'self'"),
            format!("default-src https://cdn.example; connect-src 'self'; script-src https://cdn.example {H}")
        );
        // The first connect-src counts; each comma-separated policy is extended.
        assert_eq!(
            con("connect-src 'none'; connect-src 'self', default-src 'none'"),
            format!("connect-src {S}; connect-src 'self', default-src 'none'; script-src {H}; connect-src {S}")
        );
        for policy in [
            "connect-src 'none'",
            "default-src 'none'",
            "default-src x; connect-src y",
        ] {
            assert_eq!(con(&con(policy)), con(policy), "{policy}");
        }
    }
}
