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
//! module: [`signed_in`] (sessions; the gateway as the `Gate` of the
//! library's `SignedIn`, `CsrfForm` and `ClientAddr` extractors, from
//! `signoff::web`), [`cookies`], [`access`] (the access rules),
//! [`error_pages`] and [`layers`] (the middleware).

mod access;
mod account;
mod admin;
mod apps;
mod assets;
mod cookies;
mod error_pages;
mod forward_auth;
mod guard;
mod header_names;
mod identity_headers;
mod layers;
mod long_response;
mod oidc;
mod ops;
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
// The library's web layer, which the gateway runs on: reading bodies,
// the client's address, checked forms, and where a form came from.
use signoff::web::{body as own_body, client_addr, csrf_form, origin};

pub use apps::RuleBook;
pub use state::Gateway;

/// What [`Gateway::router`] gives the listener: the router, with the
/// access log and HSTS around it.
pub type App = layers::OutermostService<axum::Router>;

/// Builds the upstream client without connecting (its TLS roots: the
/// `--upstream-ca` file or the system's), so `serve --check` finds what
/// would stop the start.
pub fn check_upstream_client(settings: &crate::config::Settings) -> anyhow::Result<()> {
    upstream_client::build(settings).map(drop)
}

/// The session data key holding the signed-in user's name (sent upstream
/// as `X-Signoff-User`), so no request needs a user lookup.
pub use signoff::USER_NAME_KEY;

/// The session data key holding the user's groups at sign-in,
/// comma-separated (sent upstream as `X-Signoff-Groups`, matched by the
/// access rules); absent when the user is in none.
pub const GROUPS_KEY: &str = "signoff.groups";

/// The session data key naming the app host a session was made for
/// (docs/apps.md); absent for a session of the central host. A session is
/// good only on its own site.
pub use signoff::SITE_KEY;

type AppState = State<Arc<Gateway>>;
