//! Persistence for ServiceRadar Edge.
//!
//! One code path serves both backends: SQLite (a file, the zero-setup
//! embedded default) and PostgreSQL (production, several control-plane
//! replicas). Queries go through sqlx's `Any` driver with `$n` placeholders;
//! times are `i64` Unix milliseconds and ids are UUID text, the types both
//! databases and the `Any` driver share. Each backend has its own migrations
//! folder with the same tables and constraint names.
//!
//! Tenant data is reachable only through [`Scoped`], which is built from a
//! [`TenantScope`]: every query on a tenant table carries the tenant filter by
//! construction. Platform-level lookups (tenants, credentials during
//! authentication, the job queue) live on [`Store`] itself.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_checks;
pub mod agent_control;
pub mod agent_polls;
pub mod agent_results;
mod auth;
mod auth_cache;
pub mod contacts;
mod db;
mod devices;
mod enrollment;
mod error;
pub mod fleet;
pub mod health;
mod hot;
pub mod jobs;
mod leaf_sessions;
mod onboarding;
mod packages;
pub mod page;
mod pki;
mod renewal;
pub mod retention;
mod row;
mod sites;
pub mod telemetry;
mod tenants;
mod tokens;
mod users;

pub use agent_checks::{AgentCheck, MAX_CHECKS_PER_AGENT};
pub use agent_control::{AgentCommand, AgentConfigRows, ConfigAck};
pub use agent_results::{ChunkIn, ChunkOutcome, StoredUpload};
pub use auth::{LoginRecord, SessionRecord, TokenRecord};
pub use contacts::{CheckUpdate, Contact};
pub use db::{Backend, Store, now_ms};
pub use devices::Device;
pub use enrollment::{EnrollmentEvent, EnrollmentTokenRecord, NewEnrollmentToken, Redemption};
pub use error::StoreError;
pub use leaf_sessions::LeafRefusal;
pub use onboarding::{
    ConflictFilter, EnrollmentConflict, OnboardingFilter, OnboardingPackage, SOURCE_BUNDLE,
    SOURCE_TOKEN,
};
pub use packages::{NewPackage, PackageFilter, PackageWithSite, SiteSummary};
pub use page::{Cursor, Page, PageRequest};
pub use pki::{
    PlatformSecret, ServerCertRecord, TenantAccountJwt, TenantCaRecord, TenantNatsAccount,
};
pub use renewal::{EnrolledHost, RenewalOutcome};
pub use retention::{RetentionPolicy, Swept};
pub use sites::{
    ExpiringLeaf, LeafChange, LeafChanged, LeafFilter, LeafProvisioning, NewSite, NodeCert,
    ProvisionedFrom, SiteFilter, SiteOverviewPage, SiteRows, SiteUpdate,
};
/// A PostgreSQL LISTEN connection ([`Store::listen`]).
pub use sqlx::postgres::PgListener as NotificationListener;
pub use telemetry::{Isolated, StoredRecord, TelemetryFilter, TimeRange};
pub use tenants::NewTenantRecord;
pub use tokens::NewToken;
pub use users::NewUser;

use serviceradar_domain::TenantScope;

/// Tenant-scoped access to the store. Obtain with [`Store::scoped`].
#[derive(Clone, Copy)]
pub struct Scoped<'a> {
    store: &'a Store,
    scope: TenantScope,
}

impl<'a> Scoped<'a> {
    fn tenant(&self) -> String {
        self.scope.tenant_id().to_string()
    }

    /// Deletes the row `id` of `table` in this tenant; [`StoreError::NotFound`]
    /// if there is none (also when it belongs to another tenant).
    async fn delete_by_id(&self, table: &'static str, id: String) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND id = $2");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.tenant())
            .bind(id)
            .execute(&self.store.pool)
            .await?;
        row::affected(&done)
    }
}

impl Store {
    /// Tenant-scoped repositories for `scope`'s tenant.
    pub fn scoped(&self, scope: TenantScope) -> Scoped<'_> {
        Scoped { store: self, scope }
    }
}
