//! Response headers that point at the upstream's own origin, rewritten to
//! the public one, like nginx's `proxy_redirect default`: an absolute
//! `Location`, `Content-Location` or `Refresh` URL whose scheme, host and
//! port are the upstream's (docs/gateway.md, "What the client receives").

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The upstream's origin, to compare URLs with.
pub(super) struct UpstreamOrigin {
    scheme: String,
    host: String,
    port: u16,
}

impl UpstreamOrigin {
    /// From `--upstream`; `None` without a host or with an unknown scheme.
    pub(super) fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let port = uri.port_u16().or_else(|| default_port(&scheme))?;
        Some(Self {
            host: uri.host()?.to_ascii_lowercase(),
            scheme,
            port,
        })
    }

    /// `url` with the public origin in place of the upstream's, if it is
    /// an absolute URL on the upstream's origin.
    fn rewrite(&self, url: &str, public_origin: &str) -> Option<String> {
        let (scheme, rest) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(p) => p,
            None => default_port(&self.scheme)?,
        };
        (host.eq_ignore_ascii_case(&self.host) && port == self.port)
            .then(|| format!("{public_origin}{tail}"))
    }

    /// Rewrites `Location`, `Content-Location` and the URL in `Refresh`.
    pub(super) fn rewrite_headers(&self, headers: &mut HeaderMap, public_origin: &str) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            rewrite_each(headers, &name, |url| self.rewrite(url, public_origin));
        }
        rewrite_each(headers, &HeaderName::from_static("refresh"), |value| {
            self.rewrite_refresh(value, public_origin)
        });
    }

    /// `5; url=http://upstream/x` (any case, spaces, optional quotes).
    fn rewrite_refresh(&self, value: &str, public_origin: &str) -> Option<String> {
        let (delay, rest) = value.split_once([';', ','])?;
        let rest_trimmed = rest.trim_start();
        let key = rest_trimmed.get(..3)?;
        if !key.eq_ignore_ascii_case("url") {
            return None;
        }
        let after_key = rest_trimmed[3..]
            .trim_start()
            .strip_prefix('=')?
            .trim_start();
        let (quote, url) = match after_key.chars().next() {
            Some(q @ ('\'' | '"')) => (Some(q), &after_key[1..]),
            _ => (None, after_key),
        };
        let (url, closing) = match quote {
            Some(q) => match url.find(q) {
                Some(i) => (&url[..i], &url[i..]),
                None => (url, ""),
            },
            None => (url, ""),
        };
        let new = self.rewrite(url.trim(), public_origin)?;
        let sep = &value[delay.len()..=delay.len()];
        let q = quote.map(String::from).unwrap_or_default();
        Some(format!("{delay}{sep} url={q}{new}{closing}"))
    }
}

/// Each value of `name` through `rewrite` (kept as it was on `None`).
fn rewrite_each(
    headers: &mut HeaderMap,
    name: &HeaderName,
    rewrite: impl Fn(&str) -> Option<String>,
) {
    if !headers.contains_key(name) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|text| rewrite(text.trim()))
                .and_then(|new| HeaderValue::from_str(&new).ok())
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    headers.remove(name);
    for v in values {
        headers.append(name.clone(), v);
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; `None` for a bad port. An
/// empty port (`host:`) is the default one.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']')?;
        let host = &authority[..close + 2];
        match &v6[close + 1..] {
            "" => (host, ""),
            p => (host, p.strip_prefix(':')?),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, ""),
        }
    };
    if port.is_empty() {
        return Some((host, None));
    }
    Some((host, Some(port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "https://app.example.com";

    fn origin(upstream: &str) -> UpstreamOrigin {
        UpstreamOrigin::of(&upstream.parse().unwrap()).unwrap()
    }

    fn location(upstream: &str, value: &str) -> String {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_str(value).unwrap());
        origin(upstream).rewrite_headers(&mut h, PUBLIC);
        h[header::LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn the_upstreams_own_origin_becomes_the_public_one() {
        let up = "http://127.0.0.1:8888";
        assert_eq!(
            location(up, "http://127.0.0.1:8888/lab/tree?x=1#frag"),
            "https://app.example.com/lab/tree?x=1#frag"
        );
        assert_eq!(location(up, "HTTP://127.0.0.1:8888"), PUBLIC);
        assert_eq!(
            location(up, "http://127.0.0.1:8888?q"),
            "https://app.example.com?q"
        );
        // The default port, written out or left out.
        assert_eq!(
            location("http://app.internal", "http://APP.internal:80/x"),
            "https://app.example.com/x"
        );
        assert_eq!(
            location("https://app.internal:443", "https://app.internal/x"),
            "https://app.example.com/x"
        );
        assert_eq!(
            location("http://[::1]:9000", "http://[::1]:9000/x"),
            "https://app.example.com/x"
        );
    }

    #[test]
    fn other_urls_are_left_alone() {
        let up = "http://127.0.0.1:8888";
        for other in [
            "/relative/path",
            "relative",
            "//127.0.0.1:8888/x",
            "https://127.0.0.1:8888/x",
            "http://127.0.0.1:8889/x",
            "http://127.0.0.1/x",
            "http://127.0.0.2:8888/x",
            "http://127.0.0.1:8888.evil.example/x",
            "http://user@127.0.0.1:8888/x",
            "http://evil.example/?next=http://127.0.0.1:8888/",
            "https://accounts.example.org/login",
        ] {
            assert_eq!(location(up, other), other);
        }
        assert_eq!(
            location("http://app.internal", "http://app.internal:8080/x"),
            "http://app.internal:8080/x"
        );
    }

    #[test]
    fn content_location_and_refresh_too() {
        let o = origin("http://127.0.0.1:8888");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://127.0.0.1:8888/doc"),
        );
        for refresh in [
            "5; url=http://127.0.0.1:8888/next",
            "0;URL='http://127.0.0.1:8888/q?a=1'",
            "3, url=\"http://127.0.0.1:8888/\"",
            "5; url=http://elsewhere.example/",
            "5",
        ] {
            h.append("refresh", HeaderValue::from_static(refresh));
        }
        o.rewrite_headers(&mut h, PUBLIC);
        assert_eq!(h[header::CONTENT_LOCATION], "https://app.example.com/doc");
        let refresh: Vec<_> = h.get_all("refresh").iter().collect();
        assert_eq!(
            refresh,
            [
                "5; url=https://app.example.com/next",
                "0; url='https://app.example.com/q?a=1'",
                "3, url=\"https://app.example.com/\"",
                "5; url=http://elsewhere.example/",
                "5",
            ]
        );
    }
}
