//! Many apps behind one signoff (`[[app]]`, docs/apps.md): which app a
//! request is for (its host, then the longest path prefix), where it goes
//! upstream, which rules decide it, and the *site* it arrived at: the
//! central host, where users sign in, or another app host, whose own
//! sessions come from the central one ([`super::sso`]).

use axum::http::header::{self, HeaderMap};
use axum::http::uri::Authority;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::Response;
use signoff::access::Rules;

use super::own_origin::UpstreamOrigin;
use crate::config::{App, Settings};

/// Where a request goes upstream.
pub(super) struct Target {
    pub authority: Authority,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The upstream's origin, for rewriting `Location`s that point there.
    pub origin: Option<UpstreamOrigin>,
}

impl Target {
    fn of(uri: &Uri) -> anyhow::Result<Self> {
        Ok(Self {
            authority: uri
                .authority()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("upstream has no host"))?,
            scheme: if uri.scheme_str() == Some("https") {
                "https"
            } else {
                "http"
            },
            origin: UpstreamOrigin::of(uri),
        })
    }
}

/// The apps and the top-level upstream, as routes.
pub(super) struct Routes {
    /// The top-level `upstream`: the public URL's host (and, without
    /// `--public-url`, any host), for what no app serves.
    pub main: Option<Target>,
    apps: Vec<(App, Option<Target>)>,
    /// The app hosts other than the public URL's: each a site of its own.
    sites: Vec<Site>,
    /// Whether any app has a path prefix (then every reading of a path
    /// must pick the same app).
    prefixes: bool,
    /// The public URL's host: a request for it, or for a host no app
    /// names, is the top-level upstream's.
    public_host: String,
}

/// A host, other than the public URL's, that apps answer on: its
/// sessions are its own (host-only cookies), made from the central one.
pub struct Site {
    /// Lower case, no port.
    pub host: String,
    /// What browsers see: scheme, host and the public URL's port.
    pub origin: String,
}

/// Which of the configured apps serves a request (`None`: the top-level
/// upstream and rules).
#[derive(Clone, Copy)]
pub(super) struct AppIndex(Option<usize>);

/// Why no app could be picked for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoApp {
    /// The path reads as paths of different apps (`/docs/../admin`): the
    /// app a proxy in front routes it to is not known.
    Ambiguous,
    /// An app host of its own, and no app there serves the path.
    NoneHere,
}

impl Routes {
    pub(super) fn new(settings: &Settings) -> anyhow::Result<Self> {
        let main = settings.upstream.as_ref().map(Target::of).transpose()?;
        let public_host = super::origin::host_of(&settings.public_origin);
        let public_host = bare_host(public_host);
        let mut sites: Vec<Site> = Vec::new();
        let mut apps = Vec::with_capacity(settings.apps.len());
        for app in &settings.apps {
            let target = app.upstream.as_ref().map(Target::of).transpose()?;
            if !app.host.eq_ignore_ascii_case(public_host)
                && !sites.iter().any(|s| s.host == app.host)
            {
                sites.push(Site {
                    host: app.host.clone(),
                    origin: app.origin.clone(),
                });
            }
            apps.push((app.clone(), target));
        }
        Ok(Self {
            main,
            prefixes: settings.apps.iter().any(|a| a.path_prefix.is_some()),
            apps,
            sites,
            public_host: public_host.to_ascii_lowercase(),
        })
    }

    /// The app hosts' origins, space-separated, for a CSP source list.
    pub(super) fn site_origins(&self) -> String {
        self.sites
            .iter()
            .map(|s| s.origin.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether any app host other than the public URL's is configured.
    pub(super) fn has_sites(&self) -> bool {
        !self.sites.is_empty()
    }

    /// Whether any `[[app]]` is configured.
    pub(super) fn has_apps(&self) -> bool {
        !self.apps.is_empty()
    }

    /// The app serving `host` (as the request names it, port and all) and
    /// `path` (raw, as it goes upstream). With path prefixes, every way
    /// the path can be read (`signoff::access::Readings`) must pick the
    /// same app, since a proxy in front may route on any of them.
    ///
    /// # Errors
    /// [`NoApp`]: the request is refused.
    pub(super) fn app_for(&self, host: Option<&str>, path: &str) -> Result<AppIndex, NoApp> {
        if self.apps.is_empty() {
            return Ok(AppIndex(None));
        }
        let Some(host) = host.map(bare_host) else {
            return Ok(AppIndex(None));
        };
        let pick = |path: &str| {
            self.apps
                .iter()
                .position(|(app, _)| app.host.eq_ignore_ascii_case(host) && app.serves_path(path))
        };
        let index = if self.prefixes {
            let readings = signoff::access::Readings::of(path);
            if readings.is_unknown() {
                return Err(NoApp::Ambiguous);
            }
            let mut picked = readings.iter().map(pick);
            let first = picked.next().flatten();
            if picked.any(|other| other != first) {
                return Err(NoApp::Ambiguous);
            }
            first
        } else {
            pick(path)
        };
        if index.is_none() && self.site_of_host(Some(host)).is_some() {
            return Err(NoApp::NoneHere);
        }
        Ok(AppIndex(index))
    }

    /// Whether `host` is one this signoff serves: the public URL's, or an
    /// app's.
    pub(super) fn knows_host(&self, host: &str) -> bool {
        let host = bare_host(host);
        host.eq_ignore_ascii_case(&self.public_host)
            || self
                .apps
                .iter()
                .any(|(app, _)| app.host.eq_ignore_ascii_case(host))
    }

    /// Where a request for `index` goes; `None`: nowhere (forward-auth
    /// only, for the top-level or that app).
    pub(super) fn target(&self, index: AppIndex) -> Option<&Target> {
        match index.0 {
            Some(i) => self.apps[i].1.as_ref(),
            None => self.main.as_ref(),
        }
    }

    /// The site a request arrived at, by its `Host`: an app host of its
    /// own, or `None` for the central host (also any host no app
    /// names).
    pub(super) fn site_of_host(&self, host: Option<&str>) -> Option<&Site> {
        if self.sites.is_empty() {
            return None;
        }
        let host = bare_host(host?);
        self.sites
            .iter()
            .find(|s| s.host.eq_ignore_ascii_case(host))
    }

    /// The site of a request's own `Host` header.
    pub(super) fn site_of(&self, headers: &HeaderMap) -> Option<&Site> {
        if self.sites.is_empty() {
            return None;
        }
        self.site_of_host(headers.get(header::HOST).and_then(|v| v.to_str().ok()))
    }

    /// The site whose host is `host` exactly (lower case), for a session
    /// bound to it.
    pub(super) fn site_named(&self, host: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.host == host)
    }
}

/// The answer to a request no app can be picked for.
pub(super) fn refuse(gw: &super::Gateway, why: NoApp) -> Response {
    match why {
        NoApp::Ambiguous => {
            tracing::info!(target: "signoff::access", "refused: the path reads as paths of different apps");
            super::error_pages::error_page(
                gw,
                StatusCode::BAD_REQUEST,
                "Bad request",
                "This address can be read as belonging to more than one application.",
            )
        }
        NoApp::NoneHere => super::error_pages::error_page(
            gw,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        ),
    }
}

/// The access rules in force: the top-level ones and each app's, in
/// the order of [`Settings::apps`].
pub struct RuleBook {
    main: Rules,
    apps: Vec<Rules>,
    /// Each app's name, host and prefix: what a reload may not change.
    shape: Vec<(String, String, Option<String>)>,
}

impl RuleBook {
    /// The rules of these settings.
    pub fn of(settings: &Settings) -> Self {
        Self {
            main: settings.access.rules.clone(),
            apps: settings
                .apps
                .iter()
                .map(|a| a.access.rules.clone())
                .collect(),
            shape: settings
                .apps
                .iter()
                .map(|a| (a.name.clone(), a.host.clone(), a.path_prefix.clone()))
                .collect(),
        }
    }

    pub(super) fn for_app(&self, index: AppIndex) -> &Rules {
        match index.0 {
            Some(i) => &self.apps[i],
            None => &self.main,
        }
    }

    /// Whether `other` has the same apps (names, hosts and prefixes, in
    /// order), so its rules can replace these without a restart.
    pub fn same_apps(&self, other: &RuleBook) -> bool {
        self.shape == other.shape
    }
}

/// A host without its port (`a.test:8080` → `a.test`); IPv6 literals
/// keep their brackets.
fn bare_host(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::bare_host;

    #[test]
    fn a_host_is_read_without_its_port() {
        assert_eq!(bare_host("a.test:8080"), "a.test");
        assert_eq!(bare_host("a.test"), "a.test");
        // A final dot is another name: no app has it, so forward-auth
        // refuses it (tests/apps.rs).
        assert_eq!(bare_host("a.test.:8080"), "a.test.");
        assert_eq!(bare_host("[::1]:80"), "[::1]");
        assert_eq!(bare_host("[::1]"), "[::1]");
    }
}
