//! [`SessionStore`] for every SQL backend. Every write after insert is one
//! conditional statement (a rotation, one transaction), so there is no
//! read-then-write window for a concurrent logout to fall into.

use async_trait::async_trait;

use super::rows::{self, session_columns};
use super::{Dialect, SqlBackend, Statement};
use crate::clock::{duration_millis, Timestamp};
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// The condition every statement that finds a session adds: the session
/// has no user, or its user has not ended all their sessions since it was
/// created (`migrations/*/0006_user_ends.sql`).
///
/// `>=`, not `=`: a session's `user_epoch` never exceeds its user's
/// counter, so the two mean the same in every committed state, but on
/// PostgreSQL a statement that waited for the row lock of the session an
/// end keeps re-checks the row's new `user_epoch` against the counter of
/// its own, older snapshot; with `=` it would silently miss a live session
/// (a logout that ends nothing).
macro_rules! alive {
    () => {
        "(user_id IS NULL OR user_epoch >= coalesce(\
         (SELECT e.epoch FROM user_ends e WHERE e.user_id = sessions.user_id), 0))"
    };
}
pub(crate) use alive;

const INSERT: &str = "INSERT INTO sessions (id, handle, user_id, created_at, last_seen_at, \
    auth_at, expires_at, idle_timeout_ms, user_agent, ip, data, generation, remembered, \
    user_epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
    coalesce((SELECT epoch FROM user_ends WHERE user_id = $3), 0))";
const LOAD: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = $1 AND ",
    alive!()
);
const LOAD_BY_HANDLE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE handle = $1 AND ",
    alive!()
);
const EXISTS: &str = concat!("SELECT 1 FROM sessions WHERE id = $1 AND ", alive!());
const UPDATE_DATA: &str = concat!(
    "UPDATE sessions SET data = $3, generation = generation + 1 \
     WHERE id = $1 AND generation = $2 AND ",
    alive!()
);
const REMOVE: &str = concat!(
    "DELETE FROM sessions WHERE id = $1 AND ",
    alive!(),
    " RETURNING ",
    session_columns!()
);
const REMOVE_BY_HANDLE: &str = concat!(
    "DELETE FROM sessions WHERE handle = $1 AND ($2 IS NULL OR user_id = $2) AND ",
    alive!(),
    " RETURNING ",
    session_columns!()
);
const REMOVE_EXPIRED: &str = concat!(
    "DELETE FROM sessions WHERE id = $1 AND deadline <= $2 AND ",
    alive!()
);
const LIST_FOR_USER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE user_id = $1 AND user_epoch >= \
     coalesce((SELECT epoch FROM user_ends WHERE user_id = $1), 0)"
);
/// Ending all of a user's sessions: raise the user's counter (the first
/// statement writes, so SQLite takes its write lock before any read)...
const END_USER: &str = "INSERT INTO user_ends (user_id, epoch) VALUES ($1, 1) \
    ON CONFLICT (user_id) DO UPDATE SET epoch = user_ends.epoch + 1";
/// ...move the kept session, if it was alive, to the new value...
const KEEP_SESSION: &str = "UPDATE sessions SET user_epoch = user_epoch + 1 \
    WHERE id = $2 AND user_id = $1 \
    AND user_epoch = (SELECT epoch FROM user_ends WHERE user_id = $1) - 1";
/// ...and count what ended, from the index alone.
const COUNT_ENDED: &str = "SELECT count(*) FROM sessions WHERE user_id = $1 \
    AND user_epoch = (SELECT epoch FROM user_ends WHERE user_id = $1) - 1";
const SUCCESSOR: &str = "SELECT handle FROM rotated_tokens WHERE id = $1";

fn generation_param(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation).map_err(|_| StoreError::Corrupt("generation out of range"))
}

fn data_param(data: &SessionData) -> Result<Option<String>, StoreError> {
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(data)
        .map(Some)
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

/// After a conditional write matched nothing: did the record go, or change?
async fn missing_or_stale<B: SqlBackend>(
    store: &B,
    id: &SessionId,
) -> Result<WriteOutcome, StoreError> {
    let exists = store
        .sql()
        .one(
            Statement::new(EXISTS).bytes(id.as_bytes().as_slice()),
            |_| Ok(()),
        )
        .await?
        .is_some();
    Ok(if exists {
        WriteOutcome::Stale
    } else {
        WriteOutcome::Missing
    })
}

#[async_trait]
impl<B: SqlBackend + Clone> SessionStore for B {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        let st = Statement::new(INSERT)
            .bytes(s.id.as_bytes().as_slice())
            .bytes(s.handle.as_bytes())
            .text(s.user_id.as_ref().map(UserId::as_str))
            .int(s.created_at.as_millis())
            .int(s.last_seen_at.as_millis())
            .int(s.auth_at.map(Timestamp::as_millis))
            .int(s.expires_at.as_millis())
            .int(duration_millis(s.idle_timeout))
            .text(s.user_agent.as_deref())
            .text(s.ip.as_deref())
            .owned_text(data_param(&s.data)?)
            .int(generation_param(s.generation)?)
            .flag(s.remembered);
        self.sql().exec(st).await?;
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let st = Statement::new(LOAD).bytes(id.as_bytes().as_slice());
        self.sql().one(st, rows::session).await
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        let st = Statement::new(LOAD_BY_HANDLE).bytes(handle.as_bytes());
        self.sql().one(st, rows::session).await
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let st = Statement::new(B::Db::TOUCH)
            .bytes(id.as_bytes().as_slice())
            .int(at.as_millis());
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let st = Statement::new(UPDATE_DATA)
            .bytes(id.as_bytes().as_slice())
            .int(generation_param(generation)?)
            .owned_text(data_param(data)?);
        if self.sql().exec(st).await? == 1 {
            return Ok(WriteOutcome::Applied);
        }
        missing_or_stale(self, id).await
    }

    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let sts = B::Db::rotate(id, new_id, auth_at);
        Ok(self.sql().exec_all(sts).await? == 1)
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let st = Statement::new(REMOVE).bytes(id.as_bytes().as_slice());
        self.sql().one(st, rows::session).await
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        let st = Statement::new(REMOVE_BY_HANDLE)
            .bytes(handle.as_bytes())
            .text(owner.map(UserId::as_str));
        self.sql().one(st, rows::session).await
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let st = Statement::new(REMOVE_EXPIRED)
            .bytes(id.as_bytes().as_slice())
            .int(now.as_millis());
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        let st = Statement::new(LIST_FOR_USER).text(Some(user.as_str()));
        self.sql().all(st, rows::session).await
    }

    /// One transaction of two or three statements, whatever the user's
    /// session count: the records stay until purge reaches their deadline.
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        let mut writes = vec![Statement::new(END_USER).text(Some(user.as_str()))];
        if let Some(keep) = keep {
            writes.push(
                Statement::new(KEEP_SESSION)
                    .text(Some(user.as_str()))
                    .bytes(keep.as_bytes().as_slice()),
            );
        }
        let count = Statement::new(COUNT_ENDED).text(Some(user.as_str()));
        let ended = self.sql().count_after(writes, count).await?;
        Ok(usize::try_from(ended).unwrap_or(usize::MAX))
    }

    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sessions = Statement::new(B::Db::PURGE_SESSIONS)
            .int(now.as_millis())
            .int(limit);
        let purged = self.sql().all(sessions, rows::session_id).await?;
        let rotated = Statement::new(B::Db::PURGE_ROTATED)
            .int(now.as_millis())
            .int(limit);
        self.sql().exec(rotated).await?;
        Ok(purged)
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        let st = Statement::new(SUCCESSOR).bytes(old.as_bytes().as_slice());
        self.sql().one(st, rows::rotated_handle).await
    }

    fn engine_state(&self) -> Option<std::sync::Arc<dyn crate::store::StateStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}
