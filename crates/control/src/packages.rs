//! Collector packages: create (optionally bound to an edge site of the same
//! tenant), list, revoke (revoking every NATS user its bundles minted), and
//! the collector bundle, which mints a fresh certificate and NATS user and
//! moves the package `created -> downloaded`.

use serde::Deserialize;
use serviceradar_bundle::{CollectorBundle, EdgeSiteRef, NatsTarget, SecretText, collector_bundle};
use serviceradar_domain::resources::CollectorType;
use serviceradar_domain::state::PackageEvent;
use serviceradar_domain::validate::{DisplayName, FieldError, FieldErrors};
use serviceradar_domain::{Action, Actor, EdgeSiteId, PackageId};
use serviceradar_identity::creds_user_key;
use serviceradar_pki::{TenantRef, issue_collector};
use serviceradar_store::{NewPackage, PackageFilter, PackageWithSite, Page};

use crate::error::finish;
use crate::params::{parse_filter, parse_id_filter};
use crate::{Control, ControlError, PageParams};

/// A new collector package.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePackage {
    /// `flowgger`, `trapd`, `otel`, `netflow` or `syslog`.
    pub collector_type: String,
    /// Display name (default: the collector type).
    pub name: Option<String>,
    /// Edge site whose local leaf the collector uses; absent for direct SaaS.
    pub edge_site_id: Option<String>,
}

/// Filters for listing packages.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct PackageQuery {
    /// Only packages in this status.
    pub status: Option<String>,
    /// Only packages of this collector type.
    pub collector_type: Option<String>,
    /// Only packages bound to this edge site.
    pub edge_site_id: Option<String>,
    /// Only packages whose name contains this (case-insensitive).
    pub name: Option<String>,
}

/// A built collector bundle.
pub struct BuiltCollectorBundle {
    /// Download file name.
    pub file_name: String,
    /// tar.gz bytes.
    pub bytes: Vec<u8>,
}

fn internal(code: &'static str) -> impl FnOnce(String) -> ControlError {
    move |detail| ControlError::internal(code, detail)
}

impl Control {
    /// A page of the tenant's packages.
    pub async fn list_packages(
        &self,
        actor: &Actor,
        query: &PackageQuery,
        page: &PageParams,
    ) -> Result<Page<PackageWithSite>, ControlError> {
        let (scoped, page, filter) =
            self.listing(actor, Action::ReadPackages, page, |errors| PackageFilter {
                status: parse_filter("status", query.status.as_deref(), errors),
                collector_type: parse_filter(
                    "collector_type",
                    query.collector_type.as_deref(),
                    errors,
                ),
                edge_site_id: parse_id_filter(
                    "edge_site_id",
                    query.edge_site_id.as_deref(),
                    "a site id",
                    errors,
                ),
                name_contains: query.name.clone().filter(|n| !n.is_empty()),
            })?;
        Ok(scoped.list_packages(&filter, &page).await?)
    }

    /// Creates a package, optionally bound to an edge site.
    pub async fn create_package(
        &self,
        actor: &Actor,
        input: &CreatePackage,
    ) -> Result<PackageWithSite, ControlError> {
        let scoped = self.scoped(actor, Action::WritePackages)?;
        let mut errors = FieldErrors::default();
        let collector_type = errors.check(
            "collector_type",
            input
                .collector_type
                .parse::<CollectorType>()
                .map_err(|m| FieldError::new("collector_type", m)),
        );
        let name = match (&input.name, collector_type) {
            (Some(name), _) => errors.check("name", DisplayName::parse(name)),
            (None, Some(kind)) => errors.check("name", DisplayName::parse(kind.as_str())),
            (None, None) => None,
        };
        let edge_site_id = match input.edge_site_id.as_deref() {
            None => Some(None),
            Some(raw) => errors
                .check(
                    "edge_site_id",
                    raw.parse::<EdgeSiteId>()
                        .map_err(|_| FieldError::new("edge_site_id", "must be a site id")),
                )
                .map(Some),
        };
        let (collector_type, name, edge_site_id) = finish(
            errors,
            collector_type
                .zip(name)
                .zip(edge_site_id)
                .map(|((c, n), s)| (c, n, s)),
        )?;
        let package = scoped
            .create_package(&NewPackage {
                name,
                collector_type,
                edge_site_id,
            })
            .await?;
        tracing::info!(package_id = %package.package.id, "collector package created");
        Ok(package)
    }

    /// One package.
    pub async fn package(
        &self,
        actor: &Actor,
        id: PackageId,
    ) -> Result<PackageWithSite, ControlError> {
        let scoped = self.scoped(actor, Action::ReadPackages)?;
        Ok(scoped.package(id).await?)
    }

    /// Revokes a package: its bundles' NATS users stop working on the hub
    /// first, so a failure leaves the package as it was (and can be retried).
    pub async fn revoke_package(
        &self,
        actor: &Actor,
        id: PackageId,
    ) -> Result<PackageWithSite, ControlError> {
        let scoped = self.scoped(actor, Action::WritePackages)?;
        // Refuse an illegal transition before touching anything.
        scoped
            .package(id)
            .await?
            .package
            .status
            .apply(PackageEvent::Revoke)?;
        let keys = scoped.package_user_keys(id).await?;
        if !keys.is_empty() {
            let tenant = self.store().tenant(actor.tenant_id).await?;
            self.pki()
                .revoke_users(self.store(), &tenant, &keys)
                .await
                .map_err(|e| ControlError::internal("nats_revocation", format!("{e:#}")))?;
        }
        let package = scoped.transition_package(id, PackageEvent::Revoke).await?;
        tracing::info!(package_id = %id, revoked_users = keys.len(), "collector package revoked");
        Ok(package)
    }

    /// Deletes a package.
    pub async fn delete_package(&self, actor: &Actor, id: PackageId) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::WritePackages)?;
        Ok(scoped.delete_package(id).await?)
    }

    /// Builds a collector bundle: a fresh client certificate and NATS
    /// credentials in the tenant's account, pointed at the package's edge
    /// site leaf (or the SaaS NATS). Moves the package `created -> downloaded`.
    pub async fn collector_bundle(
        &self,
        actor: &Actor,
        id: PackageId,
    ) -> Result<BuiltCollectorBundle, ControlError> {
        let scoped = self.scoped(actor, Action::WritePackages)?;
        let package = scoped.package(id).await?;
        // Refuse revoked/expired/installed packages before issuing anything.
        package.package.status.apply(PackageEvent::Download)?;
        let store = self.store();
        let pki = self.pki();
        let tenant = store.tenant(package.package.tenant_id).await?;
        let ca = pki
            .tenant_ca(store, &tenant)
            .await
            .map_err(|e| format!("{e:#}"))
            .map_err(internal("tenant_ca"))?;
        let cert = issue_collector(
            &ca,
            TenantRef::of(&tenant),
            id.as_uuid(),
            &pki.issue_options(),
        )
        .map_err(|e| e.to_string())
        .map_err(internal("certificate_issue"))?;
        let creds = pki
            .collector_creds(store, &tenant, &format!("collector-{}", package.package.id))
            .await
            .map_err(|e| format!("{e:#}"))
            .map_err(internal("nats_user"))?;
        let root = pki
            .root_ca(store)
            .await
            .map_err(|e| format!("{e:#}"))
            .map_err(internal("root_ca"))?;
        let site_url = package
            .edge_site
            .as_ref()
            .map(|s| s.nats_leaf_url.to_string());
        // A site whose leaf is a cluster: the collector gets every node's URL.
        let node_urls: Vec<String> = match &package.edge_site {
            Some(site) => scoped
                .leaf_for_site(site.id)
                .await?
                .cluster
                .map(|c| c.nodes().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let target = NatsTarget::for_package(
            package
                .edge_site
                .as_ref()
                .zip(site_url.as_deref())
                .map(|(s, url)| EdgeSiteRef {
                    name: s.name.as_str(),
                    slug: s.slug.as_str(),
                    nats_leaf_url: url,
                    node_urls: &node_urls,
                }),
            &self.settings().provisioning.saas_nats_url,
        );
        let bundle = CollectorBundle {
            collector_type: package.package.collector_type,
            package_id: id.as_uuid(),
            tenant_slug: tenant.slug.to_string(),
            target,
            creds: SecretText::new(creds.as_str()),
            client_cert_pem: cert.full_chain_pem(),
            client_key_pem: SecretText::new(cert.key_pem.as_str()),
            ca_pem: root.cert_pem().to_owned(),
        };
        let bytes = collector_bundle(&bundle)
            .map_err(|e| e.to_string())
            .map_err(internal("collector_bundle"))?;
        if let Some(key) = creds_user_key(creds.as_str()) {
            scoped.add_package_user_key(id, &key).await?;
        }
        scoped
            .transition_package(id, PackageEvent::Download)
            .await?;
        tracing::info!(package_id = %id, serial = %cert.serial_hex, "collector bundle downloaded");
        Ok(BuiltCollectorBundle {
            file_name: bundle.file_name(),
            bytes,
        })
    }
}
