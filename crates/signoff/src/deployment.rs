//! The wiring of one node in one call: [`Deployment::open`] opens the
//! store a URL names (SQLite, Redis or PostgreSQL), puts a local cache in
//! front of it, runs the store's revocation bus so that a session ended on
//! any node (or by `signoff sessions end`) is refused here at once, opens
//! the token keys every node shares, and purges expired sessions every
//! minute. A single node and a cluster are the same code: only the URL
//! differs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::revocation::{self, BusHandle, BusOptions, CacheControl, Fanout, RevocationBus};
#[cfg(feature = "accounts")]
use crate::{Accounts, Passwords, UserStore};
use crate::{
    CacheOptions, CachedStore, Clock as _, MonotonicClock, Policy, SessionKeys, SessionStore,
    SessionWatch, Sessions, StateStore, StoreError, SystemClock, WatchOptions,
};

/// What a deployment is opened with, besides its URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeploymentOptions {
    /// Timeouts and cookie settings.
    pub policy: Policy,
    /// How long a cached session may be trusted without hearing from the
    /// revocation bus; zero turns the cache off.
    pub cache_staleness: Duration,
    /// How often expired sessions are purged.
    pub purge_every: Duration,
}

impl Default for DeploymentOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            cache_staleness: CacheOptions::default().max_staleness,
            purge_every: Duration::from_secs(60),
        }
    }
}

/// Why a deployment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The URL names no store this build can open.
    #[error("{0}: expected sqlite://PATH, a file path, redis://HOST or postgres://HOST/DB{1}")]
    UnknownStore(String, &'static str),
    /// The URL's own parameters (`?prefix=`, `?schema=`) are wrong.
    #[error("{0}")]
    BadUrl(String),
    /// The store could not be opened or reached.
    #[error("cannot open the store {0}: {1}")]
    Store(String, #[source] StoreError),
}

/// One node's sessions and users, over the store a URL names. Keep it for
/// as long as the app runs: dropping it stops the purge loop and the
/// revocation bus, and a cache without its bus is no longer trusted (every
/// request then reads the store).
pub struct Deployment {
    /// The engine, reading through this node's cache.
    pub sessions: Sessions,
    /// The same engine without the cache: for answers that must see an end
    /// made anywhere at once (the back-button guard's status check).
    pub uncached: Sessions,
    /// Users and their Argon2id passwords (the ones `signoff user add`
    /// makes on the same store). Feature `accounts`.
    #[cfg(feature = "accounts")]
    pub accounts: Accounts,
    /// The store's own records (token keys).
    pub state: Arc<dyn StateStore>,
    /// The running revocation bus (also with the cache off: open
    /// connections' watches hear of ends through it).
    pub bus: BusHandle,
    purge: tokio::task::JoinHandle<()>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.purge.abort();
    }
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("bus_connected", &self.bus.stats().connected())
            .finish_non_exhaustive()
    }
}

/// The parts of one store.
struct Opened {
    sessions: Arc<dyn SessionStore>,
    #[cfg(feature = "accounts")]
    users: Arc<dyn UserStore>,
    state: Arc<dyn StateStore>,
    bus: Arc<dyn RevocationBus>,
}

impl Opened {
    #[allow(dead_code)] // without any store feature
    fn of<S: Backend>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            sessions: store.clone(),
            #[cfg(feature = "accounts")]
            users: store.clone(),
            state: store.clone(),
            bus: store,
        }
    }
}

/// What one store is to a deployment: sessions, the engine's records, the
/// revocation bus, and with accounts, users.
#[cfg(feature = "accounts")]
trait Backend: SessionStore + UserStore + StateStore + RevocationBus {}
#[cfg(feature = "accounts")]
impl<T: SessionStore + UserStore + StateStore + RevocationBus> Backend for T {}
#[cfg(not(feature = "accounts"))]
trait Backend: SessionStore + StateStore + RevocationBus {}
#[cfg(not(feature = "accounts"))]
impl<T: SessionStore + StateStore + RevocationBus> Backend for T {}

impl Deployment {
    /// Opens the store `url` names with the default policy: `sqlite://PATH`
    /// (or a plain path), `redis://…` or `rediss://…` (`?prefix=` for the
    /// key prefix), `postgres://…` (`?schema=`). Needs a Tokio runtime.
    ///
    /// # Errors
    /// A URL this build cannot open (each store is a feature), or a store
    /// that cannot be reached.
    pub async fn open(url: &str) -> Result<Self, DeploymentError> {
        Self::open_with(url, DeploymentOptions::default()).await
    }

    /// [`Deployment::open`] with other options.
    ///
    /// # Errors
    /// As [`Deployment::open`].
    pub async fn open_with(url: &str, options: DeploymentOptions) -> Result<Self, DeploymentError> {
        let shown = crate::store::redact_url(url);
        let opened = open_store(url).await.map_err(|e| match e {
            OpenError::Store(e) => DeploymentError::Store(shown.clone(), e),
            OpenError::Unknown(missing) => DeploymentError::UnknownStore(shown.clone(), missing),
            OpenError::Url(e) => DeploymentError::BadUrl(e),
        })?;
        let keys = SessionKeys::open(opened.state.clone(), SystemClock.now())
            .await
            .map_err(|e| DeploymentError::Store(shown.clone(), StoreError::Backend(Box::new(e))))?;
        let keys = Arc::new(keys);
        let watch = SessionWatch::new(
            opened.sessions.clone(),
            options.policy.clone(),
            Arc::new(SystemClock),
            WatchOptions::default(),
        );
        let mut listeners: Vec<Arc<dyn CacheControl>> = vec![Arc::new(watch.clone())];
        let cached: Arc<dyn SessionStore> = if options.cache_staleness.is_zero() {
            opened.sessions.clone()
        } else {
            let cache = Arc::new(CachedStore::with_options(
                opened.sessions.clone(),
                CacheOptions {
                    max_staleness: options.cache_staleness,
                    ..CacheOptions::default()
                },
                Arc::new(MonotonicClock::new()),
            ));
            listeners.push(cache.clone());
            cache
        };
        let bus = revocation::run(
            opened.bus.clone(),
            Arc::new(Fanout::new(listeners)),
            BusOptions::default(),
        );
        let sessions = Sessions::new(cached, options.policy.clone())
            .with_watch(watch.clone())
            .with_keys(keys.clone());
        let uncached = Sessions::new(opened.sessions.clone(), options.policy)
            .with_watch(watch)
            .with_keys(keys);
        let purge = tokio::spawn(purge_loop(uncached.clone(), options.purge_every));
        Ok(Self {
            sessions,
            uncached,
            #[cfg(feature = "accounts")]
            accounts: Accounts::new(opened.users, Passwords::new()),
            state: opened.state,
            bus,
            purge,
        })
    }
}

/// Purges expired sessions every `every`.
async fn purge_loop(sessions: Sessions, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        purge_expired(&sessions).await;
    }
}

/// Deletes every expired session, a thousand at a time; a store error is
/// logged and ends the round (the next one tries again).
pub async fn purge_expired(sessions: &Sessions) {
    loop {
        match sessions.purge_expired(1000).await {
            Ok(1000) => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "purging expired sessions failed");
                break;
            }
        }
    }
}

// Some variants come only with some store features.
#[allow(dead_code)]
enum OpenError {
    Store(StoreError),
    /// The feature this URL needs, as a hint.
    Unknown(&'static str),
    Url(String),
}

/// The file of a SQLite URL (`sqlite://PATH` or a plain path).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    match url.split_once("://") {
        None => Some(PathBuf::from(url)),
        Some(("sqlite", path)) if !path.is_empty() => Some(PathBuf::from(path)),
        Some(_) => None,
    }
}

/// Removes signoff's own query parameter `name` (`?prefix=…` for Redis,
/// `?schema=…` for PostgreSQL) from `url`: the URL the driver gets, and
/// the value.
///
/// # Errors
/// The parameter given twice.
pub fn take_param(url: &str, name: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, v)) if key == name => {
                if value.replace(v.to_owned()).is_some() {
                    return Err(format!("--db: {name} is given twice"));
                }
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, value))
}

async fn open_store(url: &str) -> Result<Opened, OpenError> {
    if let Some(path) = sqlite_path(url) {
        return open_sqlite(path).await;
    }
    match url.split_once("://") {
        Some(("redis" | "rediss", _)) => open_redis(url).await,
        Some(("postgres" | "postgresql", _)) => open_postgres(url).await,
        _ => Err(OpenError::Unknown("")),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(path: PathBuf) -> Result<Opened, OpenError> {
    let store = crate::SqliteStore::open(&path)
        .await
        .map_err(OpenError::Store)?;
    Ok(Opened::of(store))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_: PathBuf) -> Result<Opened, OpenError> {
    Err(OpenError::Unknown(" (SQLite needs the feature `sqlite`)"))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Opened, OpenError> {
    let (url, prefix) = take_param(url, "prefix").map_err(OpenError::Url)?;
    let mut options = crate::RedisOptions::new(url);
    if let Some(prefix) = prefix {
        options.prefix = prefix;
    }
    let store = crate::RedisStore::connect_with(options)
        .await
        .map_err(OpenError::Store)?;
    Ok(Opened::of(store))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_: &str) -> Result<Opened, OpenError> {
    Err(OpenError::Unknown(" (Redis needs the feature `redis`)"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Opened, OpenError> {
    let (url, schema) = take_param(url, "schema").map_err(OpenError::Url)?;
    let mut options = crate::PostgresOptions::new(url);
    options.schema = schema;
    let store = crate::PostgresStore::connect_with(options)
        .await
        .map_err(OpenError::Store)?;
    Ok(Opened::of(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str) -> Result<Opened, OpenError> {
    Err(OpenError::Unknown(
        " (PostgreSQL needs the feature `postgres`)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_taken_out() {
        assert_eq!(
            take_param("redis://h/0?prefix=p1&protocol=resp3", "prefix").unwrap(),
            (
                "redis://h/0?protocol=resp3".to_owned(),
                Some("p1".to_owned())
            )
        );
        assert_eq!(
            take_param("postgres://h/db", "schema").unwrap(),
            ("postgres://h/db".to_owned(), None)
        );
        assert!(take_param("postgres://h/db?schema=a&schema=b", "schema").is_err());
    }

    #[tokio::test]
    async fn an_unknown_store_says_what_is_expected() {
        let e = Deployment::open("mysql://u:secret@h/db").await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("expected sqlite://PATH"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
