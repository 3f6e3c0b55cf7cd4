//! Listening: plain HTTP or HTTPS (rustls), HTTP/1.1 and HTTP/2, with the
//! peer address handed to the app.
//!
//! Every phase of a connection has a deadline, and the number of open
//! connections is capped below the file-descriptor limit. At the cap, the
//! oldest connection that never carried a live session is closed to make
//! room, so a flood of silent or slow clients cannot lock signed-in users
//! out (nor keep them from signing out).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::TlsFiles;
use crate::gateway::App;

/// Loads a certificate chain and key into a TLS acceptor (ALPN h2, http/1.1).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read the certificate {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate file {}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read a private key from {}", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the address, with a clear message for the usual failures.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is already in use (is another signoff or server running?)".to_owned()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            std::io::ErrorKind::AddrNotAvailable => "no such address on this machine".to_owned(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot listen on {addr}: {why}")
    })
}

/// HTTP/2 keep-alive: a PING this often, and the connection closes when
/// its answer takes longer than [`PING_TIMEOUT`] (a peer that vanished).
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a connection with a request in progress may go without a
/// request starting or a response moving: longer than the upstream's
/// 60 s to answer, and than the usual heartbeat of event streams.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection being closed may take to finish (HTTP/2 GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// File descriptors kept for everything but client connections beyond the
/// one upstream connection each may use: the store, logs, the listener.
const FD_RESERVE: u64 = 128;
/// Most concurrent streams on one HTTP/2 connection: each may hold an
/// upstream connection, so one client must not open hundreds.
const MAX_STREAMS: u32 = 16;
/// How long a proxied request may wait for an upstream slot
/// ([`UpstreamSlots`]) before it is answered 503.
pub const UPSTREAM_SLOT_WAIT: Duration = Duration::from_secs(5);
/// Connections being shed whose descriptors are not yet released; beyond
/// this, accepting waits for them rather than outrun the closing.
const SHED_BACKLOG: usize = 64;

/// The time limits and the cap `serve` applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the end of the first request's headers, TLS
    /// handshake included.
    pub client_timeout: Duration,
    /// Longest a connection stays open with no request in progress.
    pub keepalive_timeout: Duration,
    /// Most open client connections.
    pub max_connections: usize,
}

impl Limits {
    /// Raises the soft file-descriptor limit to the hard one and settles
    /// the connection cap: the configured one, or what the limit leaves
    /// room for (half of what remains after a reserve, since each client
    /// connection may hold an upstream connection too).
    pub fn from_settings(settings: &crate::config::ConnectionLimits) -> Self {
        let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
                rlimit::Resource::NOFILE
                    .get()
                    .map_or(1024, |(soft, _)| soft)
            }
        };
        let room = usize::try_from(nofile.saturating_sub(FD_RESERVE) / 2)
            .unwrap_or(usize::MAX)
            .max(1);
        let max_connections = match settings.max_connections {
            Some(n) => {
                if n > room {
                    tracing::warn!(
                        max_connections = n,
                        fd_limit = nofile,
                        "--max-connections is above what the file-descriptor limit leaves room \
                         for ({room}); accepting may fail with \"Too many open files\""
                    );
                }
                n
            }
            None => room,
        };
        tracing::info!(
            max_connections,
            fd_limit = nofile,
            client_timeout = ?settings.client_timeout,
            keepalive_timeout = ?settings.keepalive_timeout,
            "connection limits"
        );
        Self {
            client_timeout: settings.client_timeout,
            keepalive_timeout: settings.keepalive_timeout,
            max_connections,
        }
    }
}

/// Connection figures for `PREFIX/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// The cap in force.
    pub max: AtomicU64,
    /// Client connections open now.
    pub open: AtomicU64,
    /// Closed at the cap to make room for a new one.
    pub shed: AtomicU64,
    /// New connections closed at once: at the cap, none to shed.
    pub refused: AtomicU64,
    /// Closed for taking too long (TLS handshake, first request, idle).
    pub timed_out: AtomicU64,
}

tokio::task_local! {
    /// The connection the current request arrived on.
    static CONNECTION: Arc<Conn>;
}

/// The descriptors proxied requests may hold open towards the upstream, as
/// many as the cap allows client connections: one HTTP/2 connection can
/// carry many requests, so counting connections alone does not bound them.
/// Requests without a live session may take at most half, so anonymous
/// requests (public paths) cannot take them all. Each connection holds
/// them, and a request finds them with [`upstream_slots`].
#[derive(Clone, Debug)]
pub struct UpstreamSlots {
    any: Arc<tokio::sync::Semaphore>,
    anonymous: Arc<tokio::sync::Semaphore>,
}

/// A held upstream slot; dropped with the response body.
pub struct UpstreamSlot {
    _any: tokio::sync::OwnedSemaphorePermit,
    _anonymous: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl UpstreamSlots {
    pub fn new(max: usize) -> Self {
        Self {
            any: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            anonymous: Arc::new(tokio::sync::Semaphore::new((max / 2).max(1))),
        }
    }

    /// Waits at most [`UPSTREAM_SLOT_WAIT`] for a slot; `None`: too busy.
    pub async fn acquire(&self, signed_in: bool) -> Option<UpstreamSlot> {
        tokio::time::timeout(UPSTREAM_SLOT_WAIT, async {
            let anonymous = if signed_in {
                None
            } else {
                Some(self.anonymous.clone().acquire_owned().await.ok()?)
            };
            let any = self.any.clone().acquire_owned().await.ok()?;
            Some(UpstreamSlot {
                _any: any,
                _anonymous: anonymous,
            })
        })
        .await
        .ok()
        .flatten()
    }
}

/// The upstream slots of the connection the current request arrived on;
/// `None` outside [`serve`] (a router driven by a test), where nothing is
/// counted. Kept with the connection, not in the request's extensions:
/// one more extension costs every request an allocation, and the fourth
/// a rehash of the extension map.
pub fn upstream_slots() -> Option<UpstreamSlots> {
    CONNECTION.try_with(|c| c.upstream.clone()).ok()
}

/// Marks the connection of the request being handled as one that carried a
/// live session: it is not closed to make room for other connections.
pub fn note_live_session() {
    let _ = CONNECTION.try_with(|c| c.proven.store(true, Ordering::Relaxed));
}

/// A request on this connection carried no live session (none, or one that
/// has ended): the connection no longer counts as signed in. Requests that
/// check no session (public paths, health) leave it as it was, so a
/// signed-in page's assets do not unprove it.
pub fn note_no_live_session() {
    let _ = CONNECTION.try_with(|c| c.proven.store(false, Ordering::Relaxed));
}

/// The client connection a request arrived on, put in the extensions of
/// requests that ask for an upgrade. A tunnel holds it while it runs, so
/// the upgraded connection still counts against `--max-connections`, and
/// hears when it is shed. A tunnel counts as an idle connection: at the
/// cap, an anonymous one goes first, and a signed-in one goes when its
/// address holds more than its share (see [`Registry::admit`]), so one
/// account's sockets cannot lock everyone out.
#[derive(Clone)]
pub struct OpenConnection(Arc<Slot>);

impl OpenConnection {
    /// Resolves when the registry sheds this connection to make room.
    pub async fn shed(&self) {
        self.0.conn.close.notified().await;
    }
}

/// One open client connection, as the registry and its task see it.
struct Conn {
    accepted: Instant,
    /// The client's address (the peer: shedding happens before any
    /// header is read).
    peer: std::net::IpAddr,
    /// A request on it carried a live session.
    proven: AtomicBool,
    activity: Mutex<Activity>,
    /// Set under the registry's lock when it is chosen to be closed.
    shed: AtomicBool,
    /// Wakes its task to close it.
    close: Notify,
    /// The registry's upstream slots, for its requests.
    upstream: UpstreamSlots,
}

#[derive(Default)]
struct Activity {
    /// Requests in progress.
    busy: usize,
    /// When a request last started or its response last moved.
    progress: Option<Instant>,
    /// When the last request ended; `None` before the first.
    last_end: Option<Instant>,
}

impl Conn {
    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request ever arrived on it.
    fn ever_used(&self) -> bool {
        let a = self.activity();
        a.busy > 0 || a.last_end.is_some()
    }

    /// When this connection is to be closed for idleness; `None` while a
    /// request is in progress.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        let a = self.activity();
        if a.busy > 0 {
            return None;
        }
        Some(match a.last_end {
            None => self.accepted + limits.client_timeout,
            Some(end) => end + limits.keepalive_timeout,
        })
    }
}

/// Every open client connection, oldest first.
struct Registry {
    max: usize,
    /// Upstream slots for the requests of every connection.
    upstream: UpstreamSlots,
    table: Mutex<Table>,
    stats: Arc<ConnectionStats>,
    /// Signalled when a shed connection is gone.
    released: Notify,
}

/// What [`Registry::admit`] decided for a new connection.
enum Admission {
    Admitted(Slot),
    /// Too many connections are still closing: try again once one is gone.
    Wait,
    /// At the cap, and every open connection carried a live session.
    Refused,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: BTreeMap<u64, Arc<Conn>>,
    /// How many of `open` are being closed.
    shedding: usize,
    /// When reaching the cap was last logged.
    warned_at: Option<Instant>,
}

/// A connection's place in the registry, given back when dropped.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.registry.lock();
        if t.open.remove(&self.id).is_some() {
            self.registry.stats.open.fetch_sub(1, Ordering::Relaxed);
            if self.conn.shed.load(Ordering::Relaxed) {
                t.shedding -= 1;
                self.registry.released.notify_one();
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `peer`. At the cap one is closed
    /// to make room: the oldest unproven one of the address holding the
    /// most unproven connections (so one flooding address sheds its own),
    /// else the oldest idle proven one of the address holding the most
    /// proven ones; only when neither exists is the newcomer refused.
    fn admit(self: &Arc<Self>, peer: std::net::IpAddr) -> Admission {
        let mut t = self.lock();
        if t.open.len() - t.shedding >= self.max {
            if t.warned_at
                .is_none_or(|at| at.elapsed() > Duration::from_secs(60))
            {
                t.warned_at = Some(Instant::now());
                tracing::warn!(
                    max_connections = self.max,
                    "at the connection cap: closing the oldest connections that never carried \
                     a live session (logged at most once a minute)"
                );
            }
            if t.shedding >= SHED_BACKLOG {
                return Admission::Wait;
            }
            let unproven = |c: &Conn| !c.proven.load(Ordering::Relaxed);
            let idle = |c: &Conn| c.activity().busy == 0;
            let victim = pick_victim(&t.open, |c| unproven(c) && idle(c), 0)
                .or_else(|| pick_victim(&t.open, unproven, 0))
                // One address holding many signed-in connections gives up
                // an idle one before anyone is refused.
                .or_else(|| pick_victim(&t.open, |c| !unproven(c) && idle(c), self.max / 8));
            let Some(victim) = victim else {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Admission::Refused;
            };
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            victim.shed.store(true, Ordering::Relaxed);
            victim.close.notify_one();
            t.shedding += 1;
        }
        let id = t.next_id;
        t.next_id += 1;
        let conn = Arc::new(Conn {
            accepted: Instant::now(),
            peer,
            proven: AtomicBool::new(false),
            activity: Mutex::new(Activity::default()),
            shed: AtomicBool::new(false),
            close: Notify::new(),
            upstream: self.upstream.clone(),
        });
        t.open.insert(id, conn.clone());
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Admission::Admitted(Slot {
            registry: self.clone(),
            id,
            conn,
        })
    }
}

/// How many of the oldest eligible connections [`pick_victim`] looks at:
/// shedding stays cheap at a cap of hundreds of thousands.
const SHED_WINDOW: usize = 256;

/// Where a connection comes from, for shedding: its IPv4 address, or its
/// IPv6 /64 (one host usually holds a whole /64).
fn origin_of(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

/// Among the oldest [`SHED_WINDOW`] open connections that `eligible`
/// accepts (and are not already being shed), the oldest of the origin that
/// holds more of them than the average (and more than one; with a floor,
/// any origin holding more than `floor`); with no such origin and no
/// floor, the oldest.
fn pick_victim(
    open: &BTreeMap<u64, Arc<Conn>>,
    eligible: impl Fn(&Conn) -> bool,
    floor: usize,
) -> Option<Arc<Conn>> {
    let window: Vec<&Arc<Conn>> = open
        .values()
        .filter(|c| !c.shed.load(Ordering::Relaxed) && eligible(c))
        .take(SHED_WINDOW)
        .collect();
    let mut counts: std::collections::HashMap<u128, usize> = std::collections::HashMap::new();
    for c in &window {
        *counts.entry(origin_of(c.peer)).or_default() += 1;
    }
    let (&heaviest, &most) = counts.iter().max_by_key(|(_, n)| **n)?;
    // With a floor, an address over it is over its share even when it is
    // the only one (one account's sockets filling the cap).
    let clearly = most > floor && most > 1 && (floor > 0 || most * counts.len() > window.len());
    if clearly {
        window
            .into_iter()
            .find(|c| origin_of(c.peer) == heaviest)
            .cloned()
    } else if floor == 0 {
        // `open` is ordered by id, so the first is the oldest.
        window.first().map(|c| (*c).clone())
    } else {
        None
    }
}

/// A request in progress on a connection, from its headers until its
/// response body is done or dropped.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: &Arc<Conn>) -> Self {
        let mut a = conn.activity();
        a.busy += 1;
        a.progress = Some(Instant::now());
        drop(a);
        Self(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.busy -= 1;
        a.last_end = Some(Instant::now());
    }
}

/// A response body that keeps its request counted as in progress.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this._busy.0.activity().progress = Some(Instant::now());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    stats
        .max
        .store(limits.max_connections as u64, Ordering::Relaxed);
    let registry = Arc::new(Registry {
        max: limits.max_connections,
        upstream: UpstreamSlots::new(limits.max_connections),
        table: Mutex::default(),
        stats,
        released: Notify::new(),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let slot = loop {
            match registry.admit(peer.ip().to_canonical()) {
                Admission::Admitted(slot) => break Some(slot),
                Admission::Refused => break None,
                // New connections wait in the kernel's queue meanwhile.
                Admission::Wait => {
                    let released = registry.released.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(100), released).await;
                }
            }
        };
        let Some(slot) = slot else {
            tracing::debug!(%peer, "connection refused: at the cap, and no connection can be shed");
            continue;
        };
        // Shared with an upgraded connection's tunnel, which outlives this
        // task: the connection counts until both are done.
        let slot = Arc::new(slot);
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let deadline = slot.conn.accepted + limits.client_timeout;
            match tls {
                None => serve_http(TokioIo::new(stream), peer, app, limits, &slot).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    let tls_stream = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                slot.registry.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        },
                        () = slot.conn.close.notified() => return,
                    };
                    serve_http(TokioIo::new(tls_stream), peer, app, limits, &slot).await;
                }
            }
            drop(slot);
        });
    }
}

/// Serves HTTP/1 or HTTP/2 on one connection until the client closes it,
/// it stays idle past its deadline, or the registry sheds it.
async fn serve_http<I>(io: TokioIo<I>, peer: SocketAddr, app: App, limits: Limits, slot: &Arc<Slot>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = &slot.conn;
    let on_request = conn.clone();
    let held = OpenConnection(slot.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        if req.headers().contains_key(hyper::header::UPGRADE) {
            req.extensions_mut().insert(held.clone());
        }
        let busy = Busy::start(&on_request);
        let response = CONNECTION.scope(on_request.clone(), app.clone().oneshot(req));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| Tracked { inner, _busy: busy }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No header-read timer of hyper's: it would cost a timer (an allocation
    // and a timer-wheel entry) per request. The loop below bounds the same
    // thing: while no request is in progress, a connection has until
    // `idle_deadline` (the client timeout before its first request, the
    // keep-alive timeout after one), and headers that trickle in keep it
    // idle (docs/security.md, "client input is hostile").
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    let served = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let mut wake = conn.accepted + limits.client_timeout;
    let why = loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                match conn.idle_deadline(&limits) {
                    Some(deadline) if deadline <= now => {
                        slot.registry.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        break "idle past its deadline";
                    }
                    Some(deadline) => wake = deadline,
                    None => {
                        // A response nobody reads (or an upstream that went
                        // quiet) must not hold the connection for ever.
                        let progress = conn.activity().progress.unwrap_or(conn.accepted);
                        if progress + STALL_TIMEOUT <= now {
                            slot.registry.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                            break "no progress on its requests";
                        }
                        wake = (progress + STALL_TIMEOUT).min(now + limits.keepalive_timeout);
                    }
                }
            }
            () = conn.close.notified() => break "shed to make room for another connection",
        }
    };
    tracing::debug!(%peer, "closing a connection: {why}");
    // One that is shed goes at once: its descriptor is wanted now. One that
    // never carried a request has nothing to finish. An idle one that did
    // gets HTTP/2's GOAWAY, in case a request is on its way.
    if !conn.shed.load(Ordering::Relaxed) && conn.ever_used() {
        served.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max,
            upstream: UpstreamSlots::new(max),
            table: Mutex::default(),
            stats: Arc::default(),
            released: Notify::new(),
        })
    }

    fn admit(r: &Arc<Registry>) -> Slot {
        admit_from(r, [192, 0, 2, 1])
    }

    fn admit_from(r: &Arc<Registry>, ip: [u8; 4]) -> Slot {
        match r.admit(std::net::IpAddr::from(ip)) {
            Admission::Admitted(slot) => slot,
            _ => panic!("not admitted"),
        }
    }

    fn shed(slot: &Slot) -> bool {
        slot.conn.shed.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn at_the_cap_an_unproven_connection_makes_room_idle_ones_first() {
        let r = registry(3);
        let proven = admit(&r);
        proven.conn.proven.store(true, Ordering::Relaxed);
        let busy = admit(&r);
        let _request = Busy::start(&busy.conn);
        let idle = admit(&r);
        // Full: an idle unproven one goes first (the oldest); never the
        // proven one.
        let a = admit(&r);
        assert!(shed(&idle) && !shed(&busy) && !shed(&proven) && !shed(&a));
        let b = admit(&r);
        assert!(shed(&a) && !shed(&busy) && !shed(&b));
        drop(idle);
        drop(a);
        assert_eq!(r.lock().open.len(), 3);
        assert_eq!(r.lock().shedding, 0);
        // No idle unproven one left but the newest: still idle ones first.
        let c = admit(&r);
        assert!(shed(&b) && !shed(&busy) && !shed(&c));
        drop(b);
        // Only busy ones left to choose from: the busy unproven one goes.
        let _c_request = Busy::start(&c.conn);
        let d = admit(&r);
        assert!(shed(&busy) && !shed(&c) && !shed(&d) && !shed(&proven));
        drop(busy);
        // Only proven connections left, each in a request: the newcomer is
        // refused.
        c.conn.proven.store(true, Ordering::Relaxed);
        d.conn.proven.store(true, Ordering::Relaxed);
        let _requests = [&proven, &d].map(|slot| Busy::start(&slot.conn));
        assert!(matches!(
            r.admit(std::net::IpAddr::from([192, 0, 2, 1])),
            Admission::Refused
        ));
        drop(c);
        admit(&r); // room again once one closes
        let stats = &r.stats;
        assert_eq!(stats.shed.load(Ordering::Relaxed), 4);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.open.load(Ordering::Relaxed),
            r.lock().open.len() as u64
        );
    }

    #[tokio::test]
    async fn a_flooding_address_sheds_its_own_connections_first() {
        let r = registry(4);
        let honest = admit_from(&r, [198, 51, 100, 7]);
        let flood: Vec<Slot> = (0..3).map(|_| admit_from(&r, [203, 0, 113, 9])).collect();
        // Younger than the honest one, but its address holds the most.
        let more: Vec<Slot> = (0..5).map(|_| admit_from(&r, [203, 0, 113, 9])).collect();
        assert!(!shed(&honest), "the flood shed the honest connection");
        assert!(flood.iter().all(shed));
        assert!(more[..2].iter().all(shed) && !more[2..].iter().any(shed));
        // A newcomer from the honest address sheds a flood connection too.
        let second = admit_from(&r, [198, 51, 100, 7]);
        assert!(!shed(&honest) && !shed(&second));
    }

    #[tokio::test]
    async fn idle_proven_connections_make_room_before_anyone_is_refused() {
        let r = registry(2);
        let heavy: Vec<Slot> = (0..2).map(|_| admit_from(&r, [203, 0, 113, 9])).collect();
        for slot in &heavy {
            slot.conn.proven.store(true, Ordering::Relaxed);
        }
        let _request = Busy::start(&heavy[0].conn);
        // The idle proven one goes, never the one in a request.
        let newcomer = admit_from(&r, [198, 51, 100, 7]);
        assert!(!shed(&heavy[0]) && shed(&heavy[1]) && !shed(&newcomer));
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_slots_are_bounded_and_half_are_for_signed_in_requests() {
        let slots = UpstreamSlots::new(4);
        let a = slots.acquire(false).await.unwrap();
        let b = slots.acquire(false).await.unwrap();
        // Anonymous requests have had their half; signed-in ones still get in.
        let started = Instant::now();
        assert!(slots.acquire(false).await.is_none());
        assert!(started.elapsed() >= UPSTREAM_SLOT_WAIT);
        let c = slots.acquire(true).await.unwrap();
        let d = slots.acquire(true).await.unwrap();
        assert!(slots.acquire(true).await.is_none(), "all four are taken");
        drop((a, c));
        assert!(slots.acquire(false).await.is_some());
        drop((b, d));
    }

    #[tokio::test]
    async fn accepting_waits_while_too_many_connections_are_closing() {
        let r = registry(1);
        let mut held = vec![admit(&r)];
        for _ in 0..SHED_BACKLOG {
            held.push(admit(&r));
        }
        assert_eq!(r.lock().shedding, SHED_BACKLOG);
        assert!(matches!(
            r.admit(std::net::IpAddr::from([192, 0, 2, 1])),
            Admission::Wait
        ));
        drop(held.remove(0));
        // The accept loop is woken, and there is room to shed again.
        tokio::time::timeout(Duration::from_secs(1), r.released.notified())
            .await
            .unwrap();
        admit(&r);
    }

    #[tokio::test]
    async fn a_live_session_proves_only_its_own_connection() {
        let r = registry(10);
        let (one, two) = (admit(&r), admit(&r));
        CONNECTION
            .scope(one.conn.clone(), async { note_live_session() })
            .await;
        note_live_session(); // outside any request: nothing to mark
        assert!(one.conn.proven.load(Ordering::Relaxed));
        assert!(!two.conn.proven.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn idle_deadlines_follow_the_phase() {
        let limits = Limits {
            client_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 1,
        };
        let r = registry(1);
        let slot = admit(&r);
        let conn = &slot.conn;
        assert_eq!(
            conn.idle_deadline(&limits),
            Some(conn.accepted + limits.client_timeout)
        );
        let request = Busy::start(conn);
        assert_eq!(conn.idle_deadline(&limits), None, "no deadline mid-request");
        drop(request);
        let after = conn.idle_deadline(&limits).unwrap();
        assert!(after >= conn.accepted + limits.keepalive_timeout);
        assert!(conn.ever_used());
    }
}
