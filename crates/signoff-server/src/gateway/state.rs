//! [`Gateway`]: the state every handler shares, and the router that merges
//! the endpoint families' `routes()` under the middleware.

use std::sync::Arc;

use arc_swap::ArcSwap;

use axum::http::HeaderValue;
use axum::middleware;
use axum::{Extension, Router};
use signoff::token_mode::Tokens;
use signoff::web::{Gate, GateRef};
use signoff::{Accounts, CookiePolicy, SessionWatch, Sessions, SystemClock, WatchOptions};
use tower::Layer;

use super::apps::{Routes, RuleBook};
use super::guard::Guard;
use super::throttle::Throttle;
use super::upstream_client::{self, UpstreamClient};
use super::{
    account, admin, assets, forward_auth, layers, ops, proxy, sign_in, single_sign_on, token_mode,
    App,
};
use crate::config::Settings;

/// Everything the handlers share.
pub struct Gateway {
    pub(super) settings: Arc<Settings>,
    pub(super) sessions: Sessions,
    /// The same engine without the local cache: for the guard's status
    /// check, which must see a session ended anywhere at once.
    pub(super) uncached: Sessions,
    pub(super) accounts: Accounts,
    pub(super) cookie: CookiePolicy,
    pub(super) client: UpstreamClient,
    /// Where requests go: the top-level upstream (`None` in
    /// forward-auth-only mode) and the `[[app]]`s.
    pub(super) routes: Routes,
    pub(super) guard: Guard,
    pub(super) throttle: Throttle,
    pub(super) metrics: crate::metrics::Sources,
    pub(super) counters: crate::metrics::Counters,
    /// Token mode, if on.
    pub(super) tokens: Option<Arc<Tokens>>,
    /// The sessions that open tunnels and long responses run under: each
    /// ends when its session does.
    pub(super) watch: SessionWatch,
    /// The access rules: the settings' own, until a reload
    /// ([`Gateway::replace_rules`]) swaps in new ones.
    pub(super) rules: ArcSwap<RuleBook>,
    /// Sign-in with OpenID Connect providers (none: passwords only).
    pub(super) oidc: super::oidc::Providers,
    /// What every proxied request under the public URL is given, made
    /// once.
    pub(super) public: PublicUrl,
}

/// The parts of the public URL that proxied requests use, made once
/// instead of at every request. Empty without a public URL.
pub(super) struct PublicUrl {
    /// Its host (and port), as access rules and forward-auth match it.
    pub(super) host_name: Box<str>,
    /// The same, the `Host` and `X-Forwarded-Host` the upstream is sent.
    pub(super) host: Option<HeaderValue>,
    /// The status endpoint under it, for a CSP source
    /// ([`super::proxy::status_url_at`]).
    pub(super) status_url: Option<Arc<str>>,
}

impl PublicUrl {
    fn of(settings: &Settings) -> Self {
        if !settings.public_url_given {
            return Self {
                host_name: "".into(),
                host: None,
                status_url: None,
            };
        }
        let origin = &settings.public_origin;
        let host_name = super::origin::host_of(origin);
        Self {
            host_name: host_name.into(),
            host: HeaderValue::from_str(host_name).ok(),
            status_url: super::proxy::status_url_at(origin, &settings.prefix),
        }
    }
}

impl Gateway {
    /// A gateway over these parts. `cookie` must match the policy inside
    /// `sessions`.
    pub fn new(settings: Settings, sessions: Sessions, accounts: Accounts) -> anyhow::Result<Self> {
        let routes = Routes::new(&settings)?;
        let oidc = super::oidc::Providers::new(&settings)?;
        let client = upstream_client::build(&settings)?;
        let guard = Guard::new(&settings.prefix);
        if settings.inject_guard {
            tracing::info!(
                csp_source = guard.csp_source(),
                "injecting the back-button guard into upstream HTML; a CSP in a <meta> tag must allow this hash"
            );
        }
        // The engine tells its watch of every end made through it; without
        // one, a watch of its own polls the store.
        let watch = sessions.watch().cloned().unwrap_or_else(|| {
            SessionWatch::new(
                sessions.store().clone(),
                sessions.policy().clone(),
                Arc::new(SystemClock),
                WatchOptions::default(),
            )
        });
        Ok(Self {
            public: PublicUrl::of(&settings),
            rules: ArcSwap::from_pointee(RuleBook::of(&settings)),
            watch,
            cookie: sessions.policy().cookie().clone(),
            guard,
            throttle: Throttle::new(settings.login.clone()),
            settings: Arc::new(settings),
            uncached: sessions.clone(),
            sessions,
            accounts,
            client,
            routes,
            oidc,
            metrics: crate::metrics::Sources::default(),
            counters: crate::metrics::Counters::default(),
            tokens: None,
        })
    }

    /// Where `PREFIX/metrics` (served with `--metrics`) reads its figures.
    pub fn with_metrics(mut self, sources: crate::metrics::Sources) -> Self {
        self.metrics = sources;
        self
    }

    /// The engine over the store itself, bypassing the local cache, that
    /// `PREFIX/status` asks (by default the cached one).
    pub fn with_uncached_sessions(mut self, uncached: Sessions) -> Self {
        self.uncached = uncached;
        self
    }

    /// The shared store's records: back-channel logout remembers there
    /// which logout tokens it has taken, and each provider session's user.
    pub fn with_state_store(mut self, state: Arc<dyn signoff::StateStore>) -> Self {
        self.oidc.set_state_store(state);
        self
    }

    /// Turns on token mode (`PREFIX/api/login`, `/token`, … and bearer
    /// access tokens).
    pub fn with_tokens(mut self, tokens: Option<Arc<Tokens>>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Puts new access rules in force for every request that starts after
    /// this returns (a reload on SIGHUP); requests under way finish under
    /// the rules they started with, and no session is touched.
    ///
    /// # Errors
    /// When the apps themselves changed (names, hosts, prefixes): that
    /// takes a restart, and the rules in force stay.
    pub fn replace_rules(&self, rules: RuleBook) -> Result<(), &'static str> {
        if !self.rules.load().same_apps(&rules) {
            return Err("the [[app]] tables changed (names, hosts or path prefixes): restart signoff to apply them");
        }
        self.rules.store(Arc::new(rules));
        Ok(())
    }

    /// Counts a store failure for the metrics.
    pub(super) fn count_store_error(&self) {
        self.counters
            .store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records an audit event, if the engine has an audit log.
    pub(super) async fn audit(&self, event: signoff::AuditEvent) {
        if let Some(audit) = self.sessions.audit() {
            audit.record(event).await;
        }
    }

    /// The app: the families' own routes under the prefix (each body with
    /// a deadline, each answer no-store and nosniff), then the proxy for
    /// everything else; HSTS and the access log around all of it.
    pub fn router(self: Arc<Self>) -> App {
        let within = self.settings.connections.client_timeout;
        // The families whose handlers take the library's extractors find
        // the gateway in their requests; the others (forward-auth's
        // `/auth` on every proxied request among them) pay nothing for it.
        let gate: Arc<dyn Gate> = self.clone();
        let extracting = Router::new()
            .merge(sign_in::routes(&self))
            .merge(account::routes(&self))
            .merge(token_mode::routes(&self))
            .merge(single_sign_on::routes(&self))
            .merge(super::oidc::routes(&self))
            .layer(Extension(GateRef::new(gate)));
        let mut own = extracting
            .merge(assets::routes(&self))
            .merge(forward_auth::routes(&self))
            .merge(admin::routes(&self))
            .merge(ops::routes(&self));
        // App hosts of their own: only some pages are theirs.
        if self.routes.has_sites() {
            own = own.layer(middleware::from_fn_with_state(
                self.clone(),
                single_sign_on::app_host_gate,
            ));
        }
        // Forms that lead on to app hosts or providers.
        if self.routes.has_sites() || self.oidc.any() {
            own = own.layer(middleware::map_response_with_state(
                self.clone(),
                layers::let_forms_lead_on,
            ));
        }
        // `layer`, not `route_layer`: 405s for a wrong method get it too.
        let own = own.layer(layers::OwnRoutes { within });
        let hsts = self.settings.hsts.clone();
        let mut all = own.merge(proxy::routes(&self));
        // Apps are told apart by host; without them nothing reads it
        // before the proxy, which falls back to the URI itself.
        if self.routes.has_apps() {
            all = all.layer(middleware::map_request(layers::host_from_authority));
        }
        layers::Outermost { hsts }.layer(all.with_state(self))
    }
}
