//! [`UserStore`] for every SQL backend.

use async_trait::async_trait;

use super::rows::{self, user_columns};
use super::{Dialect, SqlBackend, Statement};
use crate::session::UserId;
use crate::store::StoreError;
use crate::users::{groups_to_stored, User, UserStore};

const INSERT: &str =
    "INSERT INTO users (id, name, password_hash, disabled, created_at, group_names) \
    VALUES ($1, $2, $3, $4, $5, $6)";
const BY_NAME: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
const BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";
const REPLACE_PASSWORD_HASH: &str =
    "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2";
const SET_DISABLED: &str = "UPDATE users SET disabled = $2 WHERE id = $1";
const REPLACE_GROUPS: &str = "UPDATE users SET group_names = $3 WHERE id = $1 AND group_names = $2";

#[async_trait]
impl<B: SqlBackend> UserStore for B {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let groups = groups_to_stored(&user.groups);
        let st = Statement::new(INSERT)
            .text(Some(user.id.as_str()))
            .text(Some(&user.name))
            .text(Some(&user.password_hash))
            .flag(user.disabled)
            .int(user.created_at.as_millis())
            .text(Some(&groups));
        self.sql().exec(st).await?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let st = Statement::new(BY_NAME).text(Some(name));
        self.sql().one(st, rows::user).await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let st = Statement::new(BY_ID).text(Some(id.as_str()));
        self.sql().one(st, rows::user).await
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        let st = Statement::new(SET_PASSWORD_HASH)
            .text(Some(id.as_str()))
            .text(Some(phc));
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let st = Statement::new(REPLACE_PASSWORD_HASH)
            .text(Some(id.as_str()))
            .text(Some(expected))
            .text(Some(phc));
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        let st = Statement::new(SET_DISABLED)
            .text(Some(id.as_str()))
            .flag(disabled);
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn replace_groups(
        &self,
        id: &UserId,
        expected: &[String],
        groups: &[String],
    ) -> Result<bool, StoreError> {
        let (expected, groups) = (groups_to_stored(expected), groups_to_stored(groups));
        let st = Statement::new(REPLACE_GROUPS)
            .text(Some(id.as_str()))
            .text(Some(&expected))
            .text(Some(&groups));
        Ok(self.sql().exec(st).await? == 1)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.sql()
            .all(Statement::new(B::Db::LIST_USERS), rows::user)
            .await
    }
}
