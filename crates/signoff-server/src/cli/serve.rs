//! `signoff serve`: open the store, build the gateway, listen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use signoff::{Clock as _, CookiePolicy, Policy, SessionKeys, Sessions};

use crate::backend::{open_db, session_store};
use crate::config::Settings;
use crate::gateway::{Gateway, RuleBook};
use crate::listener;

/// `signoff serve` flags: the settings, and `--check`.
#[derive(Debug, clap::Args)]
pub struct ServeCommand {
    /// The settings.
    #[command(flatten)]
    pub args: crate::config::ServeArgs,
    /// Check the settings and exit: read the flags, `SIGNOFF_*` variables,
    /// the --config file, the TLS, --upstream-ca and branding files (the
    /// logo, the --template-dir files, whose page overrides are tried), and
    /// the SQLite file's permissions; print what serve
    /// would do, and exit 0, or 1 with the reason. Opens no port and no store
    /// (no SQLite file is created, Redis and PostgreSQL are not contacted)
    /// and does not contact the upstream
    #[arg(long, display_order = 100)]
    pub check: bool,
}

/// `serve --check`: what [`run`] checks before it opens the store and the
/// port, then what it would do, printed.
pub fn check(settings: &Settings) -> Result<()> {
    policy(settings)?;
    if let Some(tls) = &settings.tls {
        listener::tls_acceptor(tls)?;
    }
    crate::gateway::check_upstream_client(settings)?;
    crate::backend::db_kind(&settings.db)?;
    let warnings =
        crate::backend::check_sqlite_permissions(&settings.db, settings.allow_readable_db)?;
    let on_off = |on: bool| if on { "on" } else { "off" };
    let scheme = if settings.tls.is_some() {
        "HTTPS"
    } else {
        "plain HTTP"
    };
    println!("listen        {} ({scheme})", settings.listen);
    println!(
        "public URL    {} (session cookie {})",
        settings.public_origin,
        if settings.secure {
            "Secure"
        } else {
            "not Secure: loopback or --allow-insecure-http"
        }
    );
    match &settings.upstream {
        Some(upstream) => println!("upstream      {upstream}"),
        None => println!(
            "upstream      none: forward-auth only ({}/auth)",
            settings.prefix
        ),
    }
    println!(
        "store         {}",
        crate::backend::describe_db(&settings.db)
    );
    for warning in warnings {
        println!("warning       {warning}");
    }
    let public = if settings.public_paths.is_empty() {
        "none".to_owned()
    } else {
        settings.public_paths.join(", ")
    };
    println!("public paths  {public}");
    let rules = &settings.access.rules;
    println!(
        "access rules  {} ({} from [access]), default: {}",
        rules.rules().len(),
        rules.rules().len() - settings.public_paths.len(),
        rules.default_access()
    );
    for warning in &settings.access.warnings {
        println!("warning       {warning}");
    }
    for app in &settings.apps {
        let upstream = app
            .upstream
            .as_ref()
            .map_or("none (forward-auth)".to_owned(), ToString::to_string);
        println!(
            "app           {} at {}{} -> {upstream}, {} access rules, default: {}",
            app.name,
            app.origin,
            app.path_prefix.as_deref().unwrap_or(""),
            app.access.rules.rules().len(),
            app.access.rules.default_access()
        );
        for warning in &app.access.warnings {
            println!("warning       app {}: {warning}", app.name);
        }
    }
    println!(
        "sessions      idle {}, absolute {}",
        humantime::format_duration(settings.idle_timeout),
        humantime::format_duration(settings.absolute_timeout)
    );
    match &settings.remember_device {
        Some(r) => println!(
            "remember      {}, idle {}",
            humantime::format_duration(r.lifetime()),
            humantime::format_duration(r.idle_timeout())
        ),
        None => println!("remember      off"),
    }
    println!("token mode    {}", on_off(settings.tokens.is_some()));
    println!(
        "admin API     {}",
        on_off(settings.admin_token_sha256.is_some())
    );
    println!("metrics       {}", on_off(settings.metrics));
    let brand = &settings.branding;
    let mut shown = vec![format!("name {:?}", brand.name)];
    if let Some(logo) = &brand.logo {
        shown.push(format!(
            "logo {} ({} bytes)",
            logo.kind.content_type(),
            logo.bytes.len()
        ));
    }
    if let Some(accent) = &brand.accent {
        shown.push(format!("accent {}", accent.as_str()));
    }
    if brand.stylesheet.is_some() {
        shown.push("own signoff.css".to_owned());
    }
    if brand.extra_css.is_some() {
        shown.push("extra.css".to_owned());
    }
    if let Some(overrides) = &brand.overrides {
        shown.push(format!("own pages {}", overrides.pages().join(" ")));
    }
    println!("branding      {}", shown.join(", "));
    println!(
        "the settings are good (--check opened no port and no store, and did not contact the upstream)"
    );
    Ok(())
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
        .remember_device(settings.remember_device)
        .cookie(cookie)
        .build()
        .context("bad session settings")
}

/// Where a running gateway is, as `on_ready` learns it.
#[derive(Debug)]
pub struct Listening {
    /// What is bound: `http://ADDR:PORT`, or `https://…` when signoff
    /// serves TLS itself.
    pub bound: String,
    /// The public origin browsers use (`--public-url`; else `bound`).
    pub public: String,
}

/// Reads the settings again, for a reload on SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Settings> + Send + Sync>;

/// Runs the gateway until Ctrl-C or SIGTERM. `on_ready` learns where it
/// listens once the port is bound. With `reload`, SIGHUP reads the
/// settings again and puts their access rules in force.
pub async fn run(
    mut settings: Settings,
    reload: Option<Reload>,
    on_ready: impl FnOnce(&Listening),
) -> Result<()> {
    for warning in &settings.access.warnings {
        tracing::warn!(target: "signoff::access", "{warning}");
    }
    for app in &settings.apps {
        for warning in &app.access.warnings {
            tracing::warn!(target: "signoff::access", app = %app.name, "{warning}");
        }
    }
    let limits = listener::Limits::from_settings(&settings.connections);
    let tls = settings
        .tls
        .as_ref()
        .map(listener::tls_acceptor)
        .transpose()?;
    let backend = open_db(&settings.db, settings.allow_readable_db).await?;
    let listener = listener::bind(&settings.listen).await?;
    let local: SocketAddr = listener.local_addr().context("listening socket")?;
    let bound = format!("{}://{local}", if tls.is_some() { "https" } else { "http" });
    if !settings.public_url_given {
        settings.public_origin = bound.clone();
    }
    if settings.secure && tls.is_none() && settings.trusted_proxies.is_empty() {
        tracing::warn!(
            public_url = %settings.public_origin,
            listening = %bound,
            "the public URL is https, but signoff serves plain HTTP here and no \
             --trusted-proxy is set: browsers reach the public URL only through a TLS proxy \
             in front of this address. Serve TLS here with --tls-cert and --tls-key, or name \
             the proxy with --trusted-proxy; sign-in forms that arrive over plain HTTP are refused"
        );
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
    let audit = backend.audit_log(settings.audit_log);
    let store = session_store(&backend, settings.cache_staleness, &policy);
    let (cache, bus, watch) = (store.cache, store.bus, store.watch);
    // The guard's status check reads the store itself, never the cache:
    // it is what decides whether a page restored by Back stays visible.
    // Both engines tell the watch of every end, so a socket of a session
    // ended here closes at once, bus or no bus.
    // One set of token-sealing keys, kept in the store and shared by every
    // node, checked before any store read (docs/security.md).
    let keys = SessionKeys::open(backend.state.clone(), signoff::SystemClock.now())
        .await
        .context("cannot set up the session token keys")?;
    let keys = Arc::new(keys);
    let uncached = Sessions::new(backend.sessions.clone(), policy.clone())
        .with_audit(audit.clone())
        .with_watch(watch.clone())
        .with_keys(keys.clone());
    let sessions = Sessions::new(store.sessions, policy)
        .with_audit(audit.clone())
        .with_watch(watch.clone())
        .with_keys(keys);
    let accounts = backend.accounts();
    let tokens = match &settings.tokens {
        Some(t) => {
            let mut options = signoff::token_mode::TokenOptions::new(
                t.issuer
                    .clone()
                    .unwrap_or_else(|| settings.public_origin.clone()),
                t.audience
                    .clone()
                    .unwrap_or_else(|| settings.public_origin.clone()),
            );
            options.access_ttl = t.access_ttl;
            options.refresh_grace = t.refresh_grace;
            options.algorithm = t.algorithm;
            options.confidential_clients = t.clients.iter().map(|(id, _)| id.clone()).collect();
            let tokens =
                signoff::token_mode::Tokens::open(sessions.clone(), backend.state.clone(), options)
                    .await
                    .context("cannot set up token mode (the signing keys)")?;
            Some(Arc::new(tokens))
        }
        None => None,
    };
    tracing::info!(
        store = backend.kind,
        db = %backend.shown,
        cache = ?settings.cache_staleness,
        bus = bus.is_some(),
        "session store ready"
    );
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
            signoff::deployment::purge_expired(&purge).await;
        }
    });

    let listening = Listening {
        bound,
        public: settings.public_origin.clone(),
    };
    let connections = Arc::new(listener::ConnectionStats::default());
    let metrics = crate::metrics::Sources {
        store: backend.kind,
        cache,
        bus: bus.as_ref().map(|b| b.stats().clone()),
        connections: Some(connections.clone()),
    };
    let gateway = Arc::new(
        Gateway::new(settings, sessions, accounts)?
            .with_metrics(metrics)
            .with_tokens(tokens)
            .with_uncached_sessions(uncached)
            .with_state_store(backend.state.clone()),
    );
    if let Some(reload) = reload {
        reload_on_hangup(gateway.clone(), reload);
    }
    on_ready(&listening);
    listener::serve(
        listener,
        gateway.router(),
        tls,
        limits,
        connections,
        shutdown_signal(),
    )
    .await;
    drop(bus);
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

/// On each SIGHUP: the settings read again, and their access rules put in
/// force; a file that does not check keeps the rules in force (and says
/// why). Sessions are not touched.
fn reload_on_hangup(gateway: Arc<Gateway>, reload: Reload) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; access rules will not reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match reload() {
                Ok(settings) => {
                    let warnings = settings
                        .access
                        .warnings
                        .iter()
                        .chain(settings.apps.iter().flat_map(|a| &a.access.warnings));
                    for warning in warnings {
                        tracing::warn!(target: "signoff::access", "{warning}");
                    }
                    let count = settings.access.rules.rules().len()
                        + settings
                            .apps
                            .iter()
                            .map(|a| a.access.rules.rules().len())
                            .sum::<usize>();
                    match gateway.replace_rules(RuleBook::of(&settings)) {
                        Ok(()) => tracing::info!(
                            target: "signoff::access",
                            rules = count,
                            "SIGHUP: access rules reloaded (other settings need a restart)"
                        ),
                        Err(why) => tracing::error!(
                            target: "signoff::access",
                            "SIGHUP: {why}; the access rules in force are kept"
                        ),
                    }
                }
                Err(e) => tracing::error!(
                    target: "signoff::access",
                    error = format!("{e:#}"),
                    "SIGHUP: the settings do not check; the access rules in force are kept"
                ),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (gateway, reload);
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
