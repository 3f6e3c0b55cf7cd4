//! [`AuditStore`] for every SQL backend.

use async_trait::async_trait;

use super::rows;
use super::{SqlBackend, Statement};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, AuditStore};
use crate::clock::Timestamp;
use crate::session::UserId;
use crate::store::StoreError;

const APPEND: &str = "INSERT INTO audit \
    (at, kind, user_id, user_name, session, actor, reason, ip, count) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// The newest events first; a user's name is the one recorded with the
/// event or, failing that, the account's current one.
const QUERY: &str = "SELECT a.seq, a.at, a.kind, a.user_id, coalesce(a.user_name, u.name), \
    a.session, a.actor, a.reason, a.ip, a.count \
    FROM audit a LEFT JOIN users u ON u.id = a.user_id \
    WHERE ($1 IS NULL OR a.user_id = $1) AND ($2 IS NULL OR a.at >= $2) \
    AND ($3 IS NULL OR a.kind = $3) \
    ORDER BY a.seq DESC LIMIT $4";
const PURGE_BEFORE: &str = "DELETE FROM audit WHERE at < $1";

#[async_trait]
impl<B: SqlBackend> AuditStore for B {
    async fn append(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let st = Statement::new(APPEND)
            .int(e.at.as_millis())
            .text(Some(e.kind.as_str()))
            .text(e.user_id.as_ref().map(UserId::as_str))
            .text(e.user_name.as_deref())
            .owned_text(e.session.map(|h| h.to_string()))
            .text(e.by.map(Actor::as_str))
            .text(e.reason.as_deref())
            .text(e.ip.as_deref())
            .int(e.count.map(|c| i64::try_from(c).unwrap_or(i64::MAX)));
        self.sql().exec(st).await?;
        Ok(())
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let limit =
            i64::try_from(q.limit.unwrap_or(crate::audit::DEFAULT_LIMIT)).unwrap_or(i64::MAX);
        let st = Statement::new(QUERY)
            .text(q.user_id.as_ref().map(UserId::as_str))
            .int(q.since.map(Timestamp::as_millis))
            .text(q.kind.map(AuditKind::as_str))
            .int(limit);
        self.sql().all(st, rows::audit_event).await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let st = Statement::new(PURGE_BEFORE).int(before.as_millis());
        self.sql().exec(st).await
    }
}
