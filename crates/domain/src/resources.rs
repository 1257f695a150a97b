//! The resources the control plane manages, as plain data.
//!
//! Timestamps are Unix milliseconds (`i64`): the same representation in
//! SQLite, PostgreSQL and JSON, with no time-zone ambiguity.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::*;
use crate::policy::{Role, ScopeSet};
use crate::state::{LeafStatus, PackageStatus, SiteStatus};
use crate::validate::{DisplayName, Email, ListenAddr, NatsUrl, Slug};

/// Unix time in milliseconds.
pub type Millis = i64;

/// A customer organisation. All other data belongs to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Unique slug (used in certificate names and NATS subjects).
    pub slug: Slug,
    /// Display name.
    pub name: DisplayName,
    /// Creation time.
    pub created_at: Millis,
}

/// A user account inside one tenant. The password hash is not part of this
/// type: it never leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Login name, unique per tenant.
    pub email: Email,
    /// Role inside the tenant.
    pub role: Role,
    /// Creation time.
    pub created_at: Millis,
}

/// An API token's metadata. The secret is shown once at creation and stored
/// only as a hash; this type does not carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Id (the public half of the token string).
    pub id: ApiTokenId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// The user the token acts for.
    pub user_id: UserId,
    /// Label.
    pub name: String,
    /// What the token may be used for.
    pub scopes: ScopeSet,
    /// Creation time.
    pub created_at: Millis,
    /// Expiry time; the token is refused after it.
    pub expires_at: Millis,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Millis>,
    /// Last use (updated at most once a minute).
    pub last_used_at: Option<Millis>,
}

/// A customer deployment location with its own NATS leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeSite {
    /// Id.
    pub id: EdgeSiteId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Display name ("NYC Office").
    pub name: DisplayName,
    /// Slug, unique per tenant ("nyc-office").
    pub slug: Slug,
    /// Health status.
    pub status: SiteStatus,
    /// Where collectors at the site reach the local leaf.
    pub nats_leaf_url: NatsUrl,
    /// Last agent contact.
    pub last_seen_at: Option<Millis>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// An edge site as the list shows it, its text borrowed from where it was
/// read (a page of database rows) instead of copied into an [`EdgeSite`]'s
/// values. The edge-site list is the API's hottest read (BENCHMARKS.md,
/// issue 15), and building an `EdgeSite` per row (a `String` per text, the
/// URL parsed into parts and written back out) cost about a sixth of a list
/// request's instructions.
///
/// Made only by [`EdgeSiteRef::check`], which holds each text to the rule of
/// its `EdgeSite` field, so a value means what it does there: the name as
/// [`DisplayName::parse`] keeps it, a [`Slug`]'s `[a-z0-9-]`, and the URL as
/// [`NatsUrl`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSiteRef<'a> {
    site: ListedSite<'a>,
    nats_leaf_url: std::borrow::Cow<'a, str>,
}

/// One listed site's values as read, its text not yet checked: what
/// [`EdgeSiteRef::check`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedSite<'a> {
    /// Id.
    pub id: EdgeSiteId,
    /// Display name, as stored.
    pub name: &'a str,
    /// Slug, as stored.
    pub slug: &'a str,
    /// Health status.
    pub status: SiteStatus,
    /// The leaf URL, as stored.
    pub nats_leaf_url: &'a str,
    /// Last agent contact.
    pub last_seen_at: Option<Millis>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

impl<'a> EdgeSiteRef<'a> {
    /// Checks `site`'s text with the rules of [`EdgeSite`]'s fields
    /// ([`rule::display_name`](crate::validate::rule::display_name),
    /// [`rule::slug`](crate::validate::rule::slug), [`NatsUrl::written_text`]),
    /// copying nothing when it passes as stored (a URL stored in another
    /// form than `NatsUrl` writes is written anew).
    pub fn check(site: ListedSite<'a>) -> Result<Self, crate::validate::FieldError> {
        use crate::validate::{FieldError, rule};
        let name = rule::display_name(site.name).map_err(|m| FieldError::new("name", m))?;
        rule::slug(site.slug).map_err(|m| FieldError::new("slug", m))?;
        let nats_leaf_url = NatsUrl::written_text(site.nats_leaf_url)?;
        Ok(Self {
            site: ListedSite { name, ..site },
            nats_leaf_url,
        })
    }

    /// Id.
    pub fn id(&self) -> EdgeSiteId {
        self.site.id
    }

    /// Display name (a valid [`DisplayName`]'s text).
    pub fn name(&self) -> &str {
        self.site.name
    }

    /// Slug (a valid [`Slug`]'s text: `[a-z0-9-]`).
    pub fn slug(&self) -> &str {
        self.site.slug
    }

    /// Health status.
    pub fn status(&self) -> SiteStatus {
        self.site.status
    }

    /// The leaf URL, as [`NatsUrl`]'s `Display` writes it.
    pub fn nats_leaf_url(&self) -> &str {
        &self.nats_leaf_url
    }

    /// Last agent contact.
    pub fn last_seen_at(&self) -> Option<Millis> {
        self.site.last_seen_at
    }

    /// Creation time.
    pub fn created_at(&self) -> Millis {
        self.site.created_at
    }

    /// Last change.
    pub fn updated_at(&self) -> Millis {
        self.site.updated_at
    }
}

/// The NATS leaf server of an edge site. Private key material is held sealed
/// in the store and is not part of this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsLeafServer {
    /// Id.
    pub id: LeafServerId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// The site it serves.
    pub edge_site_id: EdgeSiteId,
    /// Lifecycle status.
    pub status: LeafStatus,
    /// The hub leafnode URL the leaf dials.
    pub upstream_url: String,
    /// The leaf's client listen address.
    pub local_listen: ListenAddr,
    /// Leaf client certificate (PEM), once provisioned.
    pub leaf_cert_pem: Option<String>,
    /// CA chain (PEM), once provisioned.
    pub ca_chain_pem: Option<String>,
    /// Expiry of the leaf certificate.
    pub cert_expires_at: Option<Millis>,
    /// Checksum of the last rendered `nats-leaf.conf`.
    pub config_checksum: Option<String>,
    /// Why the last provisioning attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the link to the hub last went up or down (`connected` since, or
    /// `disconnected` since); `None` before the first change.
    pub link_changed_at: Option<Millis>,
    /// When provisioning last issued this leaf's certificate and config (the
    /// first run, a regenerate or a renewal); `None` while pending, and for
    /// leaves provisioned before the time was recorded.
    pub provisioned_at: Option<Millis>,
    /// The layout of a 3-node leaf cluster; `None` for one leaf server.
    pub cluster: Option<crate::leaf_cluster::LeafCluster>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// The kind of collector a package installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorType {
    /// Syslog/flow ingestion via flowgger.
    Flowgger,
    /// SNMP trap receiver.
    Trapd,
    /// OpenTelemetry collector.
    Otel,
    /// NetFlow/IPFIX collector.
    Netflow,
    /// Plain syslog.
    Syslog,
}

impl CollectorType {
    /// All collector types.
    pub const ALL: [CollectorType; 5] = [
        CollectorType::Flowgger,
        CollectorType::Trapd,
        CollectorType::Otel,
        CollectorType::Netflow,
        CollectorType::Syslog,
    ];

    /// The lowercase name used in the API and database.
    pub fn as_str(&self) -> &'static str {
        match self {
            CollectorType::Flowgger => "flowgger",
            CollectorType::Trapd => "trapd",
            CollectorType::Otel => "otel",
            CollectorType::Netflow => "netflow",
            CollectorType::Syslog => "syslog",
        }
    }

    /// The subject family the collector publishes into: `logs` for flowgger and
    /// syslog, `events` for traps, `metrics` for otel and netflow.
    pub fn subject_family(self) -> &'static str {
        match self {
            Self::Flowgger | Self::Syslog => "logs",
            Self::Trapd => "events",
            Self::Otel | Self::Netflow => "metrics",
        }
    }

    /// Subject prefix for a tenant, e.g. `logs.acme`.
    pub fn subject_prefix(self, tenant_slug: &str) -> String {
        format!("{}.{tenant_slug}", self.subject_family())
    }

    /// Where a collector bundle's files are meant to be installed.
    pub fn install_dir(self) -> String {
        format!("/etc/serviceradar/{}", self.as_str())
    }
}

impl fmt::Display for CollectorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CollectorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CollectorType::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!("unknown collector type {s:?}: expected flowgger, trapd, otel, netflow or syslog")
            })
    }
}

/// A collector package: what an operator downloads to install a collector,
/// optionally bound to an edge site (then it talks to the site's leaf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectorPackage {
    /// Id.
    pub id: PackageId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: DisplayName,
    /// What it installs.
    pub collector_type: CollectorType,
    /// The edge site whose leaf it connects to; `None` means straight to SaaS.
    pub edge_site_id: Option<EdgeSiteId>,
    /// Lifecycle status.
    pub status: PackageStatus,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}
