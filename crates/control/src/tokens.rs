//! API tokens: list (your own; admins everyone's), create for yourself (never
//! with more scopes than you hold; the secret is returned once), revoke, and
//! the operator's `admin create-token` for a user named by e-mail.

use serde::Deserialize;
use serviceradar_auth::{Authenticated, Credential, MintedToken, mint_token};
use serviceradar_domain::policy::{Scope, ScopeSet};
use serviceradar_domain::resources::{ApiToken, Tenant};
use serviceradar_domain::validate::{Email, FieldError, FieldErrors, TokenName};
use serviceradar_domain::{Action, Actor, ApiTokenId, Secret, TenantScope, UserId};
use serviceradar_store::{Cursor, NewToken, Page, PageRequest, Store, now_ms};

use crate::error::finish;
use crate::params::parse_id_filter;
use crate::{Control, ControlError, PageParams};

/// Shortest and longest token lifetime, in days.
pub const TOKEN_DAYS: std::ops::RangeInclusive<u32> = 1..=365;
/// Default token lifetime, in days.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;

/// A new API token.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Label, 1–64 characters.
    pub name: String,
    /// Scopes (`read`, `write`, `admin`); default `["read"]`.
    pub scopes: Option<Vec<String>>,
    /// Lifetime in days, 1–365 (default 90).
    pub expires_in_days: Option<u32>,
}

/// Filters for listing tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct TokenQuery {
    /// Admins: only tokens of this user. Others always see only their own.
    pub user_id: Option<String>,
}

/// A created token and its bearer secret (shown once).
#[derive(Debug)]
pub struct CreatedToken {
    /// The token's metadata.
    pub token: ApiToken,
    /// The bearer secret (`srt_...`).
    pub secret: Secret,
}

impl Control {
    /// A page of API tokens.
    pub async fn list_tokens(
        &self,
        actor: &Actor,
        query: &TokenQuery,
        page: &PageParams,
    ) -> Result<Page<ApiToken>, ControlError> {
        let (scoped, page, requested) =
            self.listing(actor, Action::ManageOwnTokens, page, |errors| {
                parse_id_filter::<UserId>("user_id", query.user_id.as_deref(), "a user id", errors)
            })?;
        let user = if actor.authorize(Action::ManageAllTokens).is_ok() {
            requested
        } else {
            Some(actor.user_id)
        };
        Ok(scoped.list_tokens(user, &page).await?)
    }

    /// Creates an API token for the caller.
    pub async fn create_token(
        &self,
        auth: &Authenticated,
        input: &CreateToken,
    ) -> Result<CreatedToken, ControlError> {
        let actor = &auth.actor;
        let scoped = self.scoped(actor, Action::ManageOwnTokens)?;
        let mut errors = FieldErrors::default();
        let name = errors.check("name", TokenName::parse(&input.name));
        let scope_names = input.scopes.clone().unwrap_or_else(|| vec!["read".into()]);
        let scopes = errors.check(
            "scopes",
            scope_names
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()
                .map(ScopeSet::from_scopes)
                .map_err(|m| FieldError::new("scopes", m))
                .and_then(|set| {
                    if set.is_empty() {
                        Err(FieldError::new("scopes", "must name at least one scope"))
                    } else {
                        Ok(set)
                    }
                }),
        );
        let days = input.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
        if !TOKEN_DAYS.contains(&days) {
            errors.0.push(FieldError::new(
                "expires_in_days",
                "must be between 1 and 365",
            ));
        }
        let (name, scopes) = finish(errors, name.zip(scopes))?;
        // A token never carries more than its creator could use.
        for scope in scopes.to_vec() {
            if !actor.scopes.contains(scope) {
                return Err(ControlError::Forbidden(format!(
                    "you cannot create a token with the {:?} scope",
                    scope.as_str()
                )));
            }
        }
        // A token never outlives the token that creates it: the default
        // lifetime is shortened to the parent's, an explicit longer one refused.
        let mut expires_at = expiry(days);
        if let Credential::Token(parent) = auth.credential {
            let parent = scoped.token(parent).await?;
            if expires_at > parent.expires_at {
                if input.expires_in_days.is_some() {
                    return Err(ControlError::field(
                        "expires_in_days",
                        format!(
                            "must not outlive the token creating it, which expires in {} day(s)",
                            (parent.expires_at - now_ms())
                                .max(0)
                                .unsigned_abs()
                                .div_ceil(86_400_000)
                        ),
                    ));
                }
                expires_at = parent.expires_at;
            }
        }
        let minted = mint_token();
        let token = scoped
            .create_token(&new_token(
                &minted,
                actor.user_id,
                name.to_string(),
                scopes,
                expires_at,
            ))
            .await?;
        tracing::info!(token_id = %token.id, "API token created");
        Ok(CreatedToken {
            token,
            secret: Secret::new(minted.token),
        })
    }

    /// Revokes a token (your own; admins anyone's; others learn nothing).
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        id: ApiTokenId,
    ) -> Result<ApiToken, ControlError> {
        let scoped = self.scoped(actor, Action::ManageOwnTokens)?;
        let token = scoped.token(id).await?;
        if token.user_id != actor.user_id {
            // Someone else's token: admins only, and non-admins learn nothing.
            actor
                .authorize(Action::ManageAllTokens)
                .map_err(|_| ControlError::NotFound)?;
        }
        let token = scoped.revoke_token(id).await?;
        tracing::info!(token_id = %id, "API token revoked");
        Ok(token)
    }
}

/// When a token created now for `days` days expires (Unix ms).
fn expiry(days: u32) -> i64 {
    now_ms() + i64::from(days) * 86_400_000
}

fn new_token(
    minted: &MintedToken,
    user_id: UserId,
    name: String,
    scopes: ScopeSet,
    expires_at: i64,
) -> NewToken {
    NewToken {
        id: minted.id,
        user_id,
        name,
        scopes,
        expires_at,
        secret_hash: minted.secret_hash.clone(),
    }
}

/// Operator path (`serviceradar-core admin create-token`): mints a token for
/// the user with `email` in the tenant with slug `tenant`; returns the secret
/// to print once.
pub async fn create_token_for(
    store: &Store,
    tenant: &str,
    email: &str,
    name: &str,
    scopes: &[Scope],
    days: u32,
) -> Result<String, ControlError> {
    let tenant: Tenant = store
        .tenant_by_slug(tenant)
        .await
        .map_err(|_| ControlError::BadRequest(format!("no tenant with slug {tenant:?}")))?;
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let email = Email::parse(email).map_err(|e| ControlError::field("email", e.message))?;
    let mut page = PageRequest {
        limit: PageRequest::MAX_LIMIT,
        after: None,
    };
    let user = loop {
        let users = scoped.list_users(&page).await?;
        if let Some(user) = users.items.into_iter().find(|u| u.email == email) {
            break user;
        }
        match users.next_cursor.and_then(|c| Cursor::decode(&c)) {
            Some(next) => page.after = Some(next),
            None => {
                return Err(ControlError::BadRequest(format!(
                    "no user {email} in tenant {}",
                    tenant.slug
                )));
            }
        }
    };
    let minted = mint_token();
    let days = days.clamp(*TOKEN_DAYS.start(), *TOKEN_DAYS.end());
    scoped
        .create_token(&new_token(
            &minted,
            user.id,
            name.to_string(),
            ScopeSet::from_scopes(scopes.iter().copied()),
            expiry(days),
        ))
        .await?;
    Ok(minted.token)
}
