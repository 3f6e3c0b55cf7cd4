//! A shared store on Redis or Valkey (7.0 or later), with the revocation
//! bus on the same server.
//!
//! # Key layout
//!
//! `<p>` is the configured prefix (default `signoff`). User ids and names
//! are arbitrary text, so they appear in keys only as unpadded base64url
//! (`<uid>`, `<name>`); handles are base64url already, digests lowercase hex.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `<p>:s:{u:<uid>}:<handle>` | hash | a signed-in user's session record |
//! | `<p>:s:{a:<handle>}:<handle>` | hash | an anonymous session record |
//! | `<p>:u:{u:<uid>}` | set | the user's session record keys |
//! | `<p>:d:<digest hex>` | string | digest → record key (a hint) |
//! | `<p>:h:<handle>` | string | handle → record key (a hint) |
//! | `<p>:r:<digest hex>` | string | rotated-away digest → handle, for logout |
//! | `<p>:deadlines` | sorted set | record key, scored by its deadline (a hint) |
//! | `<p>:user:{<uid>}` | hash | a user account |
//! | `<p>:username:<name>` | string | login name → user id (uniqueness) |
//! | `<p>:users` | set | every user id |
//! | `<p>:audit` | sorted set | audit events as JSON, scored by `at` |
//! | `<p>:audit:seq` | string | the audit sequence counter |
//!
//! A record hash has the fields `id` (the current digest), `handle`,
//! `user`, `created_at`, `last_seen_at`, `auth_at`, `expires_at`,
//! `idle_ms`, `user_agent`, `ip`, `data` (JSON) and `generation`; optional
//! fields are absent when `None`.
//!
//! # Why it is correct, and safe on Redis Cluster
//!
//! Every conditional write is one Lua script that touches only keys with the
//! same hash tag: a session record and its user's index share the tag
//! `{u:<uid>}` (an anonymous record has its own tag and no index). The
//! script checks the record's own `id` field (and `generation` where it
//! matters) and applies the write in the same step, so two racing writes
//! are ordered by the server and a write racing with a removal finds
//! nothing. `end_for_user` reads the record keys from the user's index
//! inside its script; they all carry the index's hash tag, so they live in
//! its slot.
//!
//! The digest, handle and deadline keys live in other slots, so they are
//! only hints, written outside the scripts: new pointers before the
//! record write, stale ones deleted after it. Every read and write looks the
//! record up through a pointer and then checks the record's own `id` (or
//! `handle`), so a stale pointer can never make a rotated or removed digest
//! valid again. Purge reads due members of the deadline index and removes
//! each through the same conditional script as `remove_expired`, repairing
//! index entries it finds stale; each record is deleted by exactly one
//! caller, and only that caller reports it.
//!
//! A rotation first writes the old digest's successor pointer
//! (`<p>:r:<digest hex>`, `SET NX`), so no rotation commits without it.
//! It holds a handle only: logout follows it to end the session, and no
//! read ever accepts the old digest through it.
//!
//! Every script that removes a record or changes its `id`, `data`,
//! `generation` or `auth_at` also `PUBLISH`es the old digest's hex on
//! `<p>:revoked`, so no such write commits without its announcement
//! ([`crate::revocation`]). Touching does not publish.
//!
//! # Time
//!
//! The store never decides expiry by Redis's clock: callers pass `now`.
//! Records and pointers also get a native expiry at `expires_at` plus one
//! day, only so that Redis collects what nobody purges; the margin absorbs
//! a difference between the application's and Redis's clocks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script, ServerErrorKind};

use super::StoreError;
use crate::revocation::invalidation_payload;
use crate::session::UserId;
use crate::session_token::{SessionHandle, SessionId};

#[cfg(feature = "audit")]
mod audit;
mod bus;
mod sessions;
mod state;
#[cfg(feature = "accounts")]
mod users;

/// Native expiry beyond a session's own `expires_at`, in milliseconds.
const TTL_MARGIN_MS: i64 = 24 * 3600 * 1000;

/// Most rounds of one purge call (each round reads one batch of due keys).
const PURGE_ROUNDS: usize = 64;

/// Options for [`RedisStore::connect_with`].
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// A `redis://` or `rediss://` URL, e.g. `redis://:secret@127.0.0.1:6379/0`.
    pub url: String,
    /// Prepended to every key and to the channel: `[A-Za-z0-9_.:-]{1,64}`.
    /// Default `signoff`. Deployments sharing a server use different ones.
    pub prefix: String,
    /// How long to wait for a connection before reporting the store
    /// unavailable. Default 5 s.
    pub connect_timeout: Duration,
    /// How long to wait for a reply before reporting the store
    /// unavailable. Default 2 s.
    pub response_timeout: Duration,
}

impl RedisOptions {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "signoff".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &super::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An error of this module's own making.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Plain(String);

fn plain(message: impl Into<String>) -> Box<Plain> {
    Box::new(Plain(message.into()))
}

/// Maps a client error onto what callers need to know: retry later
/// (unavailable) or a real failure.
fn store_error(e: RedisError) -> StoreError {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Io
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if unavailable {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// The Lua scripts, each in `scripts/`. Those that need a record's deadline
/// get `scripts/deadline.lua` in front.
// The user scripts and keys serve the `accounts` feature.
#[cfg_attr(not(feature = "accounts"), allow(dead_code))]
struct Scripts {
    put_state: Script,
    insert: Script,
    touch: Script,
    update_data: Script,
    rotate: Script,
    remove: Script,
    remove_by_handle: Script,
    remove_if_due: Script,
    end_for_user: Script,
    create_hash: Script,
    set_if_exists: Script,
    replace_password: Script,
    replace_groups: Script,
    delete_if: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            put_state: Script::new(include_str!("scripts/put_state.lua")),
            insert: Script::new(include_str!("scripts/insert.lua")),
            touch: Script::new(concat!(
                include_str!("scripts/deadline.lua"),
                include_str!("scripts/touch.lua")
            )),
            update_data: Script::new(include_str!("scripts/update_data.lua")),
            rotate: Script::new(include_str!("scripts/rotate.lua")),
            remove: Script::new(include_str!("scripts/remove.lua")),
            remove_by_handle: Script::new(include_str!("scripts/remove_by_handle.lua")),
            remove_if_due: Script::new(concat!(
                include_str!("scripts/deadline.lua"),
                include_str!("scripts/remove_if_due.lua")
            )),
            end_for_user: Script::new(include_str!("scripts/end_for_user.lua")),
            create_hash: Script::new(include_str!("scripts/create_hash.lua")),
            set_if_exists: Script::new(include_str!("scripts/set_if_exists.lua")),
            replace_password: Script::new(include_str!("scripts/replace_password.lua")),
            replace_groups: Script::new(include_str!("scripts/replace_groups.lua")),
            delete_if: Script::new(include_str!("scripts/delete_if.lua")),
        }
    }
}

// ---- The store -------------------------------------------------------------

struct Inner {
    client: Client,
    manager: ConnectionManager,
    options: RedisOptions,
    channel: String,
    scripts: Scripts,
}

/// Sessions, users, audit events and the revocation bus on one Redis or
/// Valkey server. Cheap to clone; clones share the connection.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use signoff::{Policy, RedisStore, Sessions};
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await.unwrap();
/// let sessions = Sessions::new(Arc::new(store), Policy::default());
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.inner.options)
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server at `url` with default options.
    ///
    /// # Errors
    /// As [`RedisStore::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(RedisOptions::new(url)).await
    }

    /// Connects with the given options. The connection reconnects by
    /// itself; while the server is away, operations fail with
    /// [`StoreError::Unavailable`] within the timeouts.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a malformed URL or prefix,
    /// [`StoreError::Unavailable`] if the server cannot be reached.
    pub async fn connect_with(options: RedisOptions) -> Result<Self, StoreError> {
        if !valid_prefix(&options.prefix) {
            return Err(StoreError::Backend(plain(
                "the Redis key prefix must be 1 to 64 characters from A-Z a-z 0-9 _ . : -",
            )));
        }
        let client = Client::open(options.url.as_str()).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            // Fail fast while the server is down: each command tries one
            // reconnect, and the caller answers 503 at once rather than
            // after a backoff (the next command tries again).
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_millis(100));
        let manager = tokio::time::timeout(
            options.connect_timeout + options.response_timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| StoreError::Unavailable(plain("connecting to Redis timed out")))?
        .map_err(store_error)?;
        let channel = format!("{}:revoked", options.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager,
                options,
                channel,
                scripts: Scripts::new(),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.options.prefix
    }

    /// The pub/sub channel revocations are announced on: `<prefix>:revoked`.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// What in the server's configuration can undo a logout, in words for
    /// the operator's log. Empty when nothing was found, or when the server
    /// does not allow `CONFIG GET` (as some managed services do; then
    /// check their settings by hand):
    ///
    /// - without AOF (`appendonly no`), a restart loses every session or
    ///   brings back an old snapshot, in which sessions ended since are alive
    ///   again; `appendfsync everysec` can lose the last second of logouts;
    /// - an eviction policy other than `noeviction` may drop a user's index
    ///   of sessions, and "sign out everywhere" would then miss some.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached.
    pub async fn deployment_warnings(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut warnings = Vec::new();
        let get = |name: &'static str| {
            let mut conn = conn.clone();
            async move {
                let pair: Result<Vec<String>, _> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut conn)
                    .await;
                pair.map(|p| p.get(1).cloned())
            }
        };
        let appendonly = match get("appendonly").await {
            Ok(v) => v,
            Err(e) => match store_error(e) {
                StoreError::Unavailable(e) => return Err(StoreError::Unavailable(e)),
                _ => return Ok(warnings),
            },
        };
        if appendonly.as_deref() == Some("no") {
            warnings.push(
                "Redis runs without AOF (appendonly no): a restart loses every session, or \
                 restores a snapshot in which sessions ended since are alive again; \
                 set appendonly yes with appendfsync always"
                    .to_owned(),
            );
        } else if let Ok(Some(fsync)) = get("appendfsync").await {
            if fsync != "always" {
                warnings.push(format!(
                    "Redis appendfsync is {fsync}: a crash can lose the last writes, \
                     including logouts, which would then be undone; appendfsync always keeps them"
                ));
            }
        }
        if let Ok(Some(policy)) = get("maxmemory-policy").await {
            if policy != "noeviction" {
                warnings.push(format!(
                    "Redis maxmemory-policy is {policy}: evicting a user's session index would \
                     make \"sign out everywhere\" miss sessions; set maxmemory-policy noeviction"
                ));
            }
        }
        Ok(warnings)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.manager.clone()
    }

    fn p(&self) -> &str {
        &self.inner.options.prefix
    }

    // -- keys --

    fn state_key(&self, name: &str) -> String {
        format!("{}:state:{}", self.p(), encode(name))
    }

    fn record_key(&self, handle: &SessionHandle, user: Option<&UserId>) -> String {
        match user {
            Some(u) => format!("{}:s:{{u:{}}}:{handle}", self.p(), encode(u.as_str())),
            None => format!("{}:s:{{a:{handle}}}:{handle}", self.p()),
        }
    }

    fn user_index_key(&self, user: &UserId) -> String {
        format!("{}:u:{{u:{}}}", self.p(), encode(user.as_str()))
    }

    fn digest_key(&self, id: &SessionId) -> String {
        format!("{}:d:{}", self.p(), digest_hex(id))
    }

    fn rotated_key(&self, id: &SessionId) -> String {
        format!("{}:r:{}", self.p(), digest_hex(id))
    }

    fn handle_key(&self, handle: &SessionHandle) -> String {
        format!("{}:h:{handle}", self.p())
    }

    fn deadlines_key(&self) -> String {
        format!("{}:deadlines", self.p())
    }

    #[cfg(any(feature = "accounts", feature = "audit"))]
    fn user_key(&self, id: &UserId) -> String {
        format!("{}:user:{{{}}}", self.p(), encode(id.as_str()))
    }

    #[cfg(feature = "accounts")]
    fn username_key(&self, name: &str) -> String {
        format!("{}:username:{}", self.p(), encode(name))
    }

    #[cfg(feature = "accounts")]
    fn users_key(&self) -> String {
        format!("{}:users", self.p())
    }

    #[cfg(feature = "audit")]
    fn audit_key(&self) -> String {
        format!("{}:audit", self.p())
    }

    #[cfg(feature = "audit")]
    fn audit_seq_key(&self) -> String {
        format!("{}:audit:seq", self.p())
    }

    /// Checks that a key read back from a pointer or index is a record key
    /// of this prefix, and returns the user index key of its hash tag (if
    /// the record is a signed-in user's).
    fn index_of(&self, record_key: &str) -> Result<Option<String>, StoreError> {
        let corrupt = StoreError::Corrupt("session pointer holds no record key");
        let rest = record_key
            .strip_prefix(self.p())
            .and_then(|r| r.strip_prefix(":s:{"))
            .ok_or(StoreError::Corrupt("session pointer holds no record key"))?;
        let tag_end = rest.find('}').ok_or(corrupt)?;
        let tag = &rest[..tag_end];
        Ok(tag
            .strip_prefix("u:")
            .map(|user| format!("{}:u:{{u:{user}}}", self.p())))
    }

    // -- helpers --

    async fn get_pointer(&self, key: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)
    }

    /// Deletes hint keys; failures only leave stale hints, which every
    /// reader tolerates, so they are logged, not returned.
    async fn forget(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let done: Result<(), RedisError> = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "could not delete stale Redis session pointers");
        }
    }
}

/// The digest as the bus announces it: lowercase hex.
fn digest_hex(id: &SessionId) -> String {
    invalidation_payload(id)
}

fn encode(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

fn parse_digest(text: &str) -> Option<SessionId> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId::from_digest(digest))
}

/// A record's fields read back, as text.
struct Fields(HashMap<String, Vec<u8>>);

impl Fields {
    fn text(&self, name: &'static str) -> Result<Option<String>, StoreError> {
        self.0
            .get(name)
            .map(|v| String::from_utf8(v.clone()).map_err(|_| StoreError::Corrupt(name)))
            .transpose()
    }

    fn required(&self, name: &'static str) -> Result<String, StoreError> {
        self.text(name)?.ok_or(StoreError::Corrupt(name))
    }

    fn int(&self, name: &'static str) -> Result<i64, StoreError> {
        self.required(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::super::redact_url("redis://:hunter2@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            super::super::redact_url("rediss://bob:hunter2@host/"),
            "rediss://bob:***@host/"
        );
        assert_eq!(
            super::super::redact_url("redis://host:6379"),
            "redis://host:6379"
        );
        // A key spelled with percent escapes is the same key to drivers.
        for url in [
            "postgres://u@h/db?pass%77ord=s3cret",
            "postgres://u@h/db?sslmode=require&PASSWORD=s3cret",
            "postgres://u@h/db?%70%61%73%73%77%6f%72%64=s3cret#x",
        ] {
            let shown = super::super::redact_url(url);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            super::super::redact_url("postgres://u@h/db?pass%7=a%"),
            "postgres://u@h/db?pass%7=a%"
        );
        let shown = format!("{:?}", RedisOptions::new("redis://u:p4ss@h"));
        assert!(!shown.contains("p4ss"), "{shown}");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("signoff"));
        assert!(valid_prefix("a.b:c-d_e"));
        for bad in ["", "a{b", "a}b", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn digests_parse_strictly() {
        let id = SessionId::from_digest([0xab; 32]);
        assert_eq!(parse_digest(&digest_hex(&id)), Some(id));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"é".repeat(32)), None);
    }
}
