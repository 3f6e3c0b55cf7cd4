//! The audit trail on Redis: a sorted set of events as JSON.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{store_error, RedisStore};
use crate::audit::{self, AuditEvent, AuditQuery, AuditStore};
use crate::clock::Timestamp;
use crate::session::UserId;
use crate::store::StoreError;

#[async_trait]
impl AuditStore for RedisStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let seq: i64 = redis::cmd("INCR")
            .arg(self.audit_seq_key())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut event = event.clone();
        event.seq = seq;
        let json = serde_json::to_string(&event).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.audit_key())
            .arg(event.at.as_millis())
            .arg(json)
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let min = query
            .since
            .map_or_else(|| "-inf".to_owned(), |t| t.as_millis().to_string());
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.audit_key())
            .arg(min)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut events = members
            .iter()
            .map(|m| serde_json::from_slice::<AuditEvent>(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StoreError::Corrupt("audit event"))?;
        events.sort_by_key(|e| e.seq);
        let mut events = audit::select(&events, query);
        let missing: HashSet<UserId> = events
            .iter()
            .filter(|e| e.user_name.is_none())
            .filter_map(|e| e.user_id.clone())
            .collect();
        let mut names = HashMap::new();
        for id in missing {
            let name: Option<String> = redis::cmd("HGET")
                .arg(self.user_key(&id))
                .arg("name")
                .query_async(&mut self.conn())
                .await
                .map_err(store_error)?;
            if let Some(name) = name {
                names.insert(id, name);
            }
        }
        for e in &mut events {
            if e.user_name.is_none() {
                e.user_name = e.user_id.as_ref().and_then(|id| names.get(id)).cloned();
            }
        }
        Ok(events)
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let removed: u64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.audit_key())
            .arg("-inf")
            .arg(format!("({}", before.as_millis()))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(removed)
    }
}
