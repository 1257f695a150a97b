//! Creating a tenant: the tenant row, its intermediate CA and NATS account,
//! and its first owner, stored in one transaction. One function for `admin
//! create-tenant` and the first-start bootstrap.

use serviceradar_auth::{AuthError, hash_password_blocking, random_token};
use serviceradar_domain::policy::Role;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, Email, Password, Slug};
use serviceradar_domain::{Secret, TenantId};
use serviceradar_identity::Pki;
use serviceradar_store::{NewTenantRecord, NewUser, Store, StoreError};

/// What to create.
pub struct NewTenant<'a> {
    /// Tenant slug.
    pub slug: &'a str,
    /// Display name (default: the slug).
    pub name: Option<&'a str>,
    /// E-mail of the first owner.
    pub owner_email: &'a str,
    /// The owner's password; generated (and returned once) when `None`.
    pub owner_password: Option<&'a str>,
}

/// A created tenant and its owner's credentials, to print once.
#[derive(Debug)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Owner e-mail.
    pub owner_email: String,
    /// Generated owner password, when none was given.
    pub generated_password: Option<Secret>,
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// An input is invalid (`field` names it: `slug`, `name`, `owner_email`, `owner_password`).
    #[error("{field}: {message}")]
    Invalid {
        /// The input.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The store failed (a taken slug is a conflict).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing the password failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Creating the tenant's CA or NATS account failed.
    #[error("creating the tenant's CA and NATS account: {0}")]
    Identity(#[source] crate::error::BoxError),
}

fn invalid(
    field: &'static str,
) -> impl FnOnce(serviceradar_domain::validate::FieldError) -> TenantError {
    move |e| TenantError::Invalid {
        field,
        message: e.message,
    }
}

/// Creates a tenant, its intermediate CA and NATS account, and its first owner.
pub async fn create_tenant(
    store: &Store,
    pki: &Pki,
    new: NewTenant<'_>,
) -> Result<CreatedTenant, TenantError> {
    let slug = Slug::parse(new.slug).map_err(invalid("slug"))?;
    let name = DisplayName::parse(new.name.unwrap_or(slug.as_str())).map_err(invalid("name"))?;
    let email = Email::parse(new.owner_email).map_err(invalid("owner_email"))?;
    let generated = new
        .owner_password
        .is_none()
        .then(|| Secret::new(random_token(18)));
    let password = Password::parse(
        new.owner_password
            .or(generated.as_ref().map(Secret::expose))
            .unwrap_or_default(),
    )
    .map_err(invalid("owner_password"))?;
    let password_hash = hash_password_blocking(password).await?;
    // Everything is generated first and stored in one transaction: a
    // failure leaves no tenant without its CA, account or owner.
    let id = TenantId::new();
    let (ca, account) = pki
        .new_tenant_identity(store, id, slug.as_str())
        .await
        .map_err(|e| TenantError::Identity(e.into()))?;
    let owner = NewUser {
        email: email.clone(),
        role: Role::Owner,
        password_hash,
    };
    let (tenant, _) = store
        .create_tenant_with_identity(&NewTenantRecord {
            id,
            slug: &slug,
            name: &name,
            ca_cert_pem: &ca.cert_pem,
            ca_key_sealed: &ca.key_sealed,
            ca_not_after: ca.not_after,
            account_public_key: &account.public_key,
            account_seed_sealed: &account.seed_sealed,
            account_jwt: &account.jwt,
            owner: &owner,
        })
        .await?;
    tracing::info!(tenant_id = %tenant.id, tenant = %slug, "tenant created with its CA, NATS account and owner");
    Ok(CreatedTenant {
        tenant,
        owner_email: email.to_string(),
        generated_password: generated,
    })
}
