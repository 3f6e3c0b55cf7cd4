//! # signoff
//!
//! Server-side sessions whose logout is final: on this device, on every
//! node, and for every token derived from the session.
//!
//! - [`SessionToken`]: 256 random bits the client holds, sealed with a MAC
//!   under a key the store keeps ([`SessionKeys`]), so a made-up token is
//!   refused before any store read; the store keeps only the SHA-256
//!   digest of the random bits, the [`SessionId`].
//! - [`Sessions`]: the engine: [`Sessions::login`], [`Sessions::validate`],
//!   [`Sessions::rotate`], [`Sessions::logout`], per-user operations, purge.
//! - [`Policy`]: idle and absolute timeouts, last-seen write interval,
//!   cookie settings; refused at construction if it makes no sense.
//! - [`SessionStore`]: one trait, with [`MemoryStore`],
//!   [`SqliteStore`] (feature `sqlite`, on by default), `RedisStore`
//!   (feature `redis`) and `PostgresStore` (feature `postgres`), and a
//!   public [`conformance`] suite every backend passes.
//! - [`CachedStore`]: a bounded in-process cache in front of any store;
//!   [`revocation::run`] keeps it honest across nodes on a shared store's
//!   revocation bus.
//! - [`SessionWatch`]: a per-node registry of open connections by session,
//!   whose [`Watch::ended`] resolves when the session ends, for whatever
//!   reason and on whichever node.
//! - [`csrf`]: CSRF tokens derived from the session token, stored nowhere.
//! - [`Accounts`] and [`Passwords`] (feature `accounts`): users with
//!   Argon2id password hashes.
//! - [`Deployment`]: one node in one call: the store a URL names, its
//!   cache, revocation bus, token keys and purge loop.
//! - [`web`] (feature `axum`): a layer, extractors and sign-in and
//!   sign-out helpers for axum apps.
//! - [`token_mode`] (feature `tokens`): token mode for APIs: signed access tokens checked against
//!   the session, and rotating refresh tokens with reuse detection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use signoff::{MemoryStore, NewSession, Policy, SessionError, Sessions, UserId};
//!
//! let sessions = Sessions::new(Arc::new(MemoryStore::new()), Policy::default());
//!
//! // A token planted before login is worthless after it.
//! let planted = sessions.create(NewSession::anonymous()).await.unwrap();
//! let issued = sessions
//!     .login(Some(planted.token.expose()), NewSession::for_user(UserId::new("alice")))
//!     .await
//!     .unwrap();
//! assert!(sessions.validate(planted.token.expose()).await.is_err());
//!
//! // Logout is final.
//! let token = issued.token.expose();
//! assert_eq!(sessions.validate(token).await.unwrap().user_id, Some(UserId::new("alice")));
//! sessions.logout(token).await.unwrap();
//! assert!(matches!(sessions.validate(token).await, Err(SessionError::NotFound)));
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod audit;
mod cache;
mod clock;
pub mod conformance;
pub mod csrf;
pub mod deployment;
mod policy;
pub mod revocation;
mod session;
pub mod session_keys;
mod session_token;
pub mod session_watch;
pub mod store;
#[cfg(feature = "tokens")]
pub mod token_mode;
#[cfg(feature = "accounts")]
mod users;
#[cfg(feature = "axum")]
pub mod web;

pub use audit::{Actor, AuditEvent, AuditKind};
#[cfg(feature = "audit")]
pub use audit::{AuditEcho, AuditLog, AuditQuery, AuditStore};
pub use cache::{CacheOptions, CacheStats, CachedStore};
pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock, Timestamp};
pub use deployment::{Deployment, DeploymentError, DeploymentOptions};
pub use policy::{
    CookiePolicy, LogoutBehavior, Policy, PolicyBuilder, PolicyError, RememberDevice, SameSite,
};
pub use session::{
    is_reserved_key, ExpiredBy, Issued, NewSession, Rotation, Session, SessionData, SessionError,
    Sessions, UserId, LINKED_TO_KEY, MAX_DATA_BYTES, MAX_DATA_KEYS, MAX_IP_BYTES,
    MAX_USER_AGENT_BYTES, RESERVED_PREFIX, SITE_KEY, USER_NAME_KEY,
};
pub use session_keys::SessionKeys;
pub use session_token::{
    SessionHandle, SessionId, SessionToken, TokenError, HANDLE_LEN, TOKEN_LEN,
};
pub use session_watch::{EndReason, SessionWatch, Watch, WatchOptions, WatchStats};
pub use store::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use store::postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use store::redis::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{Durability, SqliteOptions, SqliteStore};
pub use store::{SessionStore, StateStore, StoreError, Versioned, WriteOutcome};
#[cfg(feature = "accounts")]
pub use users::imported_hashes::{self, recognise, HashError, HashFormat, RecognisedHash};
#[cfg(feature = "accounts")]
pub use users::{
    check_groups, check_name, AccountError, Accounts, GroupChange, ImportedUser, PasswordParams,
    PasswordParamsError, Passwords, User, UserStore, Verification, MAX_GROUPS, MAX_GROUP_BYTES,
    MAX_NAME_BYTES, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS,
};
