//! Where a browser says a request came from (`Origin`, `Sec-Fetch-Site`):
//! the intent checks of signoff's own forms.

use axum::http::header::{self, HeaderMap, HeaderName};
use axum::http::Uri;

/// Made once (a name given as a `&str` is parsed at every lookup).
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// What the browser says about a request's origin.
#[derive(Debug, PartialEq, Eq)]
pub enum Intent {
    /// Origin or Sec-Fetch-Site says this origin.
    SameOrigin,
    /// A browser says another site sent it.
    Foreign,
    /// No such header: not a browser, or an old one.
    Unknown,
}

/// Reads the request's intent against the public origin.
pub fn intent(headers: &HeaderMap, public_origin: &str) -> Intent {
    // `Origin: null` (privacy-sensitive contexts, `no-referrer` pages)
    // says nothing either way; Sec-Fetch-Site then decides.
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null");
    let site = headers.get(SEC_FETCH_SITE).and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Intent::Foreign;
    }
    match origin {
        Some(o) if o.eq_ignore_ascii_case(public_origin) => Intent::SameOrigin,
        Some(_) => Intent::Foreign,
        None if site == Some("same-origin") => Intent::SameOrigin,
        None => Intent::Unknown,
    }
}

/// `Origin: null` without `Sec-Fetch-Site`: maybe an old browser on an
/// attacker's no-referrer page.
pub fn bare_null_origin(headers: &HeaderMap) -> bool {
    headers.get(header::ORIGIN).is_some_and(|o| o == "null")
        && !headers.contains_key(SEC_FETCH_SITE)
}

/// The host (and port) of a public origin (`https://host:port`).
pub fn host_of(public_origin: &str) -> &str {
    public_origin
        .split_once("://")
        .map_or(public_origin, |(_, h)| h)
}

/// What a refused form says about where it came from, for the refusal's
/// page and log: the headers as the client sent them (visible ASCII
/// only, cut to 200 characters), never trusted for anything else.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// `Origin`, if any.
    pub origin: Option<String>,
    /// `Sec-Fetch-Site`, if any.
    pub site: Option<String>,
    /// `Host`, or the HTTP/2 authority.
    pub host: Option<String>,
}

/// Longest header text a refusal repeats.
const SHOWN_MAX: usize = 200;

impl Arrival {
    /// From a request's headers and URI.
    pub fn of(headers: &HeaderMap, uri: &Uri) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(SHOWN_MAX).collect::<String>())
        };
        Self {
            origin: text("origin"),
            site: text("sec-fetch-site"),
            host: text("host").or_else(|| uri.authority().map(|a| a.as_str().to_owned())),
        }
    }

    /// Where the form came from, as the page and the log say it.
    pub fn shown(&self) -> String {
        match (self.origin.as_deref(), self.site.as_deref()) {
            (Some("null"), _) => "Origin: null (the browser hid the page's origin)".to_owned(),
            (Some(origin), _) => origin.to_owned(),
            (None, Some(site)) => format!("no Origin; Sec-Fetch-Site: {site}"),
            (None, None) => "no Origin".to_owned(),
        }
    }

    /// What to do about the refusal: the flag that fixes a set-up's
    /// mismatch; for a form another site's page sent, nothing to fix.
    pub fn fix(&self, expected: &str) -> String {
        if let Some(site @ ("cross-site" | "same-site")) = self.site.as_deref() {
            return format!(
                "The browser says a page on another site sent this form (Sec-Fetch-Site: \
                 {site}); such forms are always refused. Sign in at {expected}."
            );
        }
        // Name the arrived origin in the advice only when the browser
        // vouches that the form came from the origin it was sent to (a
        // proxy signoff was not told about): a page elsewhere, in a
        // browser that sends no `Sec-Fetch-Site`, gets no advice to make
        // its own origin the public URL.
        let vouched = match self.site.as_deref() {
            Some("same-origin") => true,
            None => self.sent_to_its_own_host(),
            Some(_) => false,
        };
        let arrived = self
            .origin
            .as_deref()
            .filter(|_| vouched)
            .and_then(|o| parse(o).map(|p| (o, p)));
        match (arrived, parse(expected)) {
            (Some((origin, (scheme, host, _))), Some((want_scheme, want_host, _)))
                if scheme == "http" && want_scheme == "https" && host == want_host =>
            {
                format!(
                    "The public URL is https but the form came over plain HTTP: serve TLS \
                     with --tls-cert and --tls-key, or reach signoff through the TLS proxy \
                     in front of it; if plain HTTP is meant, set --public-url {origin}{}.",
                    insecure_flag(&scheme, &host)
                )
            }
            (Some((origin, (scheme, host, _))), _) => format!(
                "If {origin} is where users reach signoff (through a proxy, or by another \
                 host name), set --public-url {origin}{} (or SIGNOFF_PUBLIC_URL, or \
                 public_url in the config file); otherwise sign in at {expected}.",
                insecure_flag(&scheme, &host)
            ),
            (None, _) => format!(
                "The browser did not say that this form came from the address it was sent \
                 to. Sign in at {expected}; if users reach signoff at another address, set \
                 --public-url to it."
            ),
        }
    }

    /// Whether a browser sent this form from the page it was on, at a
    /// loopback origin that differs from the loopback `public_origin` only
    /// in how the host is spelled (`localhost` for `127.0.0.1`): an honest
    /// set-up, answered by sending the browser to `public_origin`.
    pub fn loopback_twin_of(&self, public_origin: &str) -> bool {
        let Some(origin) = self.origin.as_deref() else {
            return false;
        };
        if !matches!(self.site.as_deref(), None | Some("same-origin")) {
            return false;
        }
        self.sent_to_its_own_host() && loopback_twins(origin, public_origin)
    }

    /// Whether the form went to the host its page was on: `Origin` and
    /// `Host` name the same host and port.
    fn sent_to_its_own_host(&self) -> bool {
        let (Some(origin), Some(host)) = (self.origin.as_deref(), self.host.as_deref()) else {
            return false;
        };
        match (
            parse(origin),
            parse(&format!("{}://{host}", scheme(origin))),
        ) {
            (Some(from), Some(to)) => from == to,
            _ => false,
        }
    }
}

/// Whether `host` (a name or an address, IPv6 in brackets or not) is
/// loopback: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a plain-HTTP public URL on `host` needs besides `--public-url`.
fn insecure_flag(scheme: &str, host: &str) -> &'static str {
    if scheme == "http" && !is_loopback_host(host) {
        " --allow-insecure-http"
    } else {
        ""
    }
}

/// The scheme of an origin (`http` if it has none).
fn scheme(origin: &str) -> &str {
    origin.split_once("://").map_or("http", |(s, _)| s)
}

/// Whether two origins are both loopback and differ only in the host's
/// spelling: the same scheme and port, another loopback host.
pub fn loopback_twins(a: &str, b: &str) -> bool {
    let (Some((scheme_a, host_a, port_a)), Some((scheme_b, host_b, port_b))) = (parse(a), parse(b))
    else {
        return false;
    };
    scheme_a == scheme_b
        && port_a == port_b
        && host_a != host_b
        && is_loopback_host(&host_a)
        && is_loopback_host(&host_b)
}

/// `scheme://host[:port]` as (scheme, host, port), lower case, the port
/// filled in; `None` for anything else (a path, user info, another scheme).
fn parse(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if authority.contains(['@', '/', '?', '#']) {
        return None;
    }
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    let port = authority.port_u16().unwrap_or(default);
    Some((scheme, authority.host().to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(origin: Option<&str>, site: Option<&str>, host: Option<&str>) -> Arrival {
        Arrival {
            origin: origin.map(str::to_owned),
            site: site.map(str::to_owned),
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn loopback_twins_differ_only_in_the_host_spelling() {
        for (a, b) in [
            ("http://localhost:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080", "http://localhost:8080"),
            ("http://127.0.0.2:8080", "http://127.0.0.1:8080"),
            ("https://localhost", "https://127.0.0.1:443"),
        ] {
            assert!(loopback_twins(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://LOCALHOST:8080", "http://localhost:8080"),
            ("http://localhost:9999", "http://127.0.0.1:8080"),
            ("https://localhost:8080", "http://127.0.0.1:8080"),
            ("http://evil.example:8080", "http://127.0.0.1:8080"),
            ("http://localhost:8080", "http://app.example.com:8080"),
            (
                "http://localhost.evil.example:8080",
                "http://127.0.0.1:8080",
            ),
            ("http://u@localhost:8080", "http://127.0.0.1:8080"),
            ("http://localhost:8080/x", "http://127.0.0.1:8080"),
            ("null", "http://127.0.0.1:8080"),
        ] {
            assert!(!loopback_twins(a, b), "{a} {b}");
        }
    }

    #[test]
    fn only_a_form_sent_from_the_page_it_was_on_is_a_twin() {
        let public = "http://127.0.0.1:8080";
        let honest = arrival(
            Some("http://localhost:8080"),
            Some("same-origin"),
            Some("localhost:8080"),
        );
        assert!(honest.loopback_twin_of(public));
        assert!(
            arrival(Some("http://localhost:8080"), None, Some("localhost:8080"))
                .loopback_twin_of(public)
        );
        for refused in [
            arrival(
                Some("http://localhost:8080"),
                Some("cross-site"),
                Some("localhost:8080"),
            ),
            arrival(
                Some("http://localhost:8080"),
                Some("same-site"),
                Some("localhost:8080"),
            ),
            // Sent to another host than its page's.
            arrival(Some("http://localhost:8080"), None, Some("127.0.0.1:8080")),
            arrival(Some("http://localhost:8080"), None, None),
            arrival(Some("null"), None, Some("localhost:8080")),
            arrival(None, Some("same-origin"), Some("localhost:8080")),
            arrival(Some("http://evil.example"), None, Some("evil.example")),
        ] {
            assert!(!refused.loopback_twin_of(public), "{refused:?}");
        }
        assert!(!honest.loopback_twin_of("http://app.example.com:8080"));
    }

    #[test]
    fn the_fix_names_the_flag_and_the_origins() {
        let expected = "https://app.example.com";
        let behind_proxy = arrival(
            Some("https://login.example.com"),
            Some("same-origin"),
            Some("127.0.0.1:8080"),
        )
        .fix(expected);
        assert!(
            behind_proxy.contains("--public-url https://login.example.com")
                && behind_proxy.contains(expected),
            "{behind_proxy}"
        );
        // A browser without Sec-Fetch-Site: named only when the form went
        // to the host its page was on (a proxy that passes Host on).
        let passed_on = arrival(
            Some("https://login.example.com"),
            None,
            Some("login.example.com"),
        )
        .fix(expected);
        assert!(passed_on.contains("--public-url https://login.example.com"));
        // Otherwise (another site's page, in such a browser) the advice
        // does not name that site.
        for other in [
            arrival(Some("https://evil.example"), None, Some("app.example.com")),
            arrival(Some("https://evil.example"), None, None),
        ] {
            let fix = other.fix(expected);
            assert!(
                !fix.contains("evil.example") && fix.contains(expected),
                "{fix}"
            );
        }
        let no_tls = arrival(
            Some("http://app.example.com:8080"),
            None,
            Some("app.example.com:8080"),
        )
        .fix(expected);
        assert!(
            no_tls.contains("--tls-cert")
                && no_tls.contains("plain HTTP")
                && no_tls
                    .contains("--public-url http://app.example.com:8080 --allow-insecure-http"),
            "{no_tls}"
        );
        let local = arrival(
            Some("http://localhost:8080"),
            Some("same-origin"),
            Some("127.0.0.1:8080"),
        )
        .fix("http://127.0.0.1:8080");
        assert!(
            local.contains("--public-url http://localhost:8080 (") && !local.contains("insecure"),
            "{local}"
        );
        let hidden = arrival(Some("null"), None, None).fix(expected);
        assert!(hidden.contains("--public-url") && hidden.contains(expected));
        assert_eq!(
            arrival(Some("null"), None, None).shown(),
            "Origin: null (the browser hid the page's origin)"
        );
        let cross = arrival(Some("https://evil.example"), Some("cross-site"), None).fix(expected);
        assert!(
            cross.contains("cross-site") && !cross.contains("--public-url"),
            "no setting lets another site's form through: {cross}"
        );
    }
}
