//! End-to-end tests of the JSON API, each run against SQLite and a real
//! PostgreSQL server: CRUD, pagination, validation, conflicts, roles and token
//! scopes, sessions with CSRF, and cross-tenant isolation.

mod support;

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_domain::policy::{Role, Scope};
use support::{Caller, Db, OWNER_PASSWORD, Reply, spawn_app};

both_backends!(
    site_crud,
    validation_errors_name_fields,
    injection_attempts_are_rejected,
    slug_conflicts,
    pagination_and_filters,
    cross_tenant_isolation,
    roles_and_scopes,
    token_lifecycle,
    sessions_and_csrf,
    packages,
    users,
    operational_endpoints,
    a_site_name_with_bidi_overrides_is_refused_at_the_api,
    a_token_cannot_turn_itself_into_a_password,
    an_oversized_chunked_body_is_413_not_400,
    a_token_cannot_mint_one_that_outlives_it,
    safe_methods_never_mint_a_collector_bundle,
    repeated_wrong_passwords_are_throttled,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// An API token's id and secret halves, split as the server splits
/// `srt_<id>_<secret>`: at the first `_` after the prefix. The secret is
/// URL-safe base64 and may hold `_` itself, so splitting at the last one
/// (as two tests once did) took a few characters of it for the whole
/// secret, and the leak test then found those characters in innocent log
/// lines (a fresh-clone run of session 35).
fn token_halves(token: &str) -> (&str, &str) {
    let halves = token
        .strip_prefix("srt_")
        .and_then(|rest| rest.split_once('_'))
        .expect("srt_<id>_<secret>");
    // 32 random bytes, base64 without padding.
    assert_eq!(halves.1.len(), 43, "the whole secret half of {token}");
    halves
}

async fn site_crud(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let site = app.create_site(&acme, "NYC Office", "nyc-office").await;
    assert_eq!(site["status"], "pending");
    assert_eq!(site["leaf_server"]["status"], "pending");
    assert_eq!(site["leaf_server"]["local_listen"], "0.0.0.0:4222");
    let site_id = id(&site);

    let got = app
        .get(&acme, &format!("/api/v1/edge-sites/{site_id}"))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["slug"], "nyc-office");
    let leaf_id = got.body["leaf_server"]["id"].as_str().unwrap().to_string();

    let patched = app
        .patch(
            &acme,
            &format!("/api/v1/edge-sites/{site_id}"),
            json!({"name": "NYC HQ", "nats_leaf_url": "tls://leaf.nyc.example.com:4443"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["name"], "NYC HQ");
    assert_eq!(
        patched.body["nats_leaf_url"],
        "tls://leaf.nyc.example.com:4443"
    );

    let leaf = app
        .get(&acme, &format!("/api/v1/edge-sites/{site_id}/leaf-server"))
        .await;
    assert_eq!(leaf.status, StatusCode::OK);
    assert_eq!(id(&leaf.body), leaf_id);
    let leaf2 = app
        .get(&acme, &format!("/api/v1/leaf-servers/{leaf_id}"))
        .await;
    assert_eq!(leaf2.body["edge_site_id"], site_id.as_str());
    let leaves = app.get(&acme, "/api/v1/leaf-servers?status=pending").await;
    assert_eq!(leaves.body["items"].as_array().unwrap().len(), 1);

    let deleted = app
        .delete(&acme, &format!("/api/v1/edge-sites/{site_id}"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app
        .get(&acme, &format!("/api/v1/edge-sites/{site_id}"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"]["code"], "not_found");
    let leaf_gone = app
        .get(&acme, &format!("/api/v1/leaf-servers/{leaf_id}"))
        .await;
    assert_eq!(leaf_gone.status, StatusCode::NOT_FOUND);
    let malformed = app.get(&acme, "/api/v1/edge-sites/not-a-uuid").await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
}

fn field_names(reply: &support::Reply) -> Vec<String> {
    reply.body["error"]["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn validation_errors_name_fields(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let reply = app
        .post(
            &acme,
            "/api/v1/edge-sites",
            json!({"name": "", "slug": "Bad Slug", "nats_leaf_url": "http://x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["error"]["code"], "validation_failed");
    assert_eq!(field_names(&reply), ["name", "slug", "nats_leaf_url"]);

    let unknown = app
        .post(
            &acme,
            "/api/v1/edge-sites",
            json!({"name": "a", "nats_leaf_url": "nats://a:1", "status": "active"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);

    let broken = app
        .http
        .post(format!("{}/api/v1/edge-sites", app.base))
        .header(
            "authorization",
            format!("Bearer {}", acme.token.clone().unwrap()),
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    let body: Value = broken.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    let bad_page = app
        .get(&acme, "/api/v1/edge-sites?limit=0&cursor=zzz&status=weird")
        .await;
    assert_eq!(bad_page.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_names(&bad_page), ["limit", "cursor", "status"]);
    let too_big = app.get(&acme, "/api/v1/edge-sites?limit=201").await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
}

async fn injection_attempts_are_rejected(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let hostile = [
        "a\"b",
        "a\nb",
        "${HOME}",
        "$(rm -rf /)",
        "`id`",
        "a}b",
        "a{b",
        "x'; touch /tmp/p; '",
        "include /etc/passwd",
    ];
    for evil in hostile {
        // As a slug: always rejected.
        let r = app
            .post(
                &acme,
                "/api/v1/edge-sites",
                json!({"name": "ok", "slug": evil, "nats_leaf_url": "nats://a:4222"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "slug {evil:?}");
        assert_eq!(field_names(&r), ["slug"], "slug {evil:?}");
        // Inside a URL host: always rejected.
        let url = format!("nats://{evil}:4222");
        let r = app
            .post(
                &acme,
                "/api/v1/edge-sites",
                json!({"name": "ok", "slug": "ok", "nats_leaf_url": url}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "url {url:?}");
        // Appended to a URL.
        let url = format!("nats://a:4222/{evil}");
        let r = app
            .post(
                &acme,
                "/api/v1/edge-sites",
                json!({"name": "ok", "slug": "ok", "nats_leaf_url": url}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "url {url:?}");
    }
    // Display names may hold quotes and `$`, never line breaks; the derived slug is clean.
    let r = app
        .post(
            &acme,
            "/api/v1/edge-sites",
            json!({"name": "Joe's \"$(id)\" ${X} {site}", "nats_leaf_url": "nats://a:4222"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["slug"], "joe-s-id-x-site");
    assert_eq!(r.body["name"], "Joe's \"$(id)\" ${X} {site}");
    let r = app
        .post(
            &acme,
            "/api/v1/edge-sites",
            json!({"name": "a\r\nb", "nats_leaf_url": "nats://a:4222"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A name filter with SQL metacharacters is just text.
    let r = app
        .get(&acme, "/api/v1/edge-sites?name=%27%20OR%201%3D1%20--")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
}

/// Issue 11, finding 5: a name with bidirectional override characters used to
/// be accepted by the API (the domain's rule allowed it) and then refused by the
/// bundle's stricter copy of the rule, so every bundle of that site (and of its
/// collectors) answered 500. Now the one rule refuses it at the boundary, on
/// create and on update, and the stored site is left as it was.
async fn a_site_name_with_bidi_overrides_is_refused_at_the_api(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let site = app.create_site(&acme, "NYC Office", "nyc-office").await;
    let site_id = id(&site);
    for bidi in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
        let name = format!("NYC{bidi}eciffO");
        let created = app
            .post(
                &acme,
                "/api/v1/edge-sites",
                json!({"name": name, "slug": "evil", "nats_leaf_url": "nats://a:4222"}),
            )
            .await;
        assert_eq!(created.status, StatusCode::BAD_REQUEST, "{}", created.text);
        assert_eq!(created.body["error"]["code"], "validation_failed");
        assert_eq!(field_names(&created), ["name"], "{}", created.text);
        assert!(
            created.text.contains("bidirectional"),
            "the field message says why: {}",
            created.text
        );

        let patched = app
            .patch(
                &acme,
                &format!("/api/v1/edge-sites/{site_id}"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(patched.status, StatusCode::BAD_REQUEST, "{}", patched.text);
        assert_eq!(field_names(&patched), ["name"], "{}", patched.text);
    }
    let unchanged = app
        .get(&acme, &format!("/api/v1/edge-sites/{site_id}"))
        .await;
    assert_eq!(unchanged.status, StatusCode::OK);
    assert_eq!(unchanged.body["name"], "NYC Office");
    let list = app.get(&acme, "/api/v1/edge-sites").await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
}

async fn slug_conflicts(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    app.create_site(&acme, "NYC", "nyc").await;
    let dup = app
        .post(
            &acme,
            "/api/v1/edge-sites",
            json!({"name": "NYC 2", "slug": "nyc", "nats_leaf_url": "nats://a:4222"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.body["error"]["code"], "conflict");
    // The same slug in another tenant is fine.
    app.create_site(&globex, "NYC", "nyc").await;
    // Nothing half-written: acme still has exactly one site and one leaf.
    let list = app.get(&acme, "/api/v1/edge-sites").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let leaves = app.get(&acme, "/api/v1/leaf-servers").await;
    assert_eq!(leaves.body["items"].as_array().unwrap().len(), 1);
}

async fn pagination_and_filters(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    for i in 0..75 {
        let name = if i % 5 == 0 {
            format!("Factory {i}")
        } else {
            format!("Office {i}")
        };
        app.create_site(&acme, &name, &format!("site-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/edge-sites?limit=20&cursor={c}"),
            None => "/api/v1/edge-sites?limit=20".to_string(),
        };
        let page = app.get(&acme, &path).await;
        assert_eq!(page.status, StatusCode::OK);
        pages += 1;
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["slug"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..75).map(|i| format!("site-{i}")).collect();
    assert_eq!(seen, expected, "creation order, no gaps or repeats");

    let factories = app
        .get(&acme, "/api/v1/edge-sites?name=FACTORY&limit=200")
        .await;
    assert_eq!(factories.body["items"].as_array().unwrap().len(), 15);
    let pending = app
        .get(&acme, "/api/v1/edge-sites?status=pending&limit=5")
        .await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 5);
    let active = app.get(&acme, "/api/v1/edge-sites?status=active").await;
    assert_eq!(active.body["items"].as_array().unwrap().len(), 0);
    let default_page = app.get(&acme, "/api/v1/edge-sites").await;
    assert_eq!(default_page.body["items"].as_array().unwrap().len(), 50);
}

async fn cross_tenant_isolation(db: Db) {
    let app = spawn_app(db).await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    app.create_site(&a, "A site", "a-site").await;
    let b_site = app.create_site(&b, "B site", "b-site").await;
    let b_site_id = id(&b_site);
    let b_leaf_id = b_site["leaf_server"]["id"].as_str().unwrap().to_string();
    let b_pkg = app
        .post(
            &b,
            "/api/v1/collector-packages",
            json!({"collector_type": "otel", "edge_site_id": b_site_id}),
        )
        .await;
    let b_pkg_id = id(&b_pkg.body);
    let b_user = app
        .post(
            &b,
            "/api/v1/users",
            json!({"email": "ops@b.example.com", "role": "operator"}),
        )
        .await;
    let b_user_id = id(&b_user.body["user"]);
    let b_token = app.post(&b, "/api/v1/tokens", json!({"name": "b"})).await;
    let b_token_id = id(&b_token.body["token"]);

    // Every read, change and delete of a B object by A is a 404, exactly like a missing id.
    let not_found = [
        app.get(&a, &format!("/api/v1/edge-sites/{b_site_id}"))
            .await,
        app.get(&a, &format!("/api/v1/edge-sites/{b_site_id}/leaf-server"))
            .await,
        app.patch(
            &a,
            &format!("/api/v1/edge-sites/{b_site_id}"),
            json!({"name": "pwned"}),
        )
        .await,
        app.delete(&a, &format!("/api/v1/edge-sites/{b_site_id}"))
            .await,
        app.get(&a, &format!("/api/v1/leaf-servers/{b_leaf_id}"))
            .await,
        app.get(&a, &format!("/api/v1/collector-packages/{b_pkg_id}"))
            .await,
        app.post(
            &a,
            &format!("/api/v1/collector-packages/{b_pkg_id}/revoke"),
            json!({}),
        )
        .await,
        app.delete(&a, &format!("/api/v1/collector-packages/{b_pkg_id}"))
            .await,
        app.get(&a, &format!("/api/v1/users/{b_user_id}")).await,
        app.patch(
            &a,
            &format!("/api/v1/users/{b_user_id}"),
            json!({"role": "viewer"}),
        )
        .await,
        app.delete(&a, &format!("/api/v1/users/{b_user_id}")).await,
        app.delete(&a, &format!("/api/v1/tokens/{b_token_id}"))
            .await,
    ];
    for reply in &not_found {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
        assert_eq!(reply.body["error"]["message"], "no such object");
    }
    // Lists show only A's rows.
    for path in [
        "/api/v1/edge-sites",
        "/api/v1/leaf-servers",
        "/api/v1/collector-packages",
        "/api/v1/users",
        "/api/v1/tokens",
    ] {
        let list = app.get(&a, path).await;
        assert_eq!(list.status, StatusCode::OK, "{path}");
        assert!(
            !list.text.contains("b-site") && !list.text.contains(&b_site_id),
            "{path}: {}",
            list.text
        );
        assert!(
            !list.text.contains("@b.example.com") && !list.text.contains("tenant-b.example.com"),
            "{path}"
        );
    }
    // Filtering by B's site id from A finds nothing; binding a package to it is refused.
    let filtered = app
        .get(
            &a,
            &format!("/api/v1/collector-packages?edge_site_id={b_site_id}"),
        )
        .await;
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 0);
    let bind = app
        .post(
            &a,
            "/api/v1/collector-packages",
            json!({"collector_type": "otel", "edge_site_id": b_site_id}),
        )
        .await;
    assert_eq!(bind.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_names(&bind), ["edge_site_id"]);
    // B's objects are untouched.
    let still = app
        .get(&b, &format!("/api/v1/edge-sites/{b_site_id}"))
        .await;
    assert_eq!(still.body["name"], "B site");
    let token = app.get(&b, "/api/v1/tokens").await;
    assert!(
        token.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["revoked_at"].is_null())
    );
}

async fn roles_and_scopes(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let site_id = id(&app.create_site(&owner, "Site", "site").await);
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    let operator = app.user_with_role("acme", Role::Operator).await;
    let admin = app.user_with_role("acme", Role::Admin).await;
    let new_site = json!({"name": "X", "nats_leaf_url": "nats://a:4222"});

    assert_eq!(
        app.get(&viewer, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    let denied = app
        .post(&viewer, "/api/v1/edge-sites", new_site.clone())
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body["error"]["code"], "forbidden");
    assert_eq!(
        app.get(&viewer, "/api/v1/users").await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(
        app.post(&operator, "/api/v1/edge-sites", new_site.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.delete(&operator, &format!("/api/v1/edge-sites/{site_id}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Admins manage users but cannot mint owners.
    let r = app
        .post(
            &admin,
            "/api/v1/users",
            json!({"email": "o2@acme.example.com", "role": "owner"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            &admin,
            "/api/v1/users",
            json!({"email": "v2@acme.example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        app.delete(&admin, &format!("/api/v1/edge-sites/{site_id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // Token scopes cap what a token can do, even for the owner.
    let read_only = app
        .token_for("acme", "owner@acme.example.com", &[Scope::Read])
        .await;
    assert_eq!(
        app.get(&read_only, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.post(&read_only, "/api/v1/edge-sites", new_site)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&read_only, "/api/v1/users").await.status,
        StatusCode::FORBIDDEN
    );
    // ...and a read token cannot mint itself a stronger one.
    let r = app
        .post(
            &read_only,
            "/api/v1/tokens",
            json!({"name": "x", "scopes": ["write"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let writer = app
        .token_for(
            "acme",
            "owner@acme.example.com",
            &[Scope::Read, Scope::Write],
        )
        .await;
    let other_site = json!({"name": "Y", "nats_leaf_url": "nats://a:4222"});
    assert_eq!(
        app.post(&writer, "/api/v1/edge-sites", other_site)
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.get(&writer, "/api/v1/users").await.status,
        StatusCode::FORBIDDEN
    );
}

async fn token_lifecycle(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    assert_eq!(
        app.get(&Caller::anonymous(), "/api/v1/edge-sites")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for garbage in [
        "nope",
        "srt_123_abc",
        "srt_0190a2b4c0d07e8f9a0b1c2d3e4f5a6b_wrongsecret",
    ] {
        let r = app
            .get(&Caller::bearer(garbage), "/api/v1/edge-sites")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{garbage}");
    }
    let created = app
        .post(
            &owner,
            "/api/v1/tokens",
            json!({"name": "ci", "scopes": ["read", "write"], "expires_in_days": 7}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("srt_"));
    let token_id = id(&created.body["token"]);
    let ci = Caller::bearer(&secret);
    assert_eq!(
        app.get(&ci, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    // A wrong secret with a real id is refused.
    let (token_id_part, _) = token_halves(&secret);
    let forged = Caller::bearer(&format!(
        "srt_{token_id_part}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ));
    assert_eq!(
        app.get(&forged, "/api/v1/edge-sites").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Listing shows metadata only.
    let list = app.get(&owner, "/api/v1/tokens").await;
    assert!(!list.text.contains(&secret));
    assert!(!list.text.contains("secret"));
    // Revoke: the token stops working at once; revoking again is harmless.
    let revoked = app
        .delete(&owner, &format!("/api/v1/tokens/{token_id}"))
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_i64());
    let r = app.get(&ci, "/api/v1/edge-sites").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("revoked"));
    assert_eq!(
        app.delete(&owner, &format!("/api/v1/tokens/{token_id}"))
            .await
            .status,
        StatusCode::OK
    );
    // Expired tokens are refused.
    let t = app.store.tenant_by_slug("acme").await.unwrap();
    let scoped = app
        .store
        .scoped(serviceradar_domain::TenantScope::for_system_task(t.id));
    let owner_user = scoped
        .list_users(&Default::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let minted = serviceradar_auth::mint_token();
    scoped
        .create_token(&serviceradar_store::NewToken {
            id: minted.id,
            user_id: owner_user.id,
            name: "old".into(),
            scopes: serviceradar_domain::ScopeSet::ALL,
            expires_at: 1_000,
            secret_hash: minted.secret_hash,
        })
        .await
        .unwrap();
    let r = app
        .get(&Caller::bearer(&minted.token), "/api/v1/edge-sites")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("expired"));
    // Validation of token requests.
    let bad = app
        .post(
            &owner,
            "/api/v1/tokens",
            json!({"name": "", "scopes": ["root"], "expires_in_days": 999}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_names(&bad), ["name", "scopes", "expires_in_days"]);
    // Non-admins see and revoke only their own tokens.
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    let mine = app.get(&viewer, "/api/v1/tokens").await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    let owner_tokens = app.get(&owner, "/api/v1/tokens").await;
    let some_owner_token = owner_tokens.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .delete(&viewer, &format!("/api/v1/tokens/{some_owner_token}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn sessions_and_csrf(db: Db) {
    let app = spawn_app(db).await;
    app.tenant("acme").await;
    let (bad, _) = app
        .login("acme", "owner@acme.example.com", "wrong password!!")
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let (unknown, _) = app
        .login("acme", "nobody@acme.example.com", OWNER_PASSWORD)
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.body, unknown.body, "no hint which part was wrong");
    let (wrong_tenant, _) = app
        .login("other", "owner@acme.example.com", OWNER_PASSWORD)
        .await;
    assert_eq!(wrong_tenant.status, StatusCode::UNAUTHORIZED);

    let (ok, session) = app
        .login("acme", "Owner@Acme.example.com", OWNER_PASSWORD)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["user"]["role"], "owner");
    let me = app.get(&session, "/api/v1/me").await;
    assert_eq!(me.body["credential"], "session");
    assert_eq!(me.body["tenant_slug"], "acme");

    let body = json!({"name": "S", "nats_leaf_url": "nats://a:4222"});
    let mut no_csrf = session.clone();
    if let Some((_, csrf)) = no_csrf.session.as_mut() {
        csrf.clear();
    }
    assert_eq!(
        app.post(&no_csrf, "/api/v1/edge-sites", body.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let mut wrong_csrf = session.clone();
    if let Some((_, csrf)) = wrong_csrf.session.as_mut() {
        *csrf = "forged".into();
    }
    assert_eq!(
        app.post(&wrong_csrf, "/api/v1/edge-sites", body.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&session, "/api/v1/edge-sites", body).await.status,
        StatusCode::CREATED
    );

    let out = app.post(&session, "/api/v1/auth/logout", json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&session, "/api/v1/edge-sites").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn packages(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let site = app.create_site(&acme, "NYC Office", "nyc").await;
    let site_id = id(&site);
    let bound = app
        .post(
            &acme,
            "/api/v1/collector-packages",
            json!({"collector_type": "flowgger", "edge_site_id": site_id}),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{}", bound.text);
    assert_eq!(bound.body["status"], "created");
    assert_eq!(bound.body["name"], "flowgger");
    assert_eq!(bound.body["edge_site"]["slug"], "nyc");
    assert_eq!(
        bound.body["edge_site"]["nats_leaf_url"],
        "nats://10.0.1.50:4222"
    );
    let direct = app
        .post(
            &acme,
            "/api/v1/collector-packages",
            json!({"collector_type": "trapd", "name": "Traps"}),
        )
        .await;
    assert_eq!(direct.status, StatusCode::CREATED);
    assert!(direct.body["edge_site"].is_null());

    let bad = app
        .post(
            &acme,
            "/api/v1/collector-packages",
            json!({"collector_type": "snmp", "edge_site_id": "x"}),
        )
        .await;
    assert_eq!(field_names(&bad), ["collector_type", "edge_site_id"]);

    let by_site = app
        .get(
            &acme,
            &format!("/api/v1/collector-packages?edge_site_id={site_id}"),
        )
        .await;
    assert_eq!(by_site.body["items"].as_array().unwrap().len(), 1);
    let by_type = app
        .get(&acme, "/api/v1/collector-packages?collector_type=trapd")
        .await;
    assert_eq!(by_type.body["items"][0]["name"], "Traps");

    let pkg_id = id(&bound.body);
    let revoked = app
        .post(
            &acme,
            &format!("/api/v1/collector-packages/{pkg_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.body["status"], "revoked");
    let again = app
        .post(
            &acme,
            &format!("/api/v1/collector-packages/{pkg_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    // Deleting the site keeps the package, now pointing straight at SaaS.
    app.delete(&acme, &format!("/api/v1/edge-sites/{site_id}"))
        .await;
    let after = app
        .get(&acme, &format!("/api/v1/collector-packages/{pkg_id}"))
        .await;
    assert!(after.body["edge_site_id"].is_null());
    assert_eq!(
        app.delete(&acme, &format!("/api/v1/collector-packages/{pkg_id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

async fn users(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let created = app
        .post(
            &owner,
            "/api/v1/users",
            json!({"email": "Ops@Acme.example.com", "role": "operator"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["user"]["email"], "ops@acme.example.com");
    let password = created.body["initial_password"]
        .as_str()
        .unwrap()
        .to_string();
    let (login, _) = app.login("acme", "ops@acme.example.com", &password).await;
    assert_eq!(login.status, StatusCode::OK);

    let dup = app
        .post(
            &owner,
            "/api/v1/users",
            json!({"email": "ops@acme.example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let weak = app
        .post(
            &owner,
            "/api/v1/users",
            json!({"email": "x", "role": "god", "password": "short"}),
        )
        .await;
    assert_eq!(field_names(&weak), ["email", "role", "password"]);

    let user_id = id(&created.body["user"]);
    let promoted = app
        .patch(
            &owner,
            &format!("/api/v1/users/{user_id}"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(promoted.body["role"], "admin");

    // The last owner cannot be demoted or deleted.
    let me = app.get(&owner, "/api/v1/me").await;
    let owner_id = me.body["user_id"].as_str().unwrap().to_string();
    let demote = app
        .patch(
            &owner,
            &format!("/api/v1/users/{owner_id}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(demote.status, StatusCode::CONFLICT);
    assert_eq!(
        app.delete(&owner, &format!("/api/v1/users/{owner_id}"))
            .await
            .status,
        StatusCode::CONFLICT
    );

    // Deleting a user ends their tokens.
    let ops_token = app
        .token_for("acme", "ops@acme.example.com", &[Scope::Read])
        .await;
    assert_eq!(
        app.get(&ops_token, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&owner, &format!("/api/v1/users/{user_id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&ops_token, "/api/v1/edge-sites").await.status,
        StatusCode::UNAUTHORIZED
    );
    let list = app.get(&owner, "/api/v1/users").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

async fn operational_endpoints(db: Db) {
    let app = spawn_app(db).await;
    let anon = Caller::anonymous();
    assert_eq!(app.get(&anon, "/healthz").await.text, "ok");
    assert_eq!(app.get(&anon, "/readyz").await.status, StatusCode::OK);
    let doc = app.get(&anon, "/api/v1/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    for path in [
        "/edge-sites",
        "/edge-sites/{id}",
        "/edge-sites/{id}/leaf-server",
        "/leaf-servers",
        "/collector-packages",
        "/collector-packages/{id}/revoke",
        "/users",
        "/tokens",
        "/auth/login",
    ] {
        assert!(doc.body["paths"][path].is_object(), "openapi lacks {path}");
    }
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-request-id").is_some());
    let metrics = app
        .http
        .get(format!("{}/metrics", app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    // Issue 11 finding 11: the public API port does not serve metrics.
    assert_eq!(
        app.get(&anon, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
}

/// Secrets never appear where they should not: token secrets only in the
/// response that created them, password hashes and passwords nowhere (no
/// response, no log line). Runs after a full workout of the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leak_into_responses_or_logs() {
    let app = spawn_app(Db::Sqlite).await;
    let owner = app.tenant("acme").await;
    let created = app
        .post(
            &owner,
            "/api/v1/tokens",
            json!({"name": "leak-check", "scopes": ["read"]}),
        )
        .await;
    let secret = created.body["secret"].as_str().unwrap().to_string();
    let user = app
        .post(
            &owner,
            "/api/v1/users",
            json!({"email": "leak@acme.example.com", "role": "viewer"}),
        )
        .await;
    let password = user.body["initial_password"].as_str().unwrap().to_string();
    let (_, session) = app.login("acme", "leak@acme.example.com", &password).await;
    let cookie = session.session.clone().unwrap().0;
    // Use every credential, list everything.
    app.get(&Caller::bearer(&secret), "/api/v1/edge-sites")
        .await;
    app.get(&session, "/api/v1/me").await;
    for path in [
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/edge-sites",
        "/api/v1/me",
    ] {
        app.get(&owner, path).await;
    }
    let _ = app
        .get(
            &Caller::bearer("srt_0190a2b4c0d07e8f9a0b1c2d3e4f5a6b_guess"),
            "/api/v1/users",
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logs = support::captured_logs();
    let responses = support::captured_responses();
    assert!(!logs.is_empty(), "logs were captured");
    assert!(logs.contains("tenant_id"), "request spans carry tenant ids");
    let (_, secret_half) = token_halves(&secret);
    for (what, needle) in [
        ("the API token", secret.as_str()),
        ("the API token's secret half", secret_half),
        ("the new user's password", password.as_str()),
        ("the session cookie", cookie.as_str()),
        ("the owner's password", OWNER_PASSWORD),
    ] {
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(needle)).collect();
        assert!(
            lines.is_empty(),
            "{what} reached the log:\n{}",
            lines.join("\n")
        );
    }
    assert!(!logs.contains("$argon2"), "a password hash reached the log");
    assert!(
        !responses.contains("$argon2"),
        "a password hash reached a response"
    );
    assert!(!responses.contains("password_hash") && !responses.contains("secret_hash"));
    // The token secret appears exactly once: in its creation response.
    assert_eq!(responses.matches(secret.as_str()).count(), 1);
    // The generated password appears exactly once: in the create-user response.
    assert_eq!(responses.matches(password.as_str()).count(), 1);
    assert!(
        !responses.contains(&cookie),
        "the session cookie value is only in Set-Cookie"
    );
}

/// Issue 11 finding 1: a read-scoped token (or any token) could change its
/// user's password without the current password, then sign in with the
/// user's full rights. Tokens cannot change passwords at all; one's own
/// password needs the current one; a change ends the user's sessions and
/// the answer says what happened to their tokens.
async fn a_token_cannot_turn_itself_into_a_password(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let created = app
        .post(
            &owner,
            "/api/v1/users",
            json!({"email": "ops@acme.example.com", "role": "operator"}),
        )
        .await;
    let user_id = id(&created.body["user"]);
    let password = created.body["initial_password"]
        .as_str()
        .unwrap()
        .to_string();
    let me = format!("/api/v1/users/{user_id}");
    let new_password = "a brand new password 42";

    // A read-only token of the user: refused, and the old password still works.
    let read = app
        .token_for("acme", "ops@acme.example.com", &[Scope::Read])
        .await;
    let by_token = app
        .patch(&read, &me, json!({"password": new_password}))
        .await;
    assert_eq!(by_token.status, StatusCode::FORBIDDEN, "{}", by_token.text);
    // Even an all-scope token, even with the current password.
    let full = app
        .token_for("acme", "ops@acme.example.com", &Scope::ALL)
        .await;
    let by_full_token = app
        .patch(
            &full,
            &me,
            json!({"password": new_password, "current_password": password}),
        )
        .await;
    assert_eq!(
        by_full_token.status,
        StatusCode::FORBIDDEN,
        "{}",
        by_full_token.text
    );
    let (still, _) = app.login("acme", "ops@acme.example.com", &password).await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "the old password must still work"
    );
    let (refused, _) = app
        .login("acme", "ops@acme.example.com", new_password)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // A session without the current password, or with a wrong one: refused.
    let (_, session) = app.login("acme", "ops@acme.example.com", &password).await;
    let missing = app
        .patch(&session, &me, json!({"password": new_password}))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    assert_eq!(field_names(&missing), ["current_password"]);
    let wrong = app
        .patch(
            &session,
            &me,
            json!({"password": new_password, "current_password": "not my password at all"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.text);

    // With the current password it works, says what happened, and ends the session.
    let changed = app
        .patch(
            &session,
            &me,
            json!({"password": new_password, "current_password": password}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let note = changed.body["password_change"].as_str().unwrap();
    assert!(note.contains("session") && note.contains("token"), "{note}");
    assert_eq!(
        app.get(&session, "/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED,
        "the session that changed the password has ended"
    );
    let (login, _) = app
        .login("acme", "ops@acme.example.com", new_password)
        .await;
    assert_eq!(login.status, StatusCode::OK);
}

/// Issue 11 finding 8: a body over the limit sent without a Content-Length
/// (chunked) was answered 400; it is a 413 like one with a Content-Length.
async fn an_oversized_chunked_body_is_413_not_400(db: Db) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let token = owner.token.clone().unwrap();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/edge-sites HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 10 MiB of a JSON string, in 64 KiB chunks; the server may stop reading early.
    let chunk = vec![b'a'; 64 * 1024];
    let _ = stream.write_all(b"4\r\n{\"x\"\r\n").await;
    for _ in 0..160 {
        let frame = format!("{:x}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    let status_line = reply.lines().next().unwrap_or_default().to_string();
    assert!(status_line.contains(" 413 "), "{status_line}");
    assert!(reply.contains("payload_too_large"), "{reply}");
    // Nothing was created.
    let sites = app.get(&owner, "/api/v1/edge-sites").await;
    assert_eq!(sites.body["items"].as_array().unwrap().len(), 0);
}

/// Issue 11 finding 4: a 1-day token could mint a 365-day one. A token's
/// children expire no later than it does: an explicit longer lifetime is
/// refused, the default is shortened to the parent's.
async fn a_token_cannot_mint_one_that_outlives_it(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let short = app
        .post(
            &owner,
            "/api/v1/tokens",
            json!({"name": "one day", "scopes": ["read", "write", "admin"], "expires_in_days": 1}),
        )
        .await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.text);
    let parent_expiry = short.body["token"]["expires_at"].as_i64().unwrap();
    let short = Caller::bearer(short.body["secret"].as_str().unwrap());

    let long = app
        .post(
            &short,
            "/api/v1/tokens",
            json!({"name": "a year", "scopes": ["read"], "expires_in_days": 365}),
        )
        .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "{}", long.text);
    assert_eq!(field_names(&long), ["expires_in_days"]);

    let defaulted = app
        .post(
            &short,
            "/api/v1/tokens",
            json!({"name": "default", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(defaulted.status, StatusCode::CREATED, "{}", defaulted.text);
    let child_expiry = defaulted.body["token"]["expires_at"].as_i64().unwrap();
    assert!(
        child_expiry <= parent_expiry,
        "{child_expiry} > {parent_expiry}"
    );

    // Sessions are not tokens: a signed-in user still gets the asked lifetime.
    let (_, session) = app
        .login("acme", "owner@acme.example.com", OWNER_PASSWORD)
        .await;
    let yearly = app
        .post(
            &session,
            "/api/v1/tokens",
            json!({"name": "a year", "scopes": ["read"], "expires_in_days": 365}),
        )
        .await;
    assert_eq!(yearly.status, StatusCode::CREATED, "{}", yearly.text);
}

/// Issue 11 finding 6: `HEAD`, and `GET` with only a session cookie (no CSRF
/// token), on a collector bundle minted a certificate and NATS user and moved
/// the package to `downloaded`. Safe methods change nothing now: `HEAD` is
/// refused, sessions must `POST` with their CSRF token, tokens may `GET`.
async fn safe_methods_never_mint_a_collector_bundle(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let package = app
        .post(
            &owner,
            "/api/v1/collector-packages",
            json!({"collector_type": "otel"}),
        )
        .await;
    let package_id = id(&package.body);
    let path = format!("/api/v1/collector-packages/{package_id}");
    let bundle = format!("{path}/bundle");
    let status_of = |reply: Reply| {
        reply.body["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let head = app.call(&owner, Method::HEAD, &bundle, None).await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    let (_, session) = app
        .login("acme", "owner@acme.example.com", OWNER_PASSWORD)
        .await;
    let session_get = app.get(&session, &bundle).await;
    assert_eq!(
        session_get.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        session_get.text
    );
    let session_head = app.call(&session, Method::HEAD, &bundle, None).await;
    assert_eq!(session_head.status, StatusCode::METHOD_NOT_ALLOWED);
    let mut no_csrf = session.clone();
    if let Some((_, csrf)) = no_csrf.session.as_mut() {
        csrf.clear();
    }
    let post_without_csrf = app.post(&no_csrf, &bundle, json!({})).await;
    assert_eq!(post_without_csrf.status, StatusCode::FORBIDDEN);
    assert_eq!(
        status_of(app.get(&owner, &path).await),
        "created",
        "nothing was minted"
    );

    let minted = app.call(&session, Method::POST, &bundle, None).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.text);
    assert_eq!(status_of(app.get(&owner, &path).await), "downloaded");
    // Tokens may still GET.
    let other = app
        .post(
            &owner,
            "/api/v1/collector-packages",
            json!({"collector_type": "otel"}),
        )
        .await;
    let by_token = app
        .get(
            &owner,
            &format!("/api/v1/collector-packages/{}/bundle", id(&other.body)),
        )
        .await;
    assert_eq!(by_token.status, StatusCode::OK);
}

/// Issue 11 finding 3: 30 wrong passwords, then the right one, were all
/// answered at full speed. After a few failures an account must wait,
/// growing: attempts during the wait get 429 with Retry-After without the
/// password being checked (so the right one is refused too), for unknown
/// accounts exactly as for known ones.
async fn repeated_wrong_passwords_are_throttled(db: Db) {
    let app = spawn_app(db).await;
    let _owner = app.tenant("acme").await;
    let email = "owner@acme.example.com";
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let (reply, _) = app.login("acme", email, "not the password at all").await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                reply.body["error"]["code"], "too_many_requests",
                "{}",
                reply.text
            );
        }
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        (5..=6).contains(&unauthorized),
        "only the first few attempts are checked: {statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
    // The right password is refused during the wait, with Retry-After.
    let resp = app
        .http
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&json!({"tenant": "acme", "email": email, "password": OWNER_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    if let Some(seconds) = resp.headers().get("retry-after") {
        retry_after = seconds.to_str().ok().and_then(|s| s.parse::<u64>().ok());
    }
    let wait = retry_after.expect("Retry-After header");
    assert!((1..=2).contains(&wait), "{wait}");
    // Once the wait is over the right password works.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let (ok, _) = app.login("acme", email, OWNER_PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    // An unknown account is throttled the same way (nothing to enumerate).
    let mut unknown = Vec::new();
    for _ in 0..7 {
        let (reply, _) = app
            .login("acme", "nobody@acme.example.com", "whatever it is")
            .await;
        unknown.push(reply.status);
    }
    assert_eq!(
        unknown.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{unknown:?}"
    );
}
