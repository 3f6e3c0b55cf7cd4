//! Names of the headers outside the standard set that signoff reads or
//! writes on every proxied request and every forward-auth check. Made
//! once, at compile time: a name given as a `&str` is parsed again each
//! time it is used.

use axum::http::HeaderName;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(super) const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(super) const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
pub(super) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
/// How nginx, Traefik and Caddy name the request a forward-auth check is
/// about.
pub(super) const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub(super) const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub(super) const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
pub(super) const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub(super) const X_SIGNOFF_USER: HeaderName = HeaderName::from_static("x-signoff-user");
pub(super) const X_SIGNOFF_SESSION: HeaderName = HeaderName::from_static("x-signoff-session");
pub(super) const X_SIGNOFF_CSRF: HeaderName = HeaderName::from_static("x-signoff-csrf");
pub(super) const X_SIGNOFF_AUTH_TIME: HeaderName = HeaderName::from_static("x-signoff-auth-time");
pub(super) const X_SIGNOFF_GROUPS: HeaderName = HeaderName::from_static("x-signoff-groups");
pub(super) const X_SIGNOFF_EMAIL: HeaderName = HeaderName::from_static("x-signoff-email");

/// Headers through which some frameworks let a POST stand for another
/// method (Rails, Laravel, Express's method-override, Symfony): a rule on
/// methods must hold for the method the app will act on.
pub(super) const METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
