//! [`StateStore`] for every SQL backend: compare-and-set on `version`.

use async_trait::async_trait;

use super::rows;
use super::{SqlBackend, Statement};
use crate::store::{StateStore, StoreError, Versioned};

const GET: &str = "SELECT value, version FROM engine_state WHERE name = $1";
const CREATE: &str = "INSERT INTO engine_state (name, value, version) VALUES ($1, $2, 1) \
    ON CONFLICT (name) DO NOTHING";
const REPLACE: &str = "UPDATE engine_state SET value = $2, version = version + 1 \
    WHERE name = $1 AND version = $3";

#[async_trait]
impl<B: SqlBackend> StateStore for B {
    async fn get_state(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        let st = Statement::new(GET).text(Some(name));
        self.sql().one(st, rows::versioned).await
    }

    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let st = match expected {
            None => Statement::new(CREATE).text(Some(name)).bytes(value),
            Some(v) => Statement::new(REPLACE)
                .text(Some(name))
                .bytes(value)
                .int(i64::try_from(v).map_err(|_| StoreError::Corrupt("state version too large"))?),
        };
        Ok(self.sql().exec(st).await? == 1)
    }
}
