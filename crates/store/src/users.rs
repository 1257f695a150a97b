//! Users of a tenant. Password hashes are written here and read back only by
//! the login lookup in `auth`; no other query selects them.

use serviceradar_domain::UserId;
use serviceradar_domain::policy::Role;
use serviceradar_domain::resources::User;
use serviceradar_domain::validate::Email;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Transaction};

use crate::Scoped;
use crate::auth_cache::Invalidation;
use crate::db::{Backend, now_ms};
use crate::error::{StoreError, on_unique};
use crate::page::{ListQuery, Page, PageRequest};
use crate::row::{self, Cols};

/// A user to create; the password is already hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login e-mail.
    pub email: Email,
    /// Role.
    pub role: Role,
    /// Argon2 PHC string.
    pub password_hash: String,
}

/// The columns [`decode`] reads, on `users u`: every query that returns a
/// [`User`] selects this list (the login lookup adds the password hash).
macro_rules! user_columns {
    () => {
        "u.id, u.tenant_id, u.email, u.role, u.created_at"
    };
}
pub(crate) use user_columns;

pub(crate) fn decode(row: &AnyRow) -> Result<User, StoreError> {
    let r = Cols::of(row, "users");
    Ok(User {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        email: r.valid("email", Email::parse)?,
        role: r.parse("role")?,
        created_at: r.get("created_at")?,
    })
}

impl Scoped<'_> {
    /// Creates a user. `Conflict` if the e-mail is taken in this tenant.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let user = User {
            id: UserId::new(),
            tenant_id: self.scope.tenant_id(),
            email: new.email.clone(),
            role: new.role,
            created_at: now_ms(),
        };
        insert_user(&self.store.pool, &user, &new.password_hash).await?;
        Ok(user)
    }

    /// One user of this tenant.
    pub async fn user(&self, id: UserId) -> Result<User, StoreError> {
        self.user_in(&self.store.pool, id).await
    }

    /// A page of this tenant's users.
    pub async fn list_users(&self, page: &PageRequest) -> Result<Page<User>, StoreError> {
        ListQuery::new(
            concat!("SELECT ", user_columns!(), " FROM users u"),
            "u",
            self.tenant(),
        )
        .page("u", page)
        .fetch(&self.store.pool, decode)
        .await
    }

    /// Changes a user's role, refusing to remove the tenant's last owner.
    pub async fn set_user_role(&self, id: UserId, role: Role) -> Result<User, StoreError> {
        // The last-owner check is part of the write itself, under a per-tenant
        // lock, so two concurrent demotions cannot both see "another owner".
        let sql = if role == Role::Owner {
            "UPDATE users SET role = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4"
        } else {
            "UPDATE users SET role = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 \
             AND (role <> 'owner' OR EXISTS (SELECT 1 FROM users o \
                  WHERE o.tenant_id = $3 AND o.role = 'owner' AND o.id <> $4))"
        };
        let mut tx = self.store.begin_write().await?;
        self.lock_owners(&mut tx).await?;
        let done = sqlx::query(sql)
            .bind(role.as_str())
            .bind(now_ms())
            .bind(self.tenant())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let user = self.user_in(&mut *tx, id).await?;
        if done.rows_affected() == 0 {
            return Err(last_owner());
        }
        let what = Invalidation::User(id);
        self.store.notify_auth_in(&mut tx, &what).await?;
        tx.commit().await?;
        self.store.forget_auth(&what);
        Ok(user)
    }

    /// Replaces a user's password hash and ends their sessions.
    pub async fn set_user_password(
        &self,
        id: UserId,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(password_hash)
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        row::affected(&done)?;
        sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2")
            .bind(self.tenant())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let what = Invalidation::User(id);
        self.store.notify_auth_in(&mut tx, &what).await?;
        tx.commit().await?;
        self.store.forget_auth(&what);
        Ok(())
    }

    /// Deletes a user (their tokens and sessions go with them), refusing to
    /// delete the tenant's last owner.
    pub async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        self.lock_owners(&mut tx).await?;
        let done = sqlx::query(
            "DELETE FROM users WHERE tenant_id = $1 AND id = $2 \
             AND (role <> 'owner' OR EXISTS (SELECT 1 FROM users o \
                  WHERE o.tenant_id = $1 AND o.role = 'owner' AND o.id <> $2))",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Still there: it is the last owner. Gone: it never existed here.
            self.user_in(&mut *tx, id).await?;
            return Err(last_owner());
        }
        let what = Invalidation::User(id);
        self.store.notify_auth_in(&mut tx, &what).await?;
        tx.commit().await?;
        self.store.forget_auth(&what);
        Ok(())
    }

    /// Serialises changes that could remove the tenant's last owner. On
    /// PostgreSQL this locks the tenant row (`NO KEY UPDATE`, so inserts that
    /// reference the tenant are not blocked). SQLite needs nothing: the
    /// conditional write that follows is the transaction's first statement, so
    /// it runs under the database's single write lock with its check.
    async fn lock_owners(&self, tx: &mut Transaction<'_, Any>) -> Result<(), StoreError> {
        if self.store.backend() == Backend::Postgres {
            sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
                .bind(self.tenant())
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// [`Scoped::user`] through `db`: the pool, or a transaction's connection.
    async fn user_in<'e>(
        &self,
        db: impl Executor<'e, Database = Any>,
        id: UserId,
    ) -> Result<User, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.tenant_id = $1 AND u.id = $2"
        ))
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_optional(db)
        .await?;
        row::found(row, decode)
    }
}

fn last_owner() -> StoreError {
    StoreError::InvalidState("a tenant must keep at least one owner".into())
}

/// Inserts `user` with `password_hash` (on the pool or inside a transaction).
/// `Conflict` if the e-mail is taken in the tenant.
pub(crate) async fn insert_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user: &User,
    password_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, tenant_id, email, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(user.id.to_string())
    .bind(user.tenant_id.to_string())
    .bind(user.email.as_str())
    .bind(password_hash)
    .bind(user.role.as_str())
    .bind(user.created_at)
    .execute(db)
    .await
    .map_err(on_unique("a user with this e-mail already exists"))?;
    Ok(())
}
