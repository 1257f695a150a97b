//! First start: on an empty database, create the bootstrap tenant and its
//! owner. The password comes from `SERVICERADAR_ADMIN_PASSWORD` or is
//! generated and returned once, for the binary to print (never logged).

use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::Role;
use serviceradar_domain::validate::{DisplayName, Email, Password, Slug};
use serviceradar_store::{NewUser, Store};

use crate::app::Settings;
use crate::auth::{hash_password, random_token};
use crate::pki::Pki;

/// What bootstrapping did.
#[derive(Default)]
pub struct BootstrapOutcome {
    /// Set when a tenant and owner were created.
    pub created: Option<BootstrapAdmin>,
}

/// The bootstrap owner's credentials.
pub struct BootstrapAdmin {
    /// Tenant slug.
    pub tenant: String,
    /// Owner e-mail.
    pub email: String,
    /// The generated password, if none was configured (shown once).
    pub generated_password: Option<String>,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("tenant", &self.tenant)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Creates the first tenant and owner if there are no tenants yet.
pub async fn bootstrap(
    store: &Store,
    pki: &Pki,
    settings: &Settings,
) -> anyhow::Result<BootstrapOutcome> {
    if store.count_tenants().await? > 0 {
        return Ok(BootstrapOutcome::default());
    }
    let slug = Slug::parse(&settings.bootstrap_tenant)
        .map_err(|e| anyhow::anyhow!("bootstrap tenant: {e}"))?;
    let email =
        Email::parse(&settings.admin_email).map_err(|e| anyhow::anyhow!("admin e-mail: {e}"))?;
    let generated = settings.admin_password.is_none().then(|| random_token(18));
    let password_text = settings
        .admin_password
        .clone()
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let password =
        Password::parse(&password_text).map_err(|e| anyhow::anyhow!("admin password: {e}"))?;
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("hashing the admin password: {e:?}"))?;
    let name = DisplayName::parse(slug.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    tracing::info!(tenant_id = %tenant.id, tenant = %slug, "bootstrapped the first tenant and owner");
    Ok(BootstrapOutcome {
        created: Some(BootstrapAdmin {
            tenant: slug.to_string(),
            email: email.to_string(),
            generated_password: generated,
        }),
    })
}
