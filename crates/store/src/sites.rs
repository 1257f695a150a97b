//! Edge sites and their NATS leaf servers.
//!
//! A site and its leaf server are created together in one transaction (with
//! the provisioning job, when the caller passes one), so there is never a site
//! without a leaf record or a leaf without its job.

use serviceradar_domain::leaf_cluster::LeafCluster;
use serviceradar_domain::resources::{EdgeSite, EdgeSiteRef, ListedSite, NatsLeafServer};
use serviceradar_domain::state::{LeafEvent, LeafStatus, SiteStatus};
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, JobId, LeafServerId, TenantId};
use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;

use crate::db::{Backend, now_ms};
use crate::error::{StoreError, on_unique};
use crate::jobs::{NewJob, insert_job_after_change};
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::{self, Cols};
use crate::{Scoped, Store};

/// A site to create.
#[derive(Debug, Clone)]
pub struct NewSite {
    /// Display name.
    pub name: DisplayName,
    /// Slug, unique in the tenant.
    pub slug: Slug,
    /// Where collectors reach the local leaf.
    pub nats_leaf_url: NatsUrl,
    /// The hub leafnode URL the leaf will dial.
    pub upstream_url: String,
    /// The leaf's client listen address.
    pub local_listen: ListenAddr,
}

/// Changes to a site; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SiteUpdate {
    /// New display name.
    pub name: Option<DisplayName>,
    /// New leaf URL.
    pub nats_leaf_url: Option<NatsUrl>,
}

/// Filters for listing sites.
#[derive(Debug, Clone, Default)]
pub struct SiteFilter {
    /// Only sites in this status.
    pub status: Option<SiteStatus>,
    /// Only sites whose name contains this (case-insensitive).
    pub name_contains: Option<String>,
}

/// Filters for listing leaf servers.
#[derive(Debug, Clone, Default)]
pub struct LeafFilter {
    /// Only leaf servers in this status.
    pub status: Option<LeafStatus>,
}

/// What a provisioning run stores for a leaf server. Private keys and
/// credentials arrive sealed.
#[derive(Clone)]
pub struct LeafProvisioning {
    /// Leaf client certificate PEM.
    pub leaf_cert_pem: String,
    /// Sealed leaf client key.
    pub leaf_key_sealed: Vec<u8>,
    /// Leaf server certificate PEM.
    pub server_cert_pem: String,
    /// Sealed leaf server key.
    pub server_key_sealed: Vec<u8>,
    /// CA chain PEM.
    pub ca_chain_pem: String,
    /// Sealed NATS credentials.
    pub creds_sealed: Vec<u8>,
    /// Expiry of the leaf certificate (Unix ms).
    pub cert_expires_at: i64,
    /// Checksum of the rendered config (of a cluster: of all its nodes'
    /// configs, in node order).
    pub config_checksum: String,
    /// A cluster's per-node server certificates, in node order (empty for
    /// one leaf server).
    pub node_certs: Vec<NodeCert>,
}

/// What a provisioning run issued from: the leaf's layout and the node keys
/// it kept (sealed, in node order). [`Scoped::store_leaf_provisioning`]
/// stores the run's result only while the leaf still has exactly these, so
/// a layout change or node-key rotation made during the run is never
/// overwritten by a result issued for the old one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProvisionedFrom {
    /// The layout the configs were rendered for.
    pub cluster: Option<LeafCluster>,
    /// The sealed node keys the run kept.
    pub node_keys: Vec<Vec<u8>>,
}

impl ProvisionedFrom {
    /// What a run that read `leaf` and its `previous` material issues from.
    pub fn of(leaf: &NatsLeafServer, previous: Option<&LeafProvisioning>) -> Self {
        Self {
            cluster: leaf.cluster.clone(),
            node_keys: previous.map_or_else(Vec::new, |m| {
                m.node_certs.iter().map(|c| c.key_sealed.clone()).collect()
            }),
        }
    }
}

impl std::fmt::Debug for ProvisionedFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionedFrom")
            .field("cluster", &self.cluster)
            .field("node_keys", &self.node_keys.len())
            .finish()
    }
}

/// What [`Scoped::change_leaf_and_enqueue`] changes about a leaf.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeafChange<'a> {
    /// A new layout: `Some(None)` one server, `Some(Some(..))` a cluster;
    /// `None` keeps the layout.
    pub cluster: Option<Option<&'a LeafCluster>>,
    /// Drop the cluster nodes' kept keys, so the job issues new ones.
    pub forget_node_keys: bool,
}

/// What [`Scoped::change_leaf_and_enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafChanged {
    /// How many nodes' keys were dropped.
    pub forgotten: u64,
    /// The queued job (a running job's follow-up when one was running);
    /// `None` when a job that has not started yet already held its key.
    pub job: Option<JobId>,
}

/// One cluster node's server certificate and sealed key.
#[derive(Clone)]
pub struct NodeCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Sealed key.
    pub key_sealed: Vec<u8>,
}

/// The stored `cluster` column as a layout (`None`: one leaf server).
fn cluster_of(text: Option<String>) -> Result<Option<LeafCluster>, StoreError> {
    text.map(|text| {
        serde_json::from_str(&text)
            .map_err(|e| StoreError::corrupt("nats_leaf_servers", format!("cluster: {e}")))
    })
    .transpose()
}

fn cluster_text(cluster: &LeafCluster) -> Result<String, StoreError> {
    serde_json::to_string(cluster)
        .map_err(|e| StoreError::corrupt("nats_leaf_servers", format!("encoding a cluster: {e}")))
}

impl std::fmt::Debug for LeafProvisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafProvisioning")
            .field("config_checksum", &self.config_checksum)
            .finish_non_exhaustive()
    }
}

/// The columns of a site after its id and tenant, in the order the
/// decoders read them.
macro_rules! site_own_columns {
    () => {
        "s.name, s.slug, s.status, s.nats_leaf_url, s.last_seen_at, s.created_at, s.updated_at"
    };
}

/// The columns every site decoder reads ([`decode_site`]).
macro_rules! site_columns {
    () => {
        concat!("s.id, s.tenant_id, ", site_own_columns!())
    };
}

const SITE_SELECT: &str = concat!("SELECT ", site_columns!(), " FROM edge_sites s");
/// The columns a listed site shows ([`decode_site_ref`]): every column of
/// `site_columns!` but the tenant, which the query's own condition fixes.
/// A page is about a fifth fewer bytes from the database without it (36 of
/// the 190 bytes a row takes with the benchmark's names; BENCHMARKS.md).
const SITE_LISTED_SELECT: &str =
    concat!("SELECT s.id, ", site_own_columns!(), " FROM edge_sites s");
/// The web UI's site list: sites with their leaf's status (kept on the site
/// row, [`Scoped::mirror_leaf_status`]) and how many sites match. Unfiltered,
/// the count is the tenant's `site_count` (kept by site creation and
/// deletion; `$1` is the tenant, bound first by [`ListQuery::new`]);
/// filtered, it counts the `matching` CTE that
/// [`ListQuery::with_count_up_to`] puts in front. One statement either way.
const SITE_OVERVIEW_ALL_SELECT: &str = concat!(
    "SELECT ",
    site_columns!(),
    ", s.leaf_status, (SELECT t.site_count FROM tenants t WHERE t.id = $1) AS matching \
     FROM edge_sites s"
);
const SITE_OVERVIEW_FILTERED_SELECT: &str = concat!(
    "SELECT ",
    site_columns!(),
    ", s.leaf_status, (SELECT COUNT(*) FROM matching) AS matching FROM edge_sites s"
);
const LEAF_SELECT: &str = "SELECT l.id, l.tenant_id, l.edge_site_id, l.status, l.upstream_url, \
                           l.local_listen, l.leaf_cert_pem, l.ca_chain_pem, l.cert_expires_at, \
                           l.config_checksum, l.last_error, l.created_at, l.updated_at, \
                           l.link_changed_at, l.provisioned_at, l.cluster FROM nats_leaf_servers l";

/// One decoder for both row types: `Any` rows and native PostgreSQL rows
/// (the hot list reads).
macro_rules! site_decoder {
    ($name:ident, $row:ty) => {
        fn $name(row: &$row) -> Result<EdgeSite, StoreError> {
            let r = Cols::of(row, "edge_sites");
            Ok(EdgeSite {
                id: r.id("id")?,
                tenant_id: r.id("tenant_id")?,
                name: r.valid("name", DisplayName::parse)?,
                slug: r.valid("slug", Slug::parse)?,
                status: r.parse("status")?,
                nats_leaf_url: r.valid("nats_leaf_url", NatsUrl::parse)?,
                last_seen_at: r.get("last_seen_at")?,
                created_at: r.get("created_at")?,
                updated_at: r.get("updated_at")?,
            })
        }
    };
}
site_decoder!(decode_site, AnyRow);
site_decoder!(decode_site_pg, PgRow);

/// One decoder of a listed site's borrowed view for both row types; each
/// text is checked by [`EdgeSiteRef::check`], which copies nothing.
macro_rules! site_ref_decoder {
    ($name:ident, $row:ty) => {
        fn $name(row: &$row) -> Result<EdgeSiteRef<'_>, StoreError> {
            let r = Cols::of(row, "edge_sites");
            let id = r.id("id")?;
            let listed = ListedSite {
                id,
                name: r.get("name")?,
                slug: r.get("slug")?,
                status: r.parse("status")?,
                nats_leaf_url: r.get("nats_leaf_url")?,
                last_seen_at: r.get("last_seen_at")?,
                created_at: r.get("created_at")?,
                updated_at: r.get("updated_at")?,
            };
            EdgeSiteRef::check(listed).map_err(|e| StoreError::corrupt("edge_sites", e))
        }
    };
}
site_ref_decoder!(decode_site_ref, AnyRow);
site_ref_decoder!(decode_site_ref_pg, PgRow);

/// A page of sites kept as the rows the database sent, for a reader that
/// only shows them: [`SiteRows::sites`] reads each row as an
/// [`EdgeSiteRef`] borrowing its text, where [`Scoped::list_sites`] copies
/// every value into an [`EdgeSite`]. The edge-site list API reads this way
/// (BENCHMARKS.md, issue 15).
pub struct SiteRows {
    rows: Rows,
    next_cursor: Option<String>,
}

/// The rows of a [`SiteRows`], of whichever driver read them.
enum Rows {
    Pg(Vec<PgRow>),
    Any(Vec<AnyRow>),
}

impl SiteRows {
    /// The page's sites, each checked as [`EdgeSiteRef::check`] does; a row
    /// whose text breaks its rule is [`StoreError::Corrupt`].
    pub fn sites(&self) -> Result<Vec<EdgeSiteRef<'_>>, StoreError> {
        match &self.rows {
            Rows::Pg(rows) => rows.iter().map(decode_site_ref_pg).collect(),
            Rows::Any(rows) => rows.iter().map(decode_site_ref).collect(),
        }
    }

    /// The cursor of the next page, `None` on the last one.
    pub fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }
}

impl std::fmt::Debug for SiteRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = match &self.rows {
            Rows::Pg(rows) => rows.len(),
            Rows::Any(rows) => rows.len(),
        };
        f.debug_struct("SiteRows")
            .field("rows", &rows)
            .field("next_cursor", &self.next_cursor)
            .finish()
    }
}

/// A site with its leaf's status (the web UI's list), from either row type.
macro_rules! site_with_leaf_decoder {
    ($name:ident, $row:ty, $site:ident) => {
        fn $name(row: &$row) -> Result<(EdgeSite, Option<LeafStatus>), StoreError> {
            let leaf: Option<String> = Cols::of(row, "edge_sites").get("leaf_status")?;
            let leaf = leaf
                .map(|text| {
                    text.parse::<LeafStatus>()
                        .map_err(|e| StoreError::corrupt("edge_sites", e))
                })
                .transpose()?;
            Ok(($site(row)?, leaf))
        }
    };
}
site_with_leaf_decoder!(decode_site_with_leaf, AnyRow, decode_site);
site_with_leaf_decoder!(decode_site_with_leaf_pg, PgRow, decode_site_pg);

/// A site with its leaf's status and the capped count of matching sites.
macro_rules! site_overview_decoder {
    ($name:ident, $row:ty, $with_leaf:ident) => {
        fn $name(row: &$row) -> Result<((EdgeSite, Option<LeafStatus>), i64), StoreError> {
            let matching: i64 = Cols::of(row, "edge_sites").get("matching")?;
            Ok(($with_leaf(row)?, matching))
        }
    };
}
site_overview_decoder!(decode_site_overview, AnyRow, decode_site_with_leaf);
site_overview_decoder!(decode_site_overview_pg, PgRow, decode_site_with_leaf_pg);

/// A tenant-scoped query on `edge_sites s` with `filter` applied: the one
/// place a [`SiteFilter`] becomes SQL.
fn filtered(select: &'static str, tenant: String, filter: &SiteFilter) -> ListQuery {
    let mut q = ListQuery::new(select, "s", tenant);
    if let Some(status) = filter.status {
        q.eq("s.status", Arg::Text(status.as_str().into()));
    }
    if let Some(name) = &filter.name_contains {
        q.contains("s.name", name);
    }
    q
}

/// A page of the web UI's site list ([`Scoped::list_sites_with_leaf_status`]).
#[derive(Debug)]
pub struct SiteOverviewPage {
    /// The sites, each with its leaf server's status.
    pub sites: Page<(EdgeSite, Option<LeafStatus>)>,
    /// How many sites match the filter, up to the cap; `None` for an empty
    /// page.
    pub matching: Option<i64>,
}

fn decode_leaf(row: &AnyRow) -> Result<NatsLeafServer, StoreError> {
    let r = Cols::of(row, "nats_leaf_servers");
    Ok(NatsLeafServer {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        status: r.parse("status")?,
        upstream_url: r.get("upstream_url")?,
        local_listen: r.valid("local_listen", ListenAddr::parse)?,
        leaf_cert_pem: r.get("leaf_cert_pem")?,
        ca_chain_pem: r.get("ca_chain_pem")?,
        cert_expires_at: r.get("cert_expires_at")?,
        config_checksum: r.get("config_checksum")?,
        last_error: r.get("last_error")?,
        link_changed_at: r.get("link_changed_at")?,
        provisioned_at: r.get("provisioned_at")?,
        cluster: cluster_of(r.get("cluster")?)?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

/// The material of a provisioned leaf; `None` while it is still pending
/// (no certificate yet), corrupt if only part of it is there.
fn decode_provisioning(row: &AnyRow) -> Result<Option<LeafProvisioning>, StoreError> {
    let r = Cols::of(row, "nats_leaf_servers");
    let Some(leaf_cert_pem) = r.get("leaf_cert_pem")? else {
        return Ok(None);
    };
    Ok(Some(LeafProvisioning {
        leaf_cert_pem,
        leaf_key_sealed: r.required("leaf_key_sealed")?,
        server_cert_pem: r.required("server_cert_pem")?,
        server_key_sealed: r.required("server_key_sealed")?,
        ca_chain_pem: r.required("ca_chain_pem")?,
        creds_sealed: r.required("creds_sealed")?,
        cert_expires_at: r.required("cert_expires_at")?,
        config_checksum: r.required("config_checksum")?,
        node_certs: Vec::new(),
    }))
}

fn decode_expiring(row: &AnyRow) -> Result<ExpiringLeaf, StoreError> {
    let r = Cols::of(row, "nats_leaf_servers");
    Ok(ExpiringLeaf {
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        leaf_id: r.id("id")?,
        cert_expires_at: r.get("cert_expires_at")?,
    })
}

impl Scoped<'_> {
    /// Creates a site, its pending leaf server and (optionally) a job, atomically.
    /// A job's JSON-object payload gets `tenant_id`, `edge_site_id` and
    /// `leaf_server_id` added, and its dedupe key defaults to `<kind>:<leaf id>`.
    pub async fn create_site(
        &self,
        new: &NewSite,
        job: Option<NewJob>,
    ) -> Result<(EdgeSite, NatsLeafServer), StoreError> {
        self.create_site_with_cluster(new, None, job).await
    }

    /// [`Scoped::create_site`] for a site whose leaf is a cluster of
    /// `cluster`'s layout (`None`: one leaf server), in the same transaction.
    pub async fn create_site_with_cluster(
        &self,
        new: &NewSite,
        cluster: Option<&LeafCluster>,
        job: Option<NewJob>,
    ) -> Result<(EdgeSite, NatsLeafServer), StoreError> {
        let cluster_json = cluster.map(cluster_text).transpose()?;
        let now = now_ms();
        let site = EdgeSite {
            id: EdgeSiteId::new(),
            tenant_id: self.scope.tenant_id(),
            name: new.name.clone(),
            slug: new.slug.clone(),
            status: SiteStatus::Pending,
            nats_leaf_url: new.nats_leaf_url.clone(),
            last_seen_at: None,
            created_at: now,
            updated_at: now,
        };
        let leaf = NatsLeafServer {
            id: LeafServerId::new(),
            tenant_id: site.tenant_id,
            edge_site_id: site.id,
            status: LeafStatus::Pending,
            upstream_url: new.upstream_url.clone(),
            local_listen: new.local_listen.clone(),
            leaf_cert_pem: None,
            ca_chain_pem: None,
            cert_expires_at: None,
            config_checksum: None,
            last_error: None,
            link_changed_at: None,
            provisioned_at: None,
            cluster: cluster.cloned(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store.begin_write().await?;
        sqlx::query(
            "INSERT INTO edge_sites (id, tenant_id, name, slug, status, nats_leaf_url, leaf_status, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(site.id.to_string())
        .bind(self.tenant())
        .bind(site.name.as_str())
        .bind(site.slug.as_str())
        .bind(site.status.as_str())
        .bind(site.nats_leaf_url.to_string())
        .bind(leaf.status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(on_unique("an edge site with this slug already exists"))?;
        sqlx::query("UPDATE tenants SET site_count = site_count + 1 WHERE id = $1")
            .bind(self.tenant())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO nats_leaf_servers (id, tenant_id, edge_site_id, status, upstream_url, local_listen, created_at, updated_at, cluster) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(leaf.id.to_string())
        .bind(self.tenant())
        .bind(site.id.to_string())
        .bind(leaf.status.as_str())
        .bind(leaf.upstream_url.as_str())
        .bind(leaf.local_listen.to_string())
        .bind(now)
        .bind(cluster_json)
        .execute(&mut *tx)
        .await?;
        if let Some(mut job) = job {
            // The job learns the ids chosen here, so its handler can find the rows.
            if let Some(payload) = job.payload.as_object_mut() {
                payload.insert("tenant_id".into(), site.tenant_id.to_string().into());
                payload.insert("edge_site_id".into(), site.id.to_string().into());
                payload.insert("leaf_server_id".into(), leaf.id.to_string().into());
            }
            if job.dedupe_key.is_none() {
                job.dedupe_key = Some(format!("{}:{}", job.kind, leaf.id));
            }
            crate::jobs::insert_job(&mut tx, &job, Some(site.tenant_id)).await?;
        }
        tx.commit().await?;
        Ok((site, leaf))
    }

    /// One site of this tenant.
    pub async fn site(&self, id: EdgeSiteId) -> Result<EdgeSite, StoreError> {
        ListQuery::new(SITE_SELECT, "s", self.tenant())
            .fetch_one("s", "s.id", id.to_string(), &self.store.pool, decode_site)
            .await
    }

    /// Runs a page query on the hot-read PostgreSQL connections when there are
    /// (no `Any` row conversion), else through `Any`.
    async fn fetch_sites<T>(
        &self,
        q: &ListQuery,
        any: impl Fn(&AnyRow) -> Result<T, StoreError>,
        pg: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        match &self.store.hot {
            Some(pool) => q.fetch_pg(pool, pg).await,
            None => q.fetch(&self.store.pool, any).await,
        }
    }

    /// A page of sites.
    pub async fn list_sites(
        &self,
        filter: &SiteFilter,
        page: &PageRequest,
    ) -> Result<Page<EdgeSite>, StoreError> {
        self.fetch_sites(
            &self.site_page(SITE_SELECT, filter, page),
            decode_site,
            decode_site_pg,
        )
        .await
    }

    /// The query of a page of sites selecting `select`'s columns:
    /// [`Scoped::list_sites`]'s and [`Scoped::list_site_rows`]'s, so both
    /// list the same sites.
    fn site_page(
        &self,
        select: &'static str,
        filter: &SiteFilter,
        page: &PageRequest,
    ) -> ListQuery {
        let mut q = filtered(select, self.tenant(), filter);
        q.page("s", page);
        q
    }

    /// [`Scoped::list_sites`]'s page as rows read in place
    /// ([`SiteRows::sites`]): the same query, sites and cursor, without the
    /// tenant's column (`SITE_LISTED_SELECT`).
    pub async fn list_site_rows(
        &self,
        filter: &SiteFilter,
        page: &PageRequest,
    ) -> Result<SiteRows, StoreError> {
        let q = self.site_page(SITE_LISTED_SELECT, filter, page);
        let (rows, next_cursor) = match &self.store.hot {
            Some(pool) => {
                let page = q.fetch_rows_pg(pool).await?;
                (Rows::Pg(page.items), page.next_cursor)
            }
            None => {
                let page = q.fetch_rows(&self.store.pool).await?;
                (Rows::Any(page.items), page.next_cursor)
            }
        };
        Ok(SiteRows { rows, next_cursor })
    }

    /// How many sites match `filter` (the whole list, not a page).
    pub async fn count_sites(&self, filter: &SiteFilter) -> Result<i64, StoreError> {
        let q = filtered(
            "SELECT COUNT(*) AS n FROM edge_sites s",
            self.tenant(),
            filter,
        );
        match &self.store.hot {
            Some(pool) => q.count_pg(pool).await,
            None => q.count(&self.store.pool).await,
        }
    }

    /// How many sites match `filter`, counting at most `cap` (so a page
    /// view over a large tenant does not count every site): a result equal
    /// to `cap` means "`cap` or more".
    pub async fn count_sites_up_to(
        &self,
        filter: &SiteFilter,
        cap: u32,
    ) -> Result<i64, StoreError> {
        let mut q = filtered("SELECT 1 FROM edge_sites s", self.tenant(), filter);
        q.count_up_to(cap);
        match &self.store.hot {
            Some(pool) => q.count_pg(pool).await,
            None => q.count(&self.store.pool).await,
        }
    }

    /// The site with this slug, if the tenant has one.
    pub async fn site_by_slug(&self, slug: &str) -> Result<EdgeSite, StoreError> {
        ListQuery::new(SITE_SELECT, "s", self.tenant())
            .fetch_one(
                "s",
                "s.slug",
                slug.to_string(),
                &self.store.pool,
                decode_site,
            )
            .await
    }

    /// A page of sites, each with its leaf server's status, and how many
    /// sites match `filter` (filtered: counted up to `count_cap`, see
    /// [`Scoped::count_sites_up_to`]; unfiltered: the tenant's exact site
    /// count), in one statement: the web UI's site list. The count rides on
    /// every row, so it is `None` when the page is empty (count with
    /// [`Scoped::count_sites_up_to`] if it matters then).
    pub async fn list_sites_with_leaf_status(
        &self,
        filter: &SiteFilter,
        page: &PageRequest,
        count_cap: u32,
    ) -> Result<SiteOverviewPage, StoreError> {
        let mut q = if filter.status.is_none() && filter.name_contains.is_none() {
            filtered(SITE_OVERVIEW_ALL_SELECT, self.tenant(), filter)
        } else {
            let mut q = filtered(SITE_OVERVIEW_FILTERED_SELECT, self.tenant(), filter);
            q.with_count_up_to(
                "matching",
                &filtered("SELECT 1 FROM edge_sites s", self.tenant(), filter),
                count_cap,
            );
            q
        };
        q.page("s", page);
        let rows = self
            .fetch_sites(&q, decode_site_overview, decode_site_overview_pg)
            .await?;
        let matching = rows.items.first().map(|(_, n)| *n);
        Ok(SiteOverviewPage {
            sites: rows.map(|(site, _)| site),
            matching,
        })
    }

    /// Applies `update` to a site.
    pub async fn update_site(
        &self,
        id: EdgeSiteId,
        update: &SiteUpdate,
    ) -> Result<EdgeSite, StoreError> {
        let mut site = self.site(id).await?;
        if let Some(name) = &update.name {
            site.name = name.clone();
        }
        if let Some(url) = &update.nats_leaf_url {
            site.nats_leaf_url = url.clone();
        }
        site.updated_at = now_ms();
        sqlx::query(
            "UPDATE edge_sites SET name = $1, nats_leaf_url = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(site.name.as_str())
        .bind(site.nats_leaf_url.to_string())
        .bind(site.updated_at)
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&self.store.pool)
        .await?;
        Ok(site)
    }

    /// Deletes a site and its leaf server; packages bound to it fall back to
    /// direct SaaS connection (`edge_site_id` becomes null).
    pub async fn delete_site(&self, id: EdgeSiteId) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query("DELETE FROM edge_sites WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        row::affected(&done)?;
        sqlx::query("UPDATE tenants SET site_count = site_count - 1 WHERE id = $1")
            .bind(self.tenant())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The leaf server of a site.
    pub async fn leaf_for_site(&self, site: EdgeSiteId) -> Result<NatsLeafServer, StoreError> {
        ListQuery::new(LEAF_SELECT, "l", self.tenant())
            .fetch_one(
                "l",
                "l.edge_site_id",
                site.to_string(),
                &self.store.pool,
                decode_leaf,
            )
            .await
    }

    /// One leaf server of this tenant.
    pub async fn leaf_server(&self, id: LeafServerId) -> Result<NatsLeafServer, StoreError> {
        ListQuery::new(LEAF_SELECT, "l", self.tenant())
            .fetch_one("l", "l.id", id.to_string(), &self.store.pool, decode_leaf)
            .await
    }

    /// A page of leaf servers.
    pub async fn list_leaf_servers(
        &self,
        filter: &LeafFilter,
        page: &PageRequest,
    ) -> Result<Page<NatsLeafServer>, StoreError> {
        let mut q = ListQuery::new(LEAF_SELECT, "l", self.tenant());
        if let Some(status) = filter.status {
            q.eq("l.status", Arg::Text(status.as_str().into()));
        }
        q.page("l", page).fetch(&self.store.pool, decode_leaf).await
    }

    /// Stores a provisioning result and moves the leaf to `provisioned`
    /// (a re-provisioned live leaf keeps its status), in one transaction,
    /// while the leaf still has the layout and node keys the result was
    /// issued `from`: otherwise (a layout change or node-key rotation
    /// committed during the run) nothing is written and the result is
    /// `Conflict`, and the run is retried on the leaf as it is now.
    pub async fn store_leaf_provisioning(
        &self,
        id: LeafServerId,
        result: &LeafProvisioning,
        from: &ProvisionedFrom,
    ) -> Result<NatsLeafServer, StoreError> {
        let mut tx = self.store.begin_write().await?;
        // The leaf's row is read and locked until the commit
        // ([`Scoped::change_leaf_and_enqueue`] locks it first too; SQLite's
        // write transactions are serial).
        let lock = match self.store.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT status, edge_site_id, cluster FROM nats_leaf_servers \
             WHERE tenant_id = $1 AND id = $2{lock}"
        )))
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let r = Cols::of(&row, "nats_leaf_servers");
        let current: LeafStatus = r.parse("status")?;
        let site: EdgeSiteId = r.id("edge_site_id")?;
        let status = current.apply(LeafEvent::Provisioned)?;
        let cluster = cluster_of(r.get("cluster")?)?;
        let node_keys: Vec<Vec<u8>> = self
            .node_certs(&mut *tx, id)
            .await?
            .into_iter()
            .map(|cert| cert.key_sealed)
            .collect();
        if cluster != from.cluster || node_keys != from.node_keys {
            return Err(StoreError::Conflict(
                "the leaf's layout or node keys changed while it was provisioned".into(),
            ));
        }
        sqlx::query(
            "UPDATE nats_leaf_servers SET status = $1, leaf_cert_pem = $2, leaf_key_sealed = $3, \
             server_cert_pem = $4, server_key_sealed = $5, ca_chain_pem = $6, creds_sealed = $7, \
             cert_expires_at = $8, config_checksum = $9, last_error = NULL, updated_at = $10, \
             provisioned_at = $10 WHERE tenant_id = $11 AND id = $12",
        )
        .bind(status.as_str())
        .bind(result.leaf_cert_pem.as_str())
        .bind(result.leaf_key_sealed.clone())
        .bind(result.server_cert_pem.as_str())
        .bind(result.server_key_sealed.clone())
        .bind(result.ca_chain_pem.as_str())
        .bind(result.creds_sealed.clone())
        .bind(result.cert_expires_at)
        .bind(result.config_checksum.as_str())
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        self.delete_node_certs(&mut *tx, id).await?;
        for (node, cert) in result.node_certs.iter().enumerate() {
            sqlx::query(
                "INSERT INTO leaf_node_certs (leaf_server_id, tenant_id, node, cert_pem, key_sealed) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(self.tenant())
            .bind(i64::try_from(node).unwrap_or(i64::MAX))
            .bind(cert.cert_pem.as_str())
            .bind(cert.key_sealed.clone())
            .execute(&mut *tx)
            .await?;
        }
        self.mirror_leaf_status(&mut tx, site, status).await?;
        tx.commit().await?;
        self.leaf_server(id).await
    }

    /// Changes a leaf before its provisioning job re-issues for it (a new
    /// layout, and/or new node keys) and queues that job, in one
    /// transaction: the change and its job land together or not at all, so
    /// a changed leaf never waits without a job for its new bundle. When the
    /// leaf's job is running (it may have read the leaf before the change),
    /// the job is queued as its follow-up ([`Store::enqueue_job_after_change`]);
    /// `job` is `None` in the result when one that has not started yet
    /// already holds the key (it reads the change). `NotFound` if the leaf
    /// is not in this tenant.
    pub async fn change_leaf_and_enqueue(
        &self,
        id: LeafServerId,
        change: &LeafChange<'_>,
        job: &NewJob,
    ) -> Result<LeafChanged, StoreError> {
        let mut tx = self.store.begin_write().await?;
        // The leaf's row first, always: it serializes this change with a
        // provisioning run storing its result (see
        // [`Scoped::store_leaf_provisioning`]).
        let done = match change.cluster {
            Some(cluster) => sqlx::query(
                "UPDATE nats_leaf_servers SET cluster = $1, updated_at = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(cluster.map(cluster_text).transpose()?),
            None => sqlx::query(
                "UPDATE nats_leaf_servers SET updated_at = $1 WHERE tenant_id = $2 AND id = $3",
            ),
        }
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        row::affected(&done)?;
        // Dropped keys (and certificates): the job issues every node a new
        // key, for a key that may have leaked.
        let forgotten = if change.forget_node_keys {
            self.delete_node_certs(&mut *tx, id).await?
        } else {
            0
        };
        let job = insert_job_after_change(&mut tx, job, Some(self.scope.tenant_id())).await?;
        tx.commit().await?;
        Ok(LeafChanged { forgotten, job })
    }

    /// A leaf's node certificates and sealed keys, in node order, through
    /// `executor` (the pool, or a transaction that checks them).
    async fn node_certs<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
        id: LeafServerId,
    ) -> Result<Vec<NodeCert>, StoreError> {
        let rows = sqlx::query(
            "SELECT cert_pem, key_sealed FROM leaf_node_certs \
             WHERE tenant_id = $1 AND leaf_server_id = $2 ORDER BY node",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_all(executor)
        .await?;
        rows.iter()
            .map(|row| {
                let r = Cols::of(row, "leaf_node_certs");
                Ok(NodeCert {
                    cert_pem: r.get("cert_pem")?,
                    key_sealed: r.get("key_sealed")?,
                })
            })
            .collect()
    }

    /// Deletes a leaf's node certificates and keys through `executor` (the
    /// pool, or a provisioning result's transaction); returns how many.
    async fn delete_node_certs<'e>(
        &self,
        executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
        id: LeafServerId,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM leaf_node_certs WHERE tenant_id = $1 AND leaf_server_id = $2")
                .bind(self.tenant())
                .bind(id.to_string())
                .execute(executor)
                .await?;
        Ok(done.rows_affected())
    }

    /// Copies a leaf's new status onto its site row (`edge_sites.leaf_status`,
    /// what the web UI's site list reads), in the transaction that changed
    /// it: every write of `nats_leaf_servers.status` calls this.
    pub(crate) async fn mirror_leaf_status(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        site: EdgeSiteId,
        status: LeafStatus,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE edge_sites SET leaf_status = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(status.as_str())
            .bind(self.tenant())
            .bind(site.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Records why provisioning failed, visible on the site. `NotFound` if the
    /// leaf server is not in this tenant.
    pub async fn record_leaf_error(&self, id: LeafServerId, error: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE nats_leaf_servers SET last_error = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(error)
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&self.store.pool)
        .await?;
        row::affected(&done)
    }

    /// The stored provisioning material of a leaf (sealed blobs included), or
    /// `None` while the leaf is still pending.
    pub async fn leaf_provisioning(
        &self,
        id: LeafServerId,
    ) -> Result<Option<LeafProvisioning>, StoreError> {
        let row = sqlx::query(
            "SELECT leaf_cert_pem, leaf_key_sealed, server_cert_pem, server_key_sealed, ca_chain_pem, \
             creds_sealed, cert_expires_at, config_checksum FROM nats_leaf_servers \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        let Some(mut material) = row::found(row, decode_provisioning)? else {
            return Ok(None);
        };
        material.node_certs = self.node_certs(&self.store.pool, id).await?;
        Ok(Some(material))
    }
}

/// A provisioned leaf whose certificates expire soon (see
/// [`Store::leaves_expiring_before`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringLeaf {
    /// Tenant of the leaf.
    pub tenant_id: TenantId,
    /// Its site.
    pub edge_site_id: EdgeSiteId,
    /// The leaf server.
    pub leaf_id: LeafServerId,
    /// When the earlier of its two certificates expires (ms).
    pub cert_expires_at: i64,
}

impl Store {
    /// Leaves of every tenant whose certificates expire before `cutoff_ms`
    /// and that were not (re-)provisioned since `unchanged_since_ms`, soonest
    /// first, at most `limit`. A system query for the renewal sweep: the
    /// second bound keeps a leaf whose renewal cannot move its expiry (its
    /// tenant CA expires first) from being re-provisioned on every sweep.
    pub async fn leaves_expiring_before(
        &self,
        cutoff_ms: i64,
        unchanged_since_ms: i64,
        limit: i64,
    ) -> Result<Vec<ExpiringLeaf>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, edge_site_id, id, cert_expires_at FROM nats_leaf_servers \
             WHERE cert_expires_at IS NOT NULL AND cert_expires_at < $1 AND updated_at < $2 \
             ORDER BY cert_expires_at LIMIT $3",
        )
        .bind(cutoff_ms)
        .bind(unchanged_since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        row::all(&rows, decode_expiring)
    }
}
