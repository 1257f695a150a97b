//! Operator commands (`serviceradar-core admin ...`) that work directly on
//! the database: creating tenants (with their CA and NATS account) and their first owner, listing tenants,
//! and minting an API token for automation.

use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::{Role, Scope, ScopeSet};
use serviceradar_domain::validate::{DisplayName, Email, Password, Slug};
use serviceradar_store::{NewToken, NewUser, PageRequest, Store};

use crate::auth::{hash_password, mint_token, now_ms, random_token};
use crate::pki::Pki;

/// A created tenant and its owner's credentials, to print once.
pub struct CreatedTenant {
    /// Tenant id.
    pub tenant_id: String,
    /// Owner e-mail.
    pub owner_email: String,
    /// Generated owner password, when none was given.
    pub generated_password: Option<String>,
}

/// Creates a tenant, its intermediate CA and NATS account, and its first owner.
pub async fn create_tenant(
    store: &Store,
    pki: &Pki,
    slug: &str,
    name: Option<&str>,
    owner_email: &str,
    owner_password: Option<&str>,
) -> anyhow::Result<CreatedTenant> {
    let slug = Slug::parse(slug).map_err(|e| anyhow::anyhow!("--slug {}", e.message))?;
    let name = DisplayName::parse(name.unwrap_or(slug.as_str()))
        .map_err(|e| anyhow::anyhow!("--name {}", e.message))?;
    let email =
        Email::parse(owner_email).map_err(|e| anyhow::anyhow!("--owner-email {}", e.message))?;
    let generated = owner_password.is_none().then(|| random_token(18));
    let password = Password::parse(owner_password.or(generated.as_deref()).unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("--owner-password {}", e.message))?;
    let password_hash = hash_password(&password).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let tenant = store.create_tenant(&slug, &name).await?;
    pki.ensure_tenant_identity(store, &tenant).await?;
    store
        .scoped(TenantScope::for_system_task(tenant.id))
        .create_user(&NewUser {
            email: email.clone(),
            role: Role::Owner,
            password_hash,
        })
        .await?;
    Ok(CreatedTenant {
        tenant_id: tenant.id.to_string(),
        owner_email: email.to_string(),
        generated_password: generated,
    })
}

/// Mints an API token for an existing user; returns the secret to print once.
pub async fn create_token(
    store: &Store,
    tenant: &str,
    email: &str,
    name: &str,
    scopes: &[Scope],
    days: u32,
) -> anyhow::Result<String> {
    let tenant = store
        .tenant_by_slug(tenant)
        .await
        .map_err(|_| anyhow::anyhow!("no tenant with slug {tenant:?}"))?;
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {}", e.message))?;
    let mut page = PageRequest {
        limit: PageRequest::MAX_LIMIT,
        after: None,
    };
    let user = loop {
        let users = scoped.list_users(&page).await?;
        if let Some(user) = users.items.into_iter().find(|u| u.email == email) {
            break user;
        }
        match users
            .next_cursor
            .and_then(|c| serviceradar_store::Cursor::decode(&c))
        {
            Some(next) => page.after = Some(next),
            None => anyhow::bail!("no user {email} in tenant {}", tenant.slug),
        }
    };
    let minted = mint_token();
    scoped
        .create_token(&NewToken {
            id: minted.id,
            user_id: user.id,
            name: name.to_string(),
            scopes: ScopeSet::from_scopes(scopes.iter().copied()),
            expires_at: now_ms() + i64::from(days.clamp(1, 365)) * 86_400_000,
            secret_hash: minted.secret_hash,
        })
        .await?;
    Ok(minted.token)
}
