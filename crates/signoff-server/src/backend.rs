//! The store behind `--db`: one URL opens sessions, users, the audit trail,
//! the engine's state and the revocation bus on SQLite, Redis or
//! PostgreSQL; and the local cache the bus keeps honest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use signoff::revocation::{BusHandle, BusOptions, CacheControl, Fanout, RevocationBus};
use signoff::{
    Accounts, AuditLog, AuditStore, CacheOptions, CachedStore, MonotonicClock, Passwords, Policy,
    PostgresOptions, PostgresStore, RedisOptions, RedisStore, SessionStore, SessionWatch, Sessions,
    SqliteOptions, SqliteStore, StateStore, SystemClock, UserStore, WatchOptions,
};

use signoff::deployment::sqlite_path;

use crate::config::StoreChoice;

/// The stores behind one `--db`: sessions, users and the audit trail all
/// live in the same backend, so nodes share nothing but it.
#[derive(Clone)]
pub struct Backend {
    /// Sessions, uncached.
    pub sessions: Arc<dyn SessionStore>,
    /// User accounts.
    pub users: Arc<dyn UserStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
    /// The engine's own records (token keys).
    pub state: Arc<dyn StateStore>,
    /// The revocation bus: pub/sub on Redis, `LISTEN`/`NOTIFY` on
    /// PostgreSQL, the change log watcher on SQLite.
    pub bus: Option<Arc<dyn RevocationBus>>,
    /// `sqlite`, `redis` or `postgres`.
    pub kind: &'static str,
    /// The store as messages and the log show it ([`describe_db`]): no
    /// password, a SQLite file by its absolute path.
    pub shown: String,
    sqlite: Option<SqliteStore>,
}

impl Backend {
    /// A shared store: everything in it, and its revocation bus.
    fn shared<S>(store: S, kind: &'static str) -> Self
    where
        S: SessionStore + UserStore + AuditStore + StateStore + RevocationBus + Clone,
    {
        let store = Arc::new(store);
        Self {
            sessions: store.clone(),
            users: store.clone(),
            audit: store.clone(),
            state: store.clone(),
            bus: Some(store),
            kind,
            shown: String::new(),
            sqlite: None,
        }
    }

    /// Accounts on this backend.
    pub fn accounts(&self) -> Accounts {
        Accounts::new(self.users.clone(), Passwords::new())
    }

    /// The audit trail of this backend.
    pub fn audit_log(&self, json_lines: bool) -> AuditLog {
        let echo = match json_lines {
            true => signoff::AuditEcho::JsonLines,
            false => signoff::AuditEcho::Off,
        };
        AuditLog::new(self.audit.clone(), echo)
    }

    /// The engine the command line uses: no cache (it runs once), every
    /// end of a session recorded in the audit trail. Its policy is as
    /// lenient as allowed, so each session is judged by the timeouts it was
    /// created with (whatever the gateway's flags), and the CLI never hides
    /// a session the gateway still accepts. What it ends reaches running
    /// gateways over the revocation bus (on SQLite, through the change log
    /// they watch).
    pub fn cli_sessions(&self) -> Result<Sessions> {
        const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let policy = Policy::builder()
            .idle_timeout(LONGEST)
            .absolute_lifetime(LONGEST)
            .build()
            .context("the command line's session policy")?;
        Ok(Sessions::new(self.sessions.clone(), policy).with_audit(self.audit_log(false)))
    }

    /// Closes what needs closing (the SQLite pool, so the file is released).
    pub async fn close(&self) {
        if let Some(sqlite) = &self.sqlite {
            sqlite.close().await;
        }
    }
}

/// Opens the store named by `--db`: `sqlite://PATH` or a plain path,
/// `redis://…`/`rediss://…`, or `postgres://…`/`postgresql://…`.
/// `allow_readable_db`: open a SQLite file that other users can read, with
/// a warning, instead of refusing.
pub async fn open_db(db: &str, allow_readable_db: bool) -> Result<Backend> {
    let mut backend = open_backend(db, allow_readable_db).await?;
    backend.shown = describe_db(db);
    Ok(backend)
}

async fn open_backend(db: &str, allow_readable_db: bool) -> Result<Backend> {
    let shown = signoff::store::redact_url(db);
    if let Some(path) = sqlite_path(db) {
        return open_sqlite(path, allow_readable_db).await;
    }
    match db.split_once("://") {
        Some(("redis" | "rediss", _)) => {
            let (url, prefix) = take_param(db, "prefix")?;
            let mut options = RedisOptions::new(url);
            if let Some(prefix) = prefix {
                options.prefix = prefix;
            }
            let store = RedisStore::connect_with(options)
                .await
                .with_context(|| format!("cannot connect to Redis at {shown}"))?;
            match store.deployment_warnings().await {
                Ok(warnings) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the Redis configuration"),
            }
            Ok(Backend::shared(store, "redis"))
        }
        Some(("postgres" | "postgresql", _)) => {
            let (url, schema) = take_param(db, "schema")?;
            let mut options = PostgresOptions::new(url);
            options.schema = schema;
            let store = PostgresStore::connect_with(options)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {shown}"))?;
            Ok(Backend::shared(store, "postgres"))
        }
        _ => Err(unknown_db(&shown)),
    }
}

fn unknown_db(shown: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--db {shown}: expected sqlite://PATH, a file path, redis://HOST or postgres://HOST/DB"
    )
}

/// The kind of store `--db` names (`sqlite`, `redis` or `postgres`),
/// checked as far as it can be without opening it (`serve --check`).
pub fn db_kind(db: &str) -> Result<&'static str> {
    if sqlite_path(db).is_some() {
        return Ok("sqlite");
    }
    match db.split_once("://") {
        Some(("redis" | "rediss", _)) => take_param(db, "prefix").map(|_| "redis"),
        Some(("postgres" | "postgresql", _)) => take_param(db, "schema").map(|_| "postgres"),
        _ => Err(unknown_db(&signoff::store::redact_url(db))),
    }
}

/// `db` as the log and messages show it: a SQLite file by its absolute
/// path (a relative one depends on the directory signoff runs in), any
/// other URL without its password.
pub fn describe_db(db: &str) -> String {
    match sqlite_path(db) {
        Some(path) => {
            let full = std::fs::canonicalize(&path)
                .or_else(|_| std::path::absolute(&path))
                .unwrap_or(path);
            format!("sqlite://{}", full.display())
        }
        None => signoff::store::redact_url(db),
    }
}

/// What opening a SQLite `db` would refuse (`serve --check`), found
/// without creating or changing anything. Files or a directory open to
/// other users are an error, unless `allow_readable_db` makes them
/// warnings. A directory that does not exist yet is a warning: `serve`
/// fails on it, but it may be made before then (systemd's
/// `StateDirectory=` makes it as the service starts). Other stores have
/// nothing to check before connecting.
pub fn check_sqlite_permissions(db: &str, allow_readable_db: bool) -> Result<Vec<String>> {
    let Some(path) = sqlite_path(db) else {
        return Ok(Vec::new());
    };
    let problems = signoff::store::sqlite::permission_problems(&path);
    let dir_missing = path
        .parent()
        .is_some_and(|d| !d.as_os_str().is_empty() && !d.exists());
    if dir_missing {
        return Ok(problems
            .into_iter()
            .map(|p| format!("{p}; serve fails until it exists"))
            .collect());
    }
    if problems.is_empty() || allow_readable_db {
        return Ok(problems
            .into_iter()
            .map(|p| format!("{p} (allowed by --allow-readable-db)"))
            .collect());
    }
    anyhow::bail!(
        "the SQLite database {}: {}",
        describe_db(db),
        problems.join("; ")
    )
}

/// Refuses a SQLite database that does not exist yet, saying which file
/// was looked for, where its name came from and how to make it; other
/// stores pass (a missing server or database fails when connecting).
pub fn refuse_missing_sqlite(choice: &StoreChoice) -> Result<()> {
    let Some(path) = sqlite_path(&choice.db) else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    bail!(
        "the database {} does not exist (no file {}; the store came from {}). \
         Check --db, SIGNOFF_DB, --config and the directory you run in; a new \
         database is created by `signoff user add NAME` or `signoff serve` with the \
         same store",
        signoff::store::redact_url(&choice.db),
        describe_db(&choice.db).trim_start_matches("sqlite://"),
        choice.source,
    )
}

/// [`signoff::deployment::take_param`], as this module's errors.
fn take_param(url: &str, name: &str) -> Result<(String, Option<String>)> {
    signoff::deployment::take_param(url, name).map_err(anyhow::Error::msg)
}

async fn open_sqlite(path: PathBuf, allow_readable: bool) -> Result<Backend> {
    let mut options = SqliteOptions::new(&path);
    options.allow_readable = allow_readable;
    let store = match SqliteStore::open_with(options).await {
        Ok(store) => store,
        Err(signoff::StoreError::Backend(e)) if e.is::<signoff::store::sqlite::OpenToOthers>() => {
            bail!(
                "refusing the database {}: {e}; or pass --allow-readable-db to open it anyway \
                 (with a warning)",
                path.display()
            )
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the database {}", path.display()))
        }
    };
    let shared = Arc::new(store.clone());
    Ok(Backend {
        sessions: shared.clone(),
        users: shared.clone(),
        audit: shared.clone(),
        state: shared.clone(),
        // Hears of what the CLI and other processes on the file end.
        bus: Some(shared),
        kind: "sqlite",
        shown: String::new(),
        sqlite: Some(store),
    })
}

/// What the gateway reads sessions through on one node.
pub struct GatewayStore {
    /// The backend behind the local cache (or the backend itself with no
    /// cache).
    pub sessions: Arc<dyn SessionStore>,
    /// The local cache, for the metrics.
    pub cache: Option<Arc<crate::metrics::LocalCache>>,
    /// The open connections (WebSockets, streams) of this node, by session:
    /// each ends when its session does (docs/security.md, invariant 10).
    pub watch: SessionWatch,
    /// The running revocation bus, which keeps both the cache and the
    /// watch honest; `None` if the backend has none.
    pub bus: Option<BusHandle>,
}

/// The session store the gateway uses: the backend behind a local cache
/// (unless `staleness` is zero), and the watch over open connections; the
/// backend's revocation bus keeps both honest. The watch reads the backend
/// itself, never the cache, and follows `policy`.
pub fn session_store(backend: &Backend, staleness: Duration, policy: &Policy) -> GatewayStore {
    let watch = SessionWatch::new(
        backend.sessions.clone(),
        policy.clone(),
        Arc::new(SystemClock),
        WatchOptions::default(),
    );
    let cache = (!staleness.is_zero()).then(|| {
        let mut options = CacheOptions::default();
        options.max_staleness = staleness;
        Arc::new(CachedStore::with_options(
            backend.sessions.clone(),
            options,
            Arc::new(MonotonicClock::new()),
        ))
    });
    let mut listeners: Vec<Arc<dyn CacheControl>> = vec![Arc::new(watch.clone())];
    if let Some(cache) = &cache {
        listeners.push(cache.clone());
    }
    let bus = backend.bus.clone().map(|bus| {
        signoff::revocation::run(bus, Arc::new(Fanout::new(listeners)), BusOptions::default())
    });
    let sessions: Arc<dyn SessionStore> = match &cache {
        Some(cache) => cache.clone(),
        None => backend.sessions.clone(),
    };
    GatewayStore {
        sessions,
        cache,
        watch,
        bus,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden_in_messages() {
        use signoff::store::redact_url;
        for (url, shown) in [
            (
                "postgres://app:s3cret@db.internal:5432/signoff",
                "postgres://app:***@db.internal:5432/signoff",
            ),
            (
                "redis://:s3/cr?et#x@cache/0?prefix=x",
                "redis://:***@cache/0?prefix=x",
            ),
            (
                "postgres://db/app?user=a&password=s3cret",
                "postgres://db/app?user=a&password=***",
            ),
            ("redis://user@cache", "redis://user@cache"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
