//! The per-replica credential cache (`serviceradar_store`'s `auth_cache`)
//! never outlives a change: two control-plane replicas (two `Application`s)
//! share one PostgreSQL database; a token revoked, a session ended or a user's
//! role changed through one replica stops working on the other within 1 s,
//! although the other had the credential cached (PostgreSQL NOTIFY), and an
//! expired token is refused at once on a replica that had it cached.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::{Role, Scope, ScopeSet};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::{NewToken, now_ms};
use support::{Caller, OWNER_PASSWORD, TestApp};

/// Two running replicas on one fresh PostgreSQL database, both with their
/// credential caches live.
async fn two_replicas() -> (TestApp, TestApp, String) {
    support::init();
    let url = serviceradar_testkit::postgres().create_database();
    let settings = || {
        let mut s = Settings::new(&url);
        s.bootstrap.admin_password = Some(OWNER_PASSWORD.into());
        s.job_workers = 0;
        s
    };
    let a = Application::build(settings()).await.expect("replica A");
    let b = Application::build(settings()).await.expect("replica B");
    let a = TestApp::from_application(a, tempfile::tempdir().expect("tempdir"));
    let b = TestApp::from_application(b, tempfile::tempdir().expect("tempdir"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.store.credential_cache_live() && b.store.credential_cache_live()) {
        assert!(Instant::now() < deadline, "the caches never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (a, b, url)
}

/// Polls `who` on `app` until it is refused with 401; returns how long that took.
async fn refused_within(app: &TestApp, who: &Caller, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = app.get(who, "/api/v1/edge-sites").await;
        if reply.status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert!(
            started.elapsed() < limit,
            "still accepted {:?} after the change",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes straight to the database with `psql`, past the store (no
/// notification), so a replica still accepting the old value shows it
/// answered from its cache.
async fn raw_sql(url: &str, sql: &str) {
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .await
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token_id(token: &str) -> String {
    let simple = token
        .strip_prefix("srt_")
        .and_then(|t| t.split('_').next())
        .expect("token shape");
    uuid::Uuid::try_parse(simple).expect("uuid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_replica_is_refused_by_another_within_a_second() {
    let (a, b, url) = two_replicas().await;
    let owner = a.tenant("acme").await;
    let token = owner.token.clone().expect("token");
    let id = token_id(&token);
    // B caches the token ...
    assert_eq!(
        b.get(&owner, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    // ... and keeps answering from its cache when the row changes behind
    // the store's back (no notification): the cache is really in use.
    raw_sql(
        &url,
        &format!("UPDATE api_tokens SET secret_hash = 'x' WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(
        b.get(&owner, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );

    // Revoked through replica A (with a second token: the first is about
    // to stop working).
    let admin = a
        .token_for("acme", "owner@acme.example.com", &Scope::ALL)
        .await;
    let revoked = a.delete(&admin, &format!("/api/v1/tokens/{id}")).await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    let took = refused_within(&b, &owner, Duration::from_secs(1)).await;
    eprintln!("revocation reached replica B after {took:?}");
    // And on A itself at once.
    assert_eq!(
        a.get(&owner, "/api/v1/edge-sites").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_or_demoted_on_one_replica_changes_on_another_within_a_second() {
    let (a, b, _url) = two_replicas().await;
    let _ = a.tenant("acme").await;
    let email = "owner@acme.example.com";
    // Sign-out on A: B refuses the cookie within 1 s.
    let (reply, session) = a.login("acme", email, OWNER_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        b.get(&session, "/api/v1/edge-sites").await.status,
        StatusCode::OK
    );
    let out = a.post(&session, "/api/v1/auth/logout", json!({})).await;
    assert!(out.status.is_success(), "{}", out.text);
    refused_within(&b, &session, Duration::from_secs(1)).await;

    // A role change on A: B stops granting the old role within 1 s.
    let owner = a.token_for("acme", email, &Scope::ALL).await;
    let member = a.user_with_role("acme", Role::Admin).await;
    let me = b.get(&member, "/api/v1/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let user_id = me.body["user_id"].as_str().expect("user id").to_string();
    assert_eq!(me.body["role"], "admin", "{}", me.text);
    let changed = a
        .patch(
            &owner,
            &format!("/api/v1/users/{user_id}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert!(changed.status.is_success(), "{}", changed.text);
    let started = Instant::now();
    loop {
        let me = b.get(&member, "/api/v1/me").await;
        if me.body["role"] == "viewer" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "old role after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_at_once_although_cached() {
    let (a, b, _url) = two_replicas().await;
    let _ = a.tenant("acme").await;
    let tenant = a.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = a.store.scoped(TenantScope::for_system_task(tenant.id));
    let login = a
        .store
        .login_record("acme", "owner@acme.example.com")
        .await
        .expect("owner");
    let minted = serviceradar_auth::mint_token();
    let expires_at = now_ms() + 1_500;
    scoped
        .create_token(&NewToken {
            id: minted.id,
            user_id: login.user.id,
            name: "short".into(),
            scopes: ScopeSet::ALL,
            expires_at,
            secret_hash: minted.secret_hash.clone(),
        })
        .await
        .expect("token");
    let who = Caller::bearer(&minted.token);
    for replica in [&a, &b] {
        let reply = replica.get(&who, "/api/v1/edge-sites").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let wait = u64::try_from(expires_at - now_ms()).unwrap_or(0) + 5;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for replica in [&a, &b] {
        let reply = replica.get(&who, "/api/v1/edge-sites").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
        assert!(reply.text.contains("expired"), "{}", reply.text);
    }
}
