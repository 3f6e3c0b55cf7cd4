//! Where SQLite's SQL differs from PostgreSQL's.

use sqlx::sqlite::SqliteQueryResult;

use crate::clock::Timestamp;
use crate::session_token::SessionId;
use crate::store::sql::{alive, user_columns, Dialect, Statement};

impl Dialect for sqlx::Sqlite {
    const TOUCH: &'static str = concat!(
        "UPDATE sessions SET last_seen_at = max(last_seen_at, $2) WHERE id = $1 AND ",
        alive!()
    );

    const PURGE_SESSIONS: &'static str = "DELETE FROM sessions WHERE rowid IN \
        (SELECT rowid FROM sessions WHERE deadline <= $1 ORDER BY deadline LIMIT $2) \
        RETURNING id";

    const PURGE_ROTATED: &'static str = "DELETE FROM rotated_tokens WHERE rowid IN \
        (SELECT rowid FROM rotated_tokens WHERE expires_at <= $1 LIMIT $2)";

    const LIST_USERS: &'static str =
        concat!("SELECT ", user_columns!(), " FROM users ORDER BY name");

    /// Two statements in one transaction. Its first statement writes, so
    /// the write lock is taken before anything is read.
    fn rotate<'a>(
        id: &'a SessionId,
        new_id: &'a SessionId,
        auth_at: Option<Timestamp>,
    ) -> Vec<Statement<'a>> {
        vec![
            Statement::new(concat!(
                "INSERT INTO rotated_tokens (id, handle, expires_at) \
                     SELECT id, handle, expires_at FROM sessions WHERE id = $1 AND ",
                alive!()
            ))
            .bytes(id.as_bytes().as_slice()),
            Statement::new(concat!(
                "UPDATE sessions SET id = $2, generation = generation + 1, \
                     auth_at = coalesce($3, auth_at) WHERE id = $1 AND ",
                alive!()
            ))
            .bytes(id.as_bytes().as_slice())
            .bytes(new_id.as_bytes().as_slice())
            .int(auth_at.map(Timestamp::as_millis)),
        ]
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn transient(e: &sqlx::Error) -> bool {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
        matches!(e, sqlx::Error::Database(db) if db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)))
    }
}
