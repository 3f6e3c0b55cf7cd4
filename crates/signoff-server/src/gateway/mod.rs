//! The gateway: signoff's own pages under the prefix, and a reverse proxy
//! for everything else that lets only live sessions through.
//!
//! Endpoints come in families, each a module with its own `routes()`,
//! which [`Gateway::router`] (in `state.rs`) merges: [`sign_in`] (login,
//! logout, signed-out, status, guard.js), [`assets`] (the stylesheets,
//! script and logo the pages load), [`account`] (sessions,
//! re-authentication, password), [`admin`] (the admin API), [`token_mode`],
//! [`forward_auth`], [`ops`] (healthz, metrics, the 404 under the prefix)
//! and [`proxy`] (everything else), which hands upgrades to [`tunnel`]
//! (WebSockets) and watches [`long_response`]s (event streams, downloads):
//! both end when their session does. What handlers share is in its own
//! module: [`signed_in`] (sessions, the `SignedIn` extractor),
//! [`csrf_form`] (the `CsrfForm` extractor), [`client_addr`] (the
//! `ClientAddr` extractor), [`cookies`], [`origin`], [`access`] (the access rules),
//! [`error_pages`] and [`layers`] (the middleware).

mod access;
mod account;
mod admin;
mod apps;
mod assets;
mod client_addr;
mod cookies;
mod csrf_form;
mod error_pages;
mod forward_auth;
mod guard;
mod identity_headers;
mod layers;
mod long_response;
mod oidc;
mod ops;
mod origin;
mod own_body;
mod own_origin;
pub mod pages;
mod proxy;
pub mod redirect;
mod sign_in;
mod signed_in;
mod single_sign_on;
mod state;
pub mod throttle;
mod token_mode;
mod tunnel;
mod upstream_client;

use std::sync::Arc;

use axum::extract::State;

pub use apps::RuleBook;
pub use state::Gateway;

/// Builds the upstream client without connecting (its TLS roots: the
/// `--upstream-ca` file or the system's), so `serve --check` finds what
/// would stop the start.
pub fn check_upstream_client(settings: &crate::config::Settings) -> anyhow::Result<()> {
    upstream_client::build(settings).map(drop)
}

/// The session data key holding the signed-in user's name (sent upstream
/// as `X-Signoff-User`), so no request needs a user lookup.
pub const USER_NAME_KEY: &str = "signoff.user";

/// The session data key holding the user's groups at sign-in,
/// comma-separated (sent upstream as `X-Signoff-Groups`, matched by the
/// access rules); absent when the user is in none.
pub const GROUPS_KEY: &str = "signoff.groups";

/// The session data key naming the app host a session was made for
/// (docs/apps.md); absent for a session of the central host. A session is
/// good only on its own site.
pub const SITE_KEY: &str = "signoff.site";

type AppState = State<Arc<Gateway>>;
