//! Where sessions live: one trait, several backends, one conformance suite.
//!
//! The contract that keeps logout final (invariants 1–3 of docs/security.md):
//!
//! - [`SessionStore::insert`] creates and never overwrites: an existing
//!   id or handle is [`StoreError::Duplicate`].
//! - Every later write is conditional on the record still existing, and
//!   data writes also on its generation. A write racing with a removal
//!   finds nothing and changes nothing, so it cannot bring the session back.
//! - Rotation moves the record to a new digest in one conditional write, so
//!   of two concurrent rotations exactly one finds the old digest.
//! - Removal is by digest, and a digest is never reused: a rotated or
//!   removed token stays dead.
//! - A rotated-away digest is kept, in the same write as the rotation, as a
//!   pointer to the session's handle until the session's absolute expiry
//!   ([`SessionStore::successor`]). It opens nothing: a logout carrying the
//!   old token follows it to end the session the token was rotated into.
//!
//! Backends run [`crate::conformance`] to show they keep it.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// `url` with any password in it replaced by `***`, for messages and
/// `Debug`: the password of `user:password@`, whatever characters it holds
/// (everything up to the last `@` counts as user info), and a `password=`
/// query parameter.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // Up to the last `@`: whatever the password holds, it is covered (at
    // worst, a `@` further on hides more than the password).
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.find(':') {
                Some(colon) => format!("{}:***@", &userinfo[..colon]),
                None => format!("{userinfo}@"),
            };
            (shown, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // Drivers decode the key: `pass%77ord` is `password`.
                    Some((key, _))
                        if percent_encoding::percent_decode_str(key)
                            .decode_utf8_lossy()
                            .eq_ignore_ascii_case("password") =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}{fragment}", query.join("&"))
        }
        None => rest.to_owned(),
    };
    format!("{scheme}{userinfo}{rest}")
}

/// A boxed error from a backend's own client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record with this id or handle already exists; nothing was written.
    #[error("a record with this key already exists")]
    Duplicate,
    /// The store could not be reached or timed out; the operation may not
    /// have happened. Callers must fail closed.
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    /// A stored record could not be read back.
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(&'static str),
    /// The backend failed in another way.
    #[error("the store failed")]
    Backend(#[source] BoxError),
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The record existed at the expected generation and was written.
    Applied,
    /// The record exists, but another write changed it first; nothing was written.
    Stale,
    /// The record no longer exists; nothing was written or created.
    Missing,
}

/// A place to keep sessions.
///
/// Stores hold records and apply conditional writes; the policy (timeouts,
/// when to touch) lives in [`crate::Sessions`]. Stores never read a clock:
/// times come in as arguments, so tests can move time.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Adds a new session. Never overwrites: an existing id or handle gives
    /// [`StoreError::Duplicate`].
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;

    /// Reads the session with this digest.
    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// What [`SessionStore::load`] would answer, if it can be had from
    /// memory without waiting (a cache's fresh entry); `None` when `load`
    /// must be asked. Never an answer `load` would not give: a cache
    /// answers here exactly as its `load` does on a hit.
    fn load_now(&self, _id: &SessionId) -> Option<Session> {
        None
    }

    /// Reads the session with this public handle.
    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError>;

    /// Records activity: sets `last_seen_at` to `at` unless it is already
    /// later. Only if the session still exists; returns whether it did.
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError>;

    /// Replaces the session's data and bumps its generation, only if it
    /// exists at `generation`.
    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError>;

    /// Moves the session to a new digest and bumps its generation, only if
    /// it still exists under `id`; returns whether it did. With `auth_at`,
    /// also records a fresh authentication. The old digest stops matching
    /// at once, and from the same write on, [`SessionStore::successor`]
    /// of it answers the session's handle until the session's `expires_at`.
    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError>;

    /// Deletes the session and returns what it held, if it existed.
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Deletes the session with this handle, in one step (so a concurrent
    /// rotation cannot make it miss), and only if it belongs to `owner`
    /// when one is given. Returns what it deleted.
    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError>;

    /// Deletes the session only if, by the store's own record, it has
    /// expired at `now`. Returns whether it deleted it.
    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError>;

    /// All sessions of one user, expired or not, in no particular order.
    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError>;

    /// Ends all of a user's sessions except `keep`, and returns how many it
    /// ended. From its return on, no read or write finds them (as if
    /// removed); a backend may remove the records later (the SQL backends
    /// leave them to [`SessionStore::purge_expired`] at their deadline, so
    /// the end is one write whatever the user's session count). It
    /// announces the end on the store's revocation bus as one message for
    /// the user ([`crate::revocation::BusMessage::EndUser`]) or one per
    /// session.
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError>;

    /// Deletes at most `limit` sessions that have expired at `now` and
    /// returns the digests it deleted. Safe to run on many nodes at once.
    /// Also deletes (up to `limit`, unreported) rotated-away digests whose
    /// session's `expires_at` has passed, unless the backend expires them
    /// natively.
    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// The handle of the session whose token had the digest `old` until
    /// [`SessionStore::rotate`] moved it away, whether or not that session
    /// still lives. `None` for a digest that was never rotated away, or
    /// once the session's `expires_at` has passed and the pointer was
    /// purged. Only for ending the session: a handle is no credential.
    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError>;

    /// Where this store keeps the engine's own records, if it keeps them
    /// ([`StateStore`]): an engine over it keeps the keys that seal session
    /// tokens there ([`crate::SessionKeys::open`]), so its sessions survive
    /// a restart and every engine over the same store accepts them.
    /// `None` (the default): each engine draws a key in memory.
    fn engine_state(&self) -> Option<std::sync::Arc<dyn StateStore>> {
        None
    }
}

/// A small named record of the engine's own state, with its version.
#[derive(Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record's bytes.
    pub value: Vec<u8>,
    /// Starts at 1; every replacement adds 1.
    pub version: u64,
}

impl std::fmt::Debug for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value may hold private keys.
        f.debug_struct("Versioned")
            .field("bytes", &self.value.len())
            .field("version", &self.version)
            .finish()
    }
}

/// Where the engine keeps small records of its own, such as the keys that
/// sign access tokens ([`crate::token_mode`]), so every node sharing the store
/// shares them. Writes are compare-and-set, so two nodes starting at once,
/// or a rotation racing a start, cannot overwrite each other.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads the record `name`.
    async fn get_state(&self, name: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes the record `name`: with `expected: None`, only if there is
    /// none yet (it gets version 1); with `Some(v)`, only if it is at
    /// version `v` (it gets `v + 1`). Returns whether it wrote.
    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;
}

/// A shared store is a store: lets a [`crate::CachedStore`] wrap an
/// `Arc<dyn SessionStore>` chosen at run time.
#[async_trait]
impl<T: SessionStore + ?Sized> SessionStore for std::sync::Arc<T> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        (**self).insert(session).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        (**self).load(id).await
    }
    fn load_now(&self, id: &SessionId) -> Option<Session> {
        (**self).load_now(id)
    }
    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        (**self).load_by_handle(handle).await
    }
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        (**self).touch(id, at).await
    }
    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        (**self).update_data(id, generation, data).await
    }
    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        (**self).rotate(id, new_id, auth_at).await
    }
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        (**self).remove(id).await
    }
    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        (**self).remove_by_handle(handle, owner).await
    }
    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        (**self).remove_expired(id, now).await
    }
    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        (**self).list_for_user(user).await
    }
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        (**self).end_for_user(user, keep).await
    }
    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        (**self).purge_expired(now, limit).await
    }
    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        (**self).successor(old).await
    }
    fn engine_state(&self) -> Option<std::sync::Arc<dyn StateStore>> {
        (**self).engine_state()
    }
}
