//! Gateway settings: command-line flags, `SIGNOFF_*` environment variables
//! and a TOML file, merged with precedence flag > env > file > default.
//!
//! Each setting is one field of one section struct (a module here) that
//! both clap and serde read: its flag, variable, help and file key are
//! defined there once. clap reads flags and their environment variables
//! (so those two are already ordered); every field is an `Option` without a
//! clap default, so "not given" is visible and the file or the default
//! fills it in. [`Options::or`] lays the command line over the file and
//! [`Options::check`] applies the defaults and checks the result.
//!
//! A new setting: a field in its section (with `display_order`, its place
//! in `serve --help`), its check in [`Options::check`], a [`Settings`]
//! field if the gateway reads it, and a row in `docs/configuration.md`.

/// Defines a section: a struct whose `Option` fields are read by clap
/// (flags and environment) and serde (the TOML file) alike, and its
/// [`Layer`] implementation, which fills each field not given from below.
macro_rules! section {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $crate::config::Layer for $name {
            fn or(self, below: Self) -> Self {
                Self {
                    $($field: $crate::config::Layer::or(self.$field, below.$field),)*
                }
            }
        }
    };
}

mod access;
mod apps;
mod audit;
mod branding;
mod connections;
mod headers;
mod listen;
mod login;
mod oidc;
mod proxy;
mod sessions;
mod store;
mod tokens;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ipnet::IpNet;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

pub use access::{AccessFile, AccessRules};
pub use apps::{App, AppFile};
pub use audit::AuditOptions;
pub use branding::{Branding, BrandingOptions, LogoKind};
pub use connections::{ConnectionLimits, ConnectionOptions};
pub use headers::HeaderOptions;
pub use listen::{is_loopback_host, ListenOptions};
pub use login::{LoginFile, LoginLimits};
#[cfg(test)]
pub use oidc::ClientSecret;
pub use oidc::{OidcOptions, OidcSettings, Provider, UserClaim};
pub use proxy::ProxyOptions;
pub use sessions::SessionOptions;
pub use store::StoreOptions;
pub use tokens::{TokenModeOptions, TokenSettings};
pub use upstream::{UpstreamCa, UpstreamOptions};

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `max_body_bytes`: 64 MiB, room for the base64 JSON uploads of
/// apps such as JupyterLab (docs/configuration.md).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default database.
pub const DEFAULT_DB: &str = "sqlite://signoff.db";

/// One source of settings laid over another: a value given above wins.
pub trait Layer {
    /// `self` where given, else `below`.
    fn or(self, below: Self) -> Self;
}

/// Whether a value counts as given; an empty list from the command line
/// does not.
pub trait Given {
    /// Whether this value was given.
    fn given(&self) -> bool {
        true
    }
}

impl Given for String {}
impl Given for PathBuf {}
impl Given for bool {}
impl Given for u64 {}
impl Given for usize {}
impl<T> Given for Vec<T> {
    fn given(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: Given> Layer for Option<T> {
    fn or(self, below: Self) -> Self {
        self.filter(Given::given).or(below)
    }
}

section! {
    /// Every setting with a flag, a variable and a top-level file key, by
    /// section.
    pub struct Options {
        #[command(flatten)]
        #[serde(flatten)]
        pub listen: ListenOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub proxy: ProxyOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub headers: HeaderOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub sessions: SessionOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub audit: AuditOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub store: StoreOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub tokens: TokenModeOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub connections: ConnectionOptions,
        #[command(flatten)]
        #[serde(flatten)]
        pub upstream: UpstreamOptions,
        /// The file's `[branding]` table, read apart from the top-level keys.
        #[command(flatten)]
        #[serde(skip)]
        pub branding: BrandingOptions,
        /// The file's `[oidc]` table, read apart from the top-level keys.
        #[command(flatten)]
        #[serde(skip)]
        pub oidc: OidcOptions,
    }
}

/// `signoff serve` flags. Each also reads `SIGNOFF_<NAME>` and the TOML
/// key of the same name (with `_` for `-`).
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// The settings given on the command line or in the environment.
    #[command(flatten)]
    pub options: Options,
    /// A TOML file with any of these settings
    #[arg(long, env = "SIGNOFF_CONFIG", value_name = "PATH", display_order = 6)]
    pub config: Option<PathBuf>,
}

/// The store a command opens, and where its URL came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChoice {
    /// Database URL or path.
    pub db: String,
    /// Open a SQLite file other users can read, warning instead of refusing.
    pub allow_readable_db: bool,
    /// Where `db` came from, for messages: the flag or variable, the file,
    /// or the default.
    pub source: String,
}

/// The store that `store` (the command line and the environment) and the
/// file `config` (`--config`/`SIGNOFF_CONFIG`) name, defaults filled in:
/// the commands besides `serve` resolve it here, by the same precedence
/// and the same file reading as `serve`, so they open its database.
pub fn store_choice(store: StoreOptions, config: Option<&Path>) -> Result<StoreChoice> {
    let file = read_optional_file(config)?.options.store;
    let source = match (&store.db, &file.db, config) {
        (Some(_), _, _) => "--db or SIGNOFF_DB".to_owned(),
        (None, Some(_), Some(path)) => format!("the `db` key of {}", path.display()),
        _ => format!("the default, {DEFAULT_DB}"),
    };
    let (db, allow_readable_db) = store.or(file).with_defaults();
    Ok(StoreChoice {
        db,
        allow_readable_db,
        source,
    })
}

/// The access rules of the file `config` names (its `[access]` table and
/// its `public_paths`, unless `public_paths` is given), as `serve` would
/// check them, without the rest of the settings.
pub fn access_rules(
    config: Option<&Path>,
    public_paths: Option<Vec<String>>,
) -> Result<AccessRules> {
    let file = read_optional_file(config)?;
    let paths = proxy::public_paths(
        public_paths
            .filter(|p| !p.is_empty())
            .or(file.options.proxy.public_paths)
            .unwrap_or_default(),
    )?;
    access::check(file.access.as_ref(), &paths)
}

/// The `[[app]]`s of the file `config` names, checked as `serve` would
/// check them (against its `public_url`, `prefix` and
/// `allow_insecure_http`), without the rest of the settings.
pub fn apps(config: Option<&Path>) -> Result<Vec<App>> {
    let file = read_optional_file(config)?;
    if file.apps.is_empty() {
        return Ok(Vec::new());
    }
    let listen = &file.options.listen;
    let from_env = std::env::var("SIGNOFF_PUBLIC_URL").ok();
    let Some(public_url) = listen.public_url.as_ref().or(from_env.as_ref()) else {
        return apps::check(&file.apps, "", "", false, false, "");
    };
    let (public_origin, _, host) = listen::parse_public_url(public_url)?;
    let prefix = proxy::prefix(file.options.proxy.prefix.as_deref().unwrap_or("/.signoff"))?;
    apps::check(
        &file.apps,
        &public_origin,
        &host,
        true,
        listen.allow_insecure_http.unwrap_or(false),
        &prefix,
    )
}

impl StoreOptions {
    /// The database and whether a SQLite file others can read is opened,
    /// defaults filled in (for `serve` and every other command alike).
    fn with_defaults(self) -> (String, bool) {
        (
            self.db.unwrap_or_else(|| DEFAULT_DB.to_owned()),
            self.allow_readable_db.unwrap_or(false),
        )
    }
}

/// The TOML file: the top-level keys of [`Options`], and the `[login]`,
/// `[branding]` and `[access]` tables. Unknown keys are an error, so a
/// typo is not ignored.
#[derive(Debug, Default)]
struct FileConfig {
    options: Options,
    login: LoginFile,
    access: Option<AccessFile>,
    apps: Vec<AppFile>,
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
    /// Upstream base URL (scheme http or https, host, port; no path);
    /// `None` for forward-auth only.
    pub upstream: Option<http::Uri>,
    /// The CA certificates an HTTPS upstream is checked against; `None`:
    /// the system's roots.
    pub upstream_ca: Option<UpstreamCa>,
    /// Longest a TCP connection to the upstream may take to open.
    pub upstream_connect_timeout: Duration,
    /// Longest the upstream may take to send its response headers.
    pub upstream_timeout: Duration,
    /// An upgraded connection (WebSocket) idle both ways this long is closed.
    pub tunnel_idle_timeout: Duration,
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
    /// Paths that need no session (`--public-path`; also the first rules
    /// of `access`).
    pub public_paths: Vec<String>,
    /// The access rules (`[access]` and `--public-path`), checked.
    pub access: AccessRules,
    /// The `[[app]]`s, each with its host, upstream and rules; the
    /// longest path prefix of a host first.
    pub apps: Vec<App>,
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
    /// "Remember this device", if offered at sign-in.
    pub remember_device: Option<signoff::RememberDevice>,
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
    /// The name, logo, colour and stylesheets of signoff's own pages.
    pub branding: Branding,
    /// Sign-in with OpenID Connect providers, and whether passwords work.
    pub oidc: OidcSettings,
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

/// The clap ids of the flags whose file keys are in the `[branding]`
/// table, not at the top level.
fn branding_ids() -> Vec<String> {
    let branding = BrandingOptions::augment_args(clap::Command::new("branding"));
    let oidc = OidcOptions::augment_args(clap::Command::new("oidc"));
    branding
        .get_arguments()
        .chain(oidc.get_arguments())
        .map(|a| a.get_id().to_string())
        .collect()
}

/// The top-level file keys in `serve --help` order (each flag's clap id is
/// its file key), then the tables `login` and `branding`.
fn file_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let branding = branding_ids();
        let mut args: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_id() != "config" && !branding.contains(&a.get_id().to_string()))
            .collect();
        args.sort_by_key(|a| a.get_display_order());
        let mut keys: Vec<String> = args.iter().map(|a| a.get_id().to_string()).collect();
        keys.push("login".to_owned());
        keys.push("branding".to_owned());
        keys.push("access".to_owned());
        keys.push("app".to_owned());
        keys.push("oidc".to_owned());
        keys
    })
}

/// Refuses a top-level key that is no setting, with the message (and the
/// position) serde gives for a struct that denies unknown fields.
fn check_keys(text: &str) -> Result<(), toml::de::Error> {
    struct Table;
    struct Key;
    impl<'de> Visitor<'de> for Table {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of settings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(Key)?.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Key {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, key: D) -> Result<(), D::Error> {
            let key = String::deserialize(key)?;
            let known = file_keys();
            if known.contains(&key) {
                return Ok(());
            }
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            Err(D::Error::custom(format_args!(
                "unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )))
        }
    }
    toml::Deserializer::new(text).deserialize_map(Table)
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("bad config file {}", path.display()))
}

/// Each section reads the whole file (skipping the keys of the others), so
/// a bad value is reported at its position.
fn parse_file(text: &str) -> Result<FileConfig, toml::de::Error> {
    #[derive(Deserialize)]
    struct LoginTable {
        #[serde(default)]
        login: LoginFile,
    }
    #[derive(Deserialize)]
    struct BrandingTable {
        #[serde(default)]
        branding: BrandingOptions,
    }
    #[derive(Deserialize)]
    struct OidcTable {
        #[serde(default)]
        oidc: OidcOptions,
    }
    #[derive(Deserialize)]
    struct AccessTable {
        access: Option<AccessFile>,
    }
    #[derive(Deserialize)]
    struct AppTables {
        #[serde(default)]
        app: Vec<AppFile>,
    }
    check_keys(text)?;
    let options = Options {
        listen: toml::from_str(text)?,
        proxy: toml::from_str(text)?,
        headers: toml::from_str(text)?,
        sessions: toml::from_str(text)?,
        audit: toml::from_str(text)?,
        store: toml::from_str(text)?,
        tokens: toml::from_str(text)?,
        connections: toml::from_str(text)?,
        upstream: toml::from_str(text)?,
        branding: toml::from_str::<BrandingTable>(text)?.branding,
        oidc: toml::from_str::<OidcTable>(text)?.oidc,
    };
    let login = toml::from_str::<LoginTable>(text)?.login;
    let access = toml::from_str::<AccessTable>(text)?.access;
    let apps = toml::from_str::<AppTables>(text)?.app;
    Ok(FileConfig {
        options,
        login,
        access,
        apps,
    })
}

/// The file `config` names, or an empty one.
fn read_optional_file(config: Option<&Path>) -> Result<FileConfig> {
    match config {
        Some(path) => read_file(path),
        None => Ok(FileConfig::default()),
    }
}

impl ServeArgs {
    /// Merges flags and environment with the config file and defaults, and
    /// checks the result.
    pub fn settings(self) -> Result<Settings> {
        let file = read_optional_file(self.config.as_deref())?;
        self.options
            .or(file.options)
            .check(&file.login, file.access.as_ref(), &file.apps)
    }
}

/// `--remember-device` and `--remember-device-idle`, checked against the
/// ordinary timeouts with the engine's own rules.
fn remember_device(
    lifetime: Option<&str>,
    idle: Option<&str>,
    idle_timeout: Duration,
    absolute_timeout: Duration,
) -> Result<Option<signoff::RememberDevice>> {
    let Some(lifetime) = lifetime else {
        if idle.is_some() {
            bail!("--remember-device-idle needs --remember-device (how long a remembered device stays signed in)");
        }
        return Ok(None);
    };
    let lifetime = parse_duration(lifetime).context("--remember-device")?;
    let idle = match idle {
        Some(t) => parse_duration(t).context("--remember-device-idle")?,
        None => lifetime
            .min(Duration::from_secs(7 * 24 * 3600))
            .max(idle_timeout),
    };
    let remember = signoff::RememberDevice::new(lifetime, idle);
    signoff::Policy::builder()
        .idle_timeout(idle_timeout)
        .absolute_lifetime(absolute_timeout)
        .remember_device(Some(remember))
        .build()
        .map_err(|e| match e {
            signoff::PolicyError::RememberNotLonger { .. } => anyhow::anyhow!(
                "--remember-device {}: must be longer than --absolute-timeout ({}), or \
                 remembering would change nothing",
                humantime::format_duration(lifetime),
                humantime::format_duration(absolute_timeout)
            ),
            signoff::PolicyError::RememberTooLong(_) => anyhow::anyhow!(
                "--remember-device {}: at most 400d, the longest browsers keep a cookie",
                humantime::format_duration(lifetime)
            ),
            signoff::PolicyError::RememberIdle { .. } => anyhow::anyhow!(
                "--remember-device-idle {}: must be at least --idle-timeout ({}) and at most \
                 --remember-device ({})",
                humantime::format_duration(idle),
                humantime::format_duration(idle_timeout),
                humantime::format_duration(lifetime)
            ),
            other => anyhow::Error::new(other).context("--remember-device"),
        })?;
    Ok(Some(remember))
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

impl Options {
    /// Applies the defaults and checks everything: the one place a given
    /// value becomes a [`Settings`] field.
    pub fn check(
        self,
        login: &LoginFile,
        access: Option<&AccessFile>,
        apps: &[AppFile],
    ) -> Result<Settings> {
        let Self {
            listen: l,
            proxy: p,
            headers: h,
            sessions: s,
            audit: a,
            store: st,
            tokens: t,
            connections: c,
            upstream: u,
            branding: b,
            oidc: o,
        } = self;
        let tls = l.tls()?;
        let login = login.check()?;
        let upstream = p
            .upstream
            .as_deref()
            .map(proxy::parse_upstream)
            .transpose()?;
        let https_upstream = upstream
            .as_ref()
            .is_some_and(|u| u.scheme_str() == Some("https"));
        let upstream_limits = u.check(https_upstream)?;
        let listen = l.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen_addr: SocketAddr = listen.parse().with_context(|| {
            format!("--listen {listen:?}: expected IP:PORT such as 127.0.0.1:8080")
        })?;
        let public_url_given = l.public_url.is_some();
        let public_url = l.public_url.unwrap_or_else(|| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{listen_addr}")
        });
        let (public_origin, secure, host) = listen::parse_public_url(&public_url)?;
        let loopback = is_loopback_host(&host);
        if !secure && !loopback && !l.allow_insecure_http.unwrap_or(false) {
            bail!(
                "--public-url {public_url}: plain HTTP on a non-loopback address sends the \
                 session cookie unencrypted; use https (--tls-cert/--tls-key or a TLS proxy \
                 in front), or pass --allow-insecure-http if you really mean it"
            );
        }
        let idle_timeout = match &s.idle_timeout {
            Some(t) => parse_duration(t).context("--idle-timeout")?,
            None => Duration::from_secs(30 * 60),
        };
        let absolute_timeout = match &s.absolute_timeout {
            Some(t) => parse_duration(t).context("--absolute-timeout")?,
            None => Duration::from_secs(12 * 3600),
        };
        let public_paths = proxy::public_paths(p.public_paths.unwrap_or_default())?;
        let access = access::check(access, &public_paths)?;
        let trusted_proxies = proxy::trusted_proxies(&p.trusted_proxies.unwrap_or_default())?;
        let clear_site_data = headers::clear_site_data_header(h.clear_site_data)?;
        let hsts = headers::hsts_header(h.hsts.as_deref(), secure, tls.is_some())?;
        let prefix = proxy::prefix(p.prefix.as_deref().unwrap_or("/.signoff"))?;
        let apps = apps::check(
            apps,
            &public_origin,
            &host,
            public_url_given,
            l.allow_insecure_http.unwrap_or(false),
            &prefix,
        )?;
        let max_body_bytes = p.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            bail!("max_body_bytes must be more than 0");
        }
        if s.max_sessions == Some(0) {
            bail!("--max-sessions 0: expected at least 1 (leave it out for no limit)");
        }
        let recent_auth = match &s.recent_auth {
            Some(t) => parse_duration(t).context("--recent-auth")?,
            None => Duration::from_secs(15 * 60),
        };
        let remember_device = remember_device(
            s.remember_device.as_deref(),
            s.remember_device_idle.as_deref(),
            idle_timeout,
            absolute_timeout,
        )?;
        let audit_retention = match &a.audit_retention {
            Some(t) => parse_duration(t).context("--audit-retention")?,
            None => Duration::from_secs(90 * 24 * 3600),
        };
        let cache_staleness = match st.cache_staleness.as_deref().map(str::trim) {
            Some("0" | "0s" | "off") => Duration::ZERO,
            Some(t) => parse_duration(t).context("--cache-staleness")?,
            None => Duration::from_secs(1),
        };
        if cache_staleness > Duration::from_secs(60) {
            bail!("--cache-staleness: at most 60s (a logout elsewhere may go unseen this long when no revocation bus carries it)");
        }
        let tokens = t.check()?;
        let connections = c.check()?;
        let branding = b.check()?;
        let oidc = o
            .check(l.allow_insecure_http.unwrap_or(false))
            .context("OpenID Connect")?;
        let (db, allow_readable_db) = st.with_defaults();
        let admin_token_sha256 = a
            .admin_token_sha256
            .as_deref()
            .map(parse_sha256_hex)
            .transpose()
            .context("--admin-token-sha256")?;
        Ok(Settings {
            upstream,
            upstream_ca: upstream_limits.upstream_ca,
            upstream_connect_timeout: upstream_limits.upstream_connect_timeout,
            upstream_timeout: upstream_limits.upstream_timeout,
            tunnel_idle_timeout: upstream_limits.tunnel_idle_timeout,
            listen,
            public_origin,
            public_url_given,
            secure,
            loopback,
            db,
            idle_timeout,
            absolute_timeout,
            tls,
            public_paths,
            access,
            apps,
            trusted_proxies,
            inject_guard: p.inject_guard.unwrap_or(true),
            allow_unguarded_html: p.allow_unguarded_html.unwrap_or(false),
            hsts,
            clear_site_data,
            max_body_bytes,
            prefix,
            login,
            max_sessions: s.max_sessions,
            recent_auth,
            remember_device,
            admin_token_sha256,
            audit_retention,
            audit_log: a.audit_log.unwrap_or(false),
            cache_staleness,
            allow_readable_db,
            metrics: a.metrics.unwrap_or(false),
            tokens,
            connections,
            branding,
            oidc,
        })
    }
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
    fn branding_comes_from_its_table_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "idle_timeout = \"5m\"\n[branding]\nname = \"Acme Wiki\"\naccent = \"#abc\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path]).unwrap();
        assert_eq!(s.branding.name, "Acme Wiki");
        assert_eq!(s.branding.accent.unwrap().as_str(), "#aabbcc");
        let s = parse(&["--config", path, "--brand-name", "Flag"]).unwrap();
        assert_eq!(s.branding.name, "Flag", "flag wins");
        assert_eq!(parse(&[]).unwrap().branding.name, "signoff");
        // A typo in the table, a table key at the top, a bad colour: refused.
        for (text, says) in [
            ("[branding]\nnmae = \"x\"\n", "nmae"),
            ("brand_name = \"x\"\n", "brand_name"),
            ("[branding]\naccent = \"red\"\n", "--brand-accent"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = format!("{:#}", parse(&["--config", path]).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = format!(
            "{:#}",
            parse(&["--template-dir", "/nonexistent/brand"]).unwrap_err()
        );
        assert!(
            err.contains("--template-dir") && err.contains("/nonexistent/brand"),
            "{err}"
        );
    }

    #[test]
    fn other_commands_find_the_store_as_serve_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "db = \"sqlite:///srv/from-file.db\"\nallow_readable_db = true\nidle_timeout = \"5m\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let serve = parse(&["--config", path]).unwrap();
        let given = |db: Option<&str>| StoreOptions {
            db: db.map(str::to_owned),
            ..StoreOptions::default()
        };
        let from_file = store_choice(given(None), Some(&file)).unwrap();
        assert_eq!(
            (from_file.db.as_str(), from_file.allow_readable_db),
            (serve.db.as_str(), serve.allow_readable_db)
        );
        assert_eq!(from_file.db, "sqlite:///srv/from-file.db");
        assert!(from_file.source.contains(path), "{}", from_file.source);
        let flag = store_choice(given(Some("redis://cache")), Some(&file)).unwrap();
        assert_eq!(flag.db, "redis://cache", "flag wins");
        assert!(flag.allow_readable_db, "the file fills in the rest");
        assert_eq!(flag.source, "--db or SIGNOFF_DB");
        let default = store_choice(given(None), None).unwrap();
        assert_eq!(default.db, DEFAULT_DB);
        assert_eq!(default.db, parse(&[]).unwrap().db);
        assert!(default.source.contains("default"));
        let err = format!(
            "{:#}",
            store_choice(given(None), Some(Path::new("/nonexistent/x.toml"))).unwrap_err()
        );
        assert!(err.contains("cannot read the config file"), "{err}");
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
        for bad in ["ftp://x", "http://x:1/app", "http://u:p@x:1", "not a url"] {
            assert!(parse(&["--upstream", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_https_ca_and_time_limits() {
        let s = parse(&["--upstream", "https://app.internal:8443"]).unwrap();
        assert_eq!(s.upstream.unwrap().scheme_str(), Some("https"));
        assert!(s.upstream_ca.is_none(), "system roots");
        assert_eq!(s.upstream_connect_timeout, Duration::from_secs(5));
        assert_eq!(s.upstream_timeout, Duration::from_secs(60));
        assert_eq!(s.tunnel_idle_timeout, Duration::from_secs(15 * 60));
        assert_eq!(s.max_body_bytes, 67_108_864);

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["app.internal".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            format!(
                "upstream = \"https://app.internal\"\nupstream_ca = {:?}\nupstream_timeout = \"2m\"\n\
                 tunnel_idle_timeout = \"1h\"\n",
                ca.display().to_string()
            ),
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&["--config", path, "--upstream-connect-timeout", "1s"]).unwrap();
        assert_eq!(s.upstream_ca.unwrap().certs.len(), 1);
        assert_eq!(s.upstream_connect_timeout, Duration::from_secs(1));
        assert_eq!(s.upstream_timeout, Duration::from_secs(120));
        assert_eq!(s.tunnel_idle_timeout, Duration::from_secs(3600));

        let https = ["--upstream", "https://app.internal"];
        let err = |extra: &[&str]| {
            let mut args = https.to_vec();
            args.extend_from_slice(extra);
            format!("{:#}", parse(&args).unwrap_err())
        };
        let missing = dir.path().join("missing.pem");
        let e = err(&["--upstream-ca", missing.to_str().unwrap()]);
        assert!(
            e.contains("--upstream-ca") && e.contains("cannot read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = err(&["--upstream-ca", empty.to_str().unwrap()]);
        assert!(e.contains("no certificate"), "{e}");
        let e = err(&["--upstream-ca", dir.path().to_str().unwrap()]);
        assert!(e.contains("cannot read"), "a directory: {e}");
        let e = format!(
            "{:#}",
            parse(&[
                "--upstream",
                "http://x:1",
                "--upstream-ca",
                ca.to_str().unwrap()
            ])
            .unwrap_err()
        );
        assert!(e.contains("only an https:// upstream"), "{e}");
        for (flag, value) in [
            ("--upstream-timeout", "0s"),
            ("--upstream-connect-timeout", "soon"),
            ("--tunnel-idle-timeout", "30"),
        ] {
            let e = err(&[flag, value]);
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn an_upstream_path_is_refused_with_what_works() {
        let e = format!(
            "{:#}",
            parse(&["--upstream", "http://127.0.0.1:8888/lab/"]).unwrap_err()
        );
        assert!(e.contains("--upstream http://127.0.0.1:8888)"), "{e}");
        assert!(e.contains("--ServerApp.base_url=/lab/"), "{e}");
        assert!(e.contains("Apps under a sub-path"), "{e}");
    }

    #[test]
    fn url_errors_never_show_a_password() {
        for upstream in [
            "http://admin:s3cret-pw@127.0.0.1:5000",
            "ftp://admin:s3cret-pw@127.0.0.1:5000",
            "http://admin:s3cret-pw@127.0.0.1:5000/path",
            "http://admin:s3cret-pw@",
            "http://admin:s3cret pw@127.0.0.1:5000",
        ] {
            let e = format!("{:#}", parse(&["--upstream", upstream]).unwrap_err());
            assert!(!e.contains("s3cret"), "{upstream}: {e}");
            assert!(e.contains("--upstream"), "{upstream}: {e}");
            let args = [
                "--upstream",
                "http://127.0.0.1:5000",
                "--public-url",
                upstream,
            ];
            let e = format!("{:#}", parse(&args).unwrap_err());
            assert!(!e.contains("s3cret"), "--public-url {upstream}: {e}");
            assert!(e.contains("--public-url"), "{upstream}: {e}");
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

    #[test]
    fn remember_device_is_off_unless_given_and_checked() {
        let day = Duration::from_secs(86_400);
        assert_eq!(parse(&[]).unwrap().remember_device, None);
        let r = parse(&["--remember-device", "30d"])
            .unwrap()
            .remember_device
            .unwrap();
        assert_eq!((r.lifetime(), r.idle_timeout()), (30 * day, 7 * day));
        // Shorter than 7 days: the idle timeout defaults to the lifetime.
        let r = parse(&["--remember-device", "2d"])
            .unwrap()
            .remember_device
            .unwrap();
        assert_eq!((r.lifetime(), r.idle_timeout()), (2 * day, 2 * day));
        let r = parse(&["--remember-device", "90d", "--remember-device-idle", "1d"])
            .unwrap()
            .remember_device
            .unwrap();
        assert_eq!((r.lifetime(), r.idle_timeout()), (90 * day, day));
        // From the file, under the flag.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signoff.toml");
        std::fs::write(
            &file,
            "remember_device = \"14d\"\nremember_device_idle = \"3d\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let r = parse(&["--config", path]).unwrap().remember_device.unwrap();
        assert_eq!((r.lifetime(), r.idle_timeout()), (14 * day, 3 * day));
        let r = parse(&["--config", path, "--remember-device", "20d"])
            .unwrap()
            .remember_device
            .unwrap();
        assert_eq!((r.lifetime(), r.idle_timeout()), (20 * day, 3 * day));
        for (bad, says) in [
            (
                &["--remember-device", "12h"][..],
                "longer than --absolute-timeout",
            ),
            (&["--remember-device", "401d"], "at most 400d"),
            (&["--remember-device", "forever"], "--remember-device"),
            (&["--remember-device", "0s"], "--remember-device"),
            (&["--remember-device-idle", "1d"], "needs --remember-device"),
            (
                &["--remember-device", "30d", "--remember-device-idle", "31d"],
                "at most --remember-device",
            ),
            (
                &["--remember-device", "30d", "--remember-device-idle", "1m"],
                "at least --idle-timeout",
            ),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}

/// `docs/configuration.md` lists exactly the settings the code has.
#[cfg(test)]
mod doc_tests {
    use std::collections::BTreeSet;

    use clap::Args;
    use serde::de::{Deserializer, Error as _, Visitor};
    use serde::Deserialize;

    use super::*;

    /// The field names serde reads for a struct (its keys in the file).
    fn serde_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        struct Fields<'a>(&'a mut Vec<&'static str>);
        impl<'de> Deserializer<'de> for Fields<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(Self::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend(fields);
                Err(Self::Error::custom("fields read"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut out = Vec::new();
        let _ = T::deserialize(Fields(&mut out));
        out
    }

    fn command() -> clap::Command {
        ServeArgs::augment_args(clap::Command::new("serve"))
    }

    /// Flags, variables and file keys (`login.KEY` for the `[login]`
    /// table) the code reads.
    fn from_code() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for arg in command().get_arguments() {
            out.insert(format!("--{}", arg.get_long().unwrap()));
            out.insert(arg.get_env().unwrap().to_str().unwrap().to_owned());
        }
        let top = [
            serde_fields::<ListenOptions>(),
            serde_fields::<ProxyOptions>(),
            serde_fields::<HeaderOptions>(),
            serde_fields::<SessionOptions>(),
            serde_fields::<AuditOptions>(),
            serde_fields::<StoreOptions>(),
            serde_fields::<TokenModeOptions>(),
            serde_fields::<ConnectionOptions>(),
            serde_fields::<UpstreamOptions>(),
        ];
        out.extend(top.iter().flatten().map(|k| k.to_string()));
        out.extend(
            serde_fields::<LoginFile>()
                .iter()
                .map(|k| format!("login.{k}")),
        );
        out.extend(
            serde_fields::<BrandingOptions>()
                .iter()
                .map(|k| format!("branding.{k}")),
        );
        // `[[oidc.provider]]` tables are docs/oidc.md's.
        out.extend(
            serde_fields::<OidcOptions>()
                .iter()
                .filter(|k| **k != "provider")
                .map(|k| format!("oidc.{k}")),
        );
        out
    }

    /// The same, from the tables of `docs/configuration.md`: the settings
    /// table (flag, environment, file key) and the `[login]` table.
    fn from_doc() -> BTreeSet<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut out = BTreeSet::new();
        let mut table = "";
        for line in doc.lines() {
            if !line.starts_with('|') {
                table = "";
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            match cells.get(1).copied() {
                Some("flag") => table = "settings",
                Some("key") => table = "login",
                _ => {}
            }
            let ticked = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|t| t.split([' ', '[']).next().unwrap().to_owned())
                    .collect()
            };
            if cells
                .get(1)
                .is_some_and(|c| c.starts_with("---") || *c == "flag" || *c == "key")
            {
                continue;
            }
            match table {
                "settings" => {
                    for cell in &cells[1..4] {
                        out.extend(ticked(cell));
                    }
                }
                "login" => out.extend(ticked(cells[1]).iter().map(|k| format!("login.{k}"))),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_configuration_doc_lists_every_setting_and_nothing_else() {
        let code = from_code();
        let doc = from_doc();
        let missing: Vec<_> = code.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&code).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/configuration.md is out of date: missing from its tables: {missing:?}; \
             listed there but not in the code: {extra:?}"
        );
    }

    #[test]
    fn each_flag_has_the_file_key_of_its_name() {
        let branding = branding_ids();
        let mut ids: Vec<String> = command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "config" && !branding.contains(id))
            .collect();
        ids.sort();
        let mut keys: Vec<String> = file_keys().to_vec();
        keys.retain(|k| !["login", "branding", "access", "app", "oidc"].contains(&k.as_str()));
        keys.sort();
        let mut serde_keys: Vec<String> = from_code()
            .into_iter()
            .filter(|k| !k.starts_with('-') && !k.starts_with("SIGNOFF_") && !k.contains('.'))
            .collect();
        serde_keys.sort();
        assert_eq!(ids, keys);
        assert_eq!(
            ids, serde_keys,
            "a flag without a file key or a file key without a flag"
        );
    }

    #[test]
    fn help_order_is_dense() {
        // `--help` is added after the flags and takes the next place.
        let mut order: Vec<usize> = command()
            .get_arguments()
            .map(|a| a.get_display_order())
            .collect();
        order.sort_unstable();
        let expected: Vec<usize> = (0..order.len()).collect();
        assert_eq!(
            order, expected,
            "each flag's display_order is its place in `serve --help`"
        );
    }
}
