//! The audit trail: who signed in, failed, signed out, ended whose
//! sessions, changed a password, disabled an account or changed its
//! groups, and when.
//!
//! Events are written to an [`AuditStore`] (the SQLite store keeps them in
//! the same database as the sessions) and, optionally, also emitted as one
//! JSON log line each (`tracing` target `signoff::audit`). An event never
//! holds a password, a token or a session digest: sessions are named by
//! their public [`SessionHandle`].
//!
//! Writing an event never blocks or undoes the action it records: if the
//! store cannot take it, the failure is logged and the action stands.

use std::fmt;
use std::str::FromStr;
#[cfg(feature = "audit")]
use std::sync::Arc;

#[cfg(feature = "audit")]
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::session::UserId;
use crate::session_token::SessionHandle;
use crate::store::StoreError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A password sign-in succeeded and opened a session.
    LoginSucceeded,
    /// A sign-in failed; [`AuditEvent::reason`] says why, by class.
    LoginFailed,
    /// A signed-in user proved their password again (the session rotated).
    Reauthenticated,
    /// A user signed out of their own session.
    Logout,
    /// Sessions were ended by someone other than their holder signing out;
    /// [`AuditEvent::by`] says by whom, [`AuditEvent::count`] how many.
    SessionEnded,
    /// A password was changed.
    PasswordChanged,
    /// An account was disabled.
    UserDisabled,
    /// An account was enabled again.
    UserEnabled,
    /// A user's groups were changed; [`AuditEvent::reason`] is
    /// `groups_removed` if the user left any group (their sessions were
    /// ended), else `groups_added`.
    GroupsChanged,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 9] = [
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::Reauthenticated,
        AuditKind::Logout,
        AuditKind::SessionEnded,
        AuditKind::PasswordChanged,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::GroupsChanged,
    ];

    /// The stored name, e.g. `login_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::Reauthenticated => "reauthenticated",
            AuditKind::Logout => "logout",
            AuditKind::SessionEnded => "session_ended",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::UserDisabled => "user_disabled",
            AuditKind::UserEnabled => "user_enabled",
            AuditKind::GroupsChanged => "groups_changed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(StoreError::Corrupt("audit event kind"))
    }
}

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Actor {
    /// The signed-in user, from one of their sessions.
    User,
    /// An administrator, through the admin API.
    Admin,
    /// An operator, through the command line.
    Operator,
    /// A session policy (the per-user session limit).
    Policy,
    /// A timeout (idle or absolute).
    Timeout,
    /// An OpenID Connect provider, through back-channel logout.
    Provider,
}

impl Actor {
    /// Every actor, in declaration order.
    pub const ALL: [Actor; 6] = [
        Actor::User,
        Actor::Admin,
        Actor::Operator,
        Actor::Policy,
        Actor::Timeout,
        Actor::Provider,
    ];

    /// The stored name, e.g. `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::User => "user",
            Actor::Admin => "admin",
            Actor::Operator => "operator",
            Actor::Policy => "policy",
            Actor::Timeout => "timeout",
            Actor::Provider => "provider",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Actor {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Actor::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(StoreError::Corrupt("audit actor"))
    }
}

/// One entry of the audit trail. Build it with [`AuditEvent::new`] and the
/// setters; the store assigns [`AuditEvent::seq`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Order of writing within the store (0 before it is stored).
    #[serde(default)]
    pub seq: i64,
    /// When it happened (milliseconds since the Unix epoch).
    pub at: Timestamp,
    /// What happened.
    pub kind: AuditKind,
    /// Whose account or sessions, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The login name, if known. Failed sign-ins record the name typed only
    /// if an account has it, so a password typed into the name field is
    /// not kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// The session concerned, by its public handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionHandle>,
    /// Who did it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
    /// A short machine-readable reason class, e.g. `wrong_password`,
    /// `idle`, `max_sessions`, `password_change`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// How many sessions the action ended, where it ends sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditEvent {
    /// An event of `kind` at `at`, with nothing else known yet.
    pub fn new(kind: AuditKind, at: Timestamp) -> Self {
        Self {
            seq: 0,
            at,
            kind,
            user_id: None,
            user_name: None,
            session: None,
            by: None,
            reason: None,
            ip: None,
            count: None,
        }
    }

    /// Sets the user.
    pub fn user(mut self, id: Option<&UserId>, name: Option<&str>) -> Self {
        self.user_id = id.cloned();
        self.user_name = name.map(str::to_owned);
        self
    }

    /// Sets the session.
    pub fn session(mut self, handle: &SessionHandle) -> Self {
        self.session = Some(*handle);
        self
    }

    /// Sets who did it.
    pub fn by(mut self, actor: Actor) -> Self {
        self.by = Some(actor);
        self
    }

    /// Sets the reason class.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// Sets the client address.
    pub fn ip(mut self, ip: impl fmt::Display) -> Self {
        self.ip = Some(ip.to_string());
        self
    }

    /// Sets how many sessions ended.
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
}

#[cfg(feature = "audit")]
/// Which events to read back, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this user's events.
    pub user_id: Option<UserId>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events of this kind.
    pub kind: Option<AuditKind>,
    /// At most this many (default 1,000).
    pub limit: Option<usize>,
}

#[cfg(feature = "audit")]
/// Where audit events are kept.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends an event.
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Reads events, newest first. Where the event lacks a user name but
    /// the user exists, the store fills it in.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes events older than `before`; returns how many.
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}

#[cfg(feature = "audit")]
/// Records events into an [`AuditStore`], and optionally as JSON log lines.
/// Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    json_lines: bool,
}

#[cfg(feature = "audit")]
impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("json_lines", &self.json_lines)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "audit")]
/// Whether an [`AuditLog`] also logs each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEcho {
    /// Events go to the store only.
    Off,
    /// Every event is also logged as one JSON line at `info` with target
    /// `signoff::audit` (for a log collector).
    JsonLines,
}

#[cfg(feature = "audit")]
impl AuditLog {
    /// An audit log over `store`, echoing each event as `echo` says.
    pub fn new(store: Arc<dyn AuditStore>, echo: AuditEcho) -> Self {
        Self {
            store,
            json_lines: echo == AuditEcho::JsonLines,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Records an event. A store failure is logged, never returned: the
    /// action the event describes has already happened.
    pub async fn record(&self, event: AuditEvent) {
        if self.json_lines {
            match serde_json::to_string(&event) {
                Ok(line) => tracing::info!(target: "signoff::audit", "{line}"),
                Err(e) => tracing::warn!(error = %e, "could not serialise an audit event"),
            }
        }
        if let Err(e) = self.store.append(&event).await {
            tracing::error!(kind = %event.kind, error = %e, "could not write an audit event");
        }
    }

    /// Reads events; see [`AuditStore::query`].
    ///
    /// # Errors
    /// A store error.
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.query(query).await
    }

    /// Deletes events older than `before`; returns how many.
    ///
    /// # Errors
    /// A store error.
    pub async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.store.purge_before(before).await
    }
}

#[cfg(feature = "audit")]
/// Filters and orders `events` as an [`AuditQuery`] asks (for stores that
/// hold events in memory).
pub(crate) fn select(events: &[AuditEvent], query: &AuditQuery) -> Vec<AuditEvent> {
    events
        .iter()
        .rev()
        .filter(|e| {
            query
                .user_id
                .as_ref()
                .is_none_or(|u| e.user_id.as_ref() == Some(u))
        })
        .filter(|e| query.since.is_none_or(|t| e.at >= t))
        .filter(|e| query.kind.is_none_or(|k| e.kind == k))
        .take(query.limit.unwrap_or(DEFAULT_LIMIT))
        .cloned()
        .collect()
}

#[cfg(feature = "audit")]
/// Events a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for a in Actor::ALL {
            assert_eq!(a.as_str().parse::<Actor>().unwrap(), a);
        }
        assert!("nope".parse::<AuditKind>().is_err());
    }

    #[test]
    fn json_lines_skip_what_is_unknown() {
        let e = AuditEvent::new(AuditKind::Logout, Timestamp::from_millis(5))
            .user(Some(&UserId::new("u1")), Some("alice"))
            .by(Actor::User);
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"seq":0,"at":5,"kind":"logout","user_id":"u1","user_name":"alice","by":"user"}"#
        );
    }
}
