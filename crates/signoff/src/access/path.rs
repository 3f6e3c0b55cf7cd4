//! How a request path is read before rules match it.
//!
//! A gateway forwards the path exactly as it came, and each upstream
//! decodes and normalises it its own way: `/public/../admin` is `/admin`
//! to most servers, `/admin;x` is `/admin` to Java servers, `/a%2fb` is
//! `/a/b` to some and one segment to others, `/ADMIN` is `/admin` to
//! case-blind ones. A rule must decide for whatever the upstream will
//! make of the path, so a path is read every way an upstream could read it
//! ([`Readings`]) and the request must pass the rule that matches each
//! reading (docs/security.md, "Access rules").
//!
//! A [plain](is_plain) path, the everyday case, means the same to every
//! server once its harmless escapes are decoded: it has one reading.

/// Whether a request path means the same to every upstream, however it
/// decodes and normalises it: only when it holds no dot segment, empty
/// segment, backslash or `;` (`/static/..;/admin` in Java servers),
/// neither as it is nor once percent-decoded, and every escape is a plain
/// `%XX` of a printable ASCII character other than `%` (so no double
/// encoding, no IIS `%u002e`, no overlong UTF-8 such as `%c0%ae`, no
/// full-width dots). Anything else may reach another path upstream.
pub fn is_plain(path: &str) -> bool {
    let raw = path.as_bytes();
    if !raw.contains(&b'%') {
        // The everyday path: no escapes, so nothing to decode or allocate.
        return raw.first() == Some(&b'/')
            && raw
                .iter()
                .all(|b| (0x21..0x7f).contains(b) && !matches!(b, b'\\' | b';' | b'#'))
            && plain_segments(&raw[1..]);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let Some(byte) = escape_at(raw, i) else {
                return false;
            };
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
    // A raw `#` ends the path for some servers and not for others.
    if decoded.first() != Some(&b'/')
        || raw.contains(&b'#')
        || decoded.iter().any(|b| matches!(b, b'\\' | b';'))
    {
        return false;
    }
    plain_segments(&decoded[1..])
}

/// Whether the segments after the first `/` hold no dot segment and no
/// empty segment but the last (`/static/` is a directory).
fn plain_segments(rest: &[u8]) -> bool {
    let mut segments = rest.split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let ok = if segment.is_empty() {
            last
        } else {
            segment != b"." && !segment.starts_with(b"..")
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The byte a `%XX` escape at `i` stands for.
fn escape_at(raw: &[u8], i: usize) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let hi = raw.get(i + 1).copied().and_then(hex)?;
    let lo = raw.get(i + 2).copied().and_then(hex)?;
    Some((hi * 16 + lo) as u8)
}

/// Longest plain path read; a longer one counts as not known (every
/// rule that could match must be passed).
pub const MAX_PLAIN_PATH_BYTES: usize = 8192;
/// Longest other path read (each has many readings).
pub const MAX_TRICKY_PATH_BYTES: usize = 2048;
/// Most readings of one path; a path with more counts as not known.
const MAX_READINGS: usize = 48;

/// Every way an upstream could read a request path: the path as it came
/// (an app that routes on the raw target, such as Node's `URL` or
/// Express, reads `/%70ublic` as it is), and the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readings<'a> {
    plain: bool,
    /// Too long, or too many readings: what the app reads is not known.
    unknown: bool,
    raw: &'a str,
    /// The other readings, each once, none equal to `raw`.
    more: Vec<String>,
}

impl<'a> Readings<'a> {
    /// The readings of `path` (the path of a request target, raw). A
    /// plain path ([`is_plain`]) is read as it came and, if it holds
    /// escapes, decoded. Any other path is read every way the
    /// transformations servers apply can make of it, in any order and
    /// repeated: percent-decoding, `\` as `/`, `;…` parameters cut, dot
    /// segments resolved as RFC 3986 and WHATWG URL parsers do (`//`
    /// kept), and dot segments resolved with `//` merged (nginx), until no
    /// new reading appears. A path too long, or with too many readings,
    /// is [unknown](Readings::is_unknown).
    pub fn of(path: &'a str) -> Self {
        let mut readings = Readings {
            plain: is_plain(path),
            unknown: false,
            raw: path,
            more: Vec::new(),
        };
        if readings.plain {
            if path.len() > MAX_PLAIN_PATH_BYTES {
                readings.unknown = true;
            } else if path.contains('%') {
                readings.add(String::from_utf8_lossy(&decode(path.as_bytes())).into_owned());
            }
            return readings;
        }
        if path.len() > MAX_TRICKY_PATH_BYTES {
            readings.unknown = true;
            return readings;
        }
        let transforms: [fn(&str) -> String; 5] = [
            |p| String::from_utf8_lossy(&decode(p.as_bytes())).into_owned(),
            |p| p.replace('\\', "/"),
            without_parameters,
            dots_resolved,
            normalised,
        ];
        let mut all: Vec<String> = vec![path.to_owned()];
        let mut next = 0;
        while next < all.len() {
            let reading = all[next].clone();
            next += 1;
            for transform in transforms {
                let new = transform(&reading);
                if all.contains(&new) {
                    continue;
                }
                if all.len() >= MAX_READINGS {
                    readings.unknown = true;
                    return readings;
                }
                all.push(new);
            }
        }
        for reading in all {
            readings.add(reading);
        }
        readings
    }

    fn add(&mut self, reading: String) {
        if reading != self.raw && !self.more.contains(&reading) {
            self.more.push(reading);
        }
    }

    /// Whether the path is plain.
    pub fn is_plain(&self) -> bool {
        self.plain && !self.unknown
    }

    /// Whether the path is too long or too tangled to read: then every
    /// rule that could match it counts.
    pub fn is_unknown(&self) -> bool {
        self.unknown
    }

    /// Each reading, the path as it came first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.raw).chain(self.more.iter().map(String::as_str))
    }
}

/// Percent-decodes every well-formed `%XX`; anything else stays.
fn decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            if let Some(byte) = escape_at(raw, i) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Each segment without what follows its first `;` (the path parameters
/// Java servers drop: `/admin;jsessionid=x/a` is `/admin/a` to them).
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split_once(';').map_or(segment, |(s, _)| s))
        .collect::<Vec<_>>()
        .join("/")
}

/// Dot segments resolved as RFC 3986 §5.2.4 and WHATWG URL parsers do:
/// empty segments kept (`/a//../b` is `/a/b`).
fn dots_resolved(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::new();
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if n == last && matches!(*segment, "." | "..") {
            out.push("");
        }
    }
    let mut text = String::with_capacity(path.len() + 1);
    for segment in &out {
        text.push('/');
        text.push_str(segment);
    }
    if text.is_empty() {
        text.push('/');
    }
    text
}

/// Dot segments resolved and empty segments dropped (RFC 3986 §5.2.4,
/// and the slash merging of nginx and most servers); a trailing slash is
/// kept. Always starts with `/`.
fn normalised(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let trailing = segments.len() > 1 && matches!(segments.last(), Some(&"" | &"." | &".."));
    for segment in segments {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut text = String::with_capacity(path.len() + 1);
    for segment in &out {
        text.push('/');
        text.push_str(segment);
    }
    if out.is_empty() || trailing {
        text.push('/');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_plain() {
        for plain in [
            "/",
            "/public",
            "/static/",
            "/static/app.js",
            "/a%20b",
            "/.well-known/x",
            "/a/b.c",
        ] {
            assert!(is_plain(plain), "{plain}");
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
            // A fragment some servers cut and others keep.
            "/admin#/x.png",
            "static/x",
            "",
        ] {
            assert!(!is_plain(tricky), "{tricky}");
        }
    }

    #[test]
    fn a_plain_path_is_read_as_it_came_and_decoded() {
        let plain = Readings::of("/admin/x");
        assert_eq!(plain.iter().collect::<Vec<_>>(), ["/admin/x"]);
        assert!(plain.is_plain());
        let escaped = Readings::of("/%61dmin/a%20b");
        assert_eq!(
            escaped.iter().collect::<Vec<_>>(),
            ["/%61dmin/a%20b", "/admin/a b"]
        );
        assert!(escaped.is_plain());
    }

    #[test]
    fn a_tricky_path_is_read_every_way_an_upstream_could() {
        let has = |path: &str, reading: &str| {
            let r = Readings::of(path);
            assert!(!r.is_plain(), "{path}");
            assert!(
                r.iter().any(|x| x == reading),
                "{path} lacks {reading}: {r:?}"
            );
        };
        has("/public/../admin", "/admin");
        has("/public/../admin", "/public/../admin");
        has("/public/%2e%2e/admin", "/admin");
        has("/public/%252e%252e/admin", "/admin");
        has("/public%2f..%2fadmin", "/admin");
        has("/public%2fx", "/public/x");
        has("/public/..;/admin", "/admin");
        has("/admin;jsessionid=1/x", "/admin/x");
        has("/public\\..\\admin", "/admin");
        has("//admin", "/admin");
        has("/public//admin/", "/public/admin/");
        has("/a/./b", "/a/b");
        has("/..", "/");
        has("/a/..", "/");
        // Dots resolved before decoding, or without merging `//` (WHATWG).
        has("/api/x//../../admin/users", "/api/admin/users");
        has("/x%2fy/../%61dmin", "/admin");
        has("/x%2fy/../%61dmin", "/%61dmin");
    }

    #[test]
    fn long_or_tangled_paths_are_unknown() {
        assert!(Readings::of(&format!("/{}", "a".repeat(MAX_PLAIN_PATH_BYTES))).is_unknown());
        assert!(!Readings::of(&format!("/{}", "a".repeat(MAX_PLAIN_PATH_BYTES - 1))).is_unknown());
        assert!(Readings::of(&format!("/../{}", "a".repeat(MAX_TRICKY_PATH_BYTES))).is_unknown());
        let nested = format!("/a/..{}", "%25".repeat(40));
        let r = Readings::of(&nested);
        assert!(r.is_unknown() || r.iter().count() <= MAX_READINGS);
        assert!(!Readings::of("/a/../b").is_unknown());
    }
}
