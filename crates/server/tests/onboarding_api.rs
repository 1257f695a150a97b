//! Onboarding packages and enrollment conflicts through the API, on SQLite
//! and PostgreSQL: a site/agent token's package moves created -> downloaded
//! when `POST /enroll` redeems it, a second host on the spent single-use
//! token is refused and shows up as an open conflict, which an operator
//! (not a viewer) resolves once; revoked and expired tokens' packages; a
//! site-bundle download is a package too, revoked with the site's agent;
//! another tenant gets 404.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::Role;
use support::{Db, TestApp, spawn_app_with};

both_backends!(
    conflicts_appear_and_are_resolved_once,
    packages_follow_tokens_and_bundles
);

/// A redemption of an agent-scope token from `host` (a fake fingerprint).
async fn enroll(app: &TestApp, token: &str, fingerprint: &str, hostname: &str) -> support::Reply {
    let (_key, csr) =
        serviceradar_pki::request::new_key_and_request(hostname).expect("agent key and CSR");
    let body = json!({
        "token": token,
        "scope": "agent",
        "host_fingerprint": fingerprint,
        "hostname": hostname,
        "agent_csr": csr,
    });
    // The site's provisioning job may still be running: the server waits,
    // then answers 503 (which the CLI retries).
    for _ in 0..10 {
        let reply = app
            .call(
                &support::Caller::anonymous(),
                reqwest::Method::POST,
                "/api/v1/enroll",
                Some(body.clone()),
            )
            .await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            return reply;
        }
    }
    panic!("the site was never provisioned");
}

async fn packages(app: &TestApp, who: &support::Caller, site: &str) -> Vec<Value> {
    let reply = app
        .get(
            who,
            &format!("/api/v1/edge-sites/{site}/onboarding-packages"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["items"].as_array().expect("items").clone()
}

fn status_of(list: &[Value], token: &str) -> String {
    list.iter()
        .find(|p| p["token_id"] == token)
        .map(|p| p["status"].as_str().expect("status").to_owned())
        .unwrap_or_else(|| panic!("no package of token {token}: {list:?}"))
}

async fn token(app: &TestApp, who: &support::Caller, site: &str, scope: &str) -> (String, String) {
    let reply = app
        .post(
            who,
            &format!("/api/v1/edge-sites/{site}/enrollment-tokens"),
            json!({"scope": scope}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    (
        reply.body["token"]["id"].as_str().expect("id").to_owned(),
        reply.body["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn conflicts_appear_and_are_resolved_once(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.job_workers = 1;
        s.provision_leaves = true;
    })
    .await;
    let owner = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    let site = app.create_site(&owner, "Edge", "edge").await["id"]
        .as_str()
        .expect("site id")
        .to_owned();
    let (token_id, secret) = token(&app, &owner, &site, "agent").await;
    assert_eq!(
        status_of(&packages(&app, &owner, &site).await, &token_id),
        "created"
    );

    let first = enroll(&app, &secret, &"a1".repeat(16), "edge-1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        status_of(&packages(&app, &owner, &site).await, &token_id),
        "downloaded"
    );
    let none = app.get(&owner, "/api/v1/enrollment-conflicts").await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.text);
    assert_eq!(none.body["items"], json!([]));

    // A second host on the spent single-use token: refused, never enrolled.
    let clone = enroll(&app, &secret, &"b2".repeat(16), "clone-2").await;
    assert_eq!(clone.status, StatusCode::CONFLICT, "{}", clone.text);
    assert_eq!(clone.body["error"]["code"], "token_host_conflict");
    let list = app
        .get(
            &owner,
            &format!("/api/v1/enrollment-conflicts?site_id={site}&state=open"),
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", list.text);
    let conflict = &items[0];
    assert_eq!(conflict["token_id"], token_id.as_str());
    assert_eq!(conflict["site_id"], site.as_str());
    assert_eq!(conflict["hostname"], "clone-2");
    assert_eq!(conflict["state"], "open");
    assert!(conflict["remote_addr"].as_str().is_some(), "{conflict}");
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap_or("")
            .contains("already redeemed")
    );
    let id = conflict["id"].as_str().expect("conflict id").to_owned();
    // The package is still the first host's.
    assert_eq!(
        status_of(&packages(&app, &owner, &site).await, &token_id),
        "downloaded"
    );
    let bad = app
        .get(&owner, "/api/v1/enrollment-conflicts?state=maybe")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);

    // Another tenant: nothing to see, nothing to resolve.
    let theirs = app.get(&beta, "/api/v1/enrollment-conflicts").await;
    assert_eq!(theirs.body["items"], json!([]), "{}", theirs.text);
    let resolve = format!("/api/v1/enrollment-conflicts/{id}/resolve");
    assert_eq!(
        app.post(&beta, &resolve, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    // A viewer sees it but cannot resolve it.
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    let seen = app.get(&viewer, "/api/v1/enrollment-conflicts").await;
    assert_eq!(seen.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.post(&viewer, &resolve, json!({})).await.status,
        StatusCode::FORBIDDEN
    );

    let operator = app.user_with_role("acme", Role::Operator).await;
    let done = app.post(&operator, &resolve, json!({})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.body["conflict"]["state"], "resolved");
    assert!(done.body["conflict"]["resolved_by"].as_str().is_some());
    assert!(done.body["conflict"]["resolved_at"].as_i64().is_some());
    assert!(
        done.body["next_steps"]
            .as_str()
            .unwrap_or("")
            .contains("create a new enrollment token"),
        "{}",
        done.text
    );
    let again = app.post(&operator, &resolve, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let open = app
        .get(&owner, "/api/v1/enrollment-conflicts?state=open")
        .await;
    assert_eq!(open.body["items"], json!([]));
    let resolved = app
        .get(&owner, "/api/v1/enrollment-conflicts?state=resolved")
        .await;
    assert_eq!(resolved.body["items"].as_array().map(Vec::len), Some(1));
    // The token's history has the conflict and its resolution.
    let history = app
        .get(&owner, &format!("/api/v1/enrollment-tokens/{token_id}"))
        .await;
    let kinds: Vec<&str> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"conflict") && kinds.contains(&"resolved"),
        "{kinds:?}"
    );
}

async fn packages_follow_tokens_and_bundles(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.job_workers = 1;
        s.provision_leaves = true;
    })
    .await;
    let owner = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    let site = app.create_site(&owner, "Edge", "edge").await["id"]
        .as_str()
        .expect("site id")
        .to_owned();

    // Revoked with its token.
    let (revoked, _) = token(&app, &owner, &site, "site").await;
    let r = app
        .post(
            &owner,
            &format!("/api/v1/enrollment-tokens/{revoked}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        status_of(&packages(&app, &owner, &site).await, &revoked),
        "revoked"
    );

    // Expired: a token whose expiry passed unredeemed (stored directly, as
    // the API sets at least 10 minutes).
    let t = app.store.tenant_by_slug("acme").await.expect("tenant");
    let lapsed = uuid::Uuid::now_v7();
    app.store
        .scoped(TenantScope::for_system_task(t.id))
        .create_enrollment_token(&serviceradar_store::NewEnrollmentToken {
            id: lapsed,
            edge_site_id: site.parse().expect("site id"),
            scope: "site".into(),
            token_hash: "0".repeat(64),
            max_uses: 1,
            created_by: "test".into(),
            expires_at: serviceradar_store::now_ms() - 1_000,
            onboarding_package: true,
            agent_poll: None,
        })
        .await
        .expect("token");
    let list = packages(&app, &owner, &site).await;
    assert_eq!(status_of(&list, &lapsed.to_string()), "expired");
    let expired = app
        .get(
            &owner,
            &format!("/api/v1/edge-sites/{site}/onboarding-packages?status=expired"),
        )
        .await;
    assert_eq!(expired.body["items"].as_array().map(Vec::len), Some(1));
    let bad = app
        .get(
            &owner,
            &format!("/api/v1/edge-sites/{site}/onboarding-packages?status=lost"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);

    // Collector tokens have collector packages instead.
    let before = list.len();
    token(&app, &owner, &site, "collector:syslog").await;
    assert_eq!(packages(&app, &owner, &site).await.len(), before);

    // A site-bundle download is an onboarding package, downloaded.
    let mut bundle = app
        .get(&owner, &format!("/api/v1/edge-sites/{site}/bundle"))
        .await;
    for _ in 0..50 {
        if bundle.status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        bundle = app
            .get(&owner, &format!("/api/v1/edge-sites/{site}/bundle"))
            .await;
    }
    assert_eq!(bundle.status, StatusCode::OK);
    let list = packages(&app, &owner, &site).await;
    let from_bundle: Vec<_> = list.iter().filter(|p| p["source"] == "bundle").collect();
    assert_eq!(from_bundle.len(), 1, "{list:?}");
    assert_eq!(from_bundle[0]["status"], "downloaded");
    assert_eq!(from_bundle[0]["token_id"], Value::Null);

    // A viewer reads them; another tenant gets 404 for the site.
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    assert_eq!(packages(&app, &viewer, &site).await.len(), list.len());
    let theirs = app
        .get(
            &beta,
            &format!("/api/v1/edge-sites/{site}/onboarding-packages"),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);

    // Revoking the site's agent revokes what was fetched (the bundle's
    // package); expired and revoked ones stay so.
    let r = app
        .post(
            &owner,
            &format!("/api/v1/edge-sites/{site}/agent/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let after = packages(&app, &owner, &site).await;
    let statuses: Vec<&str> = after
        .iter()
        .map(|p| p["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["revoked", "expired", "revoked"], "{after:?}");
}
