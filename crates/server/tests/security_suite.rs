//! The security suite, generated from the route table (issue 11): every
//! operation of the OpenAPI document is called with every kind of caller —
//! no credentials, an expired and a revoked token, each role, each token
//! scope, a session with and without its CSRF token — on the caller's own
//! objects and on another tenant's, and the answer is checked against the
//! one the policy (`domain::policy::Actor::authorize`) derives: `401` without
//! valid credentials, `403` when the policy says no (or a session write
//! lacks CSRF), `404` for another tenant's object, and otherwise anything
//! but those. A new route without an entry in [`needs`] fails the suite, so
//! nothing is left out. Every log line written meanwhile is scanned for
//! secrets.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use serviceradar_domain::policy::{Action, Actor, Role, Scope, ScopeSet};
use serviceradar_domain::{TenantId, TenantScope, UserId};
use support::{Caller, Db, OWNER_PASSWORD, TestApp, spawn_app_with};

mod support;

/// What an operation requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Anyone (sign-in).
    Public,
    /// Any valid credential.
    Authenticated,
    /// A credential whose actor may perform the action.
    Action(Action),
}

/// The policy side of the suite: the action each operation needs.
fn needs() -> BTreeMap<(&'static str, &'static str), Need> {
    use Action::*;
    use Need::Action as A;
    BTreeMap::from([
        (("POST", "/auth/login"), Need::Public),
        (("POST", "/auth/logout"), Need::Authenticated),
        (("GET", "/me"), Need::Authenticated),
        (("GET", "/edge-sites"), A(ReadSites)),
        (("POST", "/edge-sites"), A(WriteSites)),
        (("GET", "/edge-sites/{id}"), A(ReadSites)),
        (("PATCH", "/edge-sites/{id}"), A(WriteSites)),
        (("DELETE", "/edge-sites/{id}"), A(DeleteSites)),
        (("GET", "/edge-sites/{id}/bundle"), A(DownloadBundle)),
        (("GET", "/edge-sites/{id}/config-drift"), A(ReadSites)),
        (
            ("POST", "/edge-sites/{id}/regenerate-config"),
            A(WriteSites),
        ),
        (("GET", "/edge-sites/{id}/leaf-server"), A(ReadSites)),
        (
            ("GET", "/edge-sites/{id}/leaf-server/hub-link"),
            A(ReadSites),
        ),
        (("GET", "/edge-sites/{id}/agent"), A(ReadSites)),
        (("POST", "/edge-sites/{id}/agent/revoke"), A(DeleteSites)),
        (("GET", "/edge-sites/{id}/agent/commands"), A(ReadSites)),
        (("POST", "/edge-sites/{id}/agent/commands"), A(WriteSites)),
        (
            ("GET", "/edge-sites/{id}/agent/commands/{cid}"),
            A(ReadSites),
        ),
        (("GET", "/edge-sites/{id}/agent/results"), A(ReadData)),
        (("GET", "/edge-sites/{id}/agent/results/{rid}"), A(ReadData)),
        (("GET", "/edge-sites/{id}/agent/checks"), A(ReadSites)),
        (("POST", "/edge-sites/{id}/agent/checks"), A(WriteSites)),
        (
            ("PUT", "/edge-sites/{id}/agent/checks/{name}"),
            A(WriteSites),
        ),
        (
            ("DELETE", "/edge-sites/{id}/agent/checks/{name}"),
            A(WriteSites),
        ),
        // The endpoint is registered at enrollment only (no PUT).
        (("GET", "/edge-sites/{id}/agent/endpoint"), A(ReadSites)),
        (("DELETE", "/edge-sites/{id}/agent/endpoint"), A(WriteSites)),
        // Every agent of the caller's tenant (or listed sites of it).
        (("POST", "/agent-checks/apply"), A(WriteSites)),
        (("GET", "/leaf-servers"), A(ReadSites)),
        (("GET", "/leaf-servers/{id}"), A(ReadSites)),
        (("GET", "/collector-packages"), A(ReadPackages)),
        (("POST", "/collector-packages"), A(WritePackages)),
        (("GET", "/collector-packages/{id}"), A(ReadPackages)),
        (("DELETE", "/collector-packages/{id}"), A(WritePackages)),
        (("GET", "/collector-packages/{id}/bundle"), A(WritePackages)),
        (
            ("POST", "/collector-packages/{id}/bundle"),
            A(WritePackages),
        ),
        (
            ("POST", "/collector-packages/{id}/revoke"),
            A(WritePackages),
        ),
        (("GET", "/users"), A(ReadUsers)),
        (("POST", "/users"), A(ManageUsers)),
        (("GET", "/users/{id}"), A(ReadUsers)),
        (("PATCH", "/users/{id}"), A(ManageUsers)),
        (("DELETE", "/users/{id}"), A(ManageUsers)),
        (("GET", "/tokens"), A(ManageOwnTokens)),
        (("POST", "/tokens"), A(ManageOwnTokens)),
        (("DELETE", "/tokens/{id}"), A(ManageOwnTokens)),
        (("GET", "/events"), A(ReadData)),
        (("GET", "/metrics"), A(ReadData)),
        (("GET", "/logs"), A(ReadData)),
        (("GET", "/ingest"), A(ReadData)),
        (("GET", "/dead-letters"), A(ReadData)),
        (("GET", "/alerts"), A(ReadData)),
        (("GET", "/alerts/{id}"), A(ReadData)),
        (("POST", "/alerts/{id}/acknowledge"), A(WriteAlerts)),
        (("POST", "/alerts/{id}/resolve"), A(WriteAlerts)),
        (("GET", "/webhooks"), A(ManageWebhooks)),
        (("POST", "/webhooks"), A(ManageWebhooks)),
        (("DELETE", "/webhooks/{id}"), A(ManageWebhooks)),
        (("GET", "/webhooks/{id}/deliveries"), A(ManageWebhooks)),
        // An enrollment token grants what the site bundle holds.
        (
            ("POST", "/edge-sites/{id}/enrollment-tokens"),
            A(DownloadBundle),
        ),
        (("GET", "/enrollment-tokens"), A(ReadSites)),
        (("GET", "/enrollment-tokens/{id}"), A(ReadSites)),
        (
            ("POST", "/enrollment-tokens/{id}/revoke"),
            A(DownloadBundle),
        ),
        // The token is the credential: its refusals have their own tests
        // (crates/cli/tests/enroll.rs).
        (("POST", "/enroll"), Need::Public),
        (
            ("GET", "/edge-sites/{id}/onboarding-packages"),
            A(ReadPackages),
        ),
        (("GET", "/enrollment-conflicts"), A(ReadSites)),
        (
            ("POST", "/enrollment-conflicts/{id}/resolve"),
            A(WriteSites),
        ),
        (("GET", "/edge-sites/{id}/devices"), A(ReadDevices)),
        (("POST", "/edge-sites/{id}/devices"), A(WriteDevices)),
        (
            ("GET", "/edge-sites/{id}/devices/{device_id}"),
            A(ReadDevices),
        ),
        (
            ("POST", "/edge-sites/{id}/devices/{device_id}/revoke"),
            A(WriteDevices),
        ),
        (
            ("POST", "/edge-sites/{id}/devices/{device_id}/certificate"),
            A(WriteDevices),
        ),
    ])
}

/// A well-formed body for each operation that takes one (so that the
/// answer is about authorization, not about a malformed request).
fn body(method: &str, path: &str, site: &str) -> Option<Value> {
    Some(match (method, path) {
        ("POST", "/auth/login") => {
            json!({"tenant": "x", "email": "x@example.com", "password": "not the password"})
        }
        ("POST", "/edge-sites") => {
            json!({"name": "Suite", "nats_leaf_url": "nats://10.0.1.50:4222"})
        }
        ("PATCH", "/edge-sites/{id}") => json!({"name": "Renamed"}),
        ("POST", "/collector-packages") => {
            json!({"collector_type": "syslog", "edge_site_id": site})
        }
        ("POST", "/users") => {
            json!({"email": format!("u{}@example.com", uuid::Uuid::new_v4().simple()), "role": "viewer"})
        }
        ("PATCH", "/users/{id}") => json!({"role": "viewer"}),
        // A token may only grant scopes it has: every caller allowed to
        // manage its tokens has `admin`.
        ("POST", "/tokens") => json!({"name": "suite", "scopes": ["admin"], "expires_in_days": 1}),
        ("POST", "/webhooks") => json!({"url": "https://hooks.example.com/suite"}),
        ("POST", "/edge-sites/{id}/devices") => {
            json!({"name": format!("d{}", uuid::Uuid::new_v4().simple())})
        }
        ("POST", "/edge-sites/{id}/devices/{device_id}/certificate") => {
            let (_key, csr) = serviceradar_pki::new_key_and_request("suite").unwrap();
            json!({ "csr": csr })
        }
        ("POST", "/edge-sites/{id}/agent/commands") => json!({"kind": "run_checks"}),
        ("POST", "/edge-sites/{id}/agent/checks") => {
            json!({"name": "suite", "kind": "dns", "target": "example.com"})
        }
        ("PUT", "/edge-sites/{id}/agent/checks/{name}") => {
            json!({"kind": "dns", "target": "example.com"})
        }
        ("POST", "/agent-checks/apply") => {
            json!({"set": [{"name": "suite", "kind": "dns", "target": "example.com"}]})
        }
        ("POST", _) => json!({}),
        _ => return None,
    })
}

/// Operations that change or remove their object: a caller the policy
/// allows gets a made-up id (expecting `404`), so the suite's fixtures
/// survive it.
fn destructive(method: &str, path: &str) -> bool {
    method == "DELETE"
        || path.ends_with("/revoke")
        || path == "/auth/logout"
        || (method == "PATCH" && path == "/users/{id}")
}

/// One tenant's objects, by the path parameter's resource.
struct Fixtures {
    ids: BTreeMap<&'static str, String>,
}

impl Fixtures {
    /// `path` with its `{device_id}` (the fixture site's device) filled in.
    fn with_device(&self, path: &str) -> String {
        path.replace("{device_id}", &self.ids["device"])
    }

    /// The id for `path`'s `{id}` (by its first segment).
    fn id_for(&self, path: &str) -> Option<&str> {
        let resource = path.trim_start_matches('/').split('/').next()?;
        self.ids.get(resource).map(String::as_str)
    }
}

async fn fixtures(app: &TestApp, owner: &Caller, tenant: &str) -> Fixtures {
    let site = app
        .create_site(owner, "Fixture", &format!("fixture-{tenant}"))
        .await;
    let site_id = site["id"].as_str().unwrap().to_owned();
    let leaf = app
        .get(owner, &format!("/api/v1/edge-sites/{site_id}/leaf-server"))
        .await;
    let package = app
        .post(
            owner,
            "/api/v1/collector-packages",
            json!({"collector_type": "syslog", "edge_site_id": site_id}),
        )
        .await;
    assert_eq!(package.status, StatusCode::CREATED, "{}", package.text);
    let user = app
        .post(
            owner,
            "/api/v1/users",
            json!({"email": format!("viewer@{tenant}.example.com"), "role": "viewer"}),
        )
        .await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.text);
    let token = app
        .post(
            owner,
            "/api/v1/tokens",
            json!({"name": "fixture", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.text);
    let hook = app
        .post(
            owner,
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/fixture"}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.text);
    let enrollment = app
        .post(
            owner,
            &format!("/api/v1/edge-sites/{site_id}/enrollment-tokens"),
            json!({}),
        )
        .await;
    assert_eq!(
        enrollment.status,
        StatusCode::CREATED,
        "{}",
        enrollment.text
    );
    let t = app.store.tenant_by_slug(tenant).await.unwrap();
    // A conflict: the token redeemed by one host, then presented by another
    // (straight through the store: the suite's sites are not provisioned).
    let enrollment_id: uuid::Uuid = enrollment.body["token"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let scoped = app.store.scoped(TenantScope::for_system_task(t.id));
    for host in ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"] {
        scoped
            .redeem_enrollment_token(enrollment_id, host, host, None)
            .await
            .unwrap();
    }
    let conflict = scoped
        .list_enrollment_conflicts(
            &serviceradar_store::ConflictFilter::default(),
            &serviceradar_store::PageRequest::first(),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let alert = app
        .store
        .scoped(TenantScope::for_system_task(t.id))
        .raise_alert(site_id.parse().unwrap(), "site_offline", "fixture")
        .await
        .unwrap()
        .unwrap();
    let device = app
        .post(
            owner,
            &format!("/api/v1/edge-sites/{site_id}/devices"),
            json!({"name": "fixture"}),
        )
        .await;
    assert_eq!(device.status, StatusCode::CREATED, "{}", device.text);
    let ids = BTreeMap::from([
        ("device", device.body["id"].as_str().unwrap().to_owned()),
        ("edge-sites", site_id),
        ("leaf-servers", leaf.body["id"].as_str().unwrap().to_owned()),
        (
            "collector-packages",
            package.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "users",
            user.body["user"]["id"]
                .as_str()
                .or(user.body["id"].as_str())
                .unwrap()
                .to_owned(),
        ),
        (
            "enrollment-tokens",
            enrollment.body["token"]["id"].as_str().unwrap().to_owned(),
        ),
        (
            "tokens",
            token.body["token"]["id"]
                .as_str()
                .or(token.body["id"].as_str())
                .unwrap()
                .to_owned(),
        ),
        (
            "webhooks",
            hook.body["webhook"]["id"]
                .as_str()
                .or(hook.body["id"].as_str())
                .unwrap()
                .to_owned(),
        ),
        ("alerts", alert.id.to_string()),
        ("enrollment-conflicts", conflict.id.to_string()),
    ]);
    Fixtures { ids }
}

/// A caller and what the policy knows about it.
struct Who {
    label: String,
    caller: Caller,
    /// `None`: no valid credential (expect 401).
    actor: Option<(Role, ScopeSet)>,
    /// A session without its CSRF token.
    no_csrf: bool,
}

async fn token_with(app: &TestApp, tenant: &str, role: Role, scopes: &[Scope]) -> Caller {
    let email = format!(
        "{role}-{}@{tenant}.example.com",
        uuid::Uuid::new_v4().simple()
    );
    let t = app.store.tenant_by_slug(tenant).await.unwrap();
    app.store
        .scoped(TenantScope::for_system_task(t.id))
        .create_user(&serviceradar_store::NewUser {
            email: serviceradar_domain::validate::Email::parse(&email).unwrap(),
            role,
            password_hash: "$argon2id$not-a-real-hash-for-tests".into(),
        })
        .await
        .unwrap();
    app.token_for(tenant, &email, scopes).await
}

/// A token of `tenant` that expired a second ago.
async fn expired_token(app: &TestApp, tenant: &str) -> Caller {
    let t = app.store.tenant_by_slug(tenant).await.unwrap();
    let scoped = app.store.scoped(TenantScope::for_system_task(t.id));
    let owner = scoped
        .list_users(&serviceradar_store::PageRequest {
            limit: 10,
            after: None,
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|u| u.role == Role::Owner)
        .unwrap();
    let minted = serviceradar_auth::mint_token();
    scoped
        .create_token(&serviceradar_store::NewToken {
            id: minted.id,
            user_id: owner.id,
            name: "expired".into(),
            scopes: ScopeSet::ALL,
            expires_at: serviceradar_store::now_ms() - 1_000,
            secret_hash: minted.secret_hash,
        })
        .await
        .unwrap();
    Caller::bearer(&minted.token)
}

async fn callers(app: &TestApp) -> Vec<Who> {
    let all = ScopeSet::ALL;
    let mut who = vec![Who {
        label: "anonymous".into(),
        caller: Caller::anonymous(),
        actor: None,
        no_csrf: false,
    }];
    who.push(Who {
        label: "an expired token".into(),
        caller: expired_token(app, "acme").await,
        actor: None,
        no_csrf: false,
    });
    let revoked = token_with(app, "acme", Role::Owner, &Scope::ALL).await;
    let id = revoked
        .token
        .as_ref()
        .unwrap()
        .trim_start_matches("srt_")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    let r = app
        .delete(
            &revoked,
            &format!("/api/v1/tokens/{}", uuid::Uuid::parse_str(&id).unwrap()),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    who.push(Who {
        label: "a revoked token".into(),
        caller: revoked,
        actor: None,
        no_csrf: false,
    });
    who.push(Who {
        label: "a forged token".into(),
        caller: Caller::bearer("srt_0190a2b4c0d07e8f9a0b1c2d3e4f5a6b_forged"),
        actor: None,
        no_csrf: false,
    });
    for role in Role::ALL {
        who.push(Who {
            label: format!("a {role} token with every scope"),
            caller: token_with(app, "acme", role, &Scope::ALL).await,
            actor: Some((role, all)),
            no_csrf: false,
        });
    }
    for scopes in [
        vec![Scope::Read],
        vec![Scope::Write],
        vec![Scope::Admin],
        vec![Scope::Read, Scope::Write],
    ] {
        who.push(Who {
            label: format!("an owner token with {scopes:?}"),
            caller: token_with(app, "acme", Role::Owner, &scopes).await,
            actor: Some((Role::Owner, ScopeSet::from_scopes(scopes.iter().copied()))),
            no_csrf: false,
        });
    }
    let (reply, session) = app.login("acme", "admin@example.com", OWNER_PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Without CSRF first: the full session signs out at the end.
    let (cookie, _) = session.session.clone().unwrap();
    who.push(Who {
        label: "an owner session without its CSRF token".into(),
        caller: Caller {
            token: None,
            session: Some((cookie, String::new())),
        },
        actor: Some((Role::Owner, all)),
        no_csrf: true,
    });
    who.push(Who {
        label: "an owner session".into(),
        caller: session.clone(),
        actor: Some((Role::Owner, all)),
        no_csrf: false,
    });
    who
}

/// The answer the policy derives for `who` on an operation needing `need`:
/// `Some(status)` when it must be exactly that, `None` when any answer but
/// 401 and 403 is right.
fn expected(need: Need, who: &Who, method: &str, path: &str) -> Option<StatusCode> {
    if need == Need::Public {
        return None;
    }
    let Some((role, scopes)) = who.actor else {
        return Some(StatusCode::UNAUTHORIZED);
    };
    if who.no_csrf && method != "GET" {
        return Some(StatusCode::FORBIDDEN);
    }
    // Safe methods never mint credentials: with a session a collector
    // bundle is POSTed (with CSRF), whatever the role.
    if who.caller.session.is_some() && method == "GET" && path == "/collector-packages/{id}/bundle"
    {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Need::Action(action) = need else {
        return None;
    };
    let actor = Actor {
        tenant_id: TenantId::new(),
        user_id: UserId::new(),
        role,
        scopes,
    };
    actor.authorize(action).err().map(|_| StatusCode::FORBIDDEN)
}

async fn suite(db: Db) {
    let app = spawn_app_with(db, |settings| {
        settings.bootstrap.tenant = "acme".into();
        settings.provision_leaves = false;
    })
    .await;
    let acme_owner = token_with(&app, "acme", Role::Owner, &Scope::ALL).await;
    let beta_owner = app.tenant("beta").await;
    let own = fixtures(&app, &acme_owner, "acme").await;
    let theirs = fixtures(&app, &beta_owner, "beta").await;
    let who = callers(&app).await;

    let doc = app.get(&Caller::anonymous(), "/api/v1/openapi.json").await;
    let mut operations = Vec::new();
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    let needs = needs();
    let documented: std::collections::BTreeSet<(String, String)> =
        operations.iter().cloned().collect();
    for key in needs.keys() {
        assert!(
            documented.contains(&(key.0.to_owned(), key.1.to_owned())),
            "{key:?} is in the suite's policy table but not in the OpenAPI document"
        );
    }

    // Signing out ends the suite's session: last.
    operations.sort_by_key(|(method, path)| (path == "/auth/logout", method.clone(), path.clone()));
    let mut checked = 0;
    let mut failures = Vec::new();
    let site = own.ids["edge-sites"].clone();
    for (method, path) in &operations {
        let need = *needs
            .get(&(method.as_str(), path.as_str()))
            .unwrap_or_else(|| panic!("{method} {path} has no entry in the suite's policy table"));
        if need == Need::Public {
            continue; // sign-in: its own tests (throttling, wrong passwords)
        }
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let request_body = body(method, path, &site);
        for w in &who {
            let expect = expected(need, w, method, path);
            let allowed = expect.is_none();
            // Own objects (a made-up id where an allowed call would destroy one).
            let id = match own.id_for(path) {
                Some(_) if allowed && destructive(method, path) => uuid::Uuid::now_v7().to_string(),
                Some(id) => id.to_owned(),
                None => String::new(),
            };
            let url = format!("/api/v1{}", own.with_device(path).replace("{id}", &id));
            let reply = app
                .call(&w.caller, m.clone(), &url, request_body.clone())
                .await;
            checked += 1;
            let ok = match expect {
                Some(status) => reply.status == status,
                None => {
                    reply.status != StatusCode::UNAUTHORIZED
                        && reply.status != StatusCode::FORBIDDEN
                        && (!reply.status.is_server_error()
                            // The suite's server runs no ingestion: the
                            // dead letters are unavailable (after the
                            // policy let the caller through).
                            || (path == "/dead-letters"
                                && reply.status == StatusCode::SERVICE_UNAVAILABLE))
                }
            };
            if !ok {
                failures.push(format!(
                    "{method} {url} as {}: got {}, expected {}: {}",
                    w.label,
                    reply.status,
                    expect
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "neither 401 nor 403 nor 5xx".into()),
                    reply.text.chars().take(200).collect::<String>()
                ));
            }
            // Another tenant's object: indistinguishable from a missing one.
            if allowed
                && w.actor.is_some()
                && path.contains("{id}")
                && let Some(their_id) = theirs.id_for(path)
            {
                let url = format!(
                    "/api/v1{}",
                    theirs.with_device(path).replace("{id}", their_id)
                );
                let reply = app
                    .call(&w.caller, m.clone(), &url, request_body.clone())
                    .await;
                checked += 1;
                if reply.status != StatusCode::NOT_FOUND {
                    failures.push(format!(
                        "{method} {url} (beta's) as {}: got {}, expected 404: {}",
                        w.label,
                        reply.status,
                        reply.text.chars().take(200).collect::<String>()
                    ));
                }
            }
        }
    }
    serviceradar_testkit::report(&format!(
        "security suite ({db:?}): {} operations x {} callers, {checked} checks, {} failures",
        operations.len(),
        who.len(),
        failures.len()
    ));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // No secret in any log line written during the suite.
    let logs = support::captured_logs();
    for (what, needle) in [
        ("a private key", "PRIVATE KEY"),
        ("a NATS user JWT", "BEGIN NATS USER JWT"),
        ("the owner password", OWNER_PASSWORD),
    ] {
        assert!(!logs.contains(needle), "{what} in the logs");
    }
    // NATS seeds: `S` + key kind (user, account, operator) + base32, 58 long.
    let seed = logs
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|word| {
            word.len() == 58
                && (word.starts_with("SU") || word.starts_with("SA") || word.starts_with("SO"))
                && word
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        });
    assert!(seed.is_none(), "a NATS seed in the logs");
    for w in &who {
        if let Some(token) = &w.caller.token {
            // `srt_<id>_<secret>` (the secret may itself contain `_`).
            let secret = token.splitn(3, '_').nth(2).unwrap();
            assert!(
                !logs.contains(secret),
                "a token secret ({}) in the logs",
                w.label
            );
        }
        if let Some((cookie, csrf)) = &w.caller.session {
            assert!(
                !logs.contains(cookie.as_str()),
                "a session cookie in the logs"
            );
            if !csrf.is_empty() {
                assert!(!logs.contains(csrf.as_str()), "a CSRF token in the logs");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_as_the_policy_says_on_sqlite() {
    suite(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_as_the_policy_says_on_postgres() {
    suite(Db::Postgres).await;
}
