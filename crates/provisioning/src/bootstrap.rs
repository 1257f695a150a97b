//! First start: on an empty database, create the bootstrap tenant and its
//! owner. The password comes from the settings or is generated and returned
//! once, for the binary to print (never logged).

use serviceradar_domain::Secret;
use serviceradar_identity::Pki;
use serviceradar_store::Store;

use crate::tenants::{NewTenant, TenantError, create_tenant};

/// Who to create on an empty database.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// Slug of the first tenant.
    pub tenant: String,
    /// E-mail of its owner.
    pub admin_email: String,
    /// The owner's password (generated and printed once if `None`).
    pub admin_password: Option<Secret>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            tenant: "default".into(),
            admin_email: "admin@example.com".into(),
            admin_password: None,
        }
    }
}

/// What bootstrapping did.
#[derive(Debug, Default)]
pub struct BootstrapOutcome {
    /// Set when a tenant and owner were created.
    pub created: Option<BootstrapAdmin>,
}

/// The bootstrap owner's credentials.
#[derive(Debug)]
pub struct BootstrapAdmin {
    /// Tenant slug.
    pub tenant: String,
    /// Owner e-mail.
    pub email: String,
    /// The generated password, if none was configured (shown once).
    pub generated_password: Option<Secret>,
}

/// Creates the first tenant and owner if there are no tenants yet (when
/// several replicas race to do it, one does and the others go on).
pub async fn bootstrap(
    store: &Store,
    pki: &Pki,
    settings: &BootstrapSettings,
) -> Result<BootstrapOutcome, TenantError> {
    if store.count_tenants().await? > 0 {
        return Ok(BootstrapOutcome::default());
    }
    let created = match create_tenant(
        store,
        pki,
        NewTenant {
            slug: &settings.tenant,
            name: None,
            owner_email: &settings.admin_email,
            owner_password: settings.admin_password.as_ref().map(Secret::expose),
        },
    )
    .await
    {
        Ok(created) => created,
        // Several replicas started together on an empty database: another
        // one created the first tenant a moment ago, which is all this
        // step is for.
        Err(TenantError::Store(serviceradar_store::StoreError::Conflict(_)))
            if store.count_tenants().await? > 0 =>
        {
            tracing::info!("another replica bootstrapped the first tenant");
            return Ok(BootstrapOutcome::default());
        }
        Err(e) => return Err(e),
    };
    tracing::info!(tenant_id = %created.tenant.id, "bootstrapped the first tenant and owner");
    Ok(BootstrapOutcome {
        created: Some(BootstrapAdmin {
            tenant: created.tenant.slug.to_string(),
            email: created.owner_email,
            generated_password: created.generated_password,
        }),
    })
}
