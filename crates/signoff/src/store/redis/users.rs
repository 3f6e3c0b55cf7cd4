//! User accounts on Redis.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::RedisError;

use super::{store_error, Fields, RedisStore};
use crate::clock::Timestamp;
use crate::session::UserId;
use crate::store::StoreError;
use crate::users::{groups_to_stored, User, UserStore};

fn user_from_fields(fields: HashMap<String, Vec<u8>>) -> Result<User, StoreError> {
    let f = Fields(fields);
    Ok(User {
        id: UserId::new(f.required("id")?),
        name: f.required("name")?,
        password_hash: f.required("password_hash")?,
        disabled: match f.required("disabled")?.as_str() {
            "1" => true,
            "0" => false,
            _ => return Err(StoreError::Corrupt("disabled")),
        },
        created_at: Timestamp::from_millis(f.int("created_at")?),
        // Users written before groups existed have no field.
        groups: f
            .text("groups")?
            .map(|stored| crate::users::groups_from_stored(&stored))
            .unwrap_or_default(),
    })
}

impl RedisStore {
    async fn read_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.user_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let user = user_from_fields(fields)?;
        Ok((user.id == *id).then_some(user))
    }

    async fn set_user_field(
        &self,
        id: &UserId,
        field: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .inner
            .scripts
            .set_if_exists
            .key(self.user_key(id))
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let name_key = self.username_key(&user.name);
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&name_key)
            .arg(user.id.as_str())
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if claimed.is_none() {
            return Err(StoreError::Duplicate);
        }
        let created_at = user.created_at.as_millis().to_string();
        let created: i64 = self
            .inner
            .scripts
            .create_hash
            .key(self.user_key(&user.id))
            .arg("id")
            .arg(user.id.as_str())
            .arg("name")
            .arg(&user.name)
            .arg("password_hash")
            .arg(&user.password_hash)
            .arg("disabled")
            .arg(if user.disabled { "1" } else { "0" })
            .arg("created_at")
            .arg(&created_at)
            .arg("groups")
            .arg(groups_to_stored(&user.groups))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if created != 1 {
            let released: Result<i64, RedisError> = self
                .inner
                .scripts
                .delete_if
                .key(&name_key)
                .arg(user.id.as_str())
                .invoke_async(&mut self.conn())
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not release a Redis user name claim");
            }
            return Err(StoreError::Duplicate);
        }
        let _: i64 = redis::cmd("SADD")
            .arg(self.users_key())
            .arg(user.id.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let Some(id) = self.get_pointer(&self.username_key(name)).await? else {
            return Ok(None);
        };
        let user = self.read_user(&UserId::new(id)).await?;
        Ok(user.filter(|u| u.name == name))
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.read_user(id).await
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        self.set_user_field(id, "password_hash", phc).await
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .inner
            .scripts
            .replace_password
            .key(self.user_key(id))
            .arg(expected)
            .arg(phc)
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        self.set_user_field(id, "disabled", if disabled { "1" } else { "0" })
            .await
    }

    async fn replace_groups(
        &self,
        id: &UserId,
        expected: &[String],
        groups: &[String],
    ) -> Result<bool, StoreError> {
        let done: i64 = self
            .inner
            .scripts
            .replace_groups
            .key(self.user_key(id))
            .arg(groups_to_stored(expected))
            .arg(groups_to_stored(groups))
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.users_key())
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL")
                .arg(self.user_key(&UserId::new(id.as_str())));
        }
        let records: Vec<HashMap<String, Vec<u8>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let mut users = Vec::with_capacity(records.len());
        for fields in records {
            if !fields.is_empty() {
                users.push(user_from_fields(fields)?);
            }
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }
}
