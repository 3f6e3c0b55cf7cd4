//! What a rule matches: host names and paths.

/// A path a rule matches, as the app sees it (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// This path only.
    Exact(String),
    /// This path and everything under it, by whole segments: `/admin`
    /// matches `/admin`, `/admin/` and `/admin/users`, not `/administrator`.
    /// Kept without a trailing slash (`""` for `/`, which matches every path).
    Prefix(String),
    /// A glob: `*` is any text within one segment, `**` any text at all
    /// (slashes included); everything else matches itself.
    Glob(String),
}

/// How [`PathPattern::matches`] compares letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterCase {
    /// `/Admin` is not `/admin`.
    Exact,
    /// ASCII letters compare without case.
    Folded,
}

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// It does not start with `/`.
    #[error("{0:?} does not start with /")]
    NotAbsolute(String),
    /// It holds what the app would never see in a decoded path.
    #[error(
        "{0:?}: write the path as the app sees it, decoded, without `%`, `?`, `#`, `\\`, `;`, \
         `.`/`..` segments or `//`"
    )]
    NotDecoded(String),
    /// A `*` in an exact or prefix path.
    #[error("{0:?}: `*` only has a meaning in path_glob")]
    StarOutsideGlob(String),
    /// A glob longer than [`MAX_GLOB_BYTES`].
    #[error("path_glob {0:?} is longer than 120 bytes")]
    TooLong(String),
    /// A host that is not a name or `*.name`.
    #[error(
        "host {0:?}: expected a host name such as app.example.com, or *.example.com for every \
         name under it (no scheme, port or path)"
    )]
    BadHost(String),
}

impl PathPattern {
    /// `path = …`: this path only.
    ///
    /// # Errors
    /// A path that is not absolute and decoded.
    pub fn exact(path: &str) -> Result<Self, PatternError> {
        check_path(path, false)?;
        Ok(PathPattern::Exact(path.to_owned()))
    }

    /// `path_prefix = …`: this path and everything under it.
    ///
    /// # Errors
    /// A path that is not absolute and decoded.
    pub fn prefix(path: &str) -> Result<Self, PatternError> {
        check_path(path, false)?;
        Ok(PathPattern::Prefix(path.trim_end_matches('/').to_owned()))
    }

    /// `path_glob = …`.
    ///
    /// # Errors
    /// A path that is not absolute and decoded.
    pub fn glob(path: &str) -> Result<Self, PatternError> {
        check_path(path, true)?;
        Ok(PathPattern::Glob(path.to_owned()))
    }

    /// Whether `path` (one reading of a request path) matches, comparing
    /// letters as `case` says.
    pub fn matches(&self, path: &str, case: LetterCase) -> bool {
        let fold = case == LetterCase::Folded;
        let eq = |a: &[u8], b: &[u8]| {
            if fold {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            PathPattern::Exact(p) => eq(p.as_bytes(), path.as_bytes()),
            PathPattern::Prefix(p) => {
                let (p, path) = (p.as_bytes(), path.as_bytes());
                path.len() >= p.len()
                    && eq(&path[..p.len()], p)
                    && (path.len() == p.len() || path[p.len()] == b'/')
            }
            PathPattern::Glob(g) => glob_matches(g.as_bytes(), path.as_bytes(), fold),
        }
    }

    /// Whether `path` matches the way some apps route: without letter
    /// case, with or without a trailing `/` (Express, Rails, Spring), and
    /// with a `.format` suffix (Rails' `(.:format)`, Spring's suffix
    /// matching). Only ever used to add a rule the request must pass.
    pub fn matches_loosely(&self, path: &str) -> bool {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let at_boundary = |p: &str, path: &str| {
            path.len() >= p.len()
                && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/' | b'.'))
        };
        match self {
            PathPattern::Exact(p) => {
                let p_trimmed = p.trim_end_matches('/');
                let p_trimmed = if p_trimmed.is_empty() { "/" } else { p_trimmed };
                trimmed.eq_ignore_ascii_case(p_trimmed)
                    || (p_trimmed != "/"
                        && at_boundary(p_trimmed, trimmed)
                        && !trimmed[p_trimmed.len()..].contains('/'))
            }
            PathPattern::Prefix(p) => at_boundary(p, path),
            PathPattern::Glob(g) => {
                glob_matches(g.as_bytes(), path.as_bytes(), true)
                    || glob_matches(g.as_bytes(), trimmed.as_bytes(), true)
            }
        }
    }

    /// Whether it matches every path.
    pub fn matches_everything(&self) -> bool {
        match self {
            PathPattern::Prefix(p) => p.is_empty(),
            PathPattern::Glob(g) => g == "/**" || g == "**",
            PathPattern::Exact(_) => false,
        }
    }

    /// Whether every path this matches, `other` matches too (a cheap,
    /// incomplete test: exact paths, and prefixes under a prefix).
    pub fn within(&self, other: &PathPattern) -> bool {
        if other.matches_everything() {
            return true;
        }
        match (self, other) {
            (PathPattern::Exact(p), other) => other.matches(p, LetterCase::Exact),
            (PathPattern::Prefix(p), PathPattern::Prefix(_)) if !p.is_empty() => {
                other.matches(p, LetterCase::Exact)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Exact(p) => write!(f, "path {p}"),
            PathPattern::Prefix(p) if p.is_empty() => f.write_str("every path"),
            PathPattern::Prefix(p) => write!(f, "{p} and under"),
            PathPattern::Glob(g) => write!(f, "path_glob {g}"),
        }
    }
}

fn check_path(path: &str, glob: bool) -> Result<(), PatternError> {
    if !path.starts_with('/') {
        return Err(PatternError::NotAbsolute(path.to_owned()));
    }
    if !glob && path.contains('*') {
        return Err(PatternError::StarOutsideGlob(path.to_owned()));
    }
    if glob && path.len() > MAX_GLOB_BYTES {
        return Err(PatternError::TooLong(path.to_owned()));
    }
    let bad_char = path
        .chars()
        .any(|c| c.is_control() || matches!(c, '%' | '?' | '#' | '\\' | ';'));
    let trimmed = path.trim_end_matches('/');
    let bad_segment = trimmed
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..");
    if bad_char || bad_segment || (path.len() > 1 && path.ends_with("//")) {
        return Err(PatternError::NotDecoded(path.to_owned()));
    }
    Ok(())
}

/// Longest glob, in bytes: matching keeps one bit per position.
pub const MAX_GLOB_BYTES: usize = 120;

/// `*` matches within a segment, `**` across them. Matched as a set of
/// positions in the glob moved along the path byte by byte (no
/// backtracking), so a long hostile path costs time linear in its length.
fn glob_matches(glob: &[u8], path: &[u8], fold: bool) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Byte(u8),
        InSegment,
        Anything,
    }
    let mut tokens = [Token::Byte(0); MAX_GLOB_BYTES];
    let mut len = 0;
    let mut i = 0;
    while i < glob.len() && len < MAX_GLOB_BYTES {
        tokens[len] = match glob[i] {
            b'*' if glob.get(i + 1) == Some(&b'*') => {
                i += 1;
                Token::Anything
            }
            b'*' => Token::InSegment,
            b => Token::Byte(if fold { b.to_ascii_lowercase() } else { b }),
        };
        len += 1;
        i += 1;
    }
    let tokens = &tokens[..len];
    // A star may match nothing: a position before one also stands after it.
    let close = |mut set: u128| {
        for (n, token) in tokens.iter().enumerate() {
            if set & (1 << n) != 0 && !matches!(token, Token::Byte(_)) {
                set |= 1 << (n + 1);
            }
        }
        set
    };
    let mut set = close(1);
    for &b in path {
        let b = if fold { b.to_ascii_lowercase() } else { b };
        let mut next = 0u128;
        let mut rest = set;
        while rest != 0 {
            let n = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            match tokens.get(n) {
                Some(Token::Byte(t)) if *t == b => next |= 1 << (n + 1),
                Some(Token::InSegment) if b != b'/' => next |= 1 << n,
                Some(Token::Anything) => next |= 1 << n,
                _ => {}
            }
        }
        if next == 0 {
            return false;
        }
        set = close(next);
    }
    set & (1 << len) != 0
}

/// A host a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name (lower case).
    Exact(String),
    /// Every name ending in this suffix (`.example.com`, lower case): at
    /// least one label under it.
    Under(String),
}

impl HostPattern {
    /// `app.example.com` or `*.example.com`.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (under, name) = match lower.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, lower.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(PatternError::BadHost(text.to_owned()));
        }
        Ok(if under {
            HostPattern::Under(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether `host` (normalised: [`normal_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Under(s) => write!(f, "*{s}"),
        }
    }
}

/// A `Host` value as [`normal_host`] makes it, if it is `name[:port]` or
/// `[v6][:port]` (name: letters, digits, `.`, `-`, `_`; port: digits);
/// `None` for anything else, which servers split in different places
/// (`host:1:2`, `a@b`).
pub fn valid_host(host: &str) -> Option<std::borrow::Cow<'_, str>> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (v6, after.strip_prefix(':'))
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && (host.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let rest_ok = !host.starts_with('[') || {
        let after = &host[host.find(']').map_or(host.len(), |i| i + 1)..];
        after.is_empty() || after.starts_with(':')
    };
    (name_ok && port_ok && rest_ok).then(|| normal_host(host))
}

/// A `Host` header value as rules compare it: lower case, without the
/// port or a trailing dot. Borrowed when it is already so.
pub fn normal_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.trim();
    let name = if host.starts_with('[') {
        // An IPv6 literal, with or without a port.
        host.split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_exactly_by_segment_prefix_or_by_glob() {
        let exact = PathPattern::exact("/health").unwrap();
        assert!(exact.matches("/health", LetterCase::Exact));
        assert!(!exact.matches("/health/", LetterCase::Exact));
        assert!(!exact.matches("/Health", LetterCase::Exact));
        assert!(exact.matches("/Health", LetterCase::Folded));

        for spelling in ["/admin", "/admin/"] {
            let prefix = PathPattern::prefix(spelling).unwrap();
            for yes in ["/admin", "/admin/", "/admin/users/1"] {
                assert!(prefix.matches(yes, LetterCase::Exact), "{spelling} {yes}");
            }
            for no in ["/administrator", "/", "/adm", "/x/admin"] {
                assert!(!prefix.matches(no, LetterCase::Exact), "{spelling} {no}");
            }
        }
        let root = PathPattern::prefix("/").unwrap();
        assert!(root.matches("/", LetterCase::Exact) && root.matches("/a/b", LetterCase::Exact));
        assert!(root.matches_everything());

        let glob = PathPattern::glob("/api/*/public/**").unwrap();
        assert!(glob.matches("/api/v1/public/", LetterCase::Exact));
        assert!(glob.matches("/api/v1/public/a/b", LetterCase::Exact));
        assert!(!glob.matches("/api/v1/x/public/a", LetterCase::Exact));
        assert!(!glob.matches("/api/v1/public", LetterCase::Exact));
        let star = PathPattern::glob("/files/*.pdf").unwrap();
        assert!(star.matches("/files/a.pdf", LetterCase::Exact));
        assert!(!star.matches("/files/a/b.pdf", LetterCase::Exact));
        assert!(
            star.matches("/files/A.PDF", LetterCase::Folded)
                && !star.matches("/files/A.PDF", LetterCase::Exact)
        );
        assert!(PathPattern::glob("/**").unwrap().matches_everything());
    }

    #[test]
    fn patterns_must_be_decoded_absolute_paths() {
        for bad in [
            "admin", "/a%2fb", "/a/../b", "/a/./b", "/a//b", "/a;b", "/a\\b", "/a?x", "/a#x",
        ] {
            assert!(PathPattern::prefix(bad).is_err(), "{bad}");
            assert!(PathPattern::glob(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::exact("/a*").is_err());
        assert!(PathPattern::prefix("/a/*").is_err());
        assert!(PathPattern::glob("/a/*").is_ok());
    }

    #[test]
    fn hosts_match_exactly_or_under_a_name() {
        let exact = HostPattern::parse("App.Example.com.").unwrap();
        assert!(exact.matches("app.example.com"));
        assert!(!exact.matches("x.app.example.com"));
        let under = HostPattern::parse("*.example.com").unwrap();
        assert!(under.matches("a.example.com") && under.matches("a.b.example.com"));
        assert!(!under.matches("example.com") && !under.matches("badexample.com"));
        for bad in [
            "",
            "*.",
            "https://a.com",
            "a.com:8080",
            "a.com/x",
            "a..com",
            "*",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(normal_host("App.Example.COM:8443"), "app.example.com");
        assert_eq!(normal_host("app.example.com."), "app.example.com");
        assert_eq!(normal_host("[::1]:8080"), "[::1]");
        assert_eq!(normal_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(
            valid_host("App.example.com:8443").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(valid_host("[::1]:80").as_deref(), Some("[::1]"));
        for bad in [
            "reports.example.com:1:2",
            "a@b.com",
            "a.com:",
            "a.com:x",
            "[::1",
            "[::1]x",
            "",
            "a b",
            "[]",
        ] {
            assert!(valid_host(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn loose_matching_is_what_lenient_routers_do() {
        let exact = PathPattern::exact("/billing").unwrap();
        for yes in ["/billing", "/billing/", "/BILLING", "/billing.json"] {
            assert!(exact.matches_loosely(yes), "{yes}");
        }
        for no in ["/billing/x", "/billings", "/billing.json/x"] {
            assert!(!exact.matches_loosely(no), "{no}");
        }
        let prefix = PathPattern::prefix("/admin").unwrap();
        for yes in ["/admin", "/admin.json", "/Admin/x", "/admin.html/x"] {
            assert!(prefix.matches_loosely(yes), "{yes}");
        }
        assert!(!prefix.matches_loosely("/administrator"));
        assert!(PathPattern::glob("/files/*.pdf")
            .unwrap()
            .matches_loosely("/FILES/a.pdf/"));
    }
}
