//! `signoff serve`: open the store, build the gateway, listen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use signoff::{
    Accounts, AuditLog, CachedStore, CookiePolicy, Passwords, Policy, Sessions, SqliteStore,
};

use crate::config::Settings;
use crate::gateway::Gateway;
use crate::server;

/// Opens the database named by `--db`: `sqlite://PATH` or a plain path.
pub async fn open_db(db: &str) -> Result<SqliteStore> {
    let path = match db.split_once("://") {
        None => PathBuf::from(db),
        Some(("sqlite", path)) if !path.is_empty() => PathBuf::from(path),
        Some(("redis" | "rediss" | "postgres" | "postgresql", _)) => {
            bail!("--db {db}: only SQLite is supported in this version")
        }
        Some(_) => bail!("--db {db}: expected sqlite://PATH or a file path"),
    };
    SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))
}

/// The session policy for these settings.
pub fn policy(settings: &Settings) -> Result<Policy> {
    let cookie = if settings.secure {
        CookiePolicy::default()
    } else {
        CookiePolicy::insecure_loopback()
    };
    Policy::builder()
        .idle_timeout(settings.idle_timeout)
        .absolute_lifetime(settings.absolute_timeout)
        .max_sessions_per_user(settings.max_sessions)
        .recent_auth(settings.recent_auth)
        .cookie(cookie)
        .build()
        .context("bad session settings")
}

/// The engine the command line uses on a database: no cache (it runs
/// once), every end of a session recorded in the audit trail.
/// Its policy is as lenient as allowed, so each session is judged by the
/// timeouts it was created with (whatever the gateway's flags), and the CLI
/// never hides a session the gateway still accepts.
pub fn cli_sessions(store: &Arc<SqliteStore>) -> Result<Sessions> {
    const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let policy = Policy::builder()
        .idle_timeout(LONGEST)
        .absolute_lifetime(LONGEST)
        .build()
        .context("the command line's session policy")?;
    Ok(Sessions::new(store.clone(), policy).with_audit(AuditLog::new(store.clone(), false)))
}

/// Runs the gateway until Ctrl-C or SIGTERM. `on_ready` gets the public
/// origin once the port is bound.
pub async fn run(mut settings: Settings, on_ready: impl FnOnce(&str)) -> Result<()> {
    let tls = settings
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()?;
    let store = open_db(&settings.db).await?;
    let listener = server::bind(&settings.listen).await?;
    let local: SocketAddr = listener.local_addr().context("listening socket")?;
    if !settings.public_url_given {
        let scheme = if settings.secure { "https" } else { "http" };
        settings.public_origin = format!("{scheme}://{local}");
    }
    if !settings.secure {
        if settings.loopback {
            tracing::warn!(
                "plain HTTP on a loopback address: the session cookie is `signoff` without \
                 `Secure` or the `__Host-` prefix; use HTTPS for anything but development"
            );
        } else {
            tracing::warn!("plain HTTP on a non-loopback address (--allow-insecure-http): session cookies travel unencrypted");
        }
    }
    let policy = policy(&settings)?;
    let store = Arc::new(store);
    let audit = AuditLog::new(store.clone(), settings.audit_log);
    let sessions = Sessions::new(Arc::new(CachedStore::new((*store).clone())), policy)
        .with_audit(audit.clone());
    let accounts = Accounts::new(store, Passwords::new());
    check_upstream(&settings).await;

    let purge = sessions.clone();
    let retention = settings.audit_retention;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let cutoff = purge.now().minus(retention);
            if let Err(e) = audit.purge_before(cutoff).await {
                tracing::warn!(error = %e, "purging old audit events failed");
            }
            loop {
                match purge.purge_expired(1000).await {
                    Ok(1000) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "purging expired sessions failed");
                        break;
                    }
                }
            }
        }
    });

    let origin = settings.public_origin.clone();
    let gateway = Arc::new(Gateway::new(settings, sessions, accounts)?);
    on_ready(&origin);
    server::serve(listener, gateway.router(), tls, shutdown_signal()).await;
    Ok(())
}

/// Warns (and keeps going) if the upstream does not accept connections.
async fn check_upstream(settings: &Settings) {
    let Some(upstream) = &settings.upstream else {
        tracing::info!(
            "no upstream: forward-auth only; the proxy in front asks {}/auth, and requests outside {} get 404",
            settings.prefix,
            settings.prefix
        );
        return;
    };
    let Some(authority) = upstream.authority() else {
        return;
    };
    let port = authority.port_u16().unwrap_or(80);
    let target = format!("{}:{port}", authority.host().trim_matches(['[', ']']));
    let connect = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(%upstream, error = %e, "the upstream is not reachable yet; requests get 502 until it is")
        }
        Err(_) => {
            tracing::warn!(%upstream, "the upstream did not accept a connection within 2 s; requests get 502 until it does")
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
