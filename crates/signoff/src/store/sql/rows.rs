//! Reading sessions, users, audit events and state records back from rows,
//! by column position.

use std::time::Duration;

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::backend;
#[cfg(feature = "audit")]
use crate::audit::AuditEvent;
use crate::clock::Timestamp;
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::store::{StoreError, Versioned};
#[cfg(feature = "accounts")]
use crate::users::User;

/// A column read as a `T`.
pub(crate) trait Column<T> {
    /// The value at position `i`.
    fn column(&self, i: usize) -> Result<T, StoreError>;
}

impl<R, T> Column<T> for R
where
    R: Row,
    usize: ColumnIndex<R>,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn column(&self, i: usize) -> Result<T, StoreError> {
        self.try_get(i).map_err(backend)
    }
}

/// A row of either database: it reads the column types the tables use.
pub(crate) trait SqlRow:
    Column<i64>
    + Column<Option<i64>>
    + Column<Vec<u8>>
    + Column<String>
    + Column<Option<String>>
    + Column<bool>
{
}

impl<R> SqlRow for R where
    R: Column<i64>
        + Column<Option<i64>>
        + Column<Vec<u8>>
        + Column<String>
        + Column<Option<String>>
        + Column<bool>
{
}

/// The session columns, in the order [`session`] reads them.
macro_rules! session_columns {
    () => {
        "id, handle, user_id, created_at, last_seen_at, auth_at, expires_at, \
         idle_timeout_ms, user_agent, ip, data, generation, remembered"
    };
}
pub(crate) use session_columns;

/// The user columns, in the order [`user`] reads them.
macro_rules! user_columns {
    () => {
        "id, name, password_hash, disabled, created_at, group_names"
    };
}
pub(crate) use user_columns;

fn digest<R: SqlRow>(row: &R, col: usize) -> Result<SessionId, StoreError> {
    let bytes: Vec<u8> = row.column(col)?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("session id is not 32 bytes"))?;
    Ok(SessionId::from_digest(array))
}

/// A session id in the first column.
pub(crate) fn session_id<R: SqlRow>(row: &R) -> Result<SessionId, StoreError> {
    digest(row, 0)
}

/// A session from [`session_columns`].
pub(crate) fn session<R: SqlRow>(row: &R) -> Result<Session, StoreError> {
    let handle: Vec<u8> = row.column(1)?;
    let idle_ms: i64 = row.column(7)?;
    let data: Option<String> = row.column(10)?;
    let data: SessionData = match data {
        Some(json) => {
            serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("session data"))?
        }
        None => SessionData::new(),
    };
    let generation: i64 = row.column(11)?;
    let user_id: Option<String> = row.column(2)?;
    let auth_at: Option<i64> = row.column(5)?;
    Ok(Session {
        id: digest(row, 0)?,
        handle: SessionHandle::from_slice(&handle)
            .map_err(|_| StoreError::Corrupt("session handle"))?,
        user_id: user_id.map(UserId::new),
        created_at: Timestamp::from_millis(row.column(3)?),
        last_seen_at: Timestamp::from_millis(row.column(4)?),
        auth_at: auth_at.map(Timestamp::from_millis),
        expires_at: Timestamp::from_millis(row.column(6)?),
        idle_timeout: Duration::from_millis(
            u64::try_from(idle_ms).map_err(|_| StoreError::Corrupt("idle timeout"))?,
        ),
        user_agent: row.column(8)?,
        ip: row.column(9)?,
        data,
        generation: u64::try_from(generation).map_err(|_| StoreError::Corrupt("generation"))?,
        remembered: row.column(12)?,
    })
}

/// The handle a rotated-away digest points to, in the first column.
pub(crate) fn rotated_handle<R: SqlRow>(row: &R) -> Result<SessionHandle, StoreError> {
    let handle: Vec<u8> = row.column(0)?;
    SessionHandle::from_slice(&handle).map_err(|_| StoreError::Corrupt("rotated token handle"))
}

/// A user from [`user_columns`].
#[cfg(feature = "accounts")]
pub(crate) fn user<R: SqlRow>(row: &R) -> Result<User, StoreError> {
    let id: String = row.column(0)?;
    let groups: String = row.column(5)?;
    Ok(User {
        id: UserId::new(id),
        name: row.column(1)?,
        password_hash: row.column(2)?,
        disabled: row.column(3)?,
        created_at: Timestamp::from_millis(row.column(4)?),
        groups: crate::users::groups_from_stored(&groups),
    })
}

#[cfg(feature = "audit")]
/// An audit event from `seq, at, kind, user_id, user_name, session, actor,
/// reason, ip, count`.
pub(crate) fn audit_event<R: SqlRow>(row: &R) -> Result<AuditEvent, StoreError> {
    let kind: String = row.column(2)?;
    let user_id: Option<String> = row.column(3)?;
    let session: Option<String> = row.column(5)?;
    let actor: Option<String> = row.column(6)?;
    let count: Option<i64> = row.column(9)?;
    Ok(AuditEvent {
        seq: row.column(0)?,
        at: Timestamp::from_millis(row.column(1)?),
        kind: kind.parse()?,
        user_id: user_id.map(UserId::new),
        user_name: row.column(4)?,
        session: session
            .map(|h| {
                h.parse()
                    .map_err(|_| StoreError::Corrupt("audit session handle"))
            })
            .transpose()?,
        by: actor.map(|a| a.parse()).transpose()?,
        reason: row.column(7)?,
        ip: row.column(8)?,
        count: count
            .map(|c| u64::try_from(c).map_err(|_| StoreError::Corrupt("audit count")))
            .transpose()?,
    })
}

/// A state record from `value, version`.
pub(crate) fn versioned<R: SqlRow>(row: &R) -> Result<Versioned, StoreError> {
    let version: i64 = row.column(1)?;
    Ok(Versioned {
        value: row.column(0)?,
        version: u64::try_from(version)
            .map_err(|_| StoreError::Corrupt("negative state version"))?,
    })
}
