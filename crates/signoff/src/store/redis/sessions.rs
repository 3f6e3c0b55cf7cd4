//! Sessions on Redis: records, their pointers and the deadline index.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisError, Value};

use super::{
    digest_hex, parse_digest, store_error, Fields, RedisStore, PURGE_ROUNDS, TTL_MARGIN_MS,
};
use crate::clock::{duration_millis, Timestamp};
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::store::{SessionStore, StoreError, WriteOutcome};

impl RedisStore {
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

    /// The record a pointer leads to, as it is now: the caller checks that
    /// it still has the digest or handle the pointer was named for.
    async fn follow(&self, pointer: &str) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(pointer).await? else {
            return Ok(None);
        };
        self.index_of(&record)?;
        let Some(fields) = self.read_record(&record).await? else {
            return Ok(None);
        };
        session_from_fields(fields).map(Some)
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

    /// Runs a removal script whose arguments are set, on `record_key` (and
    /// its index), and clears what pointed at the session it removed.
    async fn run_removal(
        &self,
        record_key: &str,
        mut call: redis::ScriptInvocation<'_>,
    ) -> Result<Option<Session>, StoreError> {
        let index = self.index_of(record_key)?;
        call.key(record_key);
        if let Some(index) = &index {
            call.key(index);
        }
        let removed: Option<HashMap<String, Vec<u8>>> = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let Some(fields) = removed else {
            return Ok(None);
        };
        let session = session_from_fields(fields)?;
        self.after_removal(record_key, &session).await;
        Ok(Some(session))
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
    if s.remembered {
        fields.push(("remembered", "1".to_owned()));
    }
    Ok(fields)
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
        remembered: f.text("remembered")?.as_deref() == Some("1"),
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
        let session = self.follow(&self.digest_key(id)).await?;
        Ok(session.filter(|s| s.id == *id))
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        let session = self.follow(&self.handle_key(handle)).await?;
        Ok(session.filter(|s| s.handle == *handle))
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
        let mut call = self.inner.scripts.remove.prepare_invoke();
        call.arg(digest_hex(id)).arg(self.channel());
        self.run_removal(&record, call).await
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        let Some(record) = self.get_pointer(&self.handle_key(handle)).await? else {
            return Ok(None);
        };
        let mut call = self.inner.scripts.remove_by_handle.prepare_invoke();
        call.arg(handle.to_string())
            .arg(if owner.is_some() { "1" } else { "0" })
            .arg(owner.map(UserId::as_str).unwrap_or_default())
            .arg(self.channel());
        self.run_removal(&record, call).await
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

    /// Removes the records at once (one script over the user's index, in
    /// its slot) and announces each digest.
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        let reply: Vec<String> = self
            .inner
            .scripts
            .end_for_user
            .key(self.user_index_key(user))
            .arg(keep.map(digest_hex).unwrap_or_default())
            .arg(self.channel())
            .arg(user.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut removed = 0;
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
            removed += 1;
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

    fn engine_state(&self) -> Option<std::sync::Arc<dyn crate::store::StateStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}
