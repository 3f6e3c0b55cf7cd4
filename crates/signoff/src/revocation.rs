//! The revocation bus: how a logout on one node reaches every other node's
//! cache.
//!
//! Every node keeps a [`CachedStore`](crate::CachedStore). A store
//! announces each session it ends, rotates or changes, as part of the same
//! write (a `PUBLISH` inside the Lua script on Redis, a `pg_notify` from a
//! trigger in the same transaction on PostgreSQL, a row a trigger appends
//! to a change log that each process polls on SQLite), so no write can
//! commit without its announcement. Every node subscribes and drops the
//! named session from its cache.
//!
//! A node that cannot be sure it hears every announcement in time stops
//! trusting its cache: [`run`] marks the cache untrusted (every load reads
//! the store) whenever the subscription is down, when nothing at all has
//! been heard for [`BusOptions::silence_limit`] although every node sends
//! a heartbeat each [`BusOptions::heartbeat_interval`], and when this
//! node's own heartbeat takes longer than the silence limit to come back
//! (the listener has fallen behind, so announcements arrive late). Once
//! subscribed again it empties the cache and trusts it again, so an
//! announcement missed while away cannot leave a dead session cached.
//!
//! A node's [`SessionWatch`](crate::SessionWatch) listens the same way
//! (it is a [`CacheControl`]; [`Fanout`] feeds both from one bus): an
//! announcement makes the open connections of that session check it, and
//! an untrusted bus makes them poll the store.
//!
//! Messages are short text: the lowercase hex of a session digest (never a
//! token), `u:` and the hex of a user id (all of that user's sessions
//! ended, as one write: [`crate::SessionStore::end_for_user`]), `*` (forget
//! everything, e.g. after a `TRUNCATE`), or a heartbeat
//! `hb:<node>:<sequence>`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::session::UserId;
use crate::session_token::SessionId;
use crate::store::StoreError;

/// What a node's cache must offer the bus.
pub trait CacheControl: Send + Sync + 'static {
    /// Forget one session.
    fn invalidate(&self, id: &SessionId);
    /// Forget every session.
    fn invalidate_all(&self);
    /// Forget every session of `user` (they all ended). The default
    /// forgets every session, which is always safe.
    fn invalidate_user(&self, user: &UserId) {
        let _ = user;
        self.invalidate_all();
    }
    /// Serve from the cache (`true`) or read the store on every load.
    fn set_trusted(&self, trusted: bool);
}

/// Several listeners on one bus, for example a node's
/// [`CachedStore`](crate::CachedStore) and its
/// [`SessionWatch`](crate::SessionWatch): each hears every call.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use signoff::revocation::{CacheControl, Fanout};
/// use signoff::{CachedStore, MemoryStore, Policy, SessionWatch, SystemClock, WatchOptions};
///
/// let store = Arc::new(MemoryStore::new());
/// let cache = Arc::new(CachedStore::new(store.clone()));
/// let watch = SessionWatch::new(store, Policy::default(), Arc::new(SystemClock), WatchOptions::default());
/// let listeners = Arc::new(Fanout::new(vec![cache, Arc::new(watch)]));
/// // signoff::revocation::run(bus, listeners, BusOptions::default());
/// # let _ = listeners;
/// # }
/// ```
pub struct Fanout(Vec<Arc<dyn CacheControl>>);

impl Fanout {
    /// Every call goes to each of `listeners`, in order.
    pub fn new(listeners: Vec<Arc<dyn CacheControl>>) -> Self {
        Self(listeners)
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("listeners", &self.0.len())
            .finish()
    }
}

impl CacheControl for Fanout {
    fn invalidate(&self, id: &SessionId) {
        self.0.iter().for_each(|l| l.invalidate(id));
    }
    fn invalidate_all(&self) {
        self.0.iter().for_each(|l| l.invalidate_all());
    }
    fn invalidate_user(&self, user: &UserId) {
        self.0.iter().for_each(|l| l.invalidate_user(user));
    }
    fn set_trusted(&self, trusted: bool) {
        self.0.iter().for_each(|l| l.set_trusted(trusted));
    }
}

/// An open subscription to the bus.
#[async_trait]
pub trait BusSubscription: Send {
    /// The next message's payload. An error means the subscription is lost.
    async fn next(&mut self) -> Result<String, StoreError>;
}

/// A publish/subscribe channel shared by every node of one deployment.
#[async_trait]
pub trait RevocationBus: Send + Sync + 'static {
    /// Subscribes; returns only once the subscription is active, so that
    /// every message published after the return is delivered.
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError>;
    /// Publishes `payload` to every subscriber.
    async fn publish(&self, payload: &str) -> Result<(), StoreError>;
}

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// Forget this session.
    Invalidate(SessionId),
    /// Forget every session of this user.
    EndUser(UserId),
    /// Forget every session.
    InvalidateAll,
    /// A node's heartbeat.
    Heartbeat {
        /// The sending node's random id.
        node: u64,
        /// Its sequence number.
        seq: u64,
    },
}

/// The payload that announces a change to session `id`.
pub fn invalidation_payload(id: &SessionId) -> String {
    hex(id.as_bytes())
}

/// The payload that announces the end of every session of `user`.
pub fn user_end_payload(user: &UserId) -> String {
    format!("u:{}", hex(user.as_str().as_bytes()))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses a payload; `None` for anything malformed (ignored, counted).
pub fn parse(payload: &str) -> Option<BusMessage> {
    if payload == "*" {
        return Some(BusMessage::InvalidateAll);
    }
    if let Some(rest) = payload.strip_prefix("hb:") {
        let (node, seq) = rest.split_once(':')?;
        return Some(BusMessage::Heartbeat {
            node: node.parse().ok()?,
            seq: seq.parse().ok()?,
        });
    }
    if let Some(rest) = payload.strip_prefix("u:") {
        let bytes = unhex(rest)?;
        return Some(BusMessage::EndUser(UserId::new(
            String::from_utf8(bytes).ok()?,
        )));
    }
    if payload.len() != 64 {
        return None;
    }
    let digest: [u8; 32] = unhex(payload)?.try_into().ok()?;
    Some(BusMessage::Invalidate(SessionId::from_digest(digest)))
}

/// Bytes from lowercase (or uppercase) hex; `None` unless it is hex of
/// whole bytes.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Options for [`run`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BusOptions {
    /// How often this node publishes a heartbeat. Default 200 ms.
    pub heartbeat_interval: Duration,
    /// With nothing heard for this long (not even this node's own
    /// heartbeat), the subscription is treated as lost. Default 1 s.
    pub silence_limit: Duration,
    /// Wait before resubscribing after a failure; doubles up to 2 s.
    pub retry_initial: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            silence_limit: Duration::from_secs(1),
            retry_initial: Duration::from_millis(50),
        }
    }
}

/// Counters a metrics endpoint can read.
#[derive(Debug, Default)]
pub struct BusStats {
    connected: AtomicBool,
    invalidations: AtomicU64,
    heartbeats: AtomicU64,
    malformed: AtomicU64,
    losses: AtomicU64,
    publish_errors: AtomicU64,
    /// Round trip of this node's last own heartbeat, in microseconds.
    last_lag_us: AtomicU64,
    max_lag_us: AtomicU64,
}

impl BusStats {
    /// Whether the subscription is up and the cache is trusted.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Invalidations applied.
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Relaxed)
    }
    /// Heartbeats heard (from any node).
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }
    /// Payloads that were neither.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
    /// Times the subscription was lost (or never came up).
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }
    /// Heartbeats that could not be published.
    pub fn publish_errors(&self) -> u64 {
        self.publish_errors.load(Ordering::Relaxed)
    }
    /// Publish-to-delivery time of this node's latest own heartbeat.
    pub fn last_lag(&self) -> Duration {
        Duration::from_micros(self.last_lag_us.load(Ordering::Relaxed))
    }
    /// The largest such time seen.
    pub fn max_lag(&self) -> Duration {
        Duration::from_micros(self.max_lag_us.load(Ordering::Relaxed))
    }
}

/// The running bus tasks; dropping it stops them and leaves the cache
/// untrusted.
pub struct BusHandle {
    stats: Arc<BusStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cache: Arc<dyn CacheControl>,
}

impl fmt::Debug for BusHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusHandle")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl BusHandle {
    /// The bus's counters.
    pub fn stats(&self) -> &Arc<BusStats> {
        &self.stats
    }
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.cache.set_trusted(false);
        self.stats.connected.store(false, Ordering::Relaxed);
    }
}

/// Heartbeats this node sent and has not heard back yet: sequence → when.
type Pending = Arc<Mutex<std::collections::VecDeque<(u64, Instant)>>>;

/// Starts listening on `bus` for `cache`, and heartbeating. The cache is
/// untrusted until the first subscription is active. Needs a Tokio runtime.
pub fn run(
    bus: Arc<dyn RevocationBus>,
    cache: Arc<dyn CacheControl>,
    options: BusOptions,
) -> BusHandle {
    cache.set_trusted(false);
    let mut options = options;
    options.heartbeat_interval = options.heartbeat_interval.max(Duration::from_millis(1));
    options.silence_limit = options.silence_limit.max(options.heartbeat_interval * 2);
    let stats = Arc::new(BusStats::default());
    let node: u64 = rand::random();
    let pending: Pending = Arc::default();
    let listener = tokio::spawn(listen(
        bus.clone(),
        cache.clone(),
        options,
        stats.clone(),
        node,
        pending.clone(),
    ));
    let beater = tokio::spawn(heartbeat(bus, options, stats.clone(), node, pending));
    BusHandle {
        stats,
        tasks: vec![listener, beater],
        cache,
    }
}

async fn heartbeat(
    bus: Arc<dyn RevocationBus>,
    options: BusOptions,
    stats: Arc<BusStats>,
    node: u64,
    pending: Pending,
) {
    let mut ticker = tokio::time::interval(options.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0u64.. {
        ticker.tick().await;
        {
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.push_back((seq, Instant::now()));
            // Forget heartbeats long lost; the list stays short.
            while pending.len() > 64 {
                pending.pop_front();
            }
        }
        let payload = format!("hb:{node}:{seq}");
        let publish = bus.publish(&payload);
        match tokio::time::timeout(options.silence_limit, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "revocation bus heartbeat not published");
            }
            Err(_) => {
                stats.publish_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn listen(
    bus: Arc<dyn RevocationBus>,
    cache: Arc<dyn CacheControl>,
    options: BusOptions,
    stats: Arc<BusStats>,
    node: u64,
    pending: Pending,
) {
    // However this task ends (dropped, aborted, panicking), the cache is
    // left untrusted.
    struct Untrust(Arc<dyn CacheControl>);
    impl Drop for Untrust {
        fn drop(&mut self) {
            self.0.set_trusted(false);
        }
    }
    let _untrust = Untrust(cache.clone());
    let mut backoff = options.retry_initial;
    let mut check = tokio::time::interval(options.heartbeat_interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let subscription = tokio::time::timeout(options.silence_limit * 2, bus.subscribe()).await;
        let mut subscription = match subscription {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "revocation bus: cannot subscribe; reading the store on every request");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "revocation bus: subscribing timed out; reading the store on every request"
                );
                continue;
            }
        };
        // Subscribed: anything announced from now on reaches us, and what
        // was missed before is dropped with the whole cache. Heartbeats sent
        // while away will never come back: forget them.
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        cache.invalidate_all();
        cache.set_trusted(true);
        stats.connected.store(true, Ordering::Relaxed);
        tracing::info!("revocation bus: subscribed; local session cache trusted");
        backoff = options.retry_initial;
        // The subscription is read by a task of its own, so that the
        // checks below never cancel a read halfway through a message. The
        // channel is bounded: a listener that falls behind stalls the pump,
        // its heartbeats come back late, and the check notices.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let pump = AbortOnDrop(tokio::spawn(async move {
            loop {
                let next = subscription.next().await;
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    break;
                }
            }
        }));
        let mut last_heard = Instant::now();
        let lost = loop {
            let payload = tokio::select! {
                next = rx.recv() => match next {
                    Some(Ok(payload)) => payload,
                    Some(Err(e)) => break format!("subscription lost: {e}"),
                    None => break "subscription ended".to_owned(),
                },
                _ = check.tick() => {
                    if last_heard.elapsed() > options.silence_limit {
                        break format!("nothing heard for {:?}", last_heard.elapsed());
                    }
                    if let Some(late) = oldest_unheard(&pending, options.silence_limit) {
                        break format!("own heartbeat not back after {late:?}: announcements are late");
                    }
                    continue;
                }
            };
            last_heard = Instant::now();
            match parse(&payload) {
                Some(BusMessage::Invalidate(id)) => {
                    cache.invalidate(&id);
                    stats.invalidations.fetch_add(1, Ordering::Relaxed);
                }
                Some(BusMessage::EndUser(user)) => {
                    cache.invalidate_user(&user);
                    stats.invalidations.fetch_add(1, Ordering::Relaxed);
                }
                Some(BusMessage::InvalidateAll) => {
                    cache.invalidate_all();
                    stats.invalidations.fetch_add(1, Ordering::Relaxed);
                }
                Some(BusMessage::Heartbeat { node: from, seq }) => {
                    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    if from == node {
                        own_heartbeat(&stats, &pending, seq);
                    }
                }
                None => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        cache.set_trusted(false);
        stats.connected.store(false, Ordering::Relaxed);
        stats.losses.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(reason = %lost, "revocation bus lost; reading the store on every request until resubscribed");
        drop(pump);
        tokio::time::sleep(backoff).await;
    }
}

/// Stops a task when dropped (also when the task that holds it is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the oldest heartbeat still unheard has been out, if longer
/// than `limit`.
fn oldest_unheard(pending: &Pending, limit: Duration) -> Option<Duration> {
    let pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    let age = pending.front()?.1.elapsed();
    (age > limit).then_some(age)
}

fn own_heartbeat(stats: &BusStats, pending: &Pending, seq: u64) {
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    while let Some(&(sent_seq, sent_at)) = pending.front() {
        if sent_seq > seq {
            break;
        }
        pending.pop_front();
        if sent_seq == seq {
            let lag = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.last_lag_us.store(lag, Ordering::Relaxed);
            stats.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_rejected() {
        let id = SessionId::from_digest([0xab; 32]);
        assert_eq!(
            parse(&invalidation_payload(&id)),
            Some(BusMessage::Invalidate(id))
        );
        assert_eq!(parse("*"), Some(BusMessage::InvalidateAll));
        for user in ["alice", "", "ünïcode user", "u:1"] {
            assert_eq!(
                parse(&user_end_payload(&UserId::new(user))),
                Some(BusMessage::EndUser(UserId::new(user)))
            );
        }
        assert_eq!(
            parse("hb:7:9"),
            Some(BusMessage::Heartbeat { node: 7, seq: 9 })
        );
        let accented = "é".repeat(32);
        for bad in [
            "",
            "hb:",
            "hb:x:1",
            "hb:1",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            accented.as_str(),
            "u:a",
            "u:zz",
            "u:ff",
            "u:é0",
            "u:+a",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
