//! The revocation bus on Redis pub/sub.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, RedisError, Value,
};

use super::{plain, store_error, RedisStore};
use crate::revocation::{BusSubscription, RevocationBus};
use crate::store::StoreError;

/// A subscription to the revocation channel on its own connection.
struct RedisSubscription {
    /// Keeps the connection (and so the subscription) open.
    _connection: MultiplexedConnection,
    messages: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
}

#[async_trait]
impl BusSubscription for RedisSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        loop {
            let Some(push) = self.messages.recv().await else {
                return Err(StoreError::Unavailable(plain(
                    "the Redis subscription connection closed",
                )));
            };
            match push.kind {
                PushKind::Message => match push.data.get(1) {
                    // Anything odd is handed on as text for the bus to count
                    // as malformed: whoever can publish must not be able to
                    // make nodes drop their subscription.
                    Some(Value::BulkString(bytes)) => {
                        return Ok(String::from_utf8_lossy(bytes).into_owned());
                    }
                    Some(Value::SimpleString(text)) => return Ok(text.clone()),
                    _ => return Ok(String::new()),
                },
                PushKind::Disconnection => {
                    return Err(StoreError::Unavailable(plain(
                        "the Redis subscription connection was lost",
                    )));
                }
                // Subscription confirmations and other pushes.
                _ => {}
            }
        }
    }
}

#[async_trait]
impl RevocationBus for RedisStore {
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        // A connection of its own, speaking RESP3 so that messages arrive
        // as pushes on a channel.
        let info = self.inner.client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings)).map_err(store_error)?;
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let options = &self.inner.options;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_push_sender(sender);
        let subscribed = async {
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            connection.subscribe(self.channel()).await?;
            Ok::<_, RedisError>(connection)
        };
        let connection = tokio::time::timeout(
            options.connect_timeout + options.response_timeout,
            subscribed,
        )
        .await
        .map_err(|_| StoreError::Unavailable(plain("subscribing to Redis timed out")))?
        .map_err(store_error)?;
        Ok(Box::new(RedisSubscription {
            _connection: connection,
            messages,
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(payload)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
