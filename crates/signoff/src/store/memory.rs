//! An in-process store: for tests, examples and single-process apps that
//! accept losing sessions on restart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{SessionStore, StateStore, StoreError, Versioned, WriteOutcome};
#[cfg(feature = "audit")]
use crate::audit::{self, AuditEvent, AuditQuery, AuditStore};
use crate::clock::Timestamp;
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
#[cfg(feature = "accounts")]
use crate::users::{User, UserStore};

/// Sessions in a map behind one lock, with the same indexes a database
/// would have: by handle, by user and by deadline.
///
/// ```
/// use std::sync::Arc;
/// use signoff::{MemoryStore, Policy, Sessions};
///
/// let sessions = Sessions::new(Arc::new(MemoryStore::new()), Policy::default());
/// ```
///
/// Clones share the same records.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: std::sync::Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionId, Session>,
    by_handle: HashMap<SessionHandle, SessionId>,
    by_user: HashMap<UserId, HashSet<SessionId>>,
    by_deadline: BTreeSet<(Timestamp, SessionId)>,
    #[cfg(feature = "accounts")]
    users: HashMap<UserId, User>,
    #[cfg(feature = "audit")]
    audit: Vec<AuditEvent>,
    #[cfg(feature = "audit")]
    audit_seq: i64,
    state: HashMap<String, Versioned>,
    /// Rotated-away digests: the session's handle and `expires_at`.
    rotated: HashMap<SessionId, (SessionHandle, Timestamp)>,
    rotated_by_expiry: BTreeSet<(Timestamp, SessionId)>,
}

impl Inner {
    fn add(&mut self, session: Session) {
        self.by_handle.insert(session.handle, session.id);
        if let Some(user) = &session.user_id {
            self.by_user
                .entry(user.clone())
                .or_default()
                .insert(session.id);
        }
        self.by_deadline.insert((session.deadline(), session.id));
        self.sessions.insert(session.id, session);
    }

    fn take(&mut self, id: &SessionId) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        self.by_handle.remove(&session.handle);
        if let Some(user) = &session.user_id {
            if let Some(ids) = self.by_user.get_mut(user) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
        self.by_deadline.remove(&(session.deadline(), session.id));
        Some(session)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of sessions held, expired or not.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether the store holds no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than losing the store, so carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(&session.id) || inner.by_handle.contains_key(&session.handle)
        {
            return Err(StoreError::Duplicate);
        }
        inner.add(session.clone());
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(id).cloned())
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .by_handle
            .get(handle)
            .and_then(|id| inner.sessions.get(id))
            .cloned())
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(mut session) = inner.take(id) else {
            return Ok(false);
        };
        session.last_seen_at = session.last_seen_at.max(at);
        inner.add(session);
        Ok(true)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(id) else {
            return Ok(WriteOutcome::Missing);
        };
        if session.generation != generation {
            return Ok(WriteOutcome::Stale);
        }
        session.data = data.clone();
        session.generation += 1;
        Ok(WriteOutcome::Applied)
    }

    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(new_id) {
            return Err(StoreError::Duplicate);
        }
        let Some(mut session) = inner.take(id) else {
            return Ok(false);
        };
        // A digest is rotated away at most once, so nothing is overwritten.
        inner
            .rotated
            .entry(*id)
            .or_insert((session.handle, session.expires_at));
        inner.rotated_by_expiry.insert((session.expires_at, *id));
        session.id = *new_id;
        session.generation += 1;
        if auth_at.is_some() {
            session.auth_at = auth_at;
        }
        inner.add(session);
        Ok(true)
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().take(id))
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        let mut inner = self.lock();
        let Some(id) = inner.by_handle.get(handle).copied() else {
            return Ok(None);
        };
        let owned = owner
            .is_none_or(|o| inner.sessions.get(&id).and_then(|s| s.user_id.as_ref()) == Some(o));
        Ok(if owned { inner.take(&id) } else { None })
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let expired = inner.sessions.get(id).is_some_and(|s| s.deadline() <= now);
        if expired {
            inner.take(id);
        }
        Ok(expired)
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.sessions.get(id).cloned())
            .collect())
    }

    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let ids: Vec<SessionId> = inner
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter(|id| Some(*id) != keep)
            .copied()
            .collect();
        for id in &ids {
            inner.take(id);
        }
        Ok(ids.len())
    }

    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut inner = self.lock();
        let ids: Vec<SessionId> = inner
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        for id in &ids {
            inner.take(id);
        }
        let retired: Vec<(Timestamp, SessionId)> = inner
            .rotated_by_expiry
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .take(limit)
            .copied()
            .collect();
        for key in &retired {
            inner.rotated_by_expiry.remove(key);
            inner.rotated.remove(&key.1);
        }
        Ok(ids)
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        Ok(self.lock().rotated.get(old).map(|(handle, _)| *handle))
    }

    fn engine_state(&self) -> Option<std::sync::Arc<dyn crate::store::StateStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

#[cfg(feature = "accounts")]
#[async_trait]
impl UserStore for MemoryStore {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.users.contains_key(&user.id) || inner.users.values().any(|u| u.name == user.name) {
            return Err(StoreError::Duplicate);
        }
        inner.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.values().find(|u| u.name == name).cloned())
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .users
            .get_mut(id)
            .map(|u| u.password_hash = phc.to_owned())
            .is_some())
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.users.get_mut(id) {
            Some(user) if user.password_hash == expected => {
                user.password_hash = phc.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .users
            .get_mut(id)
            .map(|u| u.disabled = disabled)
            .is_some())
    }

    async fn replace_groups(
        &self,
        id: &UserId,
        expected: &[String],
        groups: &[String],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.users.get_mut(id) {
            Some(user) if user.groups == expected => {
                user.groups = groups.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self.lock().users.values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }
}

#[cfg(feature = "audit")]
#[async_trait]
impl AuditStore for MemoryStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let mut event = event.clone();
        inner.audit_seq += 1;
        event.seq = inner.audit_seq;
        inner.audit.push(event);
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let inner = self.lock();
        #[allow(unused_mut)] // without accounts
        let mut events = audit::select(&inner.audit, query);
        #[cfg(feature = "accounts")]
        for e in &mut events {
            if e.user_name.is_none() {
                e.user_name = e
                    .user_id
                    .as_ref()
                    .and_then(|id| inner.users.get(id))
                    .map(|u| u.name.clone());
            }
        }
        Ok(events)
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let was = inner.audit.len();
        inner.audit.retain(|e| e.at >= before);
        Ok((was - inner.audit.len()) as u64)
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get_state(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().state.get(name).cloned())
    }

    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let current = inner.state.get(name).map(|v| v.version);
        if current != expected {
            return Ok(false);
        }
        let version = expected.map_or(1, |v| v + 1);
        inner.state.insert(
            name.to_owned(),
            Versioned {
                value: value.to_vec(),
                version,
            },
        );
        Ok(true)
    }
}
