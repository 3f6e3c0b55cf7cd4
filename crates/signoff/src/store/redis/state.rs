//! The engine's own state records on Redis.

use async_trait::async_trait;

use super::{store_error, RedisStore};
use crate::store::{StateStore, StoreError, Versioned};

#[async_trait]
impl StateStore for RedisStore {
    async fn get_state(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        let (value, version): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.state_key(name))
            .arg("value")
            .arg("version")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        match (value, version) {
            (Some(value), Some(version)) => Ok(Some(Versioned { value, version })),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt("engine state record is incomplete")),
        }
    }

    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let written: i64 = self
            .inner
            .scripts
            .put_state
            .key(self.state_key(name))
            .arg(value)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(written == 1)
    }
}
