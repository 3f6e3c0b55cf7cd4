//! Gateway settings: command-line flags, `SIGNOFF_*` environment variables
//! and a TOML file, merged with precedence flag > env > file > default.
//!
//! clap reads flags and their environment variables (so those two are
//! already ordered); every flag is an `Option` without a clap default, so
//! "not given" is visible and the file or the default fills it in.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};
use ipnet::IpNet;
use serde::Deserialize;

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database.
pub const DEFAULT_DB: &str = "sqlite://signoff.db";
/// Default `Clear-Site-Data` values sent at logout. `prefetchCache` and
/// `prerenderCache` stop Chromium from showing a page it prerendered
/// before logout; other browsers ignore them.
pub const DEFAULT_CLEAR_SITE_DATA: [&str; 5] = [
    "cache",
    "cookies",
    "storage",
    "prefetchCache",
    "prerenderCache",
];
const CLEAR_SITE_DATA_VALUES: [&str; 7] = [
    "cache",
    "cookies",
    "storage",
    "executionContexts",
    "prefetchCache",
    "prerenderCache",
    "*",
];

/// `signoff serve` flags. Each also reads `SIGNOFF_<NAME>` and the TOML
/// key of the same name (with `_` for `-`).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// The app to protect, e.g. http://127.0.0.1:5000; without it signoff
    /// serves forward-auth only (for nginx, Caddy, Traefik) and answers 404
    /// outside its prefix [file: upstream]
    #[arg(long, env = "SIGNOFF_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080] [file: listen]
    #[arg(long, env = "SIGNOFF_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The URL browsers use to reach signoff, e.g. https://app.example.com;
    /// sets the cookie's security and the origin that state changes must
    /// come from [default: http://LISTEN] [file: public_url]
    #[arg(long, env = "SIGNOFF_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Where sessions, users and the audit trail live: sqlite://PATH (or a
    /// file path) for one node; redis://HOST[:PORT][/DB] (rediss:// for TLS)
    /// or postgres://USER@HOST/DB for many nodes sharing one store
    /// [default: sqlite://signoff.db] [file: db]
    #[arg(long, env = "SIGNOFF_DB", value_name = "URL", hide_env_values = true)]
    pub db: Option<String>,
    /// Sign out after this long without a request, e.g. 30m [default: 30m] [file: idle_timeout]
    #[arg(long, env = "SIGNOFF_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Sign out this long after login whatever happens, e.g. 12h [default: 12h] [file: absolute_timeout]
    #[arg(long, env = "SIGNOFF_ABSOLUTE_TIMEOUT", value_name = "DURATION")]
    pub absolute_timeout: Option<String>,
    /// A TOML file with any of these settings
    #[arg(long, env = "SIGNOFF_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS with it [file: tls_cert]
    #[arg(
        long,
        env = "SIGNOFF_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert [file: tls_key]
    #[arg(
        long,
        env = "SIGNOFF_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Allow a plain-HTTP public URL on a non-loopback address (the session
    /// cookie then travels unencrypted) [file: allow_insecure_http]
    #[arg(long, env = "SIGNOFF_ALLOW_INSECURE_HTTP", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub allow_insecure_http: Option<bool>,
    /// Paths that need no session: `/x/` matches everything under /x/, any
    /// other entry matches exactly; repeat or separate with commas
    /// [file: public_paths]
    #[arg(
        long = "public-path",
        env = "SIGNOFF_PUBLIC_PATHS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub public_paths: Vec<String>,
    /// Proxies (IPs or CIDRs) whose X-Forwarded-For is believed; repeat or
    /// separate with commas [file: trusted_proxies]
    #[arg(
        long = "trusted-proxy",
        env = "SIGNOFF_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Inject the back-button guard script into upstream HTML [default: true] [file: inject_guard]
    #[arg(long, env = "SIGNOFF_INJECT_GUARD", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub inject_guard: Option<bool>,
    /// Send a private page whose Content-Encoding the guard cannot read
    /// without the guard, instead of refusing it with 502 [default: false]
    /// [file: allow_unguarded_html]
    #[arg(long, env = "SIGNOFF_ALLOW_UNGUARDED_HTML", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub allow_unguarded_html: Option<bool>,
    /// Strict-Transport-Security value sent on every answer, or "off"
    /// [default: max-age=31536000 when signoff serves TLS itself, else off]
    /// [file: hsts]
    #[arg(long, env = "SIGNOFF_HSTS", value_name = "VALUE")]
    pub hsts: Option<String>,
    /// Clear-Site-Data values sent at logout, comma-separated
    /// [default: cache,cookies,storage,prefetchCache,prerenderCache] [file: clear_site_data]
    #[arg(
        long,
        env = "SIGNOFF_CLEAR_SITE_DATA",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub clear_site_data: Vec<String>,
    /// Largest request body passed to the upstream, in bytes [default: 10485760] [file: max_body_bytes]
    #[arg(long, env = "SIGNOFF_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,
    /// URL prefix of signoff's own pages [default: /.signoff] [file: prefix]
    #[arg(long, env = "SIGNOFF_PREFIX", value_name = "PATH")]
    pub prefix: Option<String>,
    /// Most sessions one user may hold at once; a sign-in beyond it ends
    /// the user's oldest session [default: unlimited] [file: max_sessions]
    #[arg(long, env = "SIGNOFF_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Ending other sessions needs a sign-in or password re-entry within
    /// this long, e.g. 15m [default: 15m] [file: recent_auth]
    #[arg(long, env = "SIGNOFF_RECENT_AUTH", value_name = "DURATION")]
    pub recent_auth: Option<String>,
    /// Turns on the admin API: the SHA-256 (hex) of its bearer token, as
    /// printed by `signoff admin-token` [default: off] [file: admin_token_sha256]
    #[arg(long, env = "SIGNOFF_ADMIN_TOKEN_SHA256", value_name = "HEX")]
    pub admin_token_sha256: Option<String>,
    /// Delete audit events older than this, e.g. 90d [default: 90d] [file: audit_retention]
    #[arg(long, env = "SIGNOFF_AUDIT_RETENTION", value_name = "DURATION")]
    pub audit_retention: Option<String>,
    /// Also write each audit event as a JSON log line (target
    /// signoff::audit) [default: false] [file: audit_log]
    #[arg(long, env = "SIGNOFF_AUDIT_LOG", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub audit_log: Option<bool>,
    /// Longest a session check may be answered from this node's memory,
    /// e.g. 1s; 0s reads the store on every request. Ends and rotations
    /// elsewhere (other nodes, the CLI) arrive sooner over the revocation
    /// bus [default: 1s] [file: cache_staleness]
    #[arg(long, env = "SIGNOFF_CACHE_STALENESS", value_name = "DURATION")]
    pub cache_staleness: Option<String>,
    /// Start even if the SQLite file (or its -wal/-shm) is open to other
    /// users or its directory is writable by them, with a warning; by
    /// default that is refused [default: false] [file: allow_readable_db]
    #[arg(long, env = "SIGNOFF_ALLOW_READABLE_DB", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub allow_readable_db: Option<bool>,
    /// Serve Prometheus metrics at PREFIX/metrics (counts only, no user
    /// data) [default: false] [file: metrics]
    #[arg(long, env = "SIGNOFF_METRICS", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub metrics: Option<bool>,
    /// Token mode for APIs and mobile apps: PREFIX/api/login, /token,
    /// /revoke, /introspect, /api/logout and /jwks.json, and
    /// `Authorization: Bearer` access tokens on proxied requests
    /// [default: false] [file: tokens]
    #[arg(long, env = "SIGNOFF_TOKENS", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub tokens: Option<bool>,
    /// Lifetime of access tokens, e.g. 5m (at most 1h) [default: 5m] [file: access_token_ttl]
    #[arg(long, env = "SIGNOFF_ACCESS_TOKEN_TTL", value_name = "DURATION")]
    pub access_token_ttl: Option<String>,
    /// How long a refresh token just used may be used once more without
    /// counting as theft (for a client that lost the answer), e.g. 5s; 0s
    /// means never (at most 60s) [default: 0s] [file: refresh_grace]
    #[arg(long, env = "SIGNOFF_REFRESH_GRACE", value_name = "DURATION")]
    pub refresh_grace: Option<String>,
    /// Signature algorithm of new token keys: EdDSA or ES256 [default: EdDSA] [file: token_alg]
    #[arg(long, env = "SIGNOFF_TOKEN_ALG", value_name = "ALG")]
    pub token_alg: Option<String>,
    /// `iss` of access tokens [default: the public URL] [file: token_issuer]
    #[arg(long, env = "SIGNOFF_TOKEN_ISSUER", value_name = "URL")]
    pub token_issuer: Option<String>,
    /// `aud` of access tokens [default: the public URL] [file: token_audience]
    #[arg(long, env = "SIGNOFF_TOKEN_AUDIENCE", value_name = "TEXT")]
    pub token_audience: Option<String>,
    /// A confidential client allowed to introspect and revoke, as
    /// ID:SHA256HEX of its secret (`signoff admin-token` makes one); repeat
    /// or separate with commas [file: token_clients]
    #[arg(
        long = "token-client",
        env = "SIGNOFF_TOKEN_CLIENTS",
        value_name = "ID:HEX",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub token_clients: Vec<String>,
    /// Longest a client may take from connecting to the end of its first
    /// request's headers (TLS handshake included), and to send a form or
    /// JSON body to signoff's own pages, e.g. 10s [default: 10s] [file: client_timeout]
    #[arg(long, env = "SIGNOFF_CLIENT_TIMEOUT", value_name = "DURATION")]
    pub client_timeout: Option<String>,
    /// Longest a connection may stay open with no request in progress
    /// (HTTP/1 keep-alive, HTTP/2 with no open stream), e.g. 60s
    /// [default: 60s] [file: keepalive_timeout]
    #[arg(long, env = "SIGNOFF_KEEPALIVE_TIMEOUT", value_name = "DURATION")]
    pub keepalive_timeout: Option<String>,
    /// Most client connections open at once; beyond it the oldest
    /// connection that has not shown a live session is closed
    /// [default: from the file-descriptor limit] [file: max_connections]
    #[arg(long, env = "SIGNOFF_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
}

/// The TOML file. Unknown keys are an error, so a typo is not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    upstream: Option<String>,
    listen: Option<String>,
    public_url: Option<String>,
    db: Option<String>,
    idle_timeout: Option<String>,
    absolute_timeout: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
    public_paths: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    inject_guard: Option<bool>,
    allow_unguarded_html: Option<bool>,
    hsts: Option<String>,
    clear_site_data: Option<Vec<String>>,
    max_body_bytes: Option<u64>,
    prefix: Option<String>,
    max_sessions: Option<usize>,
    recent_auth: Option<String>,
    admin_token_sha256: Option<String>,
    audit_retention: Option<String>,
    audit_log: Option<bool>,
    cache_staleness: Option<String>,
    allow_readable_db: Option<bool>,
    metrics: Option<bool>,
    tokens: Option<bool>,
    access_token_ttl: Option<String>,
    refresh_grace: Option<String>,
    token_alg: Option<String>,
    token_issuer: Option<String>,
    token_audience: Option<String>,
    token_clients: Option<Vec<String>>,
    client_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    login: LoginFile,
}

/// `[login]` table: failure limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFile {
    account_free_failures: Option<u32>,
    account_max_delay: Option<String>,
    ip_free_failures: Option<u32>,
    ip_max_delay: Option<String>,
}

/// Failure limits for the login form: after `free_failures` failures in a
/// row, each further attempt must wait a delay that doubles from one
/// second up to `max_delay`. The account limit counts per (account, client
/// address), so an attacker slows only their own addresses, never the
/// owner's; the address limit counts all names from one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures per (account, address) before delays start.
    pub account_free_failures: u32,
    /// Longest delay per (account, address).
    pub account_max_delay: Duration,
    /// Failures per client address before delays start.
    pub ip_free_failures: u32,
    /// Longest delay per client address.
    pub ip_max_delay: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            account_max_delay: Duration::from_secs(30),
            ip_free_failures: 10,
            ip_max_delay: Duration::from_secs(15 * 60),
        }
    }
}

/// TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything the gateway needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Upstream base URL (scheme http, host, port; no path); `None` for
    /// forward-auth only.
    pub upstream: Option<http::Uri>,
    /// Address to listen on.
    pub listen: String,
    /// Scheme + host (+ port) browsers see, without a trailing slash.
    pub public_origin: String,
    /// Whether the public URL was given (else it follows the bound address).
    pub public_url_given: bool,
    /// Whether the public URL is HTTPS (the cookie is then `Secure`).
    pub secure: bool,
    /// Whether the public host is a loopback address.
    pub loopback: bool,
    /// Database URL or path.
    pub db: String,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Absolute timeout.
    pub absolute_timeout: Duration,
    /// TLS, if signoff serves HTTPS itself.
    pub tls: Option<TlsFiles>,
    /// Paths that need no session.
    pub public_paths: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether to inject the guard into upstream HTML.
    pub inject_guard: bool,
    /// Whether a private page the guard cannot read goes out without it
    /// (else: 502).
    pub allow_unguarded_html: bool,
    /// The `Strict-Transport-Security` value sent on every answer, if any.
    pub hsts: Option<http::HeaderValue>,
    /// The `Clear-Site-Data` header value sent at logout, if any.
    pub clear_site_data: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
    /// Prefix of signoff's own URLs, e.g. `/.signoff`.
    pub prefix: String,
    /// Login failure limits.
    pub login: LoginLimits,
    /// Most sessions per user, if limited.
    pub max_sessions: Option<usize>,
    /// How recent an authentication must be to end other sessions.
    pub recent_auth: Duration,
    /// SHA-256 of the admin API's bearer token; `None`: the API is off.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// Whether audit events are also logged as JSON lines.
    pub audit_log: bool,
    /// Longest a cached session check is served; zero means no cache.
    pub cache_staleness: Duration,
    /// Open a SQLite file other users can read, warning instead of refusing.
    pub allow_readable_db: bool,
    /// Whether PREFIX/metrics is served.
    pub metrics: bool,
    /// Token mode, if on.
    pub tokens: Option<TokenSettings>,
    /// Connection time limits and cap.
    pub connections: ConnectionLimits,
}

/// How long clients may take, and how many may be connected. Every phase
/// of a connection is bounded, so silent clients cannot pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to the end of the first request's headers (TLS
    /// handshake included); also the deadline for a body sent to
    /// signoff's own endpoints.
    pub client_timeout: Duration,
    /// Longest a connection stays open with no request in progress.
    pub keepalive_timeout: Duration,
    /// Most open client connections; `None`: derived from the
    /// file-descriptor limit at start.
    pub max_connections: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: None,
        }
    }
}

/// Merged but unchecked connection limits.
#[derive(Debug, Default)]
pub(crate) struct ConnectionLimitsRaw {
    pub client_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<usize>,
}

impl ConnectionLimitsRaw {
    fn check(self) -> Result<ConnectionLimits> {
        let mut limits = ConnectionLimits::default();
        if let Some(t) = &self.client_timeout {
            limits.client_timeout = parse_duration(t).context("--client-timeout")?;
        }
        if let Some(t) = &self.keepalive_timeout {
            limits.keepalive_timeout = parse_duration(t).context("--keepalive-timeout")?;
        }
        if limits.client_timeout > Duration::from_secs(300) {
            bail!("--client-timeout: at most 5m");
        }
        if limits.keepalive_timeout > Duration::from_secs(3600) {
            bail!("--keepalive-timeout: at most 1h");
        }
        if self.max_connections == Some(0) {
            bail!("--max-connections 0: expected at least 1 (leave it out for the default)");
        }
        limits.max_connections = self.max_connections;
        Ok(limits)
    }
}

/// Token mode settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss`; `None`: the public origin.
    pub issuer: Option<String>,
    /// `aud`; `None`: the public origin.
    pub audience: Option<String>,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token reuse grace window (zero: none).
    pub refresh_grace: Duration,
    /// Algorithm of keys created here.
    pub algorithm: signoff::token_mode::SigningAlgorithm,
    /// Confidential clients: id and SHA-256 of the secret.
    pub clients: Vec<(String, [u8; 32])>,
}

/// Parses `90s`, `30m`, `12h`, `1h 30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let d = humantime::parse_duration(text.trim())
        .with_context(|| format!("{text:?} is not a duration such as 90s, 30m or 12h"))?;
    if d.is_zero() {
        bail!("{text:?}: a duration must be longer than zero");
    }
    Ok(d)
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
}

fn nonempty<T>(from_cli: Vec<T>, from_file: Option<Vec<T>>) -> Option<Vec<T>> {
    if from_cli.is_empty() {
        from_file
    } else {
        Some(from_cli)
    }
}

impl ServeArgs {
    /// Merges flags and environment with the config file and defaults, and
    /// checks the result.
    pub fn settings(self) -> Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let upstream = self.upstream.or(file.upstream);
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let mut login = LoginLimits::default();
        if let Some(n) = file.login.account_free_failures {
            login.account_free_failures = n;
        }
        if let Some(d) = &file.login.account_max_delay {
            login.account_max_delay = parse_duration(d).context("login.account_max_delay")?;
        }
        if let Some(n) = file.login.ip_free_failures {
            login.ip_free_failures = n;
        }
        if let Some(d) = &file.login.ip_max_delay {
            login.ip_max_delay = parse_duration(d).context("login.ip_max_delay")?;
        }
        Raw {
            upstream,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            public_url: self.public_url.or(file.public_url),
            db: self.db.or(file.db).unwrap_or_else(|| DEFAULT_DB.to_owned()),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            absolute_timeout: self.absolute_timeout.or(file.absolute_timeout),
            tls,
            allow_insecure_http: self
                .allow_insecure_http
                .or(file.allow_insecure_http)
                .unwrap_or(false),
            public_paths: nonempty(self.public_paths, file.public_paths).unwrap_or_default(),
            trusted_proxies: nonempty(self.trusted_proxies, file.trusted_proxies)
                .unwrap_or_default(),
            inject_guard: self.inject_guard.or(file.inject_guard).unwrap_or(true),
            allow_unguarded_html: self
                .allow_unguarded_html
                .or(file.allow_unguarded_html)
                .unwrap_or(false),
            hsts: self.hsts.or(file.hsts),
            clear_site_data: nonempty(self.clear_site_data, file.clear_site_data),
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(10 * 1024 * 1024),
            prefix: self
                .prefix
                .or(file.prefix)
                .unwrap_or_else(|| "/.signoff".to_owned()),
            login,
            sessions: SessionOptions {
                max_sessions: self.max_sessions.or(file.max_sessions),
                recent_auth: self.recent_auth.or(file.recent_auth),
                admin_token_sha256: self.admin_token_sha256.or(file.admin_token_sha256),
                audit_retention: self.audit_retention.or(file.audit_retention),
                audit_log: self.audit_log.or(file.audit_log).unwrap_or(false),
                cache_staleness: self.cache_staleness.or(file.cache_staleness),
                allow_readable_db: self
                    .allow_readable_db
                    .or(file.allow_readable_db)
                    .unwrap_or(false),
                metrics: self.metrics.or(file.metrics).unwrap_or(false),
            },
            tokens: TokenOptionsRaw {
                on: self.tokens.or(file.tokens).unwrap_or(false),
                access_ttl: self.access_token_ttl.or(file.access_token_ttl),
                refresh_grace: self.refresh_grace.or(file.refresh_grace),
                alg: self.token_alg.or(file.token_alg),
                issuer: self.token_issuer.or(file.token_issuer),
                audience: self.token_audience.or(file.token_audience),
                clients: nonempty(self.token_clients, file.token_clients).unwrap_or_default(),
            },
            connections: ConnectionLimitsRaw {
                client_timeout: self.client_timeout.or(file.client_timeout),
                keepalive_timeout: self.keepalive_timeout.or(file.keepalive_timeout),
                max_connections: self.max_connections.or(file.max_connections),
            },
        }
        .check()
    }
}

/// Merged but unchecked settings.
pub(crate) struct Raw {
    pub upstream: Option<String>,
    pub listen: String,
    pub public_url: Option<String>,
    pub db: String,
    pub idle_timeout: Option<String>,
    pub absolute_timeout: Option<String>,
    pub tls: Option<TlsFiles>,
    pub allow_insecure_http: bool,
    pub public_paths: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub inject_guard: bool,
    pub allow_unguarded_html: bool,
    pub hsts: Option<String>,
    pub clear_site_data: Option<Vec<String>>,
    pub max_body_bytes: u64,
    pub prefix: String,
    pub login: LoginLimits,
    pub sessions: SessionOptions,
    pub tokens: TokenOptionsRaw,
    pub connections: ConnectionLimitsRaw,
}

/// Merged but unchecked token options.
#[derive(Debug, Default)]
pub(crate) struct TokenOptionsRaw {
    pub on: bool,
    pub access_ttl: Option<String>,
    pub refresh_grace: Option<String>,
    pub alg: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub clients: Vec<String>,
}

impl TokenOptionsRaw {
    fn check(self) -> Result<Option<TokenSettings>> {
        if !self.on {
            let set = self.access_ttl.is_some()
                || self.refresh_grace.is_some()
                || self.alg.is_some()
                || self.issuer.is_some()
                || self.audience.is_some()
                || !self.clients.is_empty();
            if set {
                bail!("token settings are given but token mode is off: add --tokens");
            }
            return Ok(None);
        }
        let access_ttl = match &self.access_ttl {
            Some(t) => parse_duration(t).context("--access-token-ttl")?,
            None => Duration::from_secs(300),
        };
        if access_ttl > Duration::from_secs(3600) {
            bail!("--access-token-ttl: at most 1h (an access token is checked against its session on every request, but clients that verify it themselves trust it this long)");
        }
        if access_ttl < Duration::from_secs(1) {
            bail!("--access-token-ttl: at least 1s");
        }
        let refresh_grace = match self.refresh_grace.as_deref().map(str::trim) {
            None | Some("0" | "0s" | "off") => Duration::ZERO,
            Some(t) => parse_duration(t).context("--refresh-grace")?,
        };
        if refresh_grace > Duration::from_secs(60) {
            bail!("--refresh-grace: at most 60s (a stolen refresh token can be used this long after the real client without ending the session)");
        }
        let algorithm = match &self.alg {
            Some(a) => a
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--token-alg: {e}"))?,
            None => signoff::token_mode::SigningAlgorithm::EdDSA,
        };
        let clients = self
            .clients
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                let (id, hex) = c
                    .rsplit_once(':')
                    .with_context(|| "--token-client: expected ID:SHA256HEX".to_owned())?;
                if !signoff::token_mode::valid_client_id(id) {
                    bail!("--token-client {id:?}: a client id is 1 to 64 characters of A-Z a-z 0-9 . _ : -");
                }
                let digest = parse_sha256_hex(hex).context("--token-client")?;
                Ok((id.to_owned(), digest))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<&str> = clients.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            bail!("--token-client: a client id is given twice");
        }
        for (name, value) in [
            ("--token-issuer", &self.issuer),
            ("--token-audience", &self.audience),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 256)
            {
                bail!("{name}: expected 1 to 256 characters");
            }
        }
        Ok(Some(TokenSettings {
            issuer: self.issuer,
            audience: self.audience,
            access_ttl,
            refresh_grace,
            algorithm,
            clients,
        }))
    }
}

/// Merged but unchecked session, admin and audit options.
#[derive(Debug, Default)]
pub(crate) struct SessionOptions {
    pub max_sessions: Option<usize>,
    pub recent_auth: Option<String>,
    pub admin_token_sha256: Option<String>,
    pub audit_retention: Option<String>,
    pub audit_log: bool,
    pub cache_staleness: Option<String>,
    pub allow_readable_db: bool,
    pub metrics: bool,
}

impl Raw {
    pub(crate) fn check(self) -> Result<Settings> {
        let upstream = self.upstream.as_deref().map(parse_upstream).transpose()?;
        let listen_addr: SocketAddr = self.listen.parse().with_context(|| {
            format!(
                "--listen {:?}: expected IP:PORT such as 127.0.0.1:8080",
                self.listen
            )
        })?;
        let public_url_given = self.public_url.is_some();
        let public_url = self.public_url.unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{listen_addr}")
        });
        let (public_origin, secure, host) = parse_public_url(&public_url)?;
        let loopback = is_loopback_host(&host);
        if !secure && !loopback && !self.allow_insecure_http {
            bail!(
                "--public-url {public_url}: plain HTTP on a non-loopback address sends the \
                 session cookie unencrypted; use https (--tls-cert/--tls-key or a TLS proxy \
                 in front), or pass --allow-insecure-http if you really mean it"
            );
        }
        let idle_timeout = match &self.idle_timeout {
            Some(t) => parse_duration(t).context("--idle-timeout")?,
            None => Duration::from_secs(30 * 60),
        };
        let absolute_timeout = match &self.absolute_timeout {
            Some(t) => parse_duration(t).context("--absolute-timeout")?,
            None => Duration::from_secs(12 * 3600),
        };
        let public_paths = self
            .public_paths
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .map(|p| {
                if !p.starts_with('/') || p.contains(['?', '#', '\\']) || p.contains("..") {
                    bail!(
                        "public path {p:?}: expected an absolute path such as /static/ or /health"
                    );
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| format!("trusted proxy {p:?}: expected an IP or a CIDR"))
            })
            .collect::<Result<Vec<_>>>()?;
        let clear_site_data = clear_site_data_header(self.clear_site_data)?;
        let hsts = hsts_header(self.hsts.as_deref(), secure, self.tls.is_some())?;
        let prefix = self.prefix.trim_end_matches('/').to_owned();
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        {
            bail!(
                "prefix {:?}: expected a path such as /.signoff",
                self.prefix
            );
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes must be more than 0");
        }
        let o = self.sessions;
        if o.max_sessions == Some(0) {
            bail!("--max-sessions 0: expected at least 1 (leave it out for no limit)");
        }
        let recent_auth = match &o.recent_auth {
            Some(t) => parse_duration(t).context("--recent-auth")?,
            None => Duration::from_secs(15 * 60),
        };
        let audit_retention = match &o.audit_retention {
            Some(t) => parse_duration(t).context("--audit-retention")?,
            None => Duration::from_secs(90 * 24 * 3600),
        };
        let cache_staleness = match o.cache_staleness.as_deref().map(str::trim) {
            Some("0" | "0s" | "off") => Duration::ZERO,
            Some(t) => parse_duration(t).context("--cache-staleness")?,
            None => Duration::from_secs(1),
        };
        if cache_staleness > Duration::from_secs(60) {
            bail!("--cache-staleness: at most 60s (a logout elsewhere may go unseen this long when no revocation bus carries it)");
        }
        let tokens = self.tokens.check()?;
        let connections = self.connections.check()?;
        let admin_token_sha256 = o
            .admin_token_sha256
            .as_deref()
            .map(parse_sha256_hex)
            .transpose()
            .context("--admin-token-sha256")?;
        Ok(Settings {
            upstream,
            listen: self.listen,
            public_origin,
            public_url_given,
            secure,
            loopback,
            db: self.db,
            idle_timeout,
            absolute_timeout,
            tls: self.tls,
            public_paths,
            trusted_proxies,
            inject_guard: self.inject_guard,
            allow_unguarded_html: self.allow_unguarded_html,
            hsts,
            clear_site_data,
            max_body_bytes: self.max_body_bytes,
            prefix,
            login: self.login,
            max_sessions: o.max_sessions,
            recent_auth,
            admin_token_sha256,
            audit_retention,
            audit_log: o.audit_log,
            cache_staleness,
            allow_readable_db: o.allow_readable_db,
            metrics: o.metrics,
            tokens,
            connections,
        })
    }
}

fn parse_upstream(text: &str) -> Result<http::Uri> {
    let uri: http::Uri = text
        .parse()
        .with_context(|| format!("--upstream {text:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => bail!("--upstream {text}: HTTPS upstreams are not supported yet; use http:// on a private network or loopback"),
        _ => bail!("--upstream {text}: expected http://HOST:PORT"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("--upstream {text}: no host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--upstream {text}: a path prefix is not supported; give scheme, host and port only");
    }
    Ok(uri)
}

/// Returns (origin, is_https, host).
fn parse_public_url(text: &str) -> Result<(String, bool, String)> {
    let uri: http::Uri = text
        .parse()
        .with_context(|| format!("--public-url {text:?} is not a URL"))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("--public-url {text}: expected http:// or https://"),
    };
    let Some(authority) = uri.authority() else {
        bail!("--public-url {text}: no host");
    };
    if authority.as_str().contains('@') {
        bail!("--public-url {text}: user info is not allowed");
    }
    if !matches!(uri.path(), "" | "/") {
        bail!("--public-url {text}: signoff must be at the root of its origin (no path)");
    }
    let scheme = if secure { "https" } else { "http" };
    let default_port = if secure { 443 } else { 80 };
    let host = authority.host().to_ascii_lowercase();
    let origin = match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    Ok((origin, secure, host))
}

/// Reads 64 hex digits (a SHA-256 digest).
fn parse_sha256_hex(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    let bad = || anyhow::anyhow!("expected the 64 hex digits printed by `signoff admin-token`");
    if text.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// Whether a host name is a loopback address (`localhost`, 127/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `Strict-Transport-Security` value: off unless signoff serves TLS
/// itself or one is given, and only for an HTTPS public URL.
fn hsts_header(value: Option<&str>, secure: bool, tls: bool) -> Result<Option<http::HeaderValue>> {
    let value = match value.map(str::trim) {
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => return Ok(None),
        Some(v) => v,
        None if tls => "max-age=31536000",
        None => return Ok(None),
    };
    let has_max_age = value.split(';').any(|d| {
        d.trim().split_once('=').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("max-age")
                && !v.is_empty()
                && v.trim().bytes().all(|b| b.is_ascii_digit())
        })
    });
    if !has_max_age {
        bail!("--hsts {value:?}: expected a value such as max-age=31536000 (with optional ; includeSubDomains), or off");
    }
    if !secure {
        bail!("--hsts: the public URL is plain HTTP, and browsers take HSTS only over HTTPS; leave it off or use an https public URL");
    }
    http::HeaderValue::from_str(value)
        .map(Some)
        .with_context(|| format!("--hsts {value:?}: not a valid header value"))
}

fn clear_site_data_header(values: Option<Vec<String>>) -> Result<Option<String>> {
    let values = match values {
        None => DEFAULT_CLEAR_SITE_DATA
            .iter()
            .map(|v| v.to_string())
            .collect(),
        Some(v) => v,
    };
    let mut out = Vec::new();
    for value in values {
        let value = value.trim().trim_matches('"');
        if value.is_empty() || value == "none" {
            continue;
        }
        if !CLEAR_SITE_DATA_VALUES.contains(&value) {
            bail!(
                "clear_site_data {value:?}: expected some of {}, or none",
                CLEAR_SITE_DATA_VALUES.join(", ")
            );
        }
        out.push(format!("\"{value}\""));
    }
    Ok((!out.is_empty()).then(|| out.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings> {
        let mut argv = vec!["signoff"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.serve.settings()
    }

    #[test]
    fn durations_in_the_usual_form() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43200));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "0s", "soon", "-5m", "30"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:5000\"\nidle_timeout = \"5m\"\nabsolute_timeout = \"1h\"\n[login]\nip_free_failures = 3\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path, "--idle-timeout", "90s"]).unwrap();
        assert_eq!(s.idle_timeout, Duration::from_secs(90), "flag wins");
        assert_eq!(
            s.absolute_timeout,
            Duration::from_secs(3600),
            "file fills in"
        );
        assert_eq!(s.listen, DEFAULT_LISTEN, "default last");
        assert_eq!(s.login.ip_free_failures, 3);
        assert_eq!(s.public_origin, "http://127.0.0.1:8080");
        assert!(!s.secure);
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "upstream = \"http://127.0.0.1:5000\"\nidle_timout = \"5m\"\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            parse(&["--config", file.to_str().unwrap()]).unwrap_err()
        );
        assert!(err.contains("idle_timout"), "{err}");
        let err = format!(
            "{:#}",
            parse(&["--config", "/nonexistent/x.toml"]).unwrap_err()
        );
        assert!(err.contains("cannot read the config file"), "{err}");
        // No upstream: forward-auth only.
        assert!(parse(&[]).unwrap().upstream.is_none());
        let err = format!(
            "{:#}",
            parse(&["--upstream", "http://x:1", "--idle-timeout", "forever"]).unwrap_err()
        );
        assert!(err.contains("not a duration"), "{err}");
        for bad in ["ftp://x", "http://x:1/app", "https://x:1", "not a url"] {
            assert!(parse(&["--upstream", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_off_loopback_needs_a_flag() {
        let base = ["--upstream", "http://127.0.0.1:5000", "--public-url"];
        let mut args = base.to_vec();
        args.push("http://app.example.com");
        let err = format!("{:#}", parse(&args).unwrap_err());
        assert!(err.contains("--allow-insecure-http"), "{err}");
        args.push("--allow-insecure-http");
        assert!(!parse(&args).unwrap().secure);
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.5",
            "http://[::1]:9",
        ] {
            let mut args = base.to_vec();
            args.push(ok);
            assert!(!parse(&args).unwrap().secure, "{ok}");
        }
        let mut args = base.to_vec();
        args.push("https://app.example.com/");
        let s = parse(&args).unwrap();
        assert!(s.secure);
        assert_eq!(s.public_origin, "https://app.example.com");
    }

    #[test]
    fn hsts_defaults_and_checks() {
        let tls = ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"];
        let hsts =
            |extra: &[&str]| parse(extra).map(|s| s.hsts.map(|v| v.to_str().unwrap().to_owned()));
        assert_eq!(hsts(&tls).unwrap().as_deref(), Some("max-age=31536000"));
        assert_eq!(hsts(&[]).unwrap(), None, "plain HTTP: off");
        let proxied = [
            "--public-url",
            "https://app.example.com",
            "--hsts",
            "max-age=60; includeSubDomains",
        ];
        assert_eq!(
            hsts(&proxied).unwrap().as_deref(),
            Some("max-age=60; includeSubDomains")
        );
        let mut off = tls.to_vec();
        off.extend(["--hsts", "off"]);
        assert_eq!(hsts(&off).unwrap(), None);
        for bad in ["yes", "max-age=", "max-age=1y", "includeSubDomains"] {
            let mut args = tls.to_vec();
            args.extend(["--hsts", bad]);
            let err = format!("{:#}", parse(&args).unwrap_err());
            assert!(err.contains("max-age=31536000"), "{bad}: {err}");
        }
        let err = format!("{:#}", parse(&["--hsts", "max-age=60"]).unwrap_err());
        assert!(err.contains("plain HTTP"), "{err}");
        assert!(
            parse(&["--allow-unguarded-html"])
                .unwrap()
                .allow_unguarded_html
        );
        assert!(!parse(&[]).unwrap().allow_unguarded_html);
    }

    #[test]
    fn lists_from_flags_and_clear_site_data() {
        let s = parse(&[
            "--upstream",
            "http://127.0.0.1:5000",
            "--public-path",
            "/static/,/health",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "127.0.0.1",
            "--clear-site-data",
            "cache,cookies",
        ])
        .unwrap();
        assert_eq!(s.public_paths, ["/static/", "/health"]);
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.clear_site_data.as_deref(), Some("\"cache\", \"cookies\""));
        let s = parse(&["--upstream", "http://127.0.0.1:5000"]).unwrap();
        assert_eq!(
            s.clear_site_data.as_deref(),
            Some("\"cache\", \"cookies\", \"storage\", \"prefetchCache\", \"prerenderCache\"")
        );
        assert!(parse(&[
            "--upstream",
            "http://x:1",
            "--clear-site-data",
            "everything"
        ])
        .is_err());
        assert!(parse(&["--upstream", "http://x:1", "--trusted-proxy", "nope"]).is_err());
        assert!(parse(&["--upstream", "http://x:1", "--public-path", "static"]).is_err());
    }

    #[test]
    fn connection_limits_from_flags_and_file() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.connections, ConnectionLimits::default());
        assert_eq!(s.connections.client_timeout, Duration::from_secs(10));
        assert_eq!(s.connections.keepalive_timeout, Duration::from_secs(60));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "client_timeout = \"3s\"\nkeepalive_timeout = \"5m\"\nmax_connections = 500\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path, "--max-connections", "40"]).unwrap();
        assert_eq!(s.connections.client_timeout, Duration::from_secs(3));
        assert_eq!(s.connections.keepalive_timeout, Duration::from_secs(300));
        assert_eq!(s.connections.max_connections, Some(40), "flag wins");
        for bad in [
            &["--max-connections", "0"][..],
            &["--client-timeout", "0s"],
            &["--client-timeout", "6m"],
            &["--keepalive-timeout", "2h"],
            &["--keepalive-timeout", "never"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_admin_and_audit_options() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.max_sessions, None);
        assert_eq!(s.recent_auth, Duration::from_secs(900));
        assert_eq!(s.admin_token_sha256, None);
        assert_eq!(s.audit_retention, Duration::from_secs(90 * 86400));
        assert!(!s.audit_log);
        let hex = "ab".repeat(32);
        let s = parse(&[
            "--max-sessions",
            "3",
            "--recent-auth",
            "5m",
            "--admin-token-sha256",
            &hex,
            "--audit-retention",
            "7d",
            "--audit-log",
        ])
        .unwrap();
        assert_eq!(s.max_sessions, Some(3));
        assert_eq!(s.recent_auth, Duration::from_secs(300));
        assert_eq!(s.admin_token_sha256, Some([0xab; 32]));
        assert_eq!(s.audit_retention, Duration::from_secs(7 * 86400));
        assert!(s.audit_log);
        for bad in [
            &["--max-sessions", "0"][..],
            &["--recent-auth", "soon"],
            &["--admin-token-sha256", "abc"],
            &["--admin-token-sha256", &"zz".repeat(32)],
            &["--admin-token-sha256", &"é".repeat(32)],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
