//! Users of a tenant: list, create (password given or generated once),
//! change role or password, delete. Role changes go through the policy's
//! role-management rule so nobody grants more than they hold.

use serde::Deserialize;
use serviceradar_auth::{
    Authenticated, Credential, hash_password_blocking, random_token, verify_password_blocking,
};
use serviceradar_domain::policy::Role;
use serviceradar_domain::resources::User;
use serviceradar_domain::validate::{Email, FieldError, FieldErrors, Password};
use serviceradar_domain::{Action, Actor, Secret, UserId};
use serviceradar_store::{NewUser, Page};

use crate::error::finish;
use crate::{Control, ControlError, PageParams};

/// A new user.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login e-mail, unique in the tenant.
    pub email: String,
    /// Role; you can grant at most your own (only owners grant owner).
    pub role: String,
    /// Initial password (12+ characters); generated and returned once if absent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Secret>,
}

/// Changes to a user.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    pub role: Option<String>,
    /// New password (ends the user's sessions). Needs a signed-in session
    /// (API tokens cannot change passwords) and, for your own password,
    /// `current_password`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Secret>,
    /// Your current password, when changing your own.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub current_password: Option<Secret>,
}

/// What changing a user's password did, in words for the response.
pub const PASSWORD_CHANGED: &str = "password changed; every session of this user was ended \
     (sign in again). The user's API tokens were not changed: revoke them under \
     /api/v1/tokens if the old password may be known to someone else";

/// A created user and, when none was given, the generated password (shown once).
#[derive(Debug)]
pub struct CreatedUser {
    /// The user.
    pub user: User,
    /// The generated password.
    pub initial_password: Option<Secret>,
}

fn parse_role(raw: &str, errors: &mut FieldErrors) -> Option<Role> {
    errors.check(
        "role",
        raw.parse::<Role>().map_err(|m| FieldError::new("role", m)),
    )
}

impl Control {
    /// A page of the tenant's users.
    pub async fn list_users(
        &self,
        actor: &Actor,
        page: &PageParams,
    ) -> Result<Page<User>, ControlError> {
        let (scoped, page, ()) = self.listing(actor, Action::ReadUsers, page, |_| ())?;
        Ok(scoped.list_users(&page).await?)
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        actor: &Actor,
        input: &CreateUser,
    ) -> Result<CreatedUser, ControlError> {
        let scoped = self.scoped(actor, Action::ManageUsers)?;
        let mut errors = FieldErrors::default();
        let email = errors.check("email", Email::parse(&input.email));
        let role = parse_role(&input.role, &mut errors);
        let generated = input
            .password
            .is_none()
            .then(|| Secret::new(random_token(18)));
        let password_text = input.password.as_ref().or(generated.as_ref());
        let password = errors.check(
            "password",
            Password::parse(password_text.map(Secret::expose).unwrap_or_default()),
        );
        let (email, role, password) = finish(
            errors,
            email.zip(role).zip(password).map(|((e, r), p)| (e, r, p)),
        )?;
        actor.authorize_role_management(role)?;
        let password_hash = hash_password_blocking(password).await?;
        let user = scoped
            .create_user(&NewUser {
                email,
                role,
                password_hash,
            })
            .await?;
        tracing::info!(new_user_id = %user.id, role = %user.role, "user created");
        Ok(CreatedUser {
            user,
            initial_password: generated,
        })
    }

    /// One user (anyone may read themselves).
    pub async fn user(&self, actor: &Actor, id: UserId) -> Result<User, ControlError> {
        if id != actor.user_id {
            actor.authorize(Action::ReadUsers)?;
        }
        Ok(self.store().scoped(actor.scope()).user(id).await?)
    }

    /// Changes a user's role or password. A password change needs a session
    /// (a token, even one of the user's own, cannot turn itself into a
    /// password) and, for one's own password, the current password.
    pub async fn update_user(
        &self,
        auth: &Authenticated,
        id: UserId,
        input: &UpdateUser,
    ) -> Result<User, ControlError> {
        let actor = &auth.actor;
        let mut errors = FieldErrors::default();
        let role = input
            .role
            .as_deref()
            .and_then(|r| parse_role(r, &mut errors));
        let password = input
            .password
            .as_ref()
            .and_then(|p| errors.check("password", Password::parse(p.expose())));
        errors.into_result()?;
        let scoped = self.store().scoped(actor.scope());
        let target = scoped.user(id).await?;
        let changing_self_password_only = id == actor.user_id && role.is_none();
        if !changing_self_password_only {
            // Managing someone with a role needs rights over that role, and over the new one.
            actor.authorize_role_management(target.role)?;
            if let Some(role) = role {
                actor.authorize_role_management(role)?;
            }
        }
        if let Some(password) = password {
            if auth.credential != Credential::Session {
                return Err(ControlError::Forbidden(
                    "API tokens cannot change passwords; sign in to change a password".into(),
                ));
            }
            if id == actor.user_id {
                self.check_current_password(&target, input.current_password.as_ref())
                    .await?;
            }
            scoped
                .set_user_password(id, &hash_password_blocking(password).await?)
                .await?;
        }
        Ok(match role {
            Some(role) => scoped.set_user_role(id, role).await?,
            None => target,
        })
    }

    /// Refuses a change of `user`'s own password unless `current` is their
    /// password (checked like a login, on a blocking thread).
    async fn check_current_password(
        &self,
        user: &User,
        current: Option<&Secret>,
    ) -> Result<(), ControlError> {
        let Some(current) = current else {
            return Err(ControlError::field(
                "current_password",
                "is required to change your own password",
            ));
        };
        let tenant = self.store().tenant(user.tenant_id).await?;
        let record = self
            .store()
            .login_record(tenant.slug.as_str(), user.email.as_str())
            .await?;
        if !verify_password_blocking(current.clone(), Some(record.password_hash)).await? {
            return Err(ControlError::Forbidden(
                "the current password is wrong".into(),
            ));
        }
        Ok(())
    }

    /// Deletes a user (their tokens and sessions end with them).
    pub async fn delete_user(&self, actor: &Actor, id: UserId) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::ManageUsers)?;
        let target = scoped.user(id).await?;
        actor.authorize_role_management(target.role)?;
        scoped.delete_user(id).await?;
        tracing::info!(deleted_user_id = %id, "user deleted");
        Ok(())
    }
}
