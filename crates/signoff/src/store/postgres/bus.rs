//! The revocation bus on PostgreSQL: `LISTEN` on the channel the triggers
//! `NOTIFY` on.

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, Postgres};
use sqlx::Database;

use super::PostgresStore;
use crate::revocation::{BusSubscription, RevocationBus};
use crate::store::sql::{store_error, SqlBackend, Statement, TimedOut};
use crate::store::StoreError;

/// A `LISTEN` on the store's channel, on a connection of its own.
struct PgSubscription {
    listener: PgListener,
    /// Keeps the listener's private pool open.
    _pool: PgPool,
}

/// The error for a notification connection that went away.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL notification connection was lost")]
struct ConnectionLost;

#[async_trait]
impl BusSubscription for PgSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        // try_recv, not recv: recv reconnects silently, and whatever was
        // announced while it was away would be lost without a trace. Here a
        // lost connection ends the subscription, and the bus distrusts its
        // cache until it has subscribed again.
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(notification.payload().to_owned()),
            Ok(None) => Err(StoreError::Unavailable(Box::new(ConnectionLost))),
            Err(e) => Err(StoreError::Unavailable(Box::new(e))),
        }
    }
}

#[async_trait]
impl RevocationBus for PostgresStore {
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        // A private pool of one connection, so that a subscription never
        // takes a connection the sessions need, and is never handed back
        // to serve queries while still listening.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.connect.clone());
        let listen = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            // Returns once the server has run LISTEN: anything committed
            // from now on reaches this subscription.
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = match tokio::time::timeout(self.connect_timeout * 2, listen).await {
            Ok(result) => result.map_err(|e| match store_error::<Postgres>(e) {
                StoreError::Backend(e) => StoreError::Unavailable(e),
                other => other,
            })?,
            Err(_) => {
                return Err(StoreError::Unavailable(Box::new(TimedOut(
                    Postgres::NAME,
                    self.connect_timeout * 2,
                ))))
            }
        };
        Ok(Box::new(PgSubscription {
            listener,
            _pool: pool,
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let notify = Statement::new("SELECT pg_notify($1, $2)")
            .text(Some(&self.channel))
            .text(Some(payload));
        self.sql().exec(notify).await?;
        Ok(())
    }
}
