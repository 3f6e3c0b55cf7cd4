//! The revocation bus on one SQLite file: a watch on the change log that
//! triggers fill inside each writing transaction.

use std::collections::VecDeque;

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;
use sqlx::Connection;
use tokio::sync::broadcast;

use super::SqliteStore;
use crate::revocation::{BusSubscription, RevocationBus};
use crate::session::UserId;
use crate::session_token::SessionId;
use crate::store::StoreError;

/// Changes read in one poll at most; a larger backlog (a mass sign-out)
/// is answered by forgetting everything.
const CHANGES_PER_POLL: usize = 1000;

/// A watch on the change log, on a connection of its own.
struct SqliteSubscription {
    conn: SqliteConnection,
    /// The highest change read.
    last: i64,
    /// `PRAGMA data_version` at the last read: it moves when another
    /// connection commits, so an idle poll costs no table read.
    data_version: i64,
    ready: VecDeque<String>,
    local: broadcast::Receiver<String>,
    ticker: tokio::time::Interval,
}

/// The error for a change log that cannot be followed.
#[derive(Debug, thiserror::Error)]
#[error("this process's own announcements were dropped")]
struct LocalClosed;

impl SqliteSubscription {
    async fn poll(&mut self) -> Result<(), StoreError> {
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await
            .map_err(unavailable)?;
        if version == self.data_version {
            return Ok(());
        }
        self.data_version = version;
        let limit = i64::try_from(CHANGES_PER_POLL + 1).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT seq, id, user_id FROM session_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(self.last)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            // The log never shrinks below what was read unless the file was
            // replaced (a restore): start over from what it holds now.
            let top = self.top().await?;
            if top < self.last {
                self.last = top;
                self.ready.push_back("*".to_owned());
            }
            return Ok(());
        }
        let gap = rows
            .first()
            .is_some_and(|(seq, _, _)| *seq != self.last + 1);
        if gap || rows.len() > CHANGES_PER_POLL {
            // Rows not read yet were pruned, or too many to read now.
            self.last = self.top().await?;
            self.ready.push_back("*".to_owned());
            return Ok(());
        }
        for (seq, id, user) in rows {
            self.last = seq;
            let payload = match (user, <[u8; 32]>::try_from(id.as_slice())) {
                // All of a user's sessions ended (0006_user_ends.sql).
                (Some(user), _) => crate::revocation::user_end_payload(&UserId::new(user)),
                (None, Ok(digest)) => {
                    crate::revocation::invalidation_payload(&SessionId::from_digest(digest))
                }
                (None, Err(_)) => "*".to_owned(),
            };
            self.ready.push_back(payload);
        }
        Ok(())
    }

    async fn top(&mut self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM session_changes")
            .fetch_one(&mut self.conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl BusSubscription for SqliteSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Ok(payload);
            }
            // The heartbeats that come back here pass through this same
            // loop, so a poll that hangs makes them late and the bus runner
            // stops trusting the cache; a poll that fails ends the
            // subscription (the same).
            tokio::select! {
                biased;
                local = self.local.recv() => match local {
                    Ok(payload) => return Ok(payload),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(StoreError::Unavailable(Box::new(LocalClosed)))
                    }
                },
                _ = self.ticker.tick() => self.poll().await?,
            }
        }
    }
}

#[async_trait]
impl RevocationBus for SqliteStore {
    /// A watch on the change log the triggers fill. Returns once it knows
    /// where the log ends, so every change committed afterwards (by any
    /// process) is delivered.
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        let mut conn = SqliteConnection::connect_with(&self.connect)
            .await
            .map_err(unavailable)?;
        let data_version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut ticker = tokio::time::interval(self.watch_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscription = SqliteSubscription {
            conn,
            last: 0,
            data_version,
            ready: VecDeque::new(),
            local: self.local.subscribe(),
            ticker,
        };
        subscription.last = subscription.top().await?;
        Ok(Box::new(subscription))
    }

    /// Delivers `payload` to this process's subscriptions only (the bus
    /// runner's heartbeats). Other processes learn of changes to sessions
    /// from the change log, not from here.
    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        // No subscriber yet is no error: the runner subscribes in its own time.
        let _ = self.local.send(payload.to_owned());
        Ok(())
    }
}

/// A driver error that means the change log cannot be read.
fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}
