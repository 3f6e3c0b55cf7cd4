//! Where PostgreSQL's SQL differs from SQLite's.

use sqlx::postgres::{PgQueryResult, Postgres};

use crate::clock::Timestamp;
use crate::session_token::SessionId;
use crate::store::sql::{alive, user_columns, Dialect, Statement};

impl Dialect for Postgres {
    const TOUCH: &'static str = concat!(
        "UPDATE sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1 AND ",
        alive!()
    );

    // SKIP LOCKED: purges running at once on several nodes take disjoint
    // rows instead of queueing behind each other.
    const PURGE_SESSIONS: &'static str = "DELETE FROM sessions WHERE id IN \
        (SELECT id FROM sessions WHERE deadline <= $1 ORDER BY deadline LIMIT $2 \
         FOR UPDATE SKIP LOCKED) \
        RETURNING id";

    const PURGE_ROTATED: &'static str = "DELETE FROM rotated_tokens WHERE id IN \
        (SELECT id FROM rotated_tokens WHERE expires_at <= $1 LIMIT $2 \
         FOR UPDATE SKIP LOCKED)";

    // COLLATE "C": byte order, as SQLite sorts, whatever the database's
    // collation.
    const LIST_USERS: &'static str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY name COLLATE \"C\""
    );

    /// One statement: the old digest is kept (for logout) exactly when the
    /// record moves.
    fn rotate<'a>(
        id: &'a SessionId,
        new_id: &'a SessionId,
        auth_at: Option<Timestamp>,
    ) -> Vec<Statement<'a>> {
        vec![Statement::new(concat!(
            "WITH moved AS (UPDATE sessions SET id = $2, generation = generation + 1, \
             auth_at = coalesce($3, auth_at) WHERE id = $1 AND ",
            alive!(),
            " RETURNING handle, expires_at) \
             INSERT INTO rotated_tokens (id, handle, expires_at) \
             SELECT $1, handle, expires_at FROM moved"
        ))
        .bytes(id.as_bytes().as_slice())
        .bytes(new_id.as_bytes().as_slice())
        .int(auth_at.map(Timestamp::as_millis))]
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn transient(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Database(db) => db.code().is_some_and(|c| transient_sqlstate(&c)),
            sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
            _ => false,
        }
    }
}

/// SQLSTATEs after which the operation did not happen and may work later.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, ...)
        || matches!(
            code,
            "57014" // query_canceled (statement_timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
        )
}
