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
//! nothing. `remove_for_user` reads the record keys from the user's index
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError,
    Script, ServerErrorKind, Value,
};

use super::{SessionStore, StoreError, WriteOutcome};
use crate::audit::{self, AuditEvent, AuditQuery, AuditStore};
use crate::clock::{duration_millis, Timestamp};
use crate::revocation::{invalidation_payload, BusSubscription, RevocationBus};
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::users::{User, UserStore};

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

// ---- Lua scripts ----------------------------------------------------------

/// Shared by the scripts that need a record's deadline.
macro_rules! lua_deadline {
    () => {
        "local function deadline(k)
  local f = redis.call('HMGET', k, 'last_seen_at', 'idle_ms', 'expires_at')
  local last, idle, exp = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if not last or not idle or not exp then return nil end
  return math.min(last + idle, exp)
end
"
    };
}

/// KEYS: record, [user index]. ARGV: native expiry (ms), field, value, ...
/// Returns 1 if created, 0 if the record exists.
const INSERT: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if KEYS[2] then
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[1]) then
    redis.call('PEXPIREAT', KEYS[2], ARGV[1])
  end
end
return 1
";

/// KEYS: record. ARGV: digest, at. Returns the new deadline (or -1 if it
/// cannot be computed), or nil if the record is not under this digest.
/// Never publishes.
const TOUCH: &str = concat!(
    lua_deadline!(),
    "
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return false end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen_at'))
if not last or tonumber(ARGV[2]) > last then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[2])
end
local d = deadline(KEYS[1])
if not d then return -1 end
return d
"
);

/// KEYS: record. ARGV: digest, generation, data, channel.
/// Returns 0 missing, 1 stale, 2 applied.
const UPDATE_DATA: &str = "
local f = redis.call('HMGET', KEYS[1], 'id', 'generation')
if f[1] ~= ARGV[1] then return 0 end
if f[2] ~= ARGV[2] then return 1 end
redis.call('HSET', KEYS[1], 'data', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 2
";

/// KEYS: record. ARGV: old digest, new digest, auth_at or '', channel.
/// Returns 1 if rotated, 0 if the record is not under the old digest.
const ROTATE: &str = "
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'generation', 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'auth_at', ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
";

/// KEYS: record, [user index]. ARGV: digest, channel.
/// Returns the record's fields as they were, or nil.
const REMOVE: &str = "
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return all
";

/// KEYS: record, [user index]. ARGV: handle, '1' to check the owner or
/// '0', owner, channel. Returns the record's fields as they were, or nil.
const REMOVE_BY_HANDLE: &str = "
local f = redis.call('HMGET', KEYS[1], 'handle', 'user', 'id')
if f[1] ~= ARGV[1] or not f[3] then return false end
if ARGV[2] == '1' and f[2] ~= ARGV[3] then return false end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[4], f[3])
return all
";

/// KEYS: record, [user index]. ARGV: expected digest or '' for any, now,
/// channel. Returns {'gone'}, {'corrupt'}, {'live', deadline} or
/// {'removed', digest, handle}.
const REMOVE_IF_DUE: &str = concat!(
    lua_deadline!(),
    "
local id = redis.call('HGET', KEYS[1], 'id')
if not id or (ARGV[1] ~= '' and id ~= ARGV[1]) then return {'gone'} end
local d = deadline(KEYS[1])
if not d then return {'corrupt'} end
if d > tonumber(ARGV[2]) then return {'live', string.format('%.0f', d)} end
local handle = redis.call('HGET', KEYS[1], 'handle') or ''
redis.call('DEL', KEYS[1])
if KEYS[2] then redis.call('SREM', KEYS[2], KEYS[1]) end
redis.call('PUBLISH', ARGV[3], id)
return {'removed', id, handle}
"
);

/// KEYS: user index. ARGV: digest to keep or '', channel, user id.
/// Deletes the user's other records (whose keys share the index's hash
/// tag) and returns {record key, digest, handle, ...} of each.
const REMOVE_FOR_USER: &str = "
local out = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', k, 'id', 'handle', 'user')
  if not f[1] or f[3] ~= ARGV[3] then
    redis.call('SREM', KEYS[1], k)
  elseif f[1] ~= ARGV[1] then
    redis.call('DEL', k)
    redis.call('SREM', KEYS[1], k)
    redis.call('PUBLISH', ARGV[2], f[1])
    out[#out + 1] = k
    out[#out + 1] = f[1]
    out[#out + 1] = f[2] or ''
  end
end
return out
";

/// KEYS: user. ARGV: field, value, ... Returns 1 if created, 0 if it exists.
const CREATE_HASH: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
";

/// KEYS: user. ARGV: field, value. Sets the field only if the hash exists.
const SET_IF_EXISTS: &str = "
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// KEYS: user. ARGV: expected hash, new hash.
const REPLACE_PASSWORD: &str = "
if redis.call('HGET', KEYS[1], 'password_hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'password_hash', ARGV[2])
return 1
";

/// KEYS: key. ARGV: expected value. Deletes the key only if it holds it.
const DELETE_IF: &str = "
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// Compare-and-set of an engine state record: a hash of `value` and
/// `version`. ARGV: value, expected version (empty: only if absent).
const PUT_STATE: &str = "
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[2] == '' then
  if current then return 0 end
  redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', 1)
  return 1
end
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', tonumber(ARGV[2]) + 1)
return 1
";

struct Scripts {
    put_state: Script,
    insert: Script,
    touch: Script,
    update_data: Script,
    rotate: Script,
    remove: Script,
    remove_by_handle: Script,
    remove_if_due: Script,
    remove_for_user: Script,
    create_hash: Script,
    set_if_exists: Script,
    replace_password: Script,
    delete_if: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            put_state: Script::new(PUT_STATE),
            insert: Script::new(INSERT),
            touch: Script::new(TOUCH),
            update_data: Script::new(UPDATE_DATA),
            rotate: Script::new(ROTATE),
            remove: Script::new(REMOVE),
            remove_by_handle: Script::new(REMOVE_BY_HANDLE),
            remove_if_due: Script::new(REMOVE_IF_DUE),
            remove_for_user: Script::new(REMOVE_FOR_USER),
            create_hash: Script::new(CREATE_HASH),
            set_if_exists: Script::new(SET_IF_EXISTS),
            replace_password: Script::new(REPLACE_PASSWORD),
            delete_if: Script::new(DELETE_IF),
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

    fn user_key(&self, id: &UserId) -> String {
        format!("{}:user:{{{}}}", self.p(), encode(id.as_str()))
    }

    fn username_key(&self, name: &str) -> String {
        format!("{}:username:{}", self.p(), encode(name))
    }

    fn users_key(&self) -> String {
        format!("{}:users", self.p())
    }

    fn audit_key(&self) -> String {
        format!("{}:audit", self.p())
    }

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

    /// Drops record keys from the deadline index (best effort).
    async fn forget_deadlines(&self, record_keys: &[String]) {
        if record_keys.is_empty() {
            return;
        }
        let done: Result<(), RedisError> = redis::cmd("ZREM")
            .arg(self.deadlines_key())
            .arg(record_keys)
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "could not update the Redis deadline index");
        }
    }

    /// Raises a record's score in the deadline index, if it is listed.
    async fn raise_deadline(&self, record_key: &str, deadline: i64) {
        let done: Result<Value, RedisError> = redis::cmd("ZADD")
            .arg(self.deadlines_key())
            .arg("XX")
            .arg("GT")
            .arg(deadline)
            .arg(record_key)
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "could not update the Redis deadline index");
        }
    }

    async fn read_record(
        &self,
        record_key: &str,
    ) -> Result<Option<HashMap<String, Vec<u8>>>, StoreError> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(record_key)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    /// After a record was deleted: its pointers and index entry go too.
    async fn after_removal(&self, record_key: &str, session: &Session) {
        self.forget(&[
            self.digest_key(&session.id),
            self.handle_key(&session.handle),
        ])
        .await;
        self.forget_deadlines(&[record_key.to_owned()]).await;
    }

    /// Runs the remove-if-due script on one record.
    async fn remove_if_due(
        &self,
        record_key: &str,
        expected: Option<&SessionId>,
        now: Timestamp,
    ) -> Result<Due, StoreError> {
        let index = self.index_of(record_key)?;
        let mut call = self.inner.scripts.remove_if_due.prepare_invoke();
        call.key(record_key);
        if let Some(index) = &index {
            call.key(index);
        }
        call.arg(expected.map(digest_hex).unwrap_or_default())
            .arg(now.as_millis())
            .arg(self.channel());
        let reply: Vec<String> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match reply.first().map(String::as_str) {
            Some("gone") => Ok(Due::Gone),
            Some("corrupt") => Ok(Due::Corrupt),
            Some("live") => {
                let deadline = reply
                    .get(1)
                    .and_then(|d| d.parse().ok())
                    .ok_or(StoreError::Corrupt("session deadline"))?;
                Ok(Due::Live(deadline))
            }
            Some("removed") => {
                let id = reply
                    .get(1)
                    .and_then(|d| parse_digest(d))
                    .ok_or(StoreError::Corrupt("session id"))?;
                let handle = reply.get(2).and_then(|h| h.parse::<SessionHandle>().ok());
                let mut stale = vec![self.digest_key(&id)];
                if let Some(handle) = handle {
                    stale.push(self.handle_key(&handle));
                }
                self.forget(&stale).await;
                self.forget_deadlines(&[record_key.to_owned()]).await;
                Ok(Due::Removed(id))
            }
            _ => Err(StoreError::Corrupt("unexpected script reply")),
        }
    }
}

/// What the remove-if-due script found.
enum Due {
    Gone,
    Corrupt,
    Live(i64),
    Removed(SessionId),
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

/// Native expiry for a session's keys.
fn native_expiry(expires_at: Timestamp) -> i64 {
    expires_at.as_millis().saturating_add(TTL_MARGIN_MS).max(1)
}

fn data_json(data: &SessionData) -> Result<String, StoreError> {
    serde_json::to_string(data).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// The fields of a record hash, in the order [`session_from_fields`] reads them.
fn session_fields(s: &Session) -> Result<Vec<(&'static str, String)>, StoreError> {
    let mut fields = vec![
        ("id", digest_hex(&s.id)),
        ("handle", s.handle.to_string()),
        ("created_at", s.created_at.as_millis().to_string()),
        ("last_seen_at", s.last_seen_at.as_millis().to_string()),
        ("expires_at", s.expires_at.as_millis().to_string()),
        ("idle_ms", duration_millis(s.idle_timeout).to_string()),
        ("data", data_json(&s.data)?),
        (
            "generation",
            i64::try_from(s.generation)
                .map_err(|_| StoreError::Corrupt("generation out of range"))?
                .to_string(),
        ),
    ];
    if let Some(user) = &s.user_id {
        fields.push(("user", user.as_str().to_owned()));
    }
    if let Some(at) = s.auth_at {
        fields.push(("auth_at", at.as_millis().to_string()));
    }
    if let Some(ua) = &s.user_agent {
        fields.push(("user_agent", ua.clone()));
    }
    if let Some(ip) = &s.ip {
        fields.push(("ip", ip.clone()));
    }
    Ok(fields)
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

fn session_from_fields(fields: HashMap<String, Vec<u8>>) -> Result<Session, StoreError> {
    let f = Fields(fields);
    let data: SessionData = match f.text("data")? {
        Some(json) => {
            serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("session data"))?
        }
        None => SessionData::new(),
    };
    Ok(Session {
        id: parse_digest(&f.required("id")?).ok_or(StoreError::Corrupt("session id"))?,
        handle: f
            .required("handle")?
            .parse()
            .map_err(|_| StoreError::Corrupt("session handle"))?,
        user_id: f.text("user")?.map(UserId::new),
        created_at: Timestamp::from_millis(f.int("created_at")?),
        last_seen_at: Timestamp::from_millis(f.int("last_seen_at")?),
        auth_at: f
            .text("auth_at")?
            .map(|t| t.parse().map_err(|_| StoreError::Corrupt("auth_at")))
            .transpose()?
            .map(Timestamp::from_millis),
        expires_at: Timestamp::from_millis(f.int("expires_at")?),
        idle_timeout: Duration::from_millis(
            u64::try_from(f.int("idle_ms")?).map_err(|_| StoreError::Corrupt("idle timeout"))?,
        ),
        user_agent: f.text("user_agent")?,
        ip: f.text("ip")?,
        data,
        generation: u64::try_from(f.int("generation")?)
            .map_err(|_| StoreError::Corrupt("generation"))?,
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        let record = self.record_key(&s.handle, s.user_id.as_ref());
        let expiry = native_expiry(s.expires_at);
        let fields = session_fields(s)?;
        let digest_key = self.digest_key(&s.id);
        let handle_key = self.handle_key(&s.handle);
        // Claim the digest and the handle first (SET NX): an existing one
        // is a duplicate, and nothing is overwritten.
        for (i, key) in [&digest_key, &handle_key].into_iter().enumerate() {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(&record)
                .arg("NX")
                .arg("PXAT")
                .arg(expiry)
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            if claimed.is_none() {
                if i == 1 {
                    self.forget(std::slice::from_ref(&digest_key)).await;
                }
                return Err(StoreError::Duplicate);
            }
        }
        let mut call = self.inner.scripts.insert.prepare_invoke();
        call.key(&record);
        if let Some(user) = &s.user_id {
            call.key(self.user_index_key(user));
        }
        call.arg(expiry);
        for (name, value) in &fields {
            call.arg(*name).arg(value);
        }
        let created: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if created != 1 {
            self.forget(&[digest_key, handle_key]).await;
            return Err(StoreError::Duplicate);
        }
        let indexed: Result<Value, RedisError> = redis::cmd("ZADD")
            .arg(self.deadlines_key())
            .arg(s.deadline().as_millis())
            .arg(&record)
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = indexed {
            // The session exists; only purge would miss it until its
            // native expiry. Report it, since the caller may retry.
            tracing::warn!(error = %e, "a Redis session was stored but not indexed for purge");
        }
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(&self.digest_key(id)).await? else {
            return Ok(None);
        };
        self.index_of(&record)?;
        let Some(fields) = self.read_record(&record).await? else {
            return Ok(None);
        };
        let session = session_from_fields(fields)?;
        Ok((session.id == *id).then_some(session))
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(&self.handle_key(handle)).await? else {
            return Ok(None);
        };
        self.index_of(&record)?;
        let Some(fields) = self.read_record(&record).await? else {
            return Ok(None);
        };
        let session = session_from_fields(fields)?;
        Ok((session.handle == *handle).then_some(session))
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let Some(record) = self.get_pointer(&self.digest_key(id)).await? else {
            return Ok(false);
        };
        self.index_of(&record)?;
        let deadline: Option<i64> = self
            .inner
            .scripts
            .touch
            .key(&record)
            .arg(digest_hex(id))
            .arg(at.as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match deadline {
            None => Ok(false),
            Some(d) => {
                if d >= 0 {
                    self.raise_deadline(&record, d).await;
                }
                Ok(true)
            }
        }
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let Some(record) = self.get_pointer(&self.digest_key(id)).await? else {
            return Ok(WriteOutcome::Missing);
        };
        self.index_of(&record)?;
        let generation = i64::try_from(generation)
            .map_err(|_| StoreError::Corrupt("generation out of range"))?;
        let outcome: i64 = self
            .inner
            .scripts
            .update_data
            .key(&record)
            .arg(digest_hex(id))
            .arg(generation)
            .arg(data_json(data)?)
            .arg(self.channel())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(match outcome {
            2 => WriteOutcome::Applied,
            1 => WriteOutcome::Stale,
            _ => WriteOutcome::Missing,
        })
    }

    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let old_key = self.digest_key(id);
        let Some(record) = self.get_pointer(&old_key).await? else {
            return Ok(false);
        };
        self.index_of(&record)?;
        let (current, handle, expires): (Option<String>, Option<String>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(&record)
                .arg("id")
                .arg("handle")
                .arg("expires_at")
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
        let (Some(current), Some(handle), Some(expires)) = (current, handle, expires) else {
            return Ok(false);
        };
        if current != digest_hex(id) {
            // Rotated or replaced already: the script below would refuse too.
            return Ok(false);
        }
        let handle: SessionHandle = handle
            .parse()
            .map_err(|_| StoreError::Corrupt("session handle"))?;
        // The old digest's successor pointer before the rotation, so no
        // rotation commits without it. It is true whatever happens next
        // (this digest was just this session's), so it is never taken back,
        // and NX leaves one written by a concurrent rotation of this token.
        let _: Option<String> = redis::cmd("SET")
            .arg(self.rotated_key(id))
            .arg(handle.to_string())
            .arg("NX")
            .arg("PXAT")
            .arg(native_expiry(Timestamp::from_millis(expires)))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        // The new pointer first: once the record answers to the new digest,
        // the pointer must already lead there.
        let new_key = self.digest_key(new_id);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&new_key)
            .arg(&record)
            .arg("NX")
            .arg("PXAT")
            .arg(native_expiry(Timestamp::from_millis(expires)))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if claimed.is_none() {
            return Err(StoreError::Duplicate);
        }
        let rotated: i64 = self
            .inner
            .scripts
            .rotate
            .key(&record)
            .arg(digest_hex(id))
            .arg(digest_hex(new_id))
            .arg(
                auth_at
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(self.channel())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if rotated == 1 {
            self.forget(&[old_key]).await;
            Ok(true)
        } else {
            self.forget(&[new_key]).await;
            Ok(false)
        }
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(&self.digest_key(id)).await? else {
            return Ok(None);
        };
        let index = self.index_of(&record)?;
        let mut call = self.inner.scripts.remove.prepare_invoke();
        call.key(&record);
        if let Some(index) = &index {
            call.key(index);
        }
        call.arg(digest_hex(id)).arg(self.channel());
        let removed: Option<HashMap<String, Vec<u8>>> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let Some(fields) = removed else {
            return Ok(None);
        };
        let session = session_from_fields(fields)?;
        self.after_removal(&record, &session).await;
        Ok(Some(session))
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(&self.handle_key(handle)).await? else {
            return Ok(None);
        };
        let index = self.index_of(&record)?;
        let mut call = self.inner.scripts.remove_by_handle.prepare_invoke();
        call.key(&record);
        if let Some(index) = &index {
            call.key(index);
        }
        call.arg(handle.to_string())
            .arg(if owner.is_some() { "1" } else { "0" })
            .arg(owner.map(UserId::as_str).unwrap_or_default())
            .arg(self.channel());
        let removed: Option<HashMap<String, Vec<u8>>> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let Some(fields) = removed else {
            return Ok(None);
        };
        let session = session_from_fields(fields)?;
        self.after_removal(&record, &session).await;
        Ok(Some(session))
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let Some(record) = self.get_pointer(&self.digest_key(id)).await? else {
            return Ok(false);
        };
        match self.remove_if_due(&record, Some(id), now).await? {
            Due::Removed(_) => Ok(true),
            Due::Gone | Due::Live(_) => Ok(false),
            Due::Corrupt => Err(StoreError::Corrupt("session timestamps")),
        }
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.user_index_key(user))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL").arg(key);
        }
        let records: Vec<HashMap<String, Vec<u8>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut sessions = Vec::with_capacity(records.len());
        for fields in records {
            if fields.is_empty() {
                continue;
            }
            let session = session_from_fields(fields)?;
            if session.user_id.as_ref() == Some(user) {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    async fn remove_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        let reply: Vec<String> = self
            .inner
            .scripts
            .remove_for_user
            .key(self.user_index_key(user))
            .arg(keep.map(digest_hex).unwrap_or_default())
            .arg(self.channel())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut removed = Vec::with_capacity(reply.len() / 3);
        let mut stale = Vec::with_capacity(reply.len() / 3 * 2);
        let mut records = Vec::with_capacity(reply.len() / 3);
        for triple in reply.chunks(3) {
            let [record, id, handle] = triple else {
                return Err(StoreError::Corrupt("unexpected script reply"));
            };
            let id = parse_digest(id).ok_or(StoreError::Corrupt("session id"))?;
            stale.push(self.digest_key(&id));
            if let Ok(handle) = handle.parse::<SessionHandle>() {
                stale.push(self.handle_key(&handle));
            }
            records.push(record.clone());
            removed.push(id);
        }
        self.forget(&stale).await;
        self.forget_deadlines(&records).await;
        Ok(removed)
    }

    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut removed = Vec::new();
        for _ in 0..PURGE_ROUNDS {
            if removed.len() >= limit {
                break;
            }
            let want = limit - removed.len();
            let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.deadlines_key())
                .arg("-inf")
                .arg(now.as_millis())
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            if due.is_empty() {
                break;
            }
            for record in due {
                let outcome = match self.index_of(&record) {
                    Ok(_) => self.remove_if_due(&record, None, now).await?,
                    Err(_) => Due::Corrupt,
                };
                match outcome {
                    Due::Removed(id) => removed.push(id),
                    // Removed by someone else, or by its native expiry.
                    Due::Gone => self.forget_deadlines(&[record]).await,
                    // Touched since it was indexed: fix its score.
                    Due::Live(deadline) => self.raise_deadline(&record, deadline).await,
                    Due::Corrupt => {
                        tracing::warn!(key = %record, "unreadable Redis session record left to its native expiry");
                        self.forget_deadlines(&[record]).await;
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        let Some(handle) = self.get_pointer(&self.rotated_key(old)).await? else {
            return Ok(None);
        };
        handle
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt("rotated token handle"))
    }
}

// ---- Users ---------------------------------------------------------------------

fn user_from_fields(fields: HashMap<String, Vec<u8>>) -> Result<User, StoreError> {
    let f = Fields(fields);
    Ok(User {
        id: UserId::new(f.required("id")?),
        name: f.required("name")?,
        password_hash: f.required("password_hash")?,
        disabled: match f.required("disabled")?.as_str() {
            "1" => true,
            "0" => false,
            _ => return Err(StoreError::Corrupt("disabled")),
        },
        created_at: Timestamp::from_millis(f.int("created_at")?),
    })
}

impl RedisStore {
    async fn read_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.user_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let user = user_from_fields(fields)?;
        Ok((user.id == *id).then_some(user))
    }

    async fn set_user_field(
        &self,
        id: &UserId,
        field: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .inner
            .scripts
            .set_if_exists
            .key(self.user_key(id))
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let name_key = self.username_key(&user.name);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&name_key)
            .arg(user.id.as_str())
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if claimed.is_none() {
            return Err(StoreError::Duplicate);
        }
        let created_at = user.created_at.as_millis().to_string();
        let created: i64 = self
            .inner
            .scripts
            .create_hash
            .key(self.user_key(&user.id))
            .arg("id")
            .arg(user.id.as_str())
            .arg("name")
            .arg(&user.name)
            .arg("password_hash")
            .arg(&user.password_hash)
            .arg("disabled")
            .arg(if user.disabled { "1" } else { "0" })
            .arg("created_at")
            .arg(&created_at)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if created != 1 {
            let released: Result<i64, RedisError> = self
                .inner
                .scripts
                .delete_if
                .key(&name_key)
                .arg(user.id.as_str())
                .invoke_async(&mut self.conn())
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not release a Redis user name claim");
            }
            return Err(StoreError::Duplicate);
        }
        let _: i64 = redis::cmd("SADD")
            .arg(self.users_key())
            .arg(user.id.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let Some(id) = self.get_pointer(&self.username_key(name)).await? else {
            return Ok(None);
        };
        let user = self.read_user(&UserId::new(id)).await?;
        Ok(user.filter(|u| u.name == name))
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.read_user(id).await
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        self.set_user_field(id, "password_hash", phc).await
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .inner
            .scripts
            .replace_password
            .key(self.user_key(id))
            .arg(expected)
            .arg(phc)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        self.set_user_field(id, "disabled", if disabled { "1" } else { "0" })
            .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.users_key())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL")
                .arg(self.user_key(&UserId::new(id.as_str())));
        }
        let records: Vec<HashMap<String, Vec<u8>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut users = Vec::with_capacity(records.len());
        for fields in records {
            if !fields.is_empty() {
                users.push(user_from_fields(fields)?);
            }
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }
}

// ---- Audit -------------------------------------------------------------------------

#[async_trait]
impl AuditStore for RedisStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let seq: i64 = redis::cmd("INCR")
            .arg(self.audit_seq_key())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut event = event.clone();
        event.seq = seq;
        let json = serde_json::to_string(&event).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.audit_key())
            .arg(event.at.as_millis())
            .arg(json)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let min = query
            .since
            .map_or_else(|| "-inf".to_owned(), |t| t.as_millis().to_string());
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.audit_key())
            .arg(min)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut events = members
            .iter()
            .map(|m| serde_json::from_slice::<AuditEvent>(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StoreError::Corrupt("audit event"))?;
        events.sort_by_key(|e| e.seq);
        let mut events = audit::select(&events, query);
        let missing: HashSet<UserId> = events
            .iter()
            .filter(|e| e.user_name.is_none())
            .filter_map(|e| e.user_id.clone())
            .collect();
        let mut names = HashMap::new();
        for id in missing {
            let name: Option<String> = redis::cmd("HGET")
                .arg(self.user_key(&id))
                .arg("name")
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            if let Some(name) = name {
                names.insert(id, name);
            }
        }
        for e in &mut events {
            if e.user_name.is_none() {
                e.user_name = e.user_id.as_ref().and_then(|id| names.get(id)).cloned();
            }
        }
        Ok(events)
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let removed: u64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.audit_key())
            .arg("-inf")
            .arg(format!("({}", before.as_millis()))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(removed)
    }
}

// ---- The revocation bus ------------------------------------------------------------

/// A subscription to the revocation channel on its own connection.
struct RedisSubscription {
    /// Keeps the connection (and so the subscription) open.
    _connection: MultiplexedConnection,
    messages: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
}

#[async_trait]
impl BusSubscription for RedisSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        loop {
            let Some(push) = self.messages.recv().await else {
                return Err(StoreError::Unavailable(plain(
                    "the Redis subscription connection closed",
                )));
            };
            match push.kind {
                PushKind::Message => match push.data.get(1) {
                    // Anything odd is handed on as text for the bus to count
                    // as malformed: whoever can publish must not be able to
                    // make nodes drop their subscription.
                    Some(Value::BulkString(bytes)) => {
                        return Ok(String::from_utf8_lossy(bytes).into_owned());
                    }
                    Some(Value::SimpleString(text)) => return Ok(text.clone()),
                    _ => return Ok(String::new()),
                },
                PushKind::Disconnection => {
                    return Err(StoreError::Unavailable(plain(
                        "the Redis subscription connection was lost",
                    )));
                }
                // Subscription confirmations and other pushes.
                _ => {}
            }
        }
    }
}

#[async_trait]
impl RevocationBus for RedisStore {
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        // A connection of its own, speaking RESP3 so that messages arrive
        // as pushes on a channel.
        let info = self.inner.client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings)).map_err(store_error)?;
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let options = &self.inner.options;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_push_sender(sender);
        let subscribed = async {
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            connection.subscribe(self.channel()).await?;
            Ok::<_, RedisError>(connection)
        };
        let connection = tokio::time::timeout(
            options.connect_timeout + options.response_timeout,
            subscribed,
        )
        .await
        .map_err(|_| StoreError::Unavailable(plain("subscribing to Redis timed out")))?
        .map_err(store_error)?;
        Ok(Box::new(RedisSubscription {
            _connection: connection,
            messages,
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(payload)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl super::StateStore for RedisStore {
    async fn get_state(&self, name: &str) -> Result<Option<super::Versioned>, StoreError> {
        let (value, version): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.state_key(name))
            .arg("value")
            .arg("version")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match (value, version) {
            (Some(value), Some(version)) => Ok(Some(super::Versioned { value, version })),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt("engine state record is incomplete")),
        }
    }

    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let written: i64 = self
            .inner
            .scripts
            .put_state
            .key(self.state_key(name))
            .arg(value)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(written == 1)
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
