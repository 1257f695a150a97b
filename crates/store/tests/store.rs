//! Integration tests of the store, each run against both backends: an SQLite
//! file in a temporary directory and a fresh database on the private
//! PostgreSQL cluster of `serviceradar-testkit`.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use serviceradar_domain::policy::{Role, Scope, ScopeSet};
use serviceradar_domain::resources::{CollectorType, Tenant, User};
use serviceradar_domain::state::{LeafStatus, PackageEvent, PackageStatus, SiteStatus};
use serviceradar_domain::validate::{DisplayName, Email, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{
    ApiTokenId, EdgeSiteId, JobId, LeafServerId, TenantId, TenantScope, UserId,
};
use serviceradar_store::jobs::{JobStatus, NewJob};
use serviceradar_store::{
    Backend, Cursor, LeafChange, LeafFilter, LeafProvisioning, NewPackage, NewSite, NewToken,
    NewUser, NodeCert, PackageFilter, PageRequest, ProvisionedFrom, SiteFilter, SiteOverviewPage,
    SiteSummary, SiteUpdate, Store, StoreError,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Generates one test per backend from an `async fn body(store: Store)`.
macro_rules! both_backends {
    ($body:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (store, _dir) = sqlite_store().await;
            $body(store.clone()).await;
            store.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let store = postgres_store().await;
            $body(store.clone()).await;
            store.close().await;
        }
    };
}

/// Asserts that `$e` is an `Err` matching `$p`.
macro_rules! assert_err {
    ($e:expr, $p:pat) => {
        match $e {
            Err($p) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                stringify!($e),
                stringify!($p),
                other
            ),
        }
    };
}

async fn sqlite_store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 8).await.expect("connect to sqlite");
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.expect("migrate sqlite");
    (store, dir)
}

async fn postgres_store() -> Store {
    postgres_store_at(&postgres_database().await, 12).await
}

/// A fresh database on the test kit's PostgreSQL cluster (its URL).
async fn postgres_database() -> String {
    tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("create a test database")
}

/// A migrated store on the PostgreSQL database at `url`.
async fn postgres_store_at(url: &str, connections: u32) -> Store {
    let store = Store::connect(url, connections)
        .await
        .expect("connect to postgres");
    assert_eq!(store.backend(), Backend::Postgres);
    store.migrate().await.expect("migrate postgres");
    store
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap())
        .unwrap()
}

fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

fn display(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn nats_url(s: &str) -> NatsUrl {
    NatsUrl::parse(s).unwrap()
}

fn new_site(name: &str, slug_text: &str) -> NewSite {
    NewSite {
        name: display(name),
        slug: slug(slug_text),
        nats_leaf_url: nats_url("nats://10.0.1.50:4222"),
        upstream_url: "tls://hub.example.com:7422".into(),
        local_listen: ListenAddr::parse("0.0.0.0:4222").unwrap(),
    }
}

fn new_user(address: &str, role: Role) -> NewUser {
    NewUser {
        email: email(address),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${address}"),
    }
}

fn new_token(user_id: UserId, name: &str) -> NewToken {
    NewToken {
        id: ApiTokenId::new(),
        user_id,
        name: name.into(),
        scopes: ScopeSet::from_scopes([Scope::Read, Scope::Write]),
        expires_at: now_ms() + 3_600_000,
        secret_hash: format!("secret-hash-of-{name}"),
    }
}

fn new_package(name: &str, site: Option<EdgeSiteId>) -> NewPackage {
    NewPackage {
        name: display(name),
        collector_type: CollectorType::Flowgger,
        edge_site_id: site,
    }
}

fn provisioning(tag: &str) -> LeafProvisioning {
    LeafProvisioning {
        leaf_cert_pem: format!("leaf cert {tag}"),
        leaf_key_sealed: vec![0, 1, 2, 255, tag.len() as u8],
        server_cert_pem: format!("server cert {tag}"),
        server_key_sealed: vec![9, 8, 7, 0],
        ca_chain_pem: format!("ca chain {tag}"),
        creds_sealed: vec![42; 64],
        cert_expires_at: now_ms() + 86_400_000,
        config_checksum: format!("sha256:{tag}"),
        node_certs: Vec::new(),
    }
}

/// A site of `scoped` named after `slug_text` whose leaf is a 3-node
/// cluster on `10.0.{net}.51`-`53`.
async fn clustered_leaf(
    scoped: &serviceradar_store::Scoped<'_>,
    slug_text: &str,
    net: u8,
) -> (
    serviceradar_domain::leaf_cluster::LeafCluster,
    serviceradar_domain::resources::NatsLeafServer,
) {
    let urls: Vec<String> = (1..=3)
        .map(|n| format!("nats://10.0.{net}.5{n}:4222"))
        .collect();
    let cluster = serviceradar_domain::leaf_cluster::LeafCluster::parse(&urls, None).unwrap();
    let (_, leaf) = scoped
        .create_site_with_cluster(&new_site(slug_text, slug_text), Some(&cluster), None)
        .await
        .unwrap();
    (cluster, leaf)
}

/// [`provisioning`] with three node certificates whose keys name `tag`.
fn with_node_certs(tag: &str) -> LeafProvisioning {
    let mut material = provisioning(tag);
    material.node_certs = (0..3)
        .map(|n| NodeCert {
            cert_pem: format!("{tag} node {n} cert"),
            key_sealed: format!("{tag} key {n}").into_bytes(),
        })
        .collect();
    material
}

async fn tenant(store: &Store, slug_text: &str) -> (Tenant, TenantScope) {
    let tenant = store
        .create_tenant(&slug(slug_text), &display(&format!("Tenant {slug_text}")))
        .await
        .unwrap();
    let scope = TenantScope::for_system_task(tenant.id);
    (tenant, scope)
}

// ---------------------------------------------------------------------------
// 1. Migrations
// ---------------------------------------------------------------------------

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    store.ping().await.unwrap();
    assert_eq!(store.count_tenants().await.unwrap(), 0);
    // The schema is usable after re-running.
    let (t, _) = tenant(&store, "after-migrate").await;
    store.migrate().await.expect("migrate with data present");
    assert_eq!(store.tenant(t.id).await.unwrap(), t);
}
both_backends!(migrations_are_idempotent: sqlite_migrations_are_idempotent, postgres_migrations_are_idempotent);

// ---------------------------------------------------------------------------
// 2. Tenants
// ---------------------------------------------------------------------------

async fn tenants(store: Store) {
    let acme = store
        .create_tenant(&slug("acme"), &display("Acme Corp"))
        .await
        .unwrap();
    assert_eq!(acme.slug.as_str(), "acme");
    assert_eq!(acme.name.as_str(), "Acme Corp");

    assert_err!(
        store.create_tenant(&slug("acme"), &display("Other")).await,
        StoreError::Conflict(_)
    );

    assert_eq!(store.tenant_by_slug("acme").await.unwrap(), acme);
    assert_eq!(store.tenant(acme.id).await.unwrap(), acme);
    assert_err!(store.tenant_by_slug("nope").await, StoreError::NotFound);
    assert_err!(store.tenant(TenantId::new()).await, StoreError::NotFound);

    let globex = store
        .create_tenant(&slug("globex"), &display("Globex"))
        .await
        .unwrap();
    assert_eq!(store.count_tenants().await.unwrap(), 2);
    let all = store.list_tenants().await.unwrap();
    assert_eq!(all, vec![acme, globex]);
}
both_backends!(tenants: sqlite_tenants, postgres_tenants);

fn tenant_record<'a>(
    id: TenantId,
    slug: &'a Slug,
    name: &'a DisplayName,
    account_key: &'a str,
    owner: &'a NewUser,
) -> serviceradar_store::NewTenantRecord<'a> {
    serviceradar_store::NewTenantRecord {
        id,
        slug,
        name,
        ca_cert_pem: "-----BEGIN CERTIFICATE-----",
        ca_key_sealed: b"sealed-ca-key",
        ca_not_after: now_ms() + 1_000,
        account_public_key: account_key,
        account_seed_sealed: b"sealed-seed",
        account_jwt: "jwt",
        owner,
    }
}

/// A tenant created with its identity is all there or not there at all: a
/// failure in a later insert (here the NATS account's public key is already
/// taken) leaves no tenant row, CA or user behind.
async fn tenant_creation_with_identity_is_all_or_nothing(store: Store) {
    let owner = NewUser {
        email: email("owner@acme.example"),
        role: Role::Owner,
        password_hash: "$argon2id$fake".into(),
    };
    let (acme_slug, acme_name) = (slug("acme"), display("Acme"));
    let (acme, user) = store
        .create_tenant_with_identity(&tenant_record(
            TenantId::new(),
            &acme_slug,
            &acme_name,
            "AACME",
            &owner,
        ))
        .await
        .unwrap();
    assert_eq!(store.tenant(acme.id).await.unwrap(), acme);
    let scoped = store.scoped(TenantScope::for_system_task(acme.id));
    assert!(scoped.tenant_ca().await.unwrap().is_some());
    assert_eq!(
        scoped
            .nats_account()
            .await
            .unwrap()
            .unwrap()
            .account_public_key,
        "AACME"
    );
    assert_eq!(scoped.user(user.id).await.unwrap().role, Role::Owner);

    // The same account key again: the third insert fails, nothing stays.
    let (beta_slug, beta_name) = (slug("beta"), display("Beta"));
    let beta_id = TenantId::new();
    assert!(
        store
            .create_tenant_with_identity(&tenant_record(
                beta_id, &beta_slug, &beta_name, "AACME", &owner
            ))
            .await
            .is_err()
    );
    assert_err!(store.tenant(beta_id).await, StoreError::NotFound);
    assert_err!(store.tenant_by_slug("beta").await, StoreError::NotFound);
    let beta = store.scoped(TenantScope::for_system_task(beta_id));
    assert!(beta.tenant_ca().await.unwrap().is_none());
    assert_eq!(store.count_tenants().await.unwrap(), 1);

    // A taken slug is a conflict.
    assert_err!(
        store
            .create_tenant_with_identity(&tenant_record(
                TenantId::new(),
                &acme_slug,
                &acme_name,
                "AOTHER",
                &owner
            ))
            .await,
        StoreError::Conflict(_)
    );
}
both_backends!(
    tenant_creation_with_identity_is_all_or_nothing: sqlite_tenant_creation_with_identity_is_all_or_nothing,
    postgres_tenant_creation_with_identity_is_all_or_nothing
);

// ---------------------------------------------------------------------------
// 3. Tenant isolation
// ---------------------------------------------------------------------------

/// One tenant's rows, for the isolation test.
struct Fixture {
    tenant: Tenant,
    scope: TenantScope,
    site: serviceradar_domain::resources::EdgeSite,
    leaf: serviceradar_domain::resources::NatsLeafServer,
    package: serviceradar_store::PackageWithSite,
    user: User,
    token: serviceradar_domain::resources::ApiToken,
    session_hash: String,
}

async fn fixture(store: &Store, slug_text: &str) -> Fixture {
    let (tenant, scope) = tenant(store, slug_text).await;
    let s = store.scoped(scope);
    let (site, leaf) = s
        .create_site(&new_site("Main Site", "main"), None)
        .await
        .unwrap();
    let package = s
        .create_package(&new_package("Main Package", Some(site.id)))
        .await
        .unwrap();
    let user = s
        .create_user(&new_user(
            &format!("owner@{slug_text}.example"),
            Role::Owner,
        ))
        .await
        .unwrap();
    let token = s.create_token(&new_token(user.id, "ci")).await.unwrap();
    let session_hash = format!("session-{slug_text}");
    store
        .create_session(&session_hash, &user, "csrf", now_ms() + 3_600_000)
        .await
        .unwrap();
    Fixture {
        tenant,
        scope,
        site,
        leaf,
        package,
        user,
        token,
        session_hash,
    }
}

async fn tenant_isolation(store: Store) {
    let a = fixture(&store, "tenant-a").await;
    let b = fixture(&store, "tenant-b").await;
    let sa = store.scoped(a.scope);
    let sb = store.scoped(b.scope);
    let page = PageRequest {
        limit: 200,
        after: None,
    };

    // Getters under A with B's ids.
    assert_err!(sa.site(b.site.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_server(b.leaf.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_for_site(b.site.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_provisioning(b.leaf.id).await, StoreError::NotFound);
    assert_err!(sa.package(b.package.package.id).await, StoreError::NotFound);
    assert_err!(sa.user(b.user.id).await, StoreError::NotFound);
    assert_err!(sa.token(b.token.id).await, StoreError::NotFound);

    // ... and A's own ids work.
    assert_eq!(sa.site(a.site.id).await.unwrap(), a.site);
    assert_eq!(sa.leaf_server(a.leaf.id).await.unwrap(), a.leaf);
    assert_eq!(sa.leaf_for_site(a.site.id).await.unwrap(), a.leaf);
    assert_eq!(sa.package(a.package.package.id).await.unwrap(), a.package);
    assert_eq!(sa.user(a.user.id).await.unwrap(), a.user);
    assert_eq!(sa.token(a.token.id).await.unwrap(), a.token);

    // Lists under A contain only A's rows.
    let sites = sa.list_sites(&SiteFilter::default(), &page).await.unwrap();
    assert_eq!(sites.items, vec![a.site.clone()]);
    let leaves = sa
        .list_leaf_servers(&LeafFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(leaves.items, vec![a.leaf.clone()]);
    let packages = sa
        .list_packages(&PackageFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(packages.items, vec![a.package.clone()]);
    let users = sa.list_users(&page).await.unwrap();
    assert_eq!(users.items, vec![a.user.clone()]);
    let tokens = sa.list_tokens(None, &page).await.unwrap();
    assert_eq!(tokens.items, vec![a.token.clone()]);
    assert!(
        sa.list_tokens(Some(b.user.id), &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let filtered = sa
        .list_packages(
            &PackageFilter {
                edge_site_id: Some(b.site.id),
                ..PackageFilter::default()
            },
            &page,
        )
        .await
        .unwrap();
    assert!(filtered.items.is_empty());

    // Writes under A with B's ids: NotFound, and B's rows do not change.
    let rename = SiteUpdate {
        name: Some(display("Hijacked")),
        nats_leaf_url: Some(nats_url("nats://6.6.6.6:4222")),
    };
    assert_err!(
        sa.update_site(b.site.id, &rename).await,
        StoreError::NotFound
    );
    assert_err!(sa.delete_site(b.site.id).await, StoreError::NotFound);
    assert_err!(
        sa.store_leaf_provisioning(
            b.leaf.id,
            &provisioning("evil"),
            &ProvisionedFrom::default()
        )
        .await,
        StoreError::NotFound
    );
    assert_err!(
        sa.record_leaf_error(b.leaf.id, "evil").await,
        StoreError::NotFound
    );
    assert_err!(
        sa.transition_package(b.package.package.id, PackageEvent::Revoke)
            .await,
        StoreError::NotFound
    );
    assert_err!(
        sa.delete_package(b.package.package.id).await,
        StoreError::NotFound
    );
    assert_err!(
        sa.set_user_role(b.user.id, Role::Viewer).await,
        StoreError::NotFound
    );
    assert_err!(
        sa.set_user_password(b.user.id, "evil-hash").await,
        StoreError::NotFound
    );
    assert_err!(sa.delete_user(b.user.id).await, StoreError::NotFound);
    assert_err!(sa.revoke_token(b.token.id).await, StoreError::NotFound);
    assert_err!(
        sa.create_token(&new_token(b.user.id, "stolen")).await,
        StoreError::NotFound
    );
    match sa
        .create_package(&new_package("Cross", Some(b.site.id)))
        .await
    {
        Err(StoreError::BadReference { field, .. }) => assert_eq!(field, "edge_site_id"),
        other => panic!("expected BadReference, got {other:?}"),
    }

    assert_eq!(sb.site(b.site.id).await.unwrap(), b.site);
    assert_eq!(sb.leaf_server(b.leaf.id).await.unwrap(), b.leaf);
    assert!(sb.leaf_provisioning(b.leaf.id).await.unwrap().is_none());
    assert_eq!(sb.package(b.package.package.id).await.unwrap(), b.package);
    assert_eq!(sb.user(b.user.id).await.unwrap(), b.user);
    assert_eq!(sb.token(b.token.id).await.unwrap(), b.token);
    let login = store
        .login_record(b.tenant.slug.as_str(), b.user.email.as_str())
        .await
        .unwrap();
    assert_eq!(login.user, b.user);
    assert_ne!(login.password_hash, "evil-hash");
    let session = store.session(&b.session_hash).await.unwrap();
    assert_eq!(session.user_id, b.user.id);
    assert_eq!(session.tenant_id, b.tenant.id);
    let b_sites = sb.list_sites(&SiteFilter::default(), &page).await.unwrap();
    assert_eq!(b_sites.items, vec![b.site.clone()]);
    let b_packages = sb
        .list_packages(&PackageFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(b_packages.items, vec![b.package.clone()]);

    // A login for B's user through A's slug does not exist.
    assert_err!(
        store
            .login_record(a.tenant.slug.as_str(), b.user.email.as_str())
            .await,
        StoreError::NotFound
    );
    // Nothing of A was touched either.
    assert_eq!(sa.site(a.site.id).await.unwrap(), a.site);
}
both_backends!(tenant_isolation: sqlite_tenant_isolation, postgres_tenant_isolation);

// ---------------------------------------------------------------------------
// 4. Sites and leaf servers
// ---------------------------------------------------------------------------

async fn sites(store: Store) {
    let (ta, scope_a) = tenant(&store, "sites-a").await;
    let (_tb, scope_b) = tenant(&store, "sites-b").await;
    let sa = store.scoped(scope_a);
    let sb = store.scoped(scope_b);
    let page = PageRequest {
        limit: 200,
        after: None,
    };

    // Create with a provisioning job: site and leaf pending, job queued.
    let (site, leaf) = sa
        .create_site(
            &new_site("NYC Office", "nyc"),
            Some(NewJob::new("provision_leaf", json!({"reason": "create"}))),
        )
        .await
        .unwrap();
    assert_eq!(site.status, SiteStatus::Pending);
    assert_eq!(site.tenant_id, ta.id);
    assert_eq!(site.slug.as_str(), "nyc");
    assert_eq!(site.nats_leaf_url.to_string(), "nats://10.0.1.50:4222");
    assert_eq!(site.last_seen_at, None);
    assert_eq!(leaf.status, LeafStatus::Pending);
    assert_eq!(leaf.edge_site_id, site.id);
    assert_eq!(leaf.tenant_id, ta.id);
    assert_eq!(leaf.upstream_url, "tls://hub.example.com:7422");
    assert_eq!(leaf.local_listen.to_string(), "0.0.0.0:4222");
    assert_eq!(leaf.leaf_cert_pem, None);
    assert_eq!(sa.site(site.id).await.unwrap(), site);
    assert_eq!(sa.leaf_for_site(site.id).await.unwrap(), leaf);
    assert_eq!(sa.leaf_server(leaf.id).await.unwrap(), leaf);
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);

    // Slug conflict in the same tenant: nothing of the failed create remains.
    let before = now_ms();
    assert_err!(
        sa.create_site(
            &new_site("Other Name", "nyc"),
            Some(NewJob::new("provision_leaf", json!({}))),
        )
        .await,
        StoreError::Conflict(_)
    );
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);
    let sites = sa.list_sites(&SiteFilter::default(), &page).await.unwrap();
    assert_eq!(sites.items, vec![site.clone()]);
    let leaves = sa
        .list_leaf_servers(&LeafFilter::default(), &page)
        .await
        .unwrap();
    assert_eq!(leaves.items, vec![leaf.clone()]);

    // The same slug in another tenant is fine.
    let (other_site, _) = sb
        .create_site(&new_site("NYC Office", "nyc"), None)
        .await
        .unwrap();
    assert_eq!(other_site.slug, site.slug);
    assert_ne!(other_site.id, site.id);
    // create_site without a job enqueues nothing.
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);

    // The job learned the ids of the rows created with it.
    let job = store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(job.kind, "provision_leaf");
    assert_eq!(job.tenant_id, Some(ta.id));
    assert_eq!(job.payload["reason"], "create");
    assert_eq!(job.payload["tenant_id"], ta.id.to_string());
    assert_eq!(job.payload["edge_site_id"], site.id.to_string());
    assert_eq!(job.payload["leaf_server_id"], leaf.id.to_string());
    assert!(store.complete_job(job.id, "w").await.unwrap());
    // Its default dedupe key was released on completion; a second site with a
    // job gets its own key anyway.
    sa.create_site(
        &new_site("Second", "second"),
        Some(NewJob::new("provision_leaf", json!({}))),
    )
    .await
    .unwrap();
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);

    // Update.
    let updated = sa
        .update_site(
            site.id,
            &SiteUpdate {
                name: Some(display("NYC HQ")),
                nats_leaf_url: Some(nats_url("tls://leaf.nyc.example.com:4443")),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name.as_str(), "NYC HQ");
    assert_eq!(
        updated.nats_leaf_url.to_string(),
        "tls://leaf.nyc.example.com:4443"
    );
    assert_eq!(updated.slug, site.slug);
    assert_eq!(updated.created_at, site.created_at);
    assert!(updated.updated_at >= before);
    assert_eq!(sa.site(site.id).await.unwrap(), updated);
    let unchanged = sa
        .update_site(site.id, &SiteUpdate::default())
        .await
        .unwrap();
    assert_eq!(unchanged.name, updated.name);
    assert_eq!(unchanged.nats_leaf_url, updated.nats_leaf_url);
    assert_err!(
        sa.update_site(EdgeSiteId::new(), &SiteUpdate::default())
            .await,
        StoreError::NotFound
    );

    // Provisioning material round-trips (including the sealed blobs).
    assert!(sa.leaf_provisioning(leaf.id).await.unwrap().is_none());
    let material = provisioning("one");
    let provisioned = sa
        .store_leaf_provisioning(leaf.id, &material, &ProvisionedFrom::default())
        .await
        .unwrap();
    assert_eq!(provisioned.status, LeafStatus::Provisioned);
    assert_eq!(provisioned.leaf_cert_pem.as_deref(), Some("leaf cert one"));
    assert_eq!(provisioned.ca_chain_pem.as_deref(), Some("ca chain one"));
    assert_eq!(provisioned.cert_expires_at, Some(material.cert_expires_at));
    assert_eq!(provisioned.config_checksum.as_deref(), Some("sha256:one"));
    let stored = sa.leaf_provisioning(leaf.id).await.unwrap().unwrap();
    assert_eq!(stored.leaf_key_sealed, material.leaf_key_sealed);
    assert_eq!(stored.server_key_sealed, material.server_key_sealed);
    assert_eq!(stored.creds_sealed, material.creds_sealed);
    assert_eq!(stored.server_cert_pem, material.server_cert_pem);
    sa.record_leaf_error(leaf.id, "hub unreachable")
        .await
        .unwrap();
    assert_eq!(
        sa.leaf_server(leaf.id).await.unwrap().last_error.as_deref(),
        Some("hub unreachable")
    );
    assert_err!(
        sa.record_leaf_error(LeafServerId::new(), "x").await,
        StoreError::NotFound
    );
    let again = sa
        .store_leaf_provisioning(leaf.id, &provisioning("two"), &ProvisionedFrom::default())
        .await
        .unwrap();
    assert_eq!(again.status, LeafStatus::Provisioned);
    assert_eq!(again.last_error, None);
    assert_eq!(again.config_checksum.as_deref(), Some("sha256:two"));
    let provisioned_only = sa
        .list_leaf_servers(
            &LeafFilter {
                status: Some(LeafStatus::Provisioned),
            },
            &page,
        )
        .await
        .unwrap();
    assert_eq!(provisioned_only.items.len(), 1);
    assert_eq!(provisioned_only.items[0].id, leaf.id);

    // Delete: the leaf goes with the site (ON DELETE CASCADE, which needs
    // foreign keys enabled on SQLite) and packages lose their site.
    let bound = sa
        .create_package(&new_package("Bound", Some(site.id)))
        .await
        .unwrap();
    assert_eq!(bound.package.edge_site_id, Some(site.id));
    sa.delete_site(site.id).await.unwrap();
    assert_err!(sa.site(site.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_for_site(site.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_server(leaf.id).await, StoreError::NotFound);
    assert_err!(sa.leaf_provisioning(leaf.id).await, StoreError::NotFound);
    let orphan = sa.package(bound.package.id).await.unwrap();
    assert_eq!(orphan.package.edge_site_id, None);
    assert_eq!(orphan.edge_site, None);
    assert_err!(sa.delete_site(site.id).await, StoreError::NotFound);
    // The other tenant's site with the same slug is untouched.
    assert_eq!(sb.site(other_site.id).await.unwrap(), other_site);
    // The slug is free again.
    sa.create_site(&new_site("NYC again", "nyc"), None)
        .await
        .unwrap();
}
both_backends!(sites: sqlite_sites, postgres_sites);

/// A leaf's layout change and node-key rotation land with the provisioning
/// job that issues for them, or not at all: when the job cannot be queued,
/// the leaf keeps its layout and its nodes keep their keys (before, the
/// change was written first and a failed enqueue left the leaf changed with
/// no job to issue its new bundle until the next renewal sweep).
async fn a_leaf_change_is_not_kept_without_its_provisioning_job(store: Store, url: &str) {
    let (_, scope) = tenant(&store, "rotating").await;
    let scoped = store.scoped(scope);
    let (cluster, leaf) = clustered_leaf(&scoped, "rolling", 1).await;
    scoped
        .store_leaf_provisioning(
            leaf.id,
            &with_node_certs("nodes"),
            &ProvisionedFrom::of(&leaf, None),
        )
        .await
        .unwrap();
    let job = NewJob::new("provision_leaf", json!({"leaf": leaf.id.to_string()}))
        .dedupe(format!("provision_leaf:{}", leaf.id));
    let change = LeafChange {
        cluster: Some(None),
        forget_node_keys: true,
    };

    // The job queue refuses the insert (its table is away).
    use sqlx::Connection as _;
    let mut raw = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("ALTER TABLE jobs RENAME TO jobs_away")
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(
        scoped
            .change_leaf_and_enqueue(leaf.id, &change, &job)
            .await
            .is_err()
    );
    sqlx::query("ALTER TABLE jobs_away RENAME TO jobs")
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        scoped.leaf_server(leaf.id).await.unwrap().cluster,
        Some(cluster.clone()),
        "the layout was changed without its job"
    );
    let kept = scoped.leaf_provisioning(leaf.id).await.unwrap().unwrap();
    assert_eq!(kept.node_certs.len(), 3, "node keys dropped without a job");

    // With the queue back: the change and one job, together.
    let done = scoped
        .change_leaf_and_enqueue(leaf.id, &change, &job)
        .await
        .unwrap();
    assert_eq!(done.forgotten, 3);
    assert!(done.job.is_some());
    assert_eq!(scoped.leaf_server(leaf.id).await.unwrap().cluster, None);
    let material = scoped.leaf_provisioning(leaf.id).await.unwrap().unwrap();
    assert!(material.node_certs.is_empty());
    // An unfinished job already holds the leaf's key: the change is kept
    // and that job issues for it.
    let again = scoped
        .change_leaf_and_enqueue(
            leaf.id,
            &LeafChange {
                cluster: Some(Some(&cluster)),
                forget_node_keys: false,
            },
            &job,
        )
        .await
        .unwrap();
    assert_eq!(again.job, None);
    assert_eq!(
        scoped.leaf_server(leaf.id).await.unwrap().cluster,
        Some(cluster)
    );
    // Another tenant cannot change this tenant's leaf.
    let (_, other) = tenant(&store, "other-tenant").await;
    assert_err!(
        store
            .scoped(other)
            .change_leaf_and_enqueue(leaf.id, &change, &job)
            .await,
        StoreError::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_leaf_change_is_not_kept_without_its_provisioning_job() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 8).await.unwrap();
    store.migrate().await.unwrap();
    a_leaf_change_is_not_kept_without_its_provisioning_job(store.clone(), &url).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leaf_change_is_not_kept_without_its_provisioning_job() {
    let url = postgres_database().await;
    let store = postgres_store_at(&url, 4).await;
    a_leaf_change_is_not_kept_without_its_provisioning_job(store.clone(), &url).await;
    store.close().await;
}

/// A provisioning run that read the leaf before a node-key rotation (or a
/// layout change) committed does not store its result: it would put the
/// old, possibly leaked, node keys back (or render the old layout) while
/// the rotation's own job was refused as a duplicate of the running one.
/// Its result is refused (`Conflict`, nothing written) and the run is
/// retried on the leaf as it is now.
async fn a_provisioning_run_does_not_undo_a_rotation_made_while_it_ran(store: Store) {
    let (_, scope) = tenant(&store, "racing").await;
    let scoped = store.scoped(scope);
    let (_, leaf) = clustered_leaf(&scoped, "racing", 2).await;
    scoped
        .store_leaf_provisioning(
            leaf.id,
            &with_node_certs("old"),
            &ProvisionedFrom::of(&leaf, None),
        )
        .await
        .unwrap();

    // A run reads the leaf and the keys it keeps...
    let leaf = scoped.leaf_server(leaf.id).await.unwrap();
    let previous = scoped.leaf_provisioning(leaf.id).await.unwrap();
    let stale = ProvisionedFrom::of(&leaf, previous.as_ref());
    assert_eq!(stale.node_keys.len(), 3);
    // ...a rotation commits (its job deduplicated by the running one)...
    let job = NewJob::new("provision_leaf", json!({"leaf": leaf.id.to_string()}))
        .dedupe(format!("provision_leaf:{}", leaf.id));
    store.enqueue_job(&job, None).await.unwrap();
    let rotated = scoped
        .change_leaf_and_enqueue(
            leaf.id,
            &LeafChange {
                cluster: None,
                forget_node_keys: true,
            },
            &job,
        )
        .await
        .unwrap();
    assert_eq!((rotated.forgotten, rotated.job), (3, None));
    // ...and the run's result, issued on the old keys, is refused.
    assert_err!(
        scoped
            .store_leaf_provisioning(leaf.id, &with_node_certs("stale"), &stale)
            .await,
        StoreError::Conflict(_)
    );
    let material = scoped.leaf_provisioning(leaf.id).await.unwrap().unwrap();
    assert!(
        material.node_certs.is_empty(),
        "the old node keys are back after a rotation"
    );
    assert_eq!(material.config_checksum, "sha256:old");

    // The retry reads the leaf as it is now and stores new keys.
    let leaf = scoped.leaf_server(leaf.id).await.unwrap();
    let previous = scoped.leaf_provisioning(leaf.id).await.unwrap();
    let fresh = ProvisionedFrom::of(&leaf, previous.as_ref());
    assert!(fresh.node_keys.is_empty());
    scoped
        .store_leaf_provisioning(leaf.id, &with_node_certs("new"), &fresh)
        .await
        .unwrap();
    let material = scoped.leaf_provisioning(leaf.id).await.unwrap().unwrap();
    assert_eq!(material.node_certs[0].key_sealed, b"new key 0".to_vec());

    // A change while the leaf's job *runs* (that run may have read the
    // leaf before it) queues one follow-up behind it; another change before
    // the follow-up starts adds nothing.
    let running = store.claim_job("w1", 30_000).await.unwrap().unwrap();
    assert_eq!(running.kind, "provision_leaf");
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 0);
    let change_keys = LeafChange {
        cluster: None,
        forget_node_keys: true,
    };
    let follow_up = scoped
        .change_leaf_and_enqueue(leaf.id, &change_keys, &job)
        .await
        .unwrap()
        .job
        .expect("a follow-up of the running job");
    assert_ne!(follow_up, running.id);
    assert_eq!(
        store.job(follow_up).await.unwrap().status,
        JobStatus::Queued
    );
    let again = scoped
        .change_leaf_and_enqueue(leaf.id, &change_keys, &job)
        .await
        .unwrap();
    assert_eq!(again.job, None);
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);
    // Once the run is done, a change queues an ordinary job again.
    assert!(store.complete_job(running.id, "w1").await.unwrap());
    assert!(
        store
            .enqueue_job_after_change(&job, None)
            .await
            .unwrap()
            .is_some()
    );

    // A layout change made during a run is refused the same way.
    let leaf = scoped.leaf_server(leaf.id).await.unwrap();
    let previous = scoped.leaf_provisioning(leaf.id).await.unwrap();
    let stale = ProvisionedFrom::of(&leaf, previous.as_ref());
    scoped
        .change_leaf_and_enqueue(
            leaf.id,
            &LeafChange {
                cluster: Some(None),
                forget_node_keys: false,
            },
            &job,
        )
        .await
        .unwrap();
    assert_err!(
        scoped
            .store_leaf_provisioning(leaf.id, &with_node_certs("three"), &stale)
            .await,
        StoreError::Conflict(_)
    );
}
both_backends!(
    a_provisioning_run_does_not_undo_a_rotation_made_while_it_ran: sqlite_a_provisioning_run_does_not_undo_a_rotation_made_while_it_ran,
    postgres_a_provisioning_run_does_not_undo_a_rotation_made_while_it_ran
);

// ---------------------------------------------------------------------------
// 5. Pagination and filters
// ---------------------------------------------------------------------------

async fn pagination(store: Store) {
    let (_t, scope) = tenant(&store, "paging").await;
    let s = store.scoped(scope);

    let mut created = Vec::new();
    for i in 0..120 {
        let (site, _) = s
            .create_site(
                &new_site(&format!("Site {i:03}"), &format!("site-{i:03}")),
                None,
            )
            .await
            .unwrap();
        created.push(site.id);
    }

    // Page through with limit 50.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_sites(&SiteFilter::default(), &PageRequest { limit: 50, after })
            .await
            .unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.iter().map(|site| site.id));
        match page.next_cursor {
            Some(cursor) => after = Some(Cursor::decode(&cursor).expect("a valid cursor")),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not terminate");
    }
    assert_eq!(sizes, vec![50, 50, 20]);
    assert_eq!(seen, created, "creation order, no duplicates or gaps");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120);

    // An exact multiple of the limit: the last full page has no cursor.
    let exact = s
        .list_sites(
            &SiteFilter::default(),
            &PageRequest {
                limit: 120,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 120);
    assert_eq!(exact.next_cursor, None);

    // A capped count stops at the cap; under it, it is the count.
    let everything = SiteFilter::default();
    assert_eq!(s.count_sites(&everything).await.unwrap(), 120);
    assert_eq!(s.count_sites_up_to(&everything, 101).await.unwrap(), 101);
    assert_eq!(s.count_sites_up_to(&everything, 1_000).await.unwrap(), 120);
    let named = SiteFilter {
        name_contains: Some("SITE 01".into()),
        ..SiteFilter::default()
    };
    assert_eq!(s.count_sites_up_to(&named, 5).await.unwrap(), 5);
    assert_eq!(s.count_sites_up_to(&named, 1_000).await.unwrap(), 10);
    // The web UI's page carries the count in its one statement: unfiltered,
    // the tenant's exact site count; filtered, capped like the count above,
    // with the filter's values bound once for both.
    let first = PageRequest {
        limit: 50,
        after: None,
    };
    let overview = s
        .list_sites_with_leaf_status(&everything, &first, 101)
        .await
        .unwrap();
    assert_eq!(overview.sites.items.len(), 50);
    assert!(
        overview
            .sites
            .items
            .iter()
            .all(|(_, leaf)| *leaf == Some(LeafStatus::Pending))
    );
    assert_eq!(overview.matching, Some(120));
    let pending = SiteFilter {
        status: Some(SiteStatus::Pending),
        ..SiteFilter::default()
    };
    let capped = s
        .list_sites_with_leaf_status(&pending, &first, 101)
        .await
        .unwrap();
    assert_eq!(capped.matching, Some(101));
    let cursor = overview.sites.next_cursor.expect("a second page");
    let overview = s
        .list_sites_with_leaf_status(&named, &first, 1_000)
        .await
        .unwrap();
    assert_eq!(overview.sites.items.len(), 10);
    assert_eq!(overview.matching, Some(10));
    let second = PageRequest {
        limit: 50,
        after: Some(Cursor::decode(&cursor).expect("a valid cursor")),
    };
    let next = s
        .list_sites_with_leaf_status(&everything, &second, 1_000)
        .await
        .unwrap();
    assert_eq!(next.sites.items.len(), 50, "the second page");
    assert_eq!(
        next.matching,
        Some(120),
        "the count is the filter's, not the page's"
    );
    let nothing = SiteFilter {
        name_contains: Some("no such site".into()),
        ..SiteFilter::default()
    };
    let empty = s
        .list_sites_with_leaf_status(&nothing, &first, 1_000)
        .await
        .unwrap();
    assert!(empty.sites.items.is_empty());
    assert_eq!(empty.matching, None, "an empty page carries no count");

    // Status filter.
    let all = PageRequest {
        limit: 200,
        after: None,
    };
    let pending = s
        .list_sites(
            &SiteFilter {
                status: Some(SiteStatus::Pending),
                ..SiteFilter::default()
            },
            &all,
        )
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 120);
    let active = s
        .list_sites(
            &SiteFilter {
                status: Some(SiteStatus::Active),
                ..SiteFilter::default()
            },
            &all,
        )
        .await
        .unwrap();
    assert!(active.items.is_empty());
    assert_eq!(active.next_cursor, None);

    // Name filter: case-insensitive; `%`, `_` and `\` are literal.
    for (name, slug_text) in [
        ("100% Uptime", "uptime"),
        ("Under_score", "under-score"),
        ("UnderXscore", "under-x-score"),
        ("Back\\Slash", "back-slash"),
        ("Backslash", "backslash"),
    ] {
        s.create_site(&new_site(name, slug_text), None)
            .await
            .unwrap();
    }
    let names = |needle: &'static str| {
        let all = all.clone();
        async move {
            let mut names: Vec<String> = s
                .list_sites(
                    &SiteFilter {
                        name_contains: Some(needle.into()),
                        ..SiteFilter::default()
                    },
                    &all,
                )
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|site| site.name.as_str().to_string())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("0%").await, vec!["100% Uptime"]);
    assert_eq!(names("%").await, vec!["100% Uptime"]);
    assert_eq!(names("r_s").await, vec!["Under_score"]);
    assert_eq!(names("_").await, vec!["Under_score"]);
    assert_eq!(names("k\\s").await, vec!["Back\\Slash"]);
    assert_eq!(names("UNDER").await, vec!["UnderXscore", "Under_score"]);
    assert_eq!(names("uptime").await, vec!["100% Uptime"]);
    assert_eq!(names("SITE 11").await.len(), 10);
    assert_eq!(names("site 0").await.len(), 100);
    assert!(names("nothing like this").await.is_empty());

    // Status and name filters combine.
    let combined = s
        .list_sites(
            &SiteFilter {
                status: Some(SiteStatus::Pending),
                name_contains: Some("site 00".into()),
            },
            &all,
        )
        .await
        .unwrap();
    assert_eq!(combined.items.len(), 10);

    // Limits clamp to 1..=200.
    let one = s
        .list_sites(
            &SiteFilter::default(),
            &PageRequest {
                limit: 0,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    assert!(one.next_cursor.is_some());
    for i in 0..80 {
        s.create_site(
            &new_site(&format!("Extra {i:02}"), &format!("extra-{i:02}")),
            None,
        )
        .await
        .unwrap();
    }
    // 120 + 5 + 80 = 205 sites.
    let huge = s
        .list_sites(
            &SiteFilter::default(),
            &PageRequest {
                limit: 10_000,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(huge.items.len(), PageRequest::MAX_LIMIT as usize);
    let rest = s
        .list_sites(
            &SiteFilter::default(),
            &PageRequest {
                limit: 10_000,
                after: Some(Cursor::decode(&huge.next_cursor.unwrap()).unwrap()),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 5);
    assert_eq!(rest.next_cursor, None);

    // The leaf's status on the list follows every change of the leaf, and
    // the site count follows deletions (a second tenant's sites apart).
    let (_t2, scope2) = tenant(&store, "paging-other").await;
    store
        .scoped(scope2)
        .create_site(&new_site("Elsewhere", "elsewhere"), None)
        .await
        .unwrap();
    let site = created[0];
    let leaf = s.leaf_for_site(site).await.unwrap();
    s.store_leaf_provisioning(
        leaf.id,
        &LeafProvisioning {
            leaf_cert_pem: "cert".into(),
            leaf_key_sealed: vec![1; 8],
            server_cert_pem: "cert".into(),
            server_key_sealed: vec![2; 8],
            ca_chain_pem: "chain".into(),
            creds_sealed: vec![3; 8],
            cert_expires_at: 1,
            config_checksum: "sha256:00".into(),
            node_certs: Vec::new(),
        },
        &ProvisionedFrom::default(),
    )
    .await
    .unwrap();
    let listed = |page: SiteOverviewPage| {
        page.sites
            .items
            .into_iter()
            .find(|(s, _)| s.id == site)
            .and_then(|(_, leaf)| leaf)
    };
    let now = s
        .list_sites_with_leaf_status(&everything, &first, 1_000)
        .await
        .unwrap();
    assert_eq!(listed(now), Some(LeafStatus::Provisioned));
    s.set_leaf_link(site, true).await.unwrap();
    let now = s
        .list_sites_with_leaf_status(&everything, &first, 1_000)
        .await
        .unwrap();
    assert_eq!(listed(now), Some(LeafStatus::Connected));
    let before = s.count_sites(&everything).await.unwrap();
    s.delete_site(created[1]).await.unwrap();
    assert!(matches!(
        s.delete_site(created[1]).await,
        Err(StoreError::NotFound)
    ));
    let now = s
        .list_sites_with_leaf_status(&everything, &first, 1_000)
        .await
        .unwrap();
    assert_eq!(
        now.matching,
        Some(before - 1),
        "one deleted, the other tenant's not counted"
    );
}
both_backends!(pagination: sqlite_pagination, postgres_pagination);

/// The list API reads its page as rows borrowed in place
/// (`list_site_rows`): the same sites, in the same order, with the same
/// cursors and filters as `list_sites`, each value as the typed site has it
/// (IPv4, DNS and IPv6 URLs; the last is written anew), and never another
/// tenant's.
async fn site_rows_list_what_list_sites_lists(store: Store) {
    let (_t, scope) = tenant(&store, "rows").await;
    let (_o, other) = tenant(&store, "rows-other").await;
    store
        .scoped(other)
        .create_site(&new_site("Site other", "other"), None)
        .await
        .unwrap();
    let s = store.scoped(scope);
    for i in 0..7 {
        let mut site = new_site(&format!("  Site {i} \"quoted\"  "), &format!("site-{i}"));
        site.nats_leaf_url = nats_url(match i % 3 {
            0 => "nats://10.0.1.50:4222",
            1 => "TLS://Leaf.Example.com:4443",
            _ => "nats://[2001:db8::1]:4222",
        });
        s.create_site(&site, None).await.unwrap();
    }
    // One site seen (active, with a last contact).
    let third = s
        .list_sites(&SiteFilter::default(), &PageRequest::first())
        .await
        .unwrap()
        .items[2]
        .id;
    s.agent_seen(uuid::Uuid::now_v7(), third).await.unwrap();

    let filters = [
        SiteFilter::default(),
        SiteFilter {
            status: Some(SiteStatus::Active),
            name_contains: None,
        },
        SiteFilter {
            status: None,
            name_contains: Some("site 1".into()),
        },
    ];
    for filter in &filters {
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = PageRequest { limit: 3, after };
            let typed = s.list_sites(filter, &page).await.unwrap();
            let rows = s.list_site_rows(filter, &page).await.unwrap();
            let listed = rows.sites().unwrap();
            assert_eq!(listed.len(), typed.items.len(), "{filter:?}");
            for (r, e) in listed.iter().zip(&typed.items) {
                assert_eq!(r.id(), e.id);
                assert_eq!(r.name(), e.name.as_str());
                assert_eq!(r.slug(), e.slug.as_str());
                assert_eq!(r.status(), e.status);
                assert_eq!(r.nats_leaf_url(), e.nats_leaf_url.to_string());
                assert_eq!(r.last_seen_at(), e.last_seen_at);
                assert_eq!(r.created_at(), e.created_at);
                assert_eq!(r.updated_at(), e.updated_at);
            }
            assert_eq!(rows.next_cursor(), typed.next_cursor.as_deref());
            pages += 1;
            match typed.next_cursor {
                Some(cursor) => after = Some(Cursor::decode(&cursor).unwrap()),
                None => break,
            }
            assert!(pages < 10, "pagination does not terminate");
        }
    }
}
both_backends!(
    site_rows_list_what_list_sites_lists: sqlite_site_rows_list_what_list_sites_lists,
    postgres_site_rows_list_what_list_sites_lists
);

/// A stored value that breaks its rule (here a slug with a quote, which the
/// list writes into JSON unescaped because the rule allows none) fails the
/// read as corrupt rather than reaching a response.
async fn a_stored_slug_that_breaks_its_rule_is_not_listed(store: Store, url: &str) {
    use sqlx::Connection as _;
    let (_t, scope) = tenant(&store, "corrupt").await;
    let s = store.scoped(scope);
    let (site, _) = s
        .create_site(&new_site("Fine", "fine"), None)
        .await
        .unwrap();
    let filter = SiteFilter::default();
    let page = PageRequest::first();
    assert_eq!(
        s.list_site_rows(&filter, &page)
            .await
            .unwrap()
            .sites()
            .unwrap()
            .len(),
        1
    );

    let mut raw = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE edge_sites SET slug = 'x\",\"admin\":true,\"y' WHERE id = '{}'",
        site.id
    )))
    .execute(&mut raw)
    .await
    .unwrap();
    let rows = s.list_site_rows(&filter, &page).await.unwrap();
    assert_err!(rows.sites(), StoreError::Corrupt { .. });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_stored_slug_that_breaks_its_rule_is_not_listed() {
    let (store, dir) = sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    a_stored_slug_that_breaks_its_rule_is_not_listed(store.clone(), &url).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stored_slug_that_breaks_its_rule_is_not_listed() {
    let url = postgres_database().await;
    let store = postgres_store_at(&url, 4).await;
    a_stored_slug_that_breaks_its_rule_is_not_listed(store.clone(), &url).await;
    store.close().await;
}

/// Counts span entries.
struct CountEnters(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountEnters {
    fn on_enter(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A page of 50 sites is read without entering the caller's span once or
/// more per row: sqlx re-enters the span current when it makes a
/// statement's row streams around every row, and the hot reads make them
/// while none is current (`hot.rs`). A regression costs a list request
/// about 6% more instructions and no test would otherwise see it.
#[tokio::test(flavor = "current_thread")]
async fn a_site_page_read_does_not_reenter_the_callers_span_per_row() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let store = postgres_store().await;
    let (_t, scope) = tenant(&store, "spans").await;
    let s = store.scoped(scope);
    for i in 0..50 {
        s.create_site(&new_site(&format!("Site {i}"), &format!("site-{i}")), None)
            .await
            .unwrap();
    }
    let enters = Arc::new(AtomicUsize::new(0));
    // This runtime runs everything on this thread, so the thread's default
    // subscriber sees every poll.
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(CountEnters(enters.clone())),
    );
    let page = PageRequest {
        limit: 50,
        after: None,
    };
    // The first read on a new connection prepares the statement, in a
    // poll of its own; the second is the steady state.
    for read in ["first", "second"] {
        enters.store(0, Ordering::Relaxed);
        let rows = s
            .list_site_rows(&SiteFilter::default(), &page)
            .instrument(tracing::info_span!("request", read))
            .await
            .unwrap();
        assert_eq!(rows.sites().unwrap().len(), 50, "{read} read");
    }
    let entered = enters.load(Ordering::Relaxed);
    assert!(
        entered < 10,
        "the steady-state read of 50 rows entered a span {entered} times"
    );
    store.close().await;
}

// ---------------------------------------------------------------------------
// 6. Packages
// ---------------------------------------------------------------------------

async fn packages(store: Store) {
    let (t, scope) = tenant(&store, "packages").await;
    let s = store.scoped(scope);
    let (site, _) = s
        .create_site(&new_site("Branch", "branch"), None)
        .await
        .unwrap();

    let direct = s
        .create_package(&new_package("Direct", None))
        .await
        .unwrap();
    assert_eq!(direct.package.tenant_id, t.id);
    assert_eq!(direct.package.edge_site_id, None);
    assert_eq!(direct.package.status, PackageStatus::Created);
    assert_eq!(direct.package.collector_type, CollectorType::Flowgger);
    assert_eq!(direct.edge_site, None);

    let bound = s
        .create_package(&NewPackage {
            name: display("Bound"),
            collector_type: CollectorType::Otel,
            edge_site_id: Some(site.id),
        })
        .await
        .unwrap();
    assert_eq!(bound.package.edge_site_id, Some(site.id));
    assert_eq!(
        bound.edge_site,
        Some(SiteSummary {
            id: site.id,
            name: site.name.clone(),
            slug: site.slug.clone(),
            nats_leaf_url: site.nats_leaf_url.clone(),
        })
    );
    assert_eq!(s.package(bound.package.id).await.unwrap(), bound);
    assert_err!(
        s.create_package(&new_package("Dangling", Some(EdgeSiteId::new())))
            .await,
        StoreError::BadReference { .. }
    );

    // The summary follows site changes.
    s.update_site(
        site.id,
        &SiteUpdate {
            name: Some(display("Branch Renamed")),
            nats_leaf_url: None,
        },
    )
    .await
    .unwrap();
    let renamed = s.package(bound.package.id).await.unwrap();
    assert_eq!(renamed.edge_site.unwrap().name.as_str(), "Branch Renamed");

    // Filters.
    let all = PageRequest {
        limit: 200,
        after: None,
    };
    let list = |filter: PackageFilter| {
        let all = all.clone();
        async move {
            s.list_packages(&filter, &all)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.package.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(PackageFilter::default()).await,
        vec![direct.package.id, bound.package.id]
    );
    assert_eq!(
        list(PackageFilter {
            collector_type: Some(CollectorType::Otel),
            ..PackageFilter::default()
        })
        .await,
        vec![bound.package.id]
    );
    assert_eq!(
        list(PackageFilter {
            edge_site_id: Some(site.id),
            ..PackageFilter::default()
        })
        .await,
        vec![bound.package.id]
    );
    assert_eq!(
        list(PackageFilter {
            name_contains: Some("DIR".into()),
            ..PackageFilter::default()
        })
        .await,
        vec![direct.package.id]
    );

    // Transitions.
    let downloaded = s
        .transition_package(direct.package.id, PackageEvent::Download)
        .await
        .unwrap();
    assert_eq!(downloaded.package.status, PackageStatus::Downloaded);
    assert!(downloaded.package.updated_at >= direct.package.updated_at);
    assert_eq!(
        list(PackageFilter {
            status: Some(PackageStatus::Downloaded),
            ..PackageFilter::default()
        })
        .await,
        vec![direct.package.id]
    );
    let revoked = s
        .transition_package(direct.package.id, PackageEvent::Revoke)
        .await
        .unwrap();
    assert_eq!(revoked.package.status, PackageStatus::Revoked);
    match s
        .transition_package(direct.package.id, PackageEvent::Download)
        .await
    {
        Err(StoreError::Transition(illegal)) => {
            assert_eq!(illegal.from, "revoked");
            assert_eq!(illegal.event, "download");
        }
        other => panic!("expected a Transition error, got {other:?}"),
    }
    assert_eq!(
        s.package(direct.package.id).await.unwrap().package.status,
        PackageStatus::Revoked
    );
    assert_err!(
        s.transition_package(direct.package.id, PackageEvent::Revoke)
            .await,
        StoreError::Transition(_)
    );

    // Delete.
    s.delete_package(bound.package.id).await.unwrap();
    assert_err!(s.package(bound.package.id).await, StoreError::NotFound);
    assert_err!(
        s.delete_package(bound.package.id).await,
        StoreError::NotFound
    );
    // The site survives its package.
    s.site(site.id).await.unwrap();
}
both_backends!(packages: sqlite_packages, postgres_packages);

// ---------------------------------------------------------------------------
// 7. Users
// ---------------------------------------------------------------------------

async fn users(store: Store) {
    let (t, scope) = tenant(&store, "users").await;
    let (_other, other_scope) = tenant(&store, "users-other").await;
    let s = store.scoped(scope);

    let owner = s
        .create_user(&new_user("Owner@Example.com", Role::Owner))
        .await
        .unwrap();
    assert_eq!(owner.email.as_str(), "owner@example.com");
    assert_eq!(owner.tenant_id, t.id);
    assert_eq!(owner.role, Role::Owner);
    assert_eq!(s.user(owner.id).await.unwrap(), owner);
    assert_err!(
        s.create_user(&new_user("owner@example.com", Role::Viewer))
            .await,
        StoreError::Conflict(_)
    );
    // The same e-mail in another tenant is a different user.
    store
        .scoped(other_scope)
        .create_user(&new_user("owner@example.com", Role::Owner))
        .await
        .unwrap();
    assert_err!(s.user(UserId::new()).await, StoreError::NotFound);

    // The hash is readable only through the login lookup.
    let login = store
        .login_record("users", "owner@example.com")
        .await
        .unwrap();
    assert_eq!(login.user, owner);
    assert_eq!(
        login.password_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$Owner@Example.com"
    );
    assert!(!format!("{login:?}").contains("argon2"));
    let listed = s.list_users(&PageRequest::first()).await.unwrap().items;
    assert_eq!(listed, vec![owner.clone()]);
    let json = serde_json::to_value(&listed[0]).unwrap();
    let keys: HashSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["id", "tenant_id", "email", "role", "created_at"])
    );
    assert!(!json.to_string().contains("argon2"));
    assert_err!(
        store.login_record("users", "nobody@example.com").await,
        StoreError::NotFound
    );
    assert_err!(
        store
            .login_record("no-such-tenant", "owner@example.com")
            .await,
        StoreError::NotFound
    );

    // The last owner can be neither demoted nor deleted.
    assert_err!(
        s.set_user_role(owner.id, Role::Admin).await,
        StoreError::InvalidState(_)
    );
    assert_err!(s.delete_user(owner.id).await, StoreError::InvalidState(_));
    assert_eq!(s.user(owner.id).await.unwrap().role, Role::Owner);
    // Owner -> owner is not a demotion.
    s.set_user_role(owner.id, Role::Owner).await.unwrap();

    let second = s
        .create_user(&new_user("second@example.com", Role::Owner))
        .await
        .unwrap();
    let demoted = s.set_user_role(owner.id, Role::Admin).await.unwrap();
    assert_eq!(demoted.role, Role::Admin);
    assert_eq!(s.user(owner.id).await.unwrap().role, Role::Admin);
    assert_err!(
        s.set_user_role(second.id, Role::Viewer).await,
        StoreError::InvalidState(_)
    );
    assert_err!(s.delete_user(second.id).await, StoreError::InvalidState(_));

    // Password change replaces the hash and ends sessions.
    let viewer = s
        .create_user(&new_user("viewer@example.com", Role::Viewer))
        .await
        .unwrap();
    store
        .create_session("viewer-session", &viewer, "csrf", now_ms() + 60_000)
        .await
        .unwrap();
    s.set_user_password(viewer.id, "new-hash").await.unwrap();
    assert_eq!(
        store
            .login_record("users", "viewer@example.com")
            .await
            .unwrap()
            .password_hash,
        "new-hash"
    );
    assert_err!(store.session("viewer-session").await, StoreError::NotFound);
    assert_err!(
        s.set_user_password(UserId::new(), "x").await,
        StoreError::NotFound
    );

    // Deleting a user removes their tokens and sessions (cascade).
    let token = s.create_token(&new_token(owner.id, "mine")).await.unwrap();
    let kept = s.create_token(&new_token(second.id, "kept")).await.unwrap();
    store
        .create_session("owner-session", &demoted, "csrf", now_ms() + 60_000)
        .await
        .unwrap();
    store
        .create_session("second-session", &second, "csrf", now_ms() + 60_000)
        .await
        .unwrap();
    s.delete_user(owner.id).await.unwrap();
    assert_err!(s.user(owner.id).await, StoreError::NotFound);
    assert_err!(s.delete_user(owner.id).await, StoreError::NotFound);
    assert_err!(s.token(token.id).await, StoreError::NotFound);
    assert_err!(
        store.token_record(token.id).await.map(|r| r.token),
        StoreError::NotFound
    );
    assert_err!(store.session("owner-session").await, StoreError::NotFound);
    assert!(
        s.list_tokens(Some(owner.id), &PageRequest::first())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_err!(
        store.login_record("users", "owner@example.com").await,
        StoreError::NotFound
    );
    // Other users keep theirs.
    assert_eq!(s.token(kept.id).await.unwrap(), kept);
    store.session("second-session").await.unwrap();
    let remaining: Vec<UserId> = s
        .list_users(&PageRequest::first())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(remaining, vec![second.id, viewer.id]);
}
both_backends!(users: sqlite_users, postgres_users);

/// Two owners removed at the same moment (demoted or deleted): exactly one
/// change may win, so the tenant keeps an owner.
async fn last_owner_race(store: Store) {
    for round in 0..12 {
        let (_t, scope) = tenant(&store, &format!("race-{round}")).await;
        let s = store.scoped(scope);
        let a = s
            .create_user(&new_user("a@example.com", Role::Owner))
            .await
            .unwrap();
        let b = s
            .create_user(&new_user("b@example.com", Role::Owner))
            .await
            .unwrap();
        let (store_a, store_b) = (store.clone(), store.clone());
        let delete = round % 2 == 1;
        let first = tokio::spawn(async move {
            store_a
                .scoped(scope)
                .set_user_role(a.id, Role::Viewer)
                .await
                .map(|_| ())
        });
        let second = tokio::spawn(async move {
            let s = store_b.scoped(scope);
            if delete {
                s.delete_user(b.id).await
            } else {
                s.set_user_role(b.id, Role::Admin).await.map(|_| ())
            }
        });
        let results = [first.await.unwrap(), second.await.unwrap()];
        let won = results.iter().filter(|r| r.is_ok()).count();
        for result in &results {
            if let Err(e) = result {
                assert!(
                    matches!(e, StoreError::InvalidState(_)),
                    "round {round}: unexpected error {e:?}"
                );
            }
        }
        assert_eq!(won, 1, "round {round}: {results:?}");
        let owners = s
            .list_users(&PageRequest::first())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|u| u.role == Role::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}");
    }
}
both_backends!(last_owner_race: sqlite_last_owner_race, postgres_last_owner_race);

// ---------------------------------------------------------------------------
// 8. Tokens and sessions
// ---------------------------------------------------------------------------

async fn tokens_and_sessions(store: Store) {
    let (t, scope) = tenant(&store, "tokens").await;
    let s = store.scoped(scope);
    let alice = s
        .create_user(&new_user("alice@example.com", Role::Owner))
        .await
        .unwrap();
    let bob = s
        .create_user(&new_user("bob@example.com", Role::Operator))
        .await
        .unwrap();

    let new = new_token(bob.id, "deploy");
    let token = s.create_token(&new).await.unwrap();
    assert_eq!(token.id, new.id);
    assert_eq!(token.tenant_id, t.id);
    assert_eq!(token.user_id, bob.id);
    assert_eq!(token.name, "deploy");
    assert_eq!(token.scopes, new.scopes);
    assert_eq!(token.expires_at, new.expires_at);
    assert_eq!(token.revoked_at, None);
    assert_eq!(token.last_used_at, None);
    assert_eq!(s.token(token.id).await.unwrap(), token);
    assert_err!(
        s.create_token(&new_token(UserId::new(), "ghost")).await,
        StoreError::NotFound
    );

    let record = store.token_record(token.id).await.unwrap();
    assert_eq!(record.token, token);
    assert_eq!(record.secret_hash, "secret-hash-of-deploy");
    assert_eq!(record.role, Role::Operator);
    // The record carries the user's *current* role.
    s.set_user_role(bob.id, Role::Viewer).await.unwrap();
    assert_eq!(
        store.token_record(token.id).await.unwrap().role,
        Role::Viewer
    );
    assert_err!(
        store.token_record(ApiTokenId::new()).await.map(|r| r.token),
        StoreError::NotFound
    );

    // touch_token writes at most once a minute.
    store.touch_token(token.id, None).await.unwrap();
    let touched = s.token(token.id).await.unwrap().last_used_at.unwrap();
    store.touch_token(token.id, Some(touched)).await.unwrap();
    assert_eq!(s.token(token.id).await.unwrap().last_used_at, Some(touched));

    // Revocation is idempotent: the first time is kept.
    let revoked = s.revoke_token(token.id).await.unwrap();
    let revoked_at = revoked.revoked_at.expect("revoked");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = s.revoke_token(token.id).await.unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
    assert_eq!(
        store.token_record(token.id).await.unwrap().token.revoked_at,
        Some(revoked_at)
    );
    assert_err!(
        s.revoke_token(ApiTokenId::new()).await,
        StoreError::NotFound
    );

    // Listing, optionally per user.
    let alice_1 = s.create_token(&new_token(alice.id, "a1")).await.unwrap();
    let alice_2 = s.create_token(&new_token(alice.id, "a2")).await.unwrap();
    let ids = |page: serviceradar_store::Page<serviceradar_domain::resources::ApiToken>| {
        page.items.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let first = PageRequest::first();
    assert_eq!(
        ids(s.list_tokens(Some(alice.id), &first).await.unwrap()),
        vec![alice_1.id, alice_2.id]
    );
    assert_eq!(
        ids(s.list_tokens(Some(bob.id), &first).await.unwrap()),
        vec![token.id]
    );
    assert_eq!(
        ids(s.list_tokens(None, &first).await.unwrap()),
        vec![token.id, alice_1.id, alice_2.id]
    );
    let paged = s
        .list_tokens(
            None,
            &PageRequest {
                limit: 2,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 2);
    let tail = s
        .list_tokens(
            None,
            &PageRequest {
                limit: 2,
                after: Some(Cursor::decode(&paged.next_cursor.unwrap()).unwrap()),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(tail), vec![alice_2.id]);

    // Sessions.
    let expires = now_ms() + 3_600_000;
    store
        .create_session("live-hash", &alice, "csrf-live", expires)
        .await
        .unwrap();
    let session = store.session("live-hash").await.unwrap();
    assert_eq!(session.tenant_id, t.id);
    assert_eq!(session.user_id, alice.id);
    assert_eq!(session.role, Role::Owner);
    assert_eq!(session.csrf_token, "csrf-live");
    assert_eq!(session.expires_at, expires);
    assert_err!(store.session("no-such-hash").await, StoreError::NotFound);

    store
        .create_session("dead-hash", &alice, "csrf-dead", now_ms() - 1)
        .await
        .unwrap();
    assert_err!(store.session("dead-hash").await, StoreError::NotFound);
    let sweep = || async {
        store
            .sweep_retention(&serviceradar_store::RetentionPolicy::default(), now_ms())
            .await
            .unwrap()
            .sessions
    };
    assert_eq!(sweep().await, 1);
    assert_eq!(sweep().await, 0);
    store.session("live-hash").await.unwrap();

    store.delete_session("live-hash").await.unwrap();
    assert_err!(store.session("live-hash").await, StoreError::NotFound);
    // Deleting twice is fine.
    store.delete_session("live-hash").await.unwrap();
}
both_backends!(tokens_and_sessions: sqlite_tokens_and_sessions, postgres_tokens_and_sessions);

// ---------------------------------------------------------------------------
// 9. Job queue
// ---------------------------------------------------------------------------

async fn jobs_lifecycle(store: Store) {
    let (t, _) = tenant(&store, "jobs").await;
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());

    let id = store
        .enqueue_job(&NewJob::new("work", json!({"n": 1})), Some(t.id))
        .await
        .unwrap()
        .expect("enqueued");
    let queued = store.job(id).await.unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.max_attempts, 8);
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 1);

    let job = store
        .claim_job("w1", 60_000)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(job.id, id);
    assert_eq!(job.kind, "work");
    assert_eq!(job.payload, json!({"n": 1}));
    assert_eq!(job.tenant_id, Some(t.id));
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempts, 1);
    assert_eq!(store.count_jobs(JobStatus::Running).await.unwrap(), 1);
    // Held by w1: nothing else to claim.
    assert!(store.claim_job("w2", 60_000).await.unwrap().is_none());

    assert!(!store.complete_job(id, "w2").await.unwrap(), "not w2's job");
    assert!(store.complete_job(id, "w1").await.unwrap());
    assert!(!store.complete_job(id, "w1").await.unwrap(), "already done");
    let done = store.job(id).await.unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.last_error, None);
    assert_eq!(store.count_jobs(JobStatus::Done).await.unwrap(), 1);
    assert_eq!(store.count_jobs(JobStatus::Running).await.unwrap(), 0);
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());
    assert_err!(store.job(JobId::new()).await, StoreError::NotFound);

    // A platform job (no tenant).
    let platform = store
        .enqueue_job(&NewJob::new("sweep", json!(null)), None)
        .await
        .unwrap()
        .unwrap();
    let job = store.claim_job("w1", 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, platform);
    assert_eq!(job.tenant_id, None);
    assert_eq!(job.payload, json!(null));
    assert!(store.complete_job(platform, "w1").await.unwrap());

    // run_at: a future job is not claimable; a past one is, oldest first.
    let later = store
        .enqueue_job(
            &NewJob {
                run_at: Some(now_ms() + 3_600_000),
                ..NewJob::new("later", json!({}))
            },
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());
    let due = store
        .enqueue_job(
            &NewJob {
                run_at: Some(0),
                ..NewJob::new("due", json!({}))
            },
            None,
        )
        .await
        .unwrap()
        .unwrap();
    let job = store.claim_job("w1", 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, due);
    assert!(store.complete_job(due, "w1").await.unwrap());
    store.make_job_due(later).await.unwrap();
    let job = store.claim_job("w1", 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, later);
    assert!(store.complete_job(later, "w1").await.unwrap());
}
both_backends!(jobs_lifecycle: sqlite_jobs_lifecycle, postgres_jobs_lifecycle);

async fn jobs_dedupe(store: Store) {
    let job = NewJob::new("provision", json!({})).dedupe("leaf:1");
    let first = store.enqueue_job(&job, None).await.unwrap().expect("first");
    assert_eq!(store.enqueue_job(&job, None).await.unwrap(), None);
    // Still held while running.
    let claimed = store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, first);
    assert_eq!(store.enqueue_job(&job, None).await.unwrap(), None);
    // Still held while queued for a retry.
    assert_eq!(
        store.fail_job(first, "w", "transient").await.unwrap(),
        Some(JobStatus::Queued)
    );
    assert_eq!(store.enqueue_job(&job, None).await.unwrap(), None);
    store.make_job_due(first).await.unwrap();
    let claimed = store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, first);
    assert!(store.complete_job(first, "w").await.unwrap());
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 0);

    // Released on completion.
    let second = store
        .enqueue_job(&job, None)
        .await
        .unwrap()
        .expect("accepted after completion");
    assert_ne!(second, first);
    // Other keys and keyless jobs are independent.
    assert!(
        store
            .enqueue_job(&NewJob::new("provision", json!({})).dedupe("leaf:2"), None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .enqueue_job(&NewJob::new("provision", json!({})), None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .enqueue_job(&NewJob::new("provision", json!({})), None)
            .await
            .unwrap()
            .is_some()
    );

    // Released when the job finally fails.
    let once = NewJob {
        max_attempts: 1,
        ..NewJob::new("once", json!({})).dedupe("once")
    };
    let failing = store.enqueue_job(&once, None).await.unwrap().unwrap();
    assert_eq!(store.enqueue_job(&once, None).await.unwrap(), None);
    loop {
        let claimed = store.claim_job("w", 60_000).await.unwrap().unwrap();
        if claimed.id == failing {
            break;
        }
        assert!(store.complete_job(claimed.id, "w").await.unwrap());
    }
    assert_eq!(
        store.fail_job(failing, "w", "fatal").await.unwrap(),
        Some(JobStatus::Failed)
    );
    assert!(store.enqueue_job(&once, None).await.unwrap().is_some());
}
both_backends!(jobs_dedupe: sqlite_jobs_dedupe, postgres_jobs_dedupe);

async fn jobs_retry_and_fail(store: Store) {
    let id = store
        .enqueue_job(
            &NewJob {
                max_attempts: 2,
                ..NewJob::new("flaky", json!({"x": true}))
            },
            None,
        )
        .await
        .unwrap()
        .unwrap();

    let job = store.claim_job("w1", 60_000).await.unwrap().unwrap();
    assert_eq!((job.id, job.attempts), (id, 1));
    // Only the holder can fail it.
    assert_eq!(store.fail_job(id, "w2", "not mine").await.unwrap(), None);
    let before = now_ms();
    assert_eq!(
        store.fail_job(id, "w1", "boom 1").await.unwrap(),
        Some(JobStatus::Queued)
    );
    let retry = store.job(id).await.unwrap();
    assert_eq!(retry.status, JobStatus::Queued);
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.last_error.as_deref(), Some("boom 1"));
    // Backed off: not claimable right away.
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());
    assert!(
        now_ms() - before < 1_000,
        "the test itself took over a second"
    );

    store.make_job_due(id).await.unwrap();
    let job = store.claim_job("w1", 60_000).await.unwrap().unwrap();
    assert_eq!((job.id, job.attempts), (id, 2));
    assert_eq!(
        store.fail_job(id, "w1", "boom 2").await.unwrap(),
        Some(JobStatus::Failed)
    );
    let failed = store.job(id).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.last_error.as_deref(), Some("boom 2"));
    assert_eq!(store.count_jobs(JobStatus::Failed).await.unwrap(), 1);
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());
    // A failed job is finished: no more reporting on it.
    assert!(!store.complete_job(id, "w1").await.unwrap());
    assert_eq!(store.fail_job(id, "w1", "again").await.unwrap(), None);
    // make_job_due does not resurrect finished jobs.
    store.make_job_due(id).await.unwrap();
    assert!(store.claim_job("w1", 60_000).await.unwrap().is_none());

    // Long errors are truncated.
    let long = store
        .enqueue_job(&NewJob::new("long", json!({})), None)
        .await
        .unwrap()
        .unwrap();
    store.claim_job("w1", 60_000).await.unwrap().unwrap();
    store
        .fail_job(long, "w1", &"é".repeat(5_000))
        .await
        .unwrap();
    let error = store.job(long).await.unwrap().last_error.unwrap();
    assert_eq!(error.chars().count(), 2_000);
}
both_backends!(jobs_retry_and_fail: sqlite_jobs_retry_and_fail, postgres_jobs_retry_and_fail);

async fn jobs_expired_lease(store: Store) {
    let id = store
        .enqueue_job(&NewJob::new("slow", json!({})), None)
        .await
        .unwrap()
        .unwrap();
    // w1 claims with a lease that is already over (it "died").
    let first = store.claim_job("w1", -1_000).await.unwrap().unwrap();
    assert_eq!((first.id, first.attempts), (id, 1));
    let second = store.claim_job("w2", 60_000).await.unwrap().unwrap();
    assert_eq!((second.id, second.attempts), (id, 2));
    assert_eq!(second.status, JobStatus::Running);
    // w2 holds a live lease now.
    assert!(store.claim_job("w3", 60_000).await.unwrap().is_none());
    // The first worker lost the job.
    assert!(!store.complete_job(id, "w1").await.unwrap());
    assert_eq!(store.fail_job(id, "w1", "late").await.unwrap(), None);
    assert_eq!(store.job(id).await.unwrap().status, JobStatus::Running);
    assert!(store.complete_job(id, "w2").await.unwrap());
    assert_eq!(store.job(id).await.unwrap().status, JobStatus::Done);
}
both_backends!(jobs_expired_lease: sqlite_jobs_expired_lease, postgres_jobs_expired_lease);

/// A job whose worker dies on its last allowed attempt fails instead of being
/// reclaimed forever.
async fn jobs_expired_lease_on_last_attempt_fails(store: Store) {
    let mut job = NewJob::new("crashy", json!({}));
    job.max_attempts = 1;
    let id = store.enqueue_job(&job, None).await.unwrap().unwrap();
    let first = store.claim_job("w1", -1_000).await.unwrap().unwrap();
    assert_eq!(first.id, id);
    assert!(store.claim_job("w2", 60_000).await.unwrap().is_none());
    let failed = store.job(id).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(failed.last_error.unwrap().contains("lease expired"));
}
both_backends!(
    jobs_expired_lease_on_last_attempt_fails: sqlite_jobs_expired_lease_on_last_attempt_fails,
    postgres_jobs_expired_lease_on_last_attempt_fails
);

/// Enqueues 200 jobs and lets `workers` tasks claim and complete them until
/// the queue is empty; every job must be completed exactly once.
async fn drain_concurrently(store: Store, workers: usize) {
    const JOBS: usize = 200;
    let mut enqueued = HashSet::new();
    for i in 0..JOBS {
        let id = store
            .enqueue_job(&NewJob::new("bulk", json!({ "i": i })), None)
            .await
            .unwrap()
            .unwrap();
        enqueued.insert(id);
    }

    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut done = Vec::new();
            while let Some(job) = store.claim_job(&worker, 60_000).await.unwrap() {
                assert_eq!(job.attempts, 1, "job {} claimed twice", job.id);
                assert!(
                    store.complete_job(job.id, &worker).await.unwrap(),
                    "{worker} lost job {}",
                    job.id
                );
                done.push(job.id);
            }
            done
        }));
    }
    let mut completed = Vec::new();
    let mut busy_workers = 0;
    for task in tasks {
        let done = task.await.unwrap();
        if !done.is_empty() {
            busy_workers += 1;
        }
        completed.extend(done);
    }
    assert_eq!(completed.len(), JOBS, "each job completed exactly once");
    let unique: HashSet<JobId> = completed.into_iter().collect();
    assert_eq!(unique.len(), JOBS, "no job completed twice");
    assert_eq!(unique, enqueued);
    assert!(busy_workers >= 1);
    assert_eq!(
        store.count_jobs(JobStatus::Done).await.unwrap(),
        JOBS as i64
    );
    assert_eq!(store.count_jobs(JobStatus::Queued).await.unwrap(), 0);
    assert_eq!(store.count_jobs(JobStatus::Running).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_jobs_concurrent_claims() {
    let (store, _dir) = sqlite_store().await;
    drain_concurrently(store.clone(), 4).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_jobs_concurrent_claims() {
    let store = postgres_store().await;
    drain_concurrently(store.clone(), 8).await;
    store.close().await;
}

// ---------------------------------------------------------------------------
// Certificate renewal sweep
// ---------------------------------------------------------------------------

both_backends!(expiring_leaves: sqlite_expiring_leaves, postgres_expiring_leaves);

async fn expiring_leaves(store: Store) {
    let a = fixture(&store, "acme").await;
    let b = fixture(&store, "beta").await;
    // Pending leaves have no certificates: never due.
    let far = now_ms() + 10 * 86_400_000;
    assert!(
        store
            .leaves_expiring_before(far, far, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // acme's expires in a day, beta's in 20 days.
    store
        .scoped(a.scope)
        .store_leaf_provisioning(a.leaf.id, &provisioning("a"), &ProvisionedFrom::default())
        .await
        .unwrap();
    let mut later = provisioning("b");
    later.cert_expires_at = now_ms() + 20 * 86_400_000;
    store
        .scoped(b.scope)
        .store_leaf_provisioning(b.leaf.id, &later, &ProvisionedFrom::default())
        .await
        .unwrap();
    let in_a_minute = now_ms() + 60_000;
    let due = store
        .leaves_expiring_before(far, in_a_minute, 100)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "only acme's expires within 10 days");
    assert_eq!(due[0].tenant_id, a.tenant.id);
    assert_eq!(due[0].edge_site_id, a.site.id);
    assert_eq!(due[0].leaf_id, a.leaf.id);
    // Soonest first, bounded by the limit.
    let all = store
        .leaves_expiring_before(now_ms() + 30 * 86_400_000, in_a_minute, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|l| l.tenant_id).collect::<Vec<_>>(),
        vec![a.tenant.id, b.tenant.id]
    );
    assert_eq!(
        store
            .leaves_expiring_before(now_ms() + 30 * 86_400_000, in_a_minute, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Re-provisioned after the quiet bound: not due.
    let an_hour_ago = now_ms() - 3_600_000;
    assert!(
        store
            .leaves_expiring_before(far, an_hour_ago, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// Telemetry
// ---------------------------------------------------------------------------

both_backends!(telemetry: sqlite_telemetry, postgres_telemetry);

fn record(
    kind: &str,
    seq: i64,
    ts: i64,
) -> serviceradar_domain::telemetry::TelemetryRecord<'static> {
    let payload = match kind {
        "metrics" => format!(r#"{{"name":"cpu","value":{seq}.5,"ts":{ts}}}"#),
        _ => format!(r#"{{"message":"m{seq}","ts":{ts}}}"#),
    };
    decoded(&format!("{kind}.acme.nyc"), &payload, seq)
}

/// Tenant acme's message on `subject`, decoded as ingestion decodes it.
fn decoded(
    subject: &str,
    payload: &str,
    seq: i64,
) -> serviceradar_domain::telemetry::TelemetryRecord<'static> {
    use serviceradar_domain::telemetry::{IncomingMessage, decode};
    decode(
        "acme",
        IncomingMessage {
            subject,
            payload: payload.as_bytes(),
            stream_seq: seq,
            stored_at_ms: 0,
        },
    )
    .unwrap()
    .into_owned()
}

async fn telemetry(store: Store) {
    use serviceradar_domain::telemetry::TelemetryKind;
    use serviceradar_store::TimeRange;
    let a = fixture(&store, "acme").await;
    let b = fixture(&store, "beta").await;
    let sa = store.scoped(a.scope);
    let batch: Vec<_> = (1..=1200)
        .map(|seq| {
            let kind = ["events", "metrics", "logs"][(seq % 3) as usize];
            record(kind, seq, 1_000 + seq)
        })
        .collect();
    assert_eq!(sa.insert_telemetry(&batch).await.unwrap(), 1200);
    // Redelivery of an overlapping batch writes only the new rows.
    let again: Vec<_> = (1150..=1250)
        .map(|seq| {
            record(
                ["events", "metrics", "logs"][(seq % 3) as usize],
                seq,
                1_000 + seq,
            )
        })
        .collect();
    assert_eq!(sa.insert_telemetry(&again).await.unwrap(), 50);
    let mut total = 0;
    for kind in TelemetryKind::ALL {
        total += sa.count_telemetry(kind).await.unwrap();
    }
    assert_eq!(total, 1250);

    // Event-time order, time range, pagination.
    let range = TimeRange {
        from: Some(1_100),
        to: Some(1_200),
    };
    let mut page = PageRequest {
        limit: 10,
        after: None,
    };
    let mut seen = Vec::new();
    loop {
        let got = sa
            .list_telemetry(TelemetryKind::Metric, range, &page)
            .await
            .unwrap();
        seen.extend(got.items.iter().map(|r| r.time_ms));
        match got.next_cursor {
            Some(c) => page.after = Cursor::decode(&c),
            None => break,
        }
    }
    let expected: Vec<i64> = (100..200)
        .filter(|s| s % 3 == 1)
        .map(|s| 1_000 + s)
        .collect();
    assert_eq!(seen, expected);
    let first = sa
        .list_telemetry(TelemetryKind::Metric, range, &PageRequest::first())
        .await
        .unwrap();
    assert_eq!(first.items[0].label, "cpu");
    for kind in [TelemetryKind::Event, TelemetryKind::Log] {
        let got = sa
            .list_telemetry(kind, range, &PageRequest::first())
            .await
            .unwrap();
        assert!(!got.items.is_empty());
        assert!(got.items[0].message.starts_with('m'));
        assert_eq!(got.items[0].value, 0.0);
    }
    assert!((first.items[0].value - 100.5).abs() < 1e-9);

    // Text that COPY must escape survives both write paths.
    let tricky = serviceradar_domain::telemetry::decode(
        "acme",
        serviceradar_domain::telemetry::IncomingMessage {
            subject: "logs.acme.tricky",
            payload: br#"{"message":"tab\there\nnew line \\ back\\slash\r","ts":5}"#,
            stream_seq: 99_999,
            stored_at_ms: 0,
        },
    )
    .unwrap();
    assert_eq!(
        sa.insert_telemetry(std::slice::from_ref(&tricky))
            .await
            .unwrap(),
        1
    );
    let got = sa
        .list_telemetry(
            TelemetryKind::Log,
            TimeRange {
                from: Some(5),
                to: Some(6),
            },
            &PageRequest::first(),
        )
        .await
        .unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].message, "tab\there\nnew line \\ back\\slash\r");
    assert_eq!(got.items[0].body, tricky.meta().body);

    // Another tenant sees none of it.
    let sb = store.scoped(b.scope);
    for kind in TelemetryKind::ALL {
        assert_eq!(sb.count_telemetry(kind).await.unwrap(), 0);
        assert!(
            sb.list_telemetry(kind, TimeRange::default(), &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
}

both_backends!(device_telemetry: sqlite_device_telemetry, postgres_device_telemetry);

/// Lists by device and by site find exactly the devices' rows among the
/// collectors' (whose `device_id` is NULL and, since migration 0031, are
/// not in the device indexes at all).
async fn device_telemetry(store: Store) {
    use serviceradar_domain::device::{DeviceLimits, DeviceName};
    use serviceradar_domain::telemetry::TelemetryKind;
    use serviceradar_store::TelemetryFilter;
    let f = fixture(&store, "acme").await;
    let s = store.scoped(f.scope);
    let (other_site, _) = s
        .create_site(&new_site("Other Site", "other"), None)
        .await
        .unwrap();
    let name = |n: &str| DeviceName::parse(n).unwrap();
    let a = s
        .create_device(f.site.id, &name("a"), DeviceLimits::DEFAULT)
        .await
        .unwrap();
    let b = s
        .create_device(other_site.id, &name("b"), DeviceLimits::DEFAULT)
        .await
        .unwrap();
    // Collectors' metrics, then device a's and device b's, interleaved.
    let mut batch: Vec<_> = (1..=300).map(|seq| record("metrics", seq, seq)).collect();
    for seq in 301..=340 {
        let (site, device) = if seq % 2 == 0 {
            ("main", a.id.to_string())
        } else {
            ("other", b.id.to_string())
        };
        batch.push(decoded(
            &format!("edge.acme.{site}.device.{device}.metrics"),
            &format!(r#"{{"name":"temp","value":{seq},"ts":{}}}"#, 1_000 + seq),
            seq,
        ));
    }
    assert_eq!(s.insert_telemetry(&batch).await.unwrap(), 340);

    let list = |filter: TelemetryFilter| {
        let s = &s;
        async move {
            s.list_telemetry_filtered(TelemetryKind::Metric, &filter, &PageRequest::first())
                .await
                .unwrap()
                .items
        }
    };
    let of_a = list(TelemetryFilter {
        device_id: Some(a.id.to_string()),
        ..TelemetryFilter::default()
    })
    .await;
    assert_eq!(of_a.len(), 20);
    assert!(
        of_a.iter()
            .all(|r| r.device_id.as_deref() == Some(a.id.to_string().as_str()))
    );
    let at_other = list(TelemetryFilter {
        device_site_id: Some(other_site.id.to_string()),
        ..TelemetryFilter::default()
    })
    .await;
    assert_eq!(at_other.len(), 20);
    assert!(
        at_other
            .iter()
            .all(|r| r.device_id.as_deref() == Some(b.id.to_string().as_str()))
    );
    assert_eq!(s.count_telemetry(TelemetryKind::Metric).await.unwrap(), 340);
}

/// Migration 0031: PostgreSQL reads a device's telemetry through the
/// partial device index, also in a generic plan (the store's statements are
/// prepared): `device_id = $2` proves `device_id IS NOT NULL`, so leaving
/// collectors' rows out of the index costs that list nothing. (A site's
/// devices' list joins `devices`; which index its plan takes depends on the
/// data, so `device_telemetry` checks its rows, not its plan.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_device_lists_read_the_partial_device_index() {
    let url = postgres_database().await;
    let store = postgres_store_at(&url, 2).await;
    let pool = sqlx::postgres::PgPool::connect(&url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for setting in [
        "SET plan_cache_mode = force_generic_plan",
        "SET enable_seqscan = off",
    ] {
        sqlx::query(setting).execute(&mut *conn).await.unwrap();
    }
    for table in ["events", "metrics", "logs"] {
        let sql = format!(
            "EXPLAIN SELECT t.id FROM {table} t WHERE t.tenant_id = $1 AND t.device_id = $2 \
             ORDER BY t.created_at DESC, t.id DESC LIMIT 51"
        );
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind("t")
            .bind("x")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains(&format!("{table}_tenant_device_time")),
            "{sql}\n{plan}"
        );
    }
    drop(conn);
    pool.close().await;
    store.close().await;
}

/// Issue 15, platform ingestion: one batch holding several tenants' records
/// writes each record into its own tenant, is idempotent per tenant on the
/// stream sequence (a redelivery writes only the new rows; the same
/// sequence in two tenants is two rows), and a record the database refuses
/// is reported alone while the rest is written.
async fn telemetry_of_tenants(store: Store) {
    use serviceradar_domain::telemetry::TelemetryKind;
    let (a, sa) = tenant(&store, "acme").await;
    let (b, sb) = tenant(&store, "beta").await;
    let mixed: Vec<_> = (1..=300)
        .map(|seq| {
            let kind = ["events", "metrics", "logs"][(seq % 3) as usize];
            let tenant = if seq % 2 == 0 { a.id } else { b.id };
            (tenant, record(kind, seq, 1_000 + seq))
        })
        .collect();
    let written = store.insert_telemetry_of_tenants(&mixed).await.unwrap();
    assert_eq!(written.inserted, 300);
    assert!(written.refused.is_empty());
    let count = |scope| {
        let store = &store;
        async move {
            let mut n = 0;
            for kind in TelemetryKind::ALL {
                n += store.scoped(scope).count_telemetry(kind).await.unwrap();
            }
            n
        }
    };
    assert_eq!(count(sa).await, 150);
    assert_eq!(count(sb).await, 150);
    // A redelivery overlapping the first: only the new rows; the same
    // sequences in the other tenant are that tenant's own rows.
    let again: Vec<_> = (251..=400)
        .map(|seq| {
            let kind = ["events", "metrics", "logs"][(seq % 3) as usize];
            let tenant = if seq % 2 == 0 { a.id } else { b.id };
            (tenant, record(kind, seq, 1_000 + seq))
        })
        .chain((1..=10).map(|seq| {
            let seq = seq * 6 + 3; // odd, and an event (seq % 3 == 0): beta's in the first batch
            (a.id, record("events", seq, 7))
        }))
        .collect();
    let written = store.insert_telemetry_of_tenants(&again).await.unwrap();
    assert_eq!(written.inserted, 110);
    assert_eq!(count(sa).await, 150 + 50 + 10);
    assert_eq!(count(sb).await, 150 + 50);
}
both_backends!(telemetry_of_tenants: sqlite_telemetry_of_tenants, postgres_telemetry_of_tenants);

/// Leaf hub sessions: recorded per site and tenant, pruned by age, forgotten
/// on request; another tenant sees none of them.
async fn leaf_sessions(store: Store) {
    use serviceradar_domain::EdgeSiteId;
    let (_, a) = tenant(&store, "acme").await;
    let (_, b) = tenant(&store, "beta").await;
    let (sa, sb) = (store.scoped(a), store.scoped(b));
    let (site, other_site) = (EdgeSiteId::new(), EdgeSiteId::new());
    sa.record_leaf_session(site, "UOLD", 1_000, 0)
        .await
        .unwrap();
    sa.record_leaf_session(other_site, "UOTHER", 1_500, 0)
        .await
        .unwrap();
    sa.record_leaf_session(site, "UNEW", 2_000, 0)
        .await
        .unwrap();
    // Recording the same key again is harmless.
    sa.record_leaf_session(site, "UNEW", 2_000, 0)
        .await
        .unwrap();
    assert_eq!(sa.leaf_session_keys(site).await.unwrap(), ["UNEW", "UOLD"]);
    assert!(sb.leaf_session_keys(site).await.unwrap().is_empty());
    // A new session prunes the site's sessions older than the cut-off only.
    sa.record_leaf_session(site, "UNEWER", 3_000, 1_500)
        .await
        .unwrap();
    assert_eq!(
        sa.leaf_session_keys(site).await.unwrap(),
        ["UNEWER", "UNEW"]
    );
    assert_eq!(sa.leaf_session_keys(other_site).await.unwrap(), ["UOTHER"]);
    // Another tenant cannot forget them.
    sb.forget_leaf_sessions(site).await.unwrap();
    assert_eq!(sa.leaf_session_keys(site).await.unwrap().len(), 2);
    sa.forget_leaf_sessions(site).await.unwrap();
    assert!(sa.leaf_session_keys(site).await.unwrap().is_empty());
    assert_eq!(sa.leaf_session_keys(other_site).await.unwrap(), ["UOTHER"]);
}
both_backends!(leaf_sessions: sqlite_leaf_sessions, postgres_leaf_sessions);

/// Issue 11, finding 9: a batch PostgreSQL refused mid-`COPY` returned its
/// broken connection to the pool, and the next writer on it — any tenant's —
/// failed with `there is already a transaction in progress` or `unexpected
/// message type 0x51 during COPY`. The refusal is classed as the data's
/// fault (so a caller splits the batch), and every later write on the same
/// small pool succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_isolated_and_never_breaks_the_pool() {
    use serviceradar_domain::telemetry::{RecordMeta, TelemetryKind, TelemetryRecord};
    use std::borrow::Cow;
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("create a test database");
    // Two connections: every write below reuses one the refused writes used.
    let store = Store::connect(&url, 2).await.expect("connect to postgres");
    store.migrate().await.expect("migrate postgres");
    let (_, scope) = tenant(&store, "acme").await;
    let scoped = store.scoped(scope);
    // Built directly: decoding refuses a NUL (see the domain's rule); the
    // store must still survive a row PostgreSQL refuses.
    let refused = |seq: i64| TelemetryRecord::Event {
        meta: RecordMeta {
            stream_seq: seq,
            subject: Cow::Borrowed("events.acme.nyc"),
            source: Cow::Borrowed("nyc"),
            time_ms: seq,
            body: Cow::Borrowed("{}"),
            device_id: None,
        },
        severity: Cow::Borrowed("info"),
        message: Cow::Borrowed("a\0b"),
    };
    const ROWS: i64 = 20_000;
    let mut next_seq = 1;
    for round in 0..6 {
        // The refused row first, then enough rows that PostgreSQL answers
        // while the client is still sending the `COPY` data.
        let mut batch = vec![refused(next_seq)];
        batch.extend((1..=ROWS).map(|i| record("events", next_seq + i, i)));
        next_seq += ROWS + 1;
        let err = scoped
            .insert_telemetry(&batch)
            .await
            .expect_err("PostgreSQL refuses a NUL");
        assert!(err.is_refused_data(), "round {round}: {err}");
        // The same rows without the refused one are written, on the same pool.
        batch.remove(0);
        assert_eq!(
            scoped
                .insert_telemetry(&batch)
                .await
                .expect("later writes succeed"),
            ROWS as u64,
            "round {round}"
        );
    }
    // A write abandoned mid-`COPY` (its task cancelled, e.g. at shutdown)
    // leaves no broken connection behind either.
    for round in 0..6 {
        let batch: Vec<_> = (0..ROWS)
            .map(|i| record("events", next_seq + i, i))
            .collect();
        next_seq += ROWS;
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(2 + round * 3),
            scoped.insert_telemetry(&batch),
        )
        .await;
        let good = vec![record("events", next_seq, 0)];
        next_seq += 1;
        let written = scoped.insert_telemetry(&good).await;
        assert!(
            matches!(written, Ok(1)),
            "round {round}: after an abandoned write ({}): {written:?}",
            if abandoned.is_ok() {
                "finished"
            } else {
                "cancelled"
            }
        );
    }
    // A redelivered batch (duplicate keys) is not the data's fault.
    let again: Vec<_> = (2..=11).map(|seq| record("events", seq, 0)).collect();
    assert_eq!(scoped.insert_telemetry(&again).await.unwrap(), 0);

    // Isolating: a batch of 1,000 with three refused rows writes the other
    // 997 and names the three, with the database's reason.
    let first = next_seq;
    let batch: Vec<_> = (0..1000)
        .map(|i| {
            if [0, 517, 999].contains(&i) {
                refused(first + i)
            } else {
                record("events", first + i, i)
            }
        })
        .collect();
    let before = scoped.count_telemetry(TelemetryKind::Event).await.unwrap();
    let written = scoped.insert_telemetry_isolating(&batch).await.unwrap();
    assert_eq!(written.inserted, 997);
    let refused_at: Vec<usize> = written.refused.iter().map(|(i, _)| *i).collect();
    assert_eq!(refused_at, [0, 517, 999]);
    for (_, reason) in &written.refused {
        assert!(reason.contains("0x00"), "{reason}");
        assert!(!reason.contains("line "), "no source location: {reason}");
    }
    assert_eq!(
        scoped.count_telemetry(TelemetryKind::Event).await.unwrap(),
        before + 997
    );
    // Written again (a redelivery): nothing twice, the same three refused.
    let again = scoped.insert_telemetry_isolating(&batch).await.unwrap();
    assert_eq!(again.inserted, 0);
    assert_eq!(again.refused.len(), 3);
    store.close().await;
}

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

both_backends!(retention: sqlite_retention, postgres_retention);

/// Issue 11, finding 12: nothing was ever deleted. One sweep deletes
/// expired sessions, telemetry past each tenant's retention (its own, else
/// the default), finished jobs, webhook deliveries, gateway audit rows and
/// resolved alerts past their age; everything younger, and unfinished jobs,
/// stay. (The sweep's clock is moved forward instead of aging the rows.)
async fn retention(store: Store) {
    use serviceradar_domain::telemetry::TelemetryKind;
    use serviceradar_store::RetentionPolicy;
    const DAY: i64 = 24 * 3600 * 1000;
    let now = now_ms();
    let policy = RetentionPolicy::default();
    let (acme, acme_scope) = tenant(&store, "acme").await;
    let (beta, beta_scope) = tenant(&store, "beta").await;
    // beta keeps 2 days of telemetry; acme the default 30.
    store
        .set_telemetry_retention(beta.id, Some(2))
        .await
        .unwrap();
    assert_eq!(
        store.telemetry_retention_of(beta.id).await.unwrap(),
        Some(2)
    );
    assert_eq!(store.telemetry_retention_of(acme.id).await.unwrap(), None);
    assert_err!(
        store.set_telemetry_retention(beta.id, Some(0)).await,
        StoreError::InvalidState(_)
    );
    // Event times (`ts`): 40 days, 3 days and 1 hour ago.
    let ages = [40 * DAY, 3 * DAY, DAY / 24];
    for (scope, slug_text) in [(acme_scope, "acme"), (beta_scope, "beta")] {
        let records: Vec<_> = ages
            .iter()
            .enumerate()
            .map(|(i, age)| {
                let mut r = record("events", i as i64 + 1, now - age);
                if slug_text == "beta" {
                    r = retag(r, "beta");
                }
                r
            })
            .collect();
        assert_eq!(
            store
                .scoped(scope)
                .insert_telemetry(&records)
                .await
                .unwrap(),
            3
        );
    }

    let alice = store
        .scoped(acme_scope)
        .create_user(&new_user("alice@acme.example.com", Role::Owner))
        .await
        .unwrap();
    store
        .create_session("expired", &alice, "c", now - 1)
        .await
        .unwrap();
    store
        .create_session("live", &alice, "c", now + DAY)
        .await
        .unwrap();

    let swept = store.sweep_retention(&policy, now).await.unwrap();
    assert_eq!(swept.sessions, 1);
    // acme: the 40-day-old event; beta (2 days): the 40- and 3-day-old ones.
    assert_eq!(swept.telemetry, 3);
    let count = |scope| {
        let store = store.clone();
        async move {
            store
                .scoped(scope)
                .count_telemetry(TelemetryKind::Event)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(acme_scope).await, 2);
    assert_eq!(count(beta_scope).await, 1);
    store.session("live").await.unwrap();
    // Nothing more to delete right away.
    assert_eq!(
        store.sweep_retention(&policy, now).await.unwrap().total(),
        0
    );

    // Jobs: a finished one goes after 7 days, a queued one never.
    let done = store
        .enqueue_job(&NewJob::new("retention-test", json!({})), None)
        .await
        .unwrap()
        .unwrap();
    let job = store.claim_job("w", 60_000).await.unwrap().unwrap();
    assert_eq!(job.id, done);
    assert!(store.complete_job(done, "w").await.unwrap());
    store
        .enqueue_job(&NewJob::new("retention-test", json!({})), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .sweep_retention(&policy, now + 6 * DAY)
            .await
            .unwrap()
            .jobs,
        0
    );
    assert_eq!(
        store
            .sweep_retention(&policy, now + 8 * DAY)
            .await
            .unwrap()
            .jobs,
        1
    );
    assert!(
        store.claim_job("w", 60_000).await.unwrap().is_some(),
        "queued job kept"
    );

    // Gateway audit rows: 90 days.
    store
        .audit_gateway(Some(acme.id), None, "cn", "Push", "test")
        .await
        .unwrap();
    let at = |days: i64| now + days * DAY;
    assert_eq!(
        store
            .sweep_retention(&policy, at(89))
            .await
            .unwrap()
            .gateway_audit,
        0
    );
    let swept = store.sweep_retention(&policy, at(91)).await.unwrap();
    assert_eq!(swept.gateway_audit, 1);
}

/// `record` of another tenant (subject and source follow).
fn retag(
    r: serviceradar_domain::telemetry::TelemetryRecord<'static>,
    tenant: &str,
) -> serviceradar_domain::telemetry::TelemetryRecord<'static> {
    use serviceradar_domain::telemetry::{IncomingMessage, decode};
    let meta = r.meta();
    let payload = format!(r#"{{"message":"m","ts":{}}}"#, meta.time_ms);
    decode(
        tenant,
        IncomingMessage {
            subject: &format!("events.{tenant}.nyc"),
            payload: payload.as_bytes(),
            stream_seq: meta.stream_seq,
            stored_at_ms: 0,
        },
    )
    .unwrap()
    .into_owned()
}

/// Issue 11, finding 9, the fix itself: a PostgreSQL connection whose
/// `COPY` the database refused is closed, never returned to the pool (where
/// the next writer, any tenant's, would inherit its state). With one
/// connection in the pool, the database's count of this database's
/// connections drops by one after the refused write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_write_was_refused_is_closed_not_reused() {
    use serviceradar_domain::telemetry::{RecordMeta, TelemetryRecord};
    use std::borrow::Cow;
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("create a test database");
    let database = url.rsplit('/').next().expect("name").to_owned();
    let connections = move || {
        let out = serviceradar_testkit::postgres()
            .psql(
                &database,
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .expect("psql");
        out.lines()
            .find_map(|l| l.trim().parse::<i64>().ok())
            .expect("a count")
    };
    let store = Store::connect(&url, 1).await.expect("connect to postgres");
    store.migrate().await.expect("migrate postgres");
    let (_, scope) = tenant(&store, "acme").await;
    let scoped = store.scoped(scope);
    // A good write: the COPY connection is open and back in its pool.
    scoped
        .insert_telemetry(&[record("events", 1, 0)])
        .await
        .expect("a good write");
    let before = connections();
    let refused = TelemetryRecord::Event {
        meta: RecordMeta {
            stream_seq: 2,
            subject: Cow::Borrowed("events.acme.nyc"),
            source: Cow::Borrowed("nyc"),
            time_ms: 2,
            body: Cow::Borrowed("{}"),
            device_id: None,
        },
        severity: Cow::Borrowed("info"),
        message: Cow::Borrowed("a\0b"),
    };
    scoped
        .insert_telemetry(&[refused])
        .await
        .expect_err("PostgreSQL refuses a NUL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = connections();
        if now == before - 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refused write's connection is still open: {now} connections, {before} before"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And the next write opens a fresh one.
    scoped
        .insert_telemetry(&[record("events", 3, 0)])
        .await
        .expect("a later write");
}

// ---------------------------------------------------------------------------
// Platform secrets: kept, then replaced on rotation
// ---------------------------------------------------------------------------

async fn platform_secret_rotation(store: Store) {
    let name = "hub_cluster_node_key:sr-hub:2";
    let first = store
        .insert_platform_secret(name, "", b"first sealed key")
        .await
        .unwrap();
    // A second insert keeps the first (every render reads the same key).
    let again = store
        .insert_platform_secret(name, "", b"another key")
        .await
        .unwrap();
    assert_eq!(again.secret_sealed, first.secret_sealed);
    // A rotation replaces it; whoever reads next gets the new one.
    let rotated = store
        .replace_platform_secret(name, "", b"rotated sealed key")
        .await
        .unwrap();
    assert_eq!(rotated.secret_sealed, b"rotated sealed key".to_vec());
    let read = store.platform_secret(name).await.unwrap().unwrap();
    assert_eq!(read.secret_sealed, b"rotated sealed key".to_vec());
    // Replacing a secret that does not exist yet stores it.
    let fresh = store
        .replace_platform_secret("hub_cluster_node_key:sr-hub:3", "", b"new")
        .await
        .unwrap();
    assert_eq!(fresh.secret_sealed, b"new".to_vec());
}

both_backends!(
    platform_secret_rotation: sqlite_platform_secret_rotation,
    postgres_platform_secret_rotation
);
