//! Edge sites and their NATS leaf servers: create (with the provisioning
//! job, in one transaction), change, delete (revoking the leaf's NATS
//! sessions), regenerate the config, check drift, build the site bundle.

use serde::{Deserialize, Serialize};
use serviceradar_domain::leaf_cluster::{LeafCluster, LeafNodes};
use serviceradar_domain::resources::{EdgeSite, NatsLeafServer};
use serviceradar_domain::validate::{
    DisplayName, FieldError, FieldErrors, ListenAddr, NatsUrl, Slug,
};
use serviceradar_domain::{Action, Actor, EdgeSiteId, LeafServerId};
use serviceradar_identity::{aad, creds_user_key};
use serviceradar_provisioning::{BuiltSiteBundle, ConfigDrift, SiteBundleError};
use serviceradar_store::{LeafChange, LeafFilter, NewSite, Page, SiteFilter, SiteRows, SiteUpdate};

use crate::error::finish;

/// The hub's own view of a site's leaf link.
#[derive(Debug, Clone, Serialize)]
pub struct HubLink {
    /// Whether the hub could be asked (this control plane follows a hub
    /// and it answered).
    pub available: bool,
    /// The leaf's connections, one per hub server holding one (empty: the
    /// hub holds none).
    pub connections: Vec<serviceradar_hub::leaf_view::LeafLinkView>,
}
use crate::params::parse_filter;
use crate::{Control, ControlError, PageParams};

/// A new edge site, as a form or JSON body carries it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// Display name, 1–100 characters, no control characters.
    pub name: String,
    /// `[a-z0-9-]`, 1–63 characters; derived from the name if absent.
    pub slug: Option<String>,
    /// `nats://host:port` or `tls://host:port` where collectors reach the leaf.
    pub nats_leaf_url: String,
    /// Leaf client listen address (default `0.0.0.0:<port of nats_leaf_url>`).
    pub local_listen: Option<String>,
    /// How many `nats-server`s run the site's leaf: 1 (default) or 3 (a
    /// cluster: routes over mutual TLS, each node linked to the hub, the
    /// buffer replicated on all three).
    pub leaf_nodes: Option<i64>,
    /// With `leaf_nodes: 3`: where collectors reach each node
    /// (`tls://host:port`, 3 distinct URLs). Default: the pod names of the
    /// bundle's StatefulSet, `tls://sr-leaf-{slug}-{i}.sr-leaf-{slug}:<port>`.
    pub leaf_node_urls: Option<Vec<String>>,
    /// With `leaf_nodes: 3`: the route port (default 6222).
    pub leaf_cluster_port: Option<i64>,
}

/// A leaf's layout, as `POST .../regenerate-config` may change it (an
/// absent body keeps the layout), and whether its cluster nodes get new keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeafLayout {
    /// 1 or 3; absent keeps the current layout.
    pub leaf_nodes: Option<i64>,
    /// As in [`CreateSite::leaf_node_urls`].
    pub leaf_node_urls: Option<Vec<String>>,
    /// As in [`CreateSite::leaf_cluster_port`].
    pub leaf_cluster_port: Option<i64>,
    /// `true`: a 3-node leaf's nodes get new keys (for a key that may have
    /// leaked). Every node's certificate and pins change, so every node
    /// needs the new bundle; updated one at a time, two nodes keep the
    /// site's buffer quorum. Absent or `false`: the nodes keep their keys
    /// (renewals and regenerations do), and a rolling update stays routed.
    pub rotate_node_keys: Option<bool>,
}

/// `rotate_node_keys` on a leaf that is one server: it has no node keys.
fn rotate_needs_a_cluster() -> ControlError {
    let mut errors = FieldErrors::default();
    errors.0.push(FieldError::new(
        "rotate_node_keys",
        "only a 3-node leaf has node keys (leaf_nodes: 3)",
    ));
    ControlError::Invalid(errors)
}

/// Parses a requested leaf layout into `errors`: `Some(None)` for one
/// server, `Some(Some(cluster))` for a cluster, `None` when invalid.
fn parse_layout(
    errors: &mut FieldErrors,
    nodes: Option<i64>,
    urls: Option<&[String]>,
    port: Option<i64>,
    slug: Option<&Slug>,
    site_url: Option<&NatsUrl>,
) -> Option<Option<LeafCluster>> {
    let nodes = errors.check("leaf_nodes", LeafNodes::parse(nodes.unwrap_or(1)))?;
    match nodes {
        LeafNodes::One => {
            if urls.is_some() || port.is_some() {
                errors.0.push(FieldError::new(
                    "leaf_nodes",
                    "leaf_node_urls and leaf_cluster_port need leaf_nodes: 3",
                ));
                return None;
            }
            Some(None)
        }
        LeafNodes::Three => match urls {
            Some(urls) => errors
                .check("leaf_node_urls", LeafCluster::parse(urls, port))
                .map(Some),
            None => {
                let (slug, url) = (slug?, site_url?);
                let default = LeafCluster::default_for(
                    slug,
                    url.scheme() == serviceradar_domain::validate::NatsScheme::Tls,
                    url.port(),
                );
                let urls: Vec<String> = default.nodes().iter().map(|u| u.to_string()).collect();
                errors
                    .check("leaf_cluster_port", LeafCluster::parse(&urls, port))
                    .map(Some)
            }
        },
    }
}

/// Changes to an edge site.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// New display name.
    pub name: Option<String>,
    /// New leaf URL.
    pub nats_leaf_url: Option<String>,
}

/// Filters for listing sites.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SiteQuery {
    /// Only sites in this status.
    pub status: Option<String>,
    /// Only sites whose name contains this (case-insensitive).
    pub name: Option<String>,
}

impl SiteQuery {
    /// The store's filter, each refused value recorded in `errors`.
    fn filter(&self, errors: &mut FieldErrors) -> SiteFilter {
        SiteFilter {
            status: parse_filter("status", self.status.as_deref(), errors),
            name_contains: self.name.clone().filter(|n| !n.is_empty()),
        }
    }
}

/// Filters for listing leaf servers.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct LeafQuery {
    /// Only leaf servers in this status.
    pub status: Option<String>,
}

/// What a regeneration request did.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Regenerated {
    /// True if a provisioning job was queued for this request (also when
    /// one is running: this one follows it); false when one that has not
    /// started yet is already queued (it issues for this request too).
    pub enqueued: bool,
    /// Drift of the current config before regeneration.
    pub drift: ConfigDrift,
}

/// A page of sites with their leaf servers, and the filter's total.
#[derive(Debug)]
pub struct SiteOverview {
    /// The page: each site with its leaf server's status (absent only in a
    /// race with a delete).
    pub sites: Page<(EdgeSite, Option<serviceradar_domain::state::LeafStatus>)>,
    /// How many sites match: unfiltered, the tenant's exact site count;
    /// filtered, at most [`FILTERED_COUNT_CAP`].
    pub total: i64,
    /// More than [`FILTERED_COUNT_CAP`] sites match the filter (`total` is
    /// the cap).
    pub more: bool,
}

/// A filtered site list counts at most this many matching sites ("200+";
/// four pages of 50). Counting costs a scan of the matches, since a name
/// search cannot use an index: at 1,000 the count was 12 times the page's
/// own database time and held the search page to under half of the JSON
/// list's rate (BENCHMARKS.md, issue 13). The unfiltered count is kept on
/// the tenant's row and is exact at any size.
pub const FILTERED_COUNT_CAP: u32 = 200;

impl Control {
    /// A page of the tenant's sites.
    pub async fn list_sites(
        &self,
        actor: &Actor,
        query: &SiteQuery,
        page: &PageParams,
    ) -> Result<Page<EdgeSite>, ControlError> {
        let (scoped, page, filter) = self.listing(actor, Action::ReadSites, page, |errors| {
            query.filter(errors)
        })?;
        Ok(scoped.list_sites(&filter, &page).await?)
    }

    /// [`Control::list_sites`]'s page as the rows read, for a reader that
    /// only shows the sites (the list API): [`SiteRows::sites`] borrows
    /// their text instead of copying it.
    pub async fn list_site_rows(
        &self,
        actor: &Actor,
        query: &SiteQuery,
        page: &PageParams,
    ) -> Result<SiteRows, ControlError> {
        let (scoped, page, filter) = self.listing(actor, Action::ReadSites, page, |errors| {
            query.filter(errors)
        })?;
        Ok(scoped.list_site_rows(&filter, &page).await?)
    }

    /// A page of the tenant's sites, each with its leaf server's status, and
    /// how many sites match (unfiltered: all of them; filtered: up to
    /// [`FILTERED_COUNT_CAP`], "200+" beyond), in one statement: what the
    /// web UI's site list shows.
    pub async fn site_overview(
        &self,
        actor: &Actor,
        query: &SiteQuery,
        page: &PageParams,
    ) -> Result<SiteOverview, ControlError> {
        let (scoped, page, filter) = self.listing(actor, Action::ReadSites, page, |errors| {
            query.filter(errors)
        })?;
        // The page and the count in one statement; the count rides on the
        // rows, so an empty page (past the end, or nothing matches) counts
        // on its own when it is not the first.
        let overview = scoped
            .list_sites_with_leaf_status(&filter, &page, FILTERED_COUNT_CAP + 1)
            .await?;
        let counted = match overview.matching {
            Some(n) => n,
            None if page.after.is_none() => 0,
            None => {
                scoped
                    .count_sites_up_to(&filter, FILTERED_COUNT_CAP + 1)
                    .await?
            }
        };
        if filter.status.is_none() && filter.name_contains.is_none() {
            return Ok(SiteOverview {
                sites: overview.sites,
                total: counted,
                more: false,
            });
        }
        let cap = i64::from(FILTERED_COUNT_CAP);
        Ok(SiteOverview {
            sites: overview.sites,
            total: counted.min(cap),
            more: counted > cap,
        })
    }

    /// Whether `raw` is a valid slug no site of the tenant uses yet
    /// (`Ok(Err(reason))` when it is not), for checking as a user types.
    pub async fn check_site_slug(
        &self,
        actor: &Actor,
        raw: &str,
    ) -> Result<Result<Slug, String>, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let slug = match Slug::parse(raw) {
            Ok(slug) => slug,
            Err(e) => return Ok(Err(e.message)),
        };
        match scoped.site_by_slug(slug.as_str()).await {
            Ok(_) => Ok(Err(
                "another site of this tenant already uses this slug".into()
            )),
            Err(serviceradar_store::StoreError::NotFound) => Ok(Ok(slug)),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a site, its pending leaf server and (when provisioning runs
    /// here) its provisioning job, in one transaction.
    pub async fn create_site(
        &self,
        actor: &Actor,
        input: &CreateSite,
    ) -> Result<(EdgeSite, NatsLeafServer), ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let mut errors = FieldErrors::default();
        let name = errors.check("name", DisplayName::parse(&input.name));
        let slug = match (&input.slug, &name) {
            (Some(slug), _) => errors.check("slug", Slug::parse(slug)),
            (None, Some(name)) => errors.check("slug", Slug::derive_from(name.as_str())),
            (None, None) => None,
        };
        let url = errors.check("nats_leaf_url", NatsUrl::parse(&input.nats_leaf_url));
        let listen = match (&input.local_listen, &url) {
            (Some(raw), _) => errors.check("local_listen", ListenAddr::parse(raw)),
            (None, Some(url)) => errors.check(
                "local_listen",
                ListenAddr::parse(&format!("0.0.0.0:{}", url.port())),
            ),
            (None, None) => None,
        };
        let layout = parse_layout(
            &mut errors,
            input.leaf_nodes,
            input.leaf_node_urls.as_deref(),
            input.leaf_cluster_port,
            slug.as_ref(),
            url.as_ref(),
        );
        let (name, slug, nats_leaf_url, local_listen, cluster) = finish(
            errors,
            name.zip(slug)
                .zip(url.zip(listen))
                .zip(layout)
                .map(|(((n, s), (u, l)), c)| (n, s, u, l, c)),
        )?;
        let new = NewSite {
            name,
            slug,
            nats_leaf_url,
            upstream_url: self.settings().provisioning.hub_leafnode_url.clone(),
            local_listen,
        };
        let job = self.inner.jobs.provisioning_job_for_new_site();
        let (site, leaf) = scoped
            .create_site_with_cluster(&new, cluster.as_ref(), job)
            .await?;
        tracing::info!(site_id = %site.id, slug = %site.slug,
            leaf_nodes = cluster.as_ref().map_or(1, |c| c.nodes().len()), "edge site created");
        metrics::counter!("serviceradar_edge_sites_created_total").increment(1);
        Ok((site, leaf))
    }

    /// One site with its leaf server.
    pub async fn site(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<(EdgeSite, NatsLeafServer), ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        Ok((scoped.site(id).await?, scoped.leaf_for_site(id).await?))
    }

    /// The hub's own view of the site's leaf link: the connections the hub
    /// servers hold for it (remote address, RTT, messages and bytes), asked
    /// through the system account. `available` is false when this control
    /// plane follows no hub or the hub did not answer.
    pub async fn site_hub_link(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<HubLink, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let site = scoped.site(id).await?;
        let tenant = self.store().tenant(site.tenant_id).await?;
        let unavailable = HubLink {
            available: false,
            connections: Vec::new(),
        };
        let Some(account) = scoped.nats_account().await? else {
            return Ok(unavailable);
        };
        let name = format!("leaf-{}-{}", tenant.slug, site.slug);
        match self
            .settings()
            .hub_view
            .leaf_links(&account.account_public_key, &name)
            .await
        {
            Ok(Some(connections)) => Ok(HubLink {
                available: true,
                connections,
            }),
            Ok(None) => Ok(unavailable),
            Err(e) => {
                tracing::warn!(site_id = %id, error = %format!("{e:#}"),
                    "asking the hub for a leaf's link failed");
                Ok(unavailable)
            }
        }
    }

    /// The hub's last refusal of the site's leaf (by the leaf authorization
    /// callout) since the leaf was last admitted, if any.
    pub async fn site_leaf_refusal(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<Option<serviceradar_store::LeafRefusal>, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        scoped.site(id).await?;
        Ok(scoped.leaf_refusal(id).await?)
    }

    /// Changes a site's name or leaf URL.
    pub async fn update_site(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
        input: &UpdateSite,
    ) -> Result<EdgeSite, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let mut errors = FieldErrors::default();
        let update = SiteUpdate {
            name: input
                .name
                .as_deref()
                .and_then(|n| errors.check("name", DisplayName::parse(n))),
            nats_leaf_url: input
                .nats_leaf_url
                .as_deref()
                .and_then(|u| errors.check("nats_leaf_url", NatsUrl::parse(u))),
        };
        errors.into_result()?;
        Ok(scoped.update_site(id, &update).await?)
    }

    /// Deletes a site and its leaf server, then revokes the leaf's NATS
    /// sessions on the hub (a revocation failure is logged: the leaf
    /// authorization callout refuses the deleted site from now on anyway).
    pub async fn delete_site(&self, actor: &Actor, id: EdgeSiteId) -> Result<(), ControlError> {
        let scoped = self.scoped(actor, Action::DeleteSites)?;
        // The leaf's NATS user, to revoke once the site is gone.
        let leaf_user = self.leaf_user_key(&scoped, id).await?;
        scoped.delete_site(id).await?;
        tracing::info!(site_id = %id, "edge site deleted");
        // From now on the leaf authorization callout refuses the leaf. Its live
        // hub sessions are read *after* the delete: a session the callout records
        // later is refused by the callout's own re-check of the site.
        let mut keys = scoped.leaf_session_keys(id).await?;
        // Leaves provisioned before the callout existed were users of the
        // tenant's account themselves.
        keys.extend(leaf_user);
        if !keys.is_empty() {
            let store = self.store();
            let tenant = store.tenant(actor.tenant_id).await?;
            match self.pki().revoke_users(store, &tenant, &keys).await {
                Ok(()) => scoped.forget_leaf_sessions(id).await?,
                Err(e) => tracing::error!(site_id = %id, error = format!("{e:#}"),
                    "revoking the deleted site's NATS sessions failed"),
            }
        }
        Ok(())
    }

    async fn leaf_user_key(
        &self,
        scoped: &serviceradar_store::Scoped<'_>,
        site: EdgeSiteId,
    ) -> Result<Option<String>, ControlError> {
        let leaf = scoped.leaf_for_site(site).await?;
        let Some(material) = scoped.leaf_provisioning(leaf.id).await? else {
            return Ok(None);
        };
        let creds = self
            .pki()
            .open(
                &material.creds_sealed,
                &aad::leaf(leaf.tenant_id, leaf.id, "creds"),
            )
            .map_err(|e| {
                ControlError::internal(
                    "sealed_material",
                    format!("opening the leaf's creds: {e:#}"),
                )
            })?;
        Ok(creds_user_key(&creds))
    }

    /// The leaf server of a site.
    pub async fn site_leaf_server(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<NatsLeafServer, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        Ok(scoped.leaf_for_site(id).await?)
    }

    /// A page of the tenant's leaf servers.
    pub async fn list_leaf_servers(
        &self,
        actor: &Actor,
        query: &LeafQuery,
        page: &PageParams,
    ) -> Result<Page<NatsLeafServer>, ControlError> {
        let (scoped, page, filter) =
            self.listing(actor, Action::ReadSites, page, |errors| LeafFilter {
                status: parse_filter("status", query.status.as_deref(), errors),
            })?;
        Ok(scoped.list_leaf_servers(&filter, &page).await?)
    }

    /// One leaf server.
    pub async fn leaf_server(
        &self,
        actor: &Actor,
        id: LeafServerId,
    ) -> Result<NatsLeafServer, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        Ok(scoped.leaf_server(id).await?)
    }

    /// The site bundle, built from stored material (409 while provisioning).
    pub async fn site_bundle(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<BuiltSiteBundle, ControlError> {
        actor.authorize(Action::DownloadBundle)?;
        let built = serviceradar_provisioning::build_site_bundle(
            self.store(),
            self.pki(),
            &self.settings().provisioning,
            actor.scope(),
            id,
        )
        .await
        .map_err(|err| match err {
            SiteBundleError::Store(e) => e.into(),
            pending @ SiteBundleError::Pending(_) => ControlError::Conflict(pending.to_string()),
            SiteBundleError::Internal(e) => ControlError::internal("site_bundle", format!("{e:#}")),
        })?;
        // The download is the site's onboarding material: an onboarding
        // package, installed when the site's agent says Hello.
        self.store()
            .scoped(actor.scope())
            .record_bundle_onboarding_package(id)
            .await?;
        tracing::info!(site_id = %id, checksum = %built.config_checksum, "site bundle downloaded");
        metrics::counter!("serviceradar_site_bundles_downloaded_total").increment(1);
        Ok(built)
    }

    /// Compares the leaf's stored config checksum with the config as it renders now.
    pub async fn config_drift(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<ConfigDrift, ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        self.drift(&scoped, id).await.map(|(drift, _)| drift)
    }

    async fn drift(
        &self,
        scoped: &serviceradar_store::Scoped<'_>,
        id: EdgeSiteId,
    ) -> Result<(ConfigDrift, NatsLeafServer), ControlError> {
        let site = scoped.site(id).await?;
        let leaf = scoped.leaf_for_site(id).await?;
        let tenant = self.store().tenant(site.tenant_id).await?;
        // A cluster's routes pin its node certificates (public, stored).
        let pins = match &leaf.cluster {
            Some(_) => match scoped.leaf_provisioning(leaf.id).await? {
                Some(material) => serviceradar_provisioning::node_pins(&material.node_certs)
                    .map_err(|e| ControlError::internal("config_render", format!("{e:#}")))?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        let drift = serviceradar_provisioning::config_drift(
            &self.settings().provisioning,
            &tenant,
            &site,
            &leaf,
            &pins,
        )
        .map_err(|e| ControlError::internal("config_render", format!("{e:#}")))?;
        Ok((drift, leaf))
    }

    /// Queues the provisioning job again (re-issues certificates and
    /// credentials, re-renders the config; one pending job per leaf).
    pub async fn regenerate_config(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
    ) -> Result<Regenerated, ControlError> {
        self.regenerate_config_with(actor, id, &LeafLayout::default())
            .await
    }

    /// [`Control::regenerate_config`], first changing the leaf's layout
    /// when `layout` names one (`leaf_nodes`: 1 or 3).
    pub async fn regenerate_config_with(
        &self,
        actor: &Actor,
        id: EdgeSiteId,
        layout: &LeafLayout,
    ) -> Result<Regenerated, ControlError> {
        let scoped = self.scoped(actor, Action::WriteSites)?;
        let rotate = layout.rotate_node_keys == Some(true);
        let relayout = layout.leaf_nodes.is_some()
            || layout.leaf_node_urls.is_some()
            || layout.leaf_cluster_port.is_some();
        // Queued with the change when there is one; otherwise below.
        let enqueued = if relayout || rotate {
            let leaf = scoped.leaf_for_site(id).await?;
            // The layout the leaf has once this request is done.
            let cluster = if relayout {
                let site = scoped.site(id).await?;
                let mut errors = FieldErrors::default();
                let nodes = layout
                    .leaf_nodes
                    .or(Some(if leaf.cluster.is_some() { 3 } else { 1 }));
                let cluster = parse_layout(
                    &mut errors,
                    nodes,
                    layout.leaf_node_urls.as_deref(),
                    layout.leaf_cluster_port,
                    Some(&site.slug),
                    Some(&site.nats_leaf_url),
                );
                finish(errors, cluster)?
            } else {
                leaf.cluster.clone()
            };
            // Checked before anything is written.
            if rotate && cluster.is_none() {
                return Err(rotate_needs_a_cluster());
            }
            // The change and the job that issues for it, in one transaction.
            let changed = scoped
                .change_leaf_and_enqueue(
                    leaf.id,
                    &LeafChange {
                        cluster: relayout.then_some(cluster.as_ref()),
                        forget_node_keys: rotate,
                    },
                    &serviceradar_provisioning::provisioning_job(&leaf),
                )
                .await?;
            if relayout {
                tracing::info!(site_id = %id,
                    leaf_nodes = cluster.as_ref().map_or(1, |c| c.nodes().len()),
                    "leaf layout changed");
            }
            if rotate {
                tracing::warn!(site_id = %id, forgotten = changed.forgotten,
                    "leaf cluster node keys rotated: every node needs the new bundle");
            }
            Some(changed.job.is_some())
        } else {
            None
        };
        let (drift, leaf) = self.drift(&scoped, id).await?;
        let enqueued = match enqueued {
            Some(enqueued) => enqueued,
            // A run in flight may have read the site before a change made
            // just now (its URL, say): then this one follows it.
            None => self
                .store()
                .enqueue_job_after_change(
                    &serviceradar_provisioning::provisioning_job(&leaf),
                    Some(leaf.tenant_id),
                )
                .await?
                .is_some(),
        };
        tracing::info!(site_id = %id, enqueued, drifted = drift.drifted, "leaf config regeneration requested");
        Ok(Regenerated { enqueued, drift })
    }
}
