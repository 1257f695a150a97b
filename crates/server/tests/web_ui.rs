//! The web UI from the server's side (no browser): security headers on
//! every page, sign-in required, CSRF on every mutating route, another
//! tenant's ids answered 404, a viewer shown no admin controls and refused,
//! the live stream of one tenant never carrying another's events, and the
//! site page's enrollment conflicts (listed, resolved once by an operator),
//! the agent's configured checks and commands on the site page (each form:
//! CSRF, another tenant's site 404, a viewer 403, bad input 4xx with the
//! message and nothing written), and the wizard's 3-node cluster option.
//! Runs on SQLite and PostgreSQL.

mod support;
mod web_support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use serviceradar_domain::{AgentIdentity, TenantScope};
use serviceradar_store::health::ALERT_SITE_OFFLINE;
use support::Db;
use web_support::{Browser, Page, owner_email, spawn, user_with_password};

both_backends!(
    pages_carry_security_headers_and_need_a_session,
    writes_need_the_csrf_token_and_other_tenants_ids_are_404,
    viewer_sees_no_admin_controls_and_is_refused,
    live_stream_carries_only_the_viewers_tenant,
    wizard_creates_a_site_and_checks_slugs,
    enrollment_tokens_are_shown_once_listed_and_revoked_on_the_site_page,
    conflicts_are_listed_and_resolved_on_the_site_page,
    the_filtered_site_count_stops_at_two_hundred,
    site_page_shows_the_agents_commands_and_the_sites_devices,
    agent_checks_are_added_changed_and_removed_on_the_site_page,
    check_forms_refuse_csrf_failures_other_tenants_viewers_and_bad_input,
    commands_are_sent_from_the_site_page_and_an_offline_agent_is_told,
    wizard_offers_a_three_node_leaf_cluster
);

/// An open enrollment conflict of `site`: a single-use token redeemed by
/// one host, then presented by another (through the store: the tests'
/// sites are not provisioned). `site` is tenant acme's. Returns the
/// conflict's id.
async fn conflict_for(app: &support::TestApp, who: &support::Caller, site: &str) -> String {
    let token = app
        .post(
            who,
            &format!("/api/v1/edge-sites/{site}/enrollment-tokens"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.text);
    let token: uuid::Uuid = token.body["token"]["id"]
        .as_str()
        .expect("token id")
        .parse()
        .expect("uuid");
    let site: serviceradar_domain::EdgeSiteId = site.parse().expect("site id");
    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    for (host, name) in [
        ("aaaaaaaaaaaaaaaa", "edge-1"),
        ("bbbbbbbbbbbbbbbb", "clone-2"),
    ] {
        scoped
            .redeem_enrollment_token(token, host, name, Some("192.0.2.7"))
            .await
            .expect("redeem");
    }
    scoped
        .list_enrollment_conflicts(
            &serviceradar_store::ConflictFilter {
                edge_site_id: Some(site),
                open: Some(true),
            },
            &serviceradar_store::PageRequest::first(),
        )
        .await
        .expect("conflicts")
        .items
        .pop()
        .expect("a conflict")
        .id
        .to_string()
}

/// Issue 14 in the UI: a second host on a spent token shows on the site
/// page as a conflict to resolve, with the token's onboarding package; an
/// operator resolves it once and is told what to do next.
async fn conflicts_are_listed_and_resolved_on_the_site_page(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let page = format!("/admin/edge-sites/{site}");
    let before = browser.get(&page).await;
    assert!(before.body.contains("Conflicts to resolve"));
    assert!(before.body.contains("No conflict."));
    assert!(before.body.contains("No onboarding package yet."));
    let conflict = conflict_for(app, &acme, &site).await;
    let listed = browser.get(&page).await;
    assert!(listed.body.contains("clone-2"), "{}", listed.body);
    assert!(listed.body.contains("192.0.2.7"));
    assert!(listed.body.contains(">open<"));
    assert!(listed.body.contains(">downloaded<"), "the token's package");
    let resolve = format!("/admin/enrollment-conflicts/{conflict}/resolve");
    assert!(listed.body.contains(&resolve), "a resolve form");
    let done = browser.submit(&resolve, &[]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Conflict resolved."));
    assert!(done.body.contains("create a new enrollment token"));
    assert!(done.body.contains(">resolved<"));
    assert!(
        !done.body.contains(&resolve),
        "no resolve form once resolved"
    );
    let again = browser.submit(&resolve, &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
}

/// An agent at `site` with a certificate valid for a day (through the
/// store: the tests' sites are not provisioned).
async fn agent_at(
    scoped: &serviceradar_store::Scoped<'_>,
    site: &str,
) -> serviceradar_store::health::AgentRecord {
    scoped
        .store_agent_cert(
            site.parse().expect("site"),
            &serviceradar_store::health::AgentCert {
                agent_id: uuid::Uuid::now_v7(),
                cert_pem: "cert".into(),
                key_sealed: vec![7; 8],
                cert_serial: "01".into(),
                cert_expires_at: serviceradar_store::now_ms() + 86_400_000,
            },
        )
        .await
        .expect("agent")
}

/// The site page shows what issues 16 and 18 built: the agent's newest
/// commands (newest first, with the agent's message, escaped) and the
/// site's registered devices, and nothing of another site's.
async fn site_page_shows_the_agents_commands_and_the_sites_devices(db: Db) {
    use serviceradar_domain::agent_control::{CommandKind, CommandStatus};
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let other = id(&app.create_site(&acme, "Lab", "lab").await);
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let page = format!("/admin/edge-sites/{site}");
    let empty = browser.get(&page).await;
    assert!(empty.body.contains("No device registered at this site"));

    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    let agent = agent_at(&scoped, &site).await;
    let old = scoped
        .insert_agent_command(
            site.parse().expect("site"),
            agent.id,
            CommandKind::RunChecks,
            60,
            "test",
        )
        .await
        .expect("command");
    scoped
        .set_agent_command_status(
            old.id,
            CommandStatus::Failed,
            Some("leaf unreachable <script>"),
            None,
        )
        .await
        .expect("status");
    tokio::time::sleep(Duration::from_millis(5)).await;
    scoped
        .insert_agent_command(
            site.parse().expect("site"),
            agent.id,
            CommandKind::CollectDiagnostics,
            60,
            "test",
        )
        .await
        .expect("command");
    for (site_id, name) in [(&site, "sensor-1"), (&other, "elsewhere-1")] {
        let reply = app
            .post(
                &acme,
                &format!("/api/v1/edge-sites/{site_id}/devices"),
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }

    let shown = browser.get(&page).await;
    let body = &shown.body;
    let newest = body
        .find("<code>collect_diagnostics</code>")
        .expect("newest command");
    let oldest = body.find("<code>run_checks</code>").expect("older command");
    assert!(newest < oldest, "newest first: {body}");
    assert!(body.contains(">failed<"), "{body}");
    assert!(
        body.contains("leaf unreachable &#60;script&#62;"),
        "escaped: {body}"
    );
    assert!(body.contains("sensor-1"), "{body}");
    assert!(body.contains("none issued"), "no certificate yet: {body}");
    assert!(
        !body.contains("elsewhere-1"),
        "another site's device: {body}"
    );
}

/// Issue 14 in the UI: the site page creates an enrollment token, shows it
/// once with the command to run, lists it (never its text) and revokes it.
async fn enrollment_tokens_are_shown_once_listed_and_revoked_on_the_site_page(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let page = format!("/admin/edge-sites/{site}");
    assert!(
        browser
            .get(&page)
            .await
            .body
            .contains("No enrollment token yet")
    );
    let bad = browser
        .submit(
            &format!("{page}/enrollment-tokens"),
            &[("scope", "site"), ("expires_in", "5m"), ("uses", "1")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("between 10 minutes and 90 days"),
        "{}",
        bad.body
    );
    // Gateway-initiated mode from the form: the same rule as the API (an
    // internal address needs the operator's flag), nothing written.
    let polled_form = |endpoint: &'static str, interval: &'static str| {
        [
            ("scope", "agent"),
            ("expires_in", "2h"),
            ("uses", "1"),
            ("agent_endpoint", endpoint),
            ("poll_interval_secs", interval),
        ]
    };
    let bad = browser
        .submit(
            &format!("{page}/enrollment-tokens"),
            &polled_form("10.0.0.5:50061", "30"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("--agent-endpoint-allow-cidr"),
        "{}",
        bad.body
    );
    let bad = browser
        .submit(
            &format!("{page}/enrollment-tokens"),
            &polled_form("8.8.8.8:50061", "soon"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("whole number of seconds"), "{}", bad.body);
    assert!(
        browser
            .get(&page)
            .await
            .body
            .contains("No enrollment token yet"),
        "nothing written"
    );
    let created = browser
        .submit(
            &format!("{page}/enrollment-tokens"),
            &[("scope", "site"), ("expires_in", "2h"), ("uses", "2")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let token = created
        .body
        .split("id=\"enrollment-token\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the token is shown")
        .to_string();
    assert!(token.starts_with("sr1."), "{token}");
    assert!(created.body.contains("serviceradar-cli site init --token"));
    // Listed from now on, without its text.
    let again = browser.get(&page).await;
    assert!(!again.body.contains(&token), "the token is shown only once");
    assert!(again.body.contains("0/2"), "{}", again.body);
    assert!(again.body.contains(">issued<"));
    let token_id = again
        .body
        .split("/admin/enrollment-tokens/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a revoke form")
        .to_string();
    let revoked = browser
        .submit(&format!("/admin/enrollment-tokens/{token_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(revoked.location(), page);
    let after = browser.get(&page).await;
    assert!(after.body.contains(">revoked<"), "{}", after.body);
    assert!(
        !after.body.contains("/admin/enrollment-tokens/"),
        "no revoke button on a revoked token"
    );
    assert!(after.body.contains("<td>dials out</td>"), "{}", after.body);
    // A token for gateway-initiated mode, listed with its endpoint.
    let created = browser
        .submit(
            &format!("{page}/enrollment-tokens"),
            &polled_form("8.8.8.8:50061", "30"),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(
        created
            .body
            .contains("<td>polled at 8.8.8.8:50061 every 30 s</td>"),
        "{}",
        created.body
    );
}

/// A change made on one replica reaches a browser's live stream on
/// another (PostgreSQL NOTIFY relay), for the right tenant only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_carries_changes_made_on_another_replica() {
    let url = serviceradar_testkit::postgres().create_database();
    let a = web_support::spawn_on(&url, tempfile::tempdir().expect("dir"), |_| {}).await;
    let b = web_support::spawn_on(&url, tempfile::tempdir().expect("dir"), |_| {}).await;
    let acme = a.app.tenant("acme").await;
    let site = id(&a.app.create_site(&acme, "NYC Office", "nyc-office").await);
    let tenant = a.app.store.tenant_by_slug("acme").await.expect("tenant").id;
    tokio::time::timeout(Duration::from_secs(10), a.health.relay_listening())
        .await
        .expect("replica A's relay listens");
    let mut browser = Browser::new(&a.app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let stream = browser
        .http
        .get(format!("{}/admin/events", a.app.base))
        .header(
            "cookie",
            format!("sr_session={}", browser.cookie.clone().expect("cookie")),
        )
        .send()
        .await
        .expect("stream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.health
        .agent_seen(&AgentIdentity {
            tenant_id: tenant,
            site_id: site.parse().expect("site"),
            agent_id: uuid::Uuid::now_v7(),
            common_name: "agent".into(),
        })
        .await
        .expect("change on replica B");
    let events = read_events(stream, &site).await;
    assert!(events.contains("event: site"), "{events}");
    assert!(events.contains(&site), "{events}");
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn assert_security_headers(page: &Page, path: &str) {
    let h = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{path}: no {name} header"))
            .to_string()
    };
    let csp = h("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
    assert!(!h("referrer-policy").is_empty(), "{path}");
}

async fn alert_for(app: &support::TestApp, tenant: &str, site: &str) -> String {
    let t = app.store.tenant_by_slug(tenant).await.expect("tenant");
    app.store
        .scoped(TenantScope::for_system_task(t.id))
        .raise_alert(
            site.parse().expect("site"),
            ALERT_SITE_OFFLINE,
            "no agent contact",
        )
        .await
        .expect("raise")
        .expect("new alert")
        .id
        .to_string()
}

async fn pages_carry_security_headers_and_need_a_session(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let owner = app.tenant("acme").await;
    let site = app.create_site(&owner, "NYC Office", "nyc-office").await;
    let site_id = id(&site);
    let anonymous = Browser::new(&app.base);
    // No session: every page sends the browser to sign-in.
    for path in ["/", "/admin/edge-sites", "/admin/alerts", "/admin/users"] {
        let page = anonymous.get(path).await;
        assert!(page.status.is_redirection(), "{path}: {}", page.status);
        assert_security_headers(&page, path);
    }
    assert_eq!(
        anonymous.get("/admin/edge-sites").await.location(),
        "/sign-in"
    );
    let sign_in = anonymous.get("/sign-in").await;
    assert_eq!(sign_in.status, StatusCode::OK);
    assert_security_headers(&sign_in, "/sign-in");
    // A wrong password stays on the form with a message.
    let wrong = anonymous
        .post(
            "/sign-in",
            &[
                ("tenant", "acme"),
                ("email", &owner_email("acme")),
                ("password", "wrong password"),
            ],
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("wrong tenant, e-mail or password"));

    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let pages = [
        "/admin/edge-sites".to_string(),
        "/admin/edge-sites?status=pending&name=nyc".into(),
        "/admin/edge-sites/new".into(),
        format!("/admin/edge-sites/{site_id}"),
        format!("/admin/edge-sites/{site_id}/setup/method?m=docker"),
        format!("/admin/edge-sites/{site_id}/setup/method?m=kubernetes"),
        format!("/admin/edge-sites/{site_id}/setup/download"),
        format!("/admin/edge-sites/{site_id}/setup/verify"),
        format!("/admin/edge-sites/{site_id}/regenerate"),
        format!("/admin/edge-sites/{site_id}/delete"),
        "/admin/alerts".into(),
        "/admin/collectors".into(),
        "/admin/webhooks".into(),
        "/admin/users".into(),
        "/admin/tokens".into(),
    ];
    for path in &pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert_security_headers(&page, path);
        assert!(
            !page.body.contains("<script>") && !page.body.contains(" style=\""),
            "{path}: inline script or style"
        );
    }
    for asset in ["/assets/app.css", "/assets/app.js"] {
        let page = browser.get(asset).await;
        assert_eq!(page.status, StatusCode::OK, "{asset}");
        assert_security_headers(&page, asset);
    }
    // The site list shows the site with a word for each status.
    let list = browser.get("/admin/edge-sites").await;
    assert!(list.body.contains("NYC Office"));
    assert!(list.body.contains("1 site"));
    assert!(
        list.body
            .contains(&format!("data-leaf-status=\"{site_id}\">pending"))
    );
    // Search and filter.
    let none = browser.get("/admin/edge-sites?name=boston").await;
    assert!(
        none.body.contains("No site matches this filter"),
        "{}",
        none.body
    );
    let offline = browser.get("/admin/edge-sites?status=offline").await;
    assert!(!offline.body.contains("NYC Office"));
    // A site of nobody is a 404 page, not an error.
    let missing = browser
        .get(&format!("/admin/edge-sites/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing, "404");
    // Signing out ends the session: the old cookie goes back to sign-in
    // with the expiry message.
    let out = browser.submit("/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = browser.get("/admin/edge-sites").await;
    assert_eq!(after.location(), "/sign-in?expired=1");
    let message = anonymous.get("/sign-in?expired=1").await;
    assert!(message.body.contains("Your session has expired"));
}

async fn writes_need_the_csrf_token_and_other_tenants_ids_are_404(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    app.tenant("other").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let alert = alert_for(app, "acme", &site).await;
    let package = app
        .post(
            &acme,
            "/api/v1/collector-packages",
            serde_json::json!({"collector_type": "syslog", "edge_site_id": site}),
        )
        .await;
    assert_eq!(package.status, StatusCode::CREATED, "{}", package.text);
    let package = id(&package.body);
    let webhook = app
        .post(
            &acme,
            "/api/v1/webhooks",
            serde_json::json!({"url": "https://hooks.example.com/x"}),
        )
        .await;
    let webhook = id(&webhook.body);
    let user = app
        .post(
            &acme,
            "/api/v1/users",
            serde_json::json!({"email": "someone@acme.example.com", "role": "viewer"}),
        )
        .await;
    let user = id(&user.body["user"]);
    let token = app
        .post(&acme, "/api/v1/tokens", serde_json::json!({"name": "ci"}))
        .await;
    let token = token.body["token"]["id"]
        .as_str()
        .or(token.body["id"].as_str())
        .expect("token id")
        .to_string();
    let enrollment = app
        .post(
            &acme,
            &format!("/api/v1/edge-sites/{site}/enrollment-tokens"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        enrollment.status,
        StatusCode::CREATED,
        "{}",
        enrollment.text
    );
    let enrollment = enrollment.body["token"]["id"]
        .as_str()
        .expect("enrollment token id")
        .to_string();
    let conflict = conflict_for(app, &acme, &site).await;

    let mut mine = Browser::new(&app.base);
    mine.sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let mut theirs = Browser::new(&app.base);
    theirs
        .sign_in("other", &owner_email("other"), support::OWNER_PASSWORD)
        .await;

    // Every mutating route and a valid form for it.
    let with_ids: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/admin/edge-sites/{site}/regenerate"),
            vec![("confirm", "yes")],
        ),
        (
            format!("/admin/edge-sites/{site}/local-url"),
            vec![("nats_leaf_url", "nats://10.0.1.51:4222")],
        ),
        (format!("/admin/alerts/{alert}/acknowledge"), vec![]),
        (format!("/admin/alerts/{alert}/resolve"), vec![]),
        (format!("/admin/collectors/{package}/bundle"), vec![]),
        (format!("/admin/collectors/{package}/revoke"), vec![]),
        (format!("/admin/webhooks/{webhook}/delete"), vec![]),
        (format!("/admin/users/{user}/delete"), vec![]),
        (format!("/admin/tokens/{token}/revoke"), vec![]),
        (
            format!("/admin/edge-sites/{site}/enrollment-tokens"),
            vec![("scope", "site"), ("expires_in", "1h"), ("uses", "1")],
        ),
        (
            format!("/admin/enrollment-tokens/{enrollment}/revoke"),
            vec![],
        ),
        (
            format!("/admin/enrollment-conflicts/{conflict}/resolve"),
            vec![],
        ),
        (
            format!("/admin/edge-sites/{site}/delete"),
            vec![("confirm", "nyc-office")],
        ),
    ];
    let without_ids: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/edge-sites/new".into(),
            vec![
                ("name", "Boston"),
                ("slug", "boston"),
                ("nats_leaf_url", "nats://10.0.2.1:4222"),
            ],
        ),
        (
            "/admin/collectors".into(),
            vec![("collector_type", "syslog")],
        ),
        (
            "/admin/webhooks".into(),
            vec![("url", "https://hooks.example.com/y")],
        ),
        (
            "/admin/users".into(),
            vec![("email", "new@acme.example.com"), ("role", "viewer")],
        ),
        ("/admin/tokens".into(), vec![("name", "t2")]),
        ("/sign-out".into(), vec![]),
    ];
    for (path, fields) in with_ids.iter().chain(&without_ids) {
        let missing = mine.post(path, fields, None).await;
        assert_eq!(
            missing.status,
            StatusCode::FORBIDDEN,
            "{path} without a CSRF token"
        );
        let wrong = mine.post(path, fields, Some("not-the-token")).await;
        assert_eq!(
            wrong.status,
            StatusCode::FORBIDDEN,
            "{path} with a wrong CSRF token"
        );
        let other_session = mine.post(path, fields, Some(&theirs.csrf)).await;
        assert_eq!(
            other_session.status,
            StatusCode::FORBIDDEN,
            "{path} with another session's token"
        );
        // A cross-origin form post is refused before anything else.
        let cross = mine.send_cross_origin(path, fields).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{path} cross-origin");
    }
    // Fetch writes send the token in X-CSRF-Token instead of the form.
    let by_header = |token: String| {
        let http = mine.http.clone();
        let url = format!("{}/admin/alerts/{alert}/acknowledge", app.base);
        let cookie = format!("sr_session={}", mine.cookie.clone().expect("cookie"));
        async move {
            http.post(url)
                .header("cookie", cookie)
                .header("x-csrf-token", token)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("return_to=%2Fadmin%2Falerts")
                .send()
                .await
                .expect("fetch write")
                .status()
        }
    };
    assert_eq!(by_header("wrong".into()).await, StatusCode::FORBIDDEN);
    // Another tenant's ids are 404 (with that tenant's own valid token).
    for (path, fields) in &with_ids {
        let page = theirs.submit(path, fields).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "{path} from another tenant"
        );
    }
    for path in [
        format!("/admin/edge-sites/{site}"),
        format!("/admin/edge-sites/{site}/bundle"),
        format!("/admin/edge-sites/{site}/setup/verify"),
        format!("/admin/edge-sites/{site}/state"),
        format!("/admin/events?site={site}"),
    ] {
        let page = theirs.get(&path).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "{path} from another tenant"
        );
    }
    // Nothing of acme's changed.
    let still = app.get(&acme, &format!("/api/v1/edge-sites/{site}")).await;
    assert_eq!(still.status, StatusCode::OK);
    assert_eq!(still.body["nats_leaf_url"], "nats://10.0.1.50:4222");
    // With the right token the writes work: change the URL, acknowledge,
    // and delete only with the slug typed.
    let changed = mine.submit(&with_ids[1].0, &with_ids[1].1).await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let acked = mine
        .submit(
            &format!("/admin/alerts/{alert}/acknowledge"),
            &[("return_to", "/admin/alerts")],
        )
        .await;
    assert_eq!(acked.status, StatusCode::SEE_OTHER, "{}", acked.body);
    assert_eq!(acked.location(), "/admin/alerts");
    let alert_now = app.get(&acme, &format!("/api/v1/alerts/{alert}")).await;
    assert_eq!(alert_now.body["status"], "acknowledged");
    // The same through the header (acknowledging twice is refused as an
    // illegal transition, not as a CSRF failure).
    assert_ne!(by_header(mine.csrf.clone()).await, StatusCode::FORBIDDEN);
    let mistyped = mine
        .submit(
            &format!("/admin/edge-sites/{site}/delete"),
            &[("confirm", "nyc")],
        )
        .await;
    assert_eq!(mistyped.status, StatusCode::BAD_REQUEST);
    let deleted = mine
        .submit(
            &format!("/admin/edge-sites/{site}/delete"),
            &[("confirm", "nyc-office")],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let gone = app.get(&acme, &format!("/api/v1/edge-sites/{site}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // A created token is shown once, on the page that created it.
    let created = mine.submit("/admin/tokens", &[("name", "deploy")]).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.body.contains("shown-secret"));
    assert!(created.body.contains("srt_"));
    let later = mine.get("/admin/tokens").await;
    assert!(!later.body.contains("srt_"));
}

async fn viewer_sees_no_admin_controls_and_is_refused(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let owner = app.tenant("acme").await;
    let site = id(&app.create_site(&owner, "NYC Office", "nyc-office").await);
    alert_for(app, "acme", &site).await;
    let conflict = conflict_for(app, &owner, &site).await;
    let email = user_with_password(app, &owner, "viewer").await;
    let mut viewer = Browser::new(&app.base);
    viewer
        .sign_in("acme", &email, support::OWNER_PASSWORD)
        .await;

    let list = viewer.get("/admin/edge-sites").await;
    assert!(list.body.contains("NYC Office"));
    assert!(
        !list.body.contains("Create edge site"),
        "viewer sees the create control"
    );
    let detail = viewer.get(&format!("/admin/edge-sites/{site}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    for control in [
        "Download bundle",
        "Regenerate config",
        "Delete this site",
        "Danger zone",
        "Acknowledge",
        "Change local NATS URL",
        "Create enrollment token",
        "/admin/enrollment-conflicts/",
    ] {
        assert!(!detail.body.contains(control), "viewer sees {control:?}");
    }
    // The conflict itself is listed for a viewer, without its resolve button.
    assert!(detail.body.contains("clone-2"), "viewer sees the conflict");
    let download = viewer
        .get(&format!("/admin/edge-sites/{site}/setup/download"))
        .await;
    assert!(
        download
            .body
            .contains("Your role cannot download site bundles")
    );
    assert!(!download.body.contains("id=\"download\""));
    let collectors = viewer.get("/admin/collectors").await;
    assert!(!collectors.body.contains("Create collector package"));
    let users = viewer.get("/admin/users").await;
    assert!(!users.body.contains("Create user"));
    assert!(!users.body.contains(">Webhooks<"));

    // The server refuses regardless of what the page showed.
    for (path, fields) in [
        (
            "/admin/edge-sites/new".to_string(),
            vec![("name", "B"), ("nats_leaf_url", "nats://10.0.0.2:4222")],
        ),
        (
            format!("/admin/edge-sites/{site}/regenerate"),
            vec![("confirm", "yes")],
        ),
        (
            format!("/admin/edge-sites/{site}/delete"),
            vec![("confirm", "nyc-office")],
        ),
        (
            "/admin/collectors".into(),
            vec![("collector_type", "syslog")],
        ),
        (
            "/admin/users".into(),
            vec![("email", "x@acme.example.com"), ("role", "viewer")],
        ),
        (
            format!("/admin/edge-sites/{site}/enrollment-tokens"),
            vec![("scope", "site")],
        ),
        (
            format!("/admin/enrollment-conflicts/{conflict}/resolve"),
            vec![],
        ),
    ] {
        let page = viewer.submit(&path, &fields).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "viewer {path}: {}",
            page.body
        );
    }
    for path in [
        format!("/admin/edge-sites/{site}/bundle"),
        "/admin/edge-sites/new".to_string(),
        format!("/admin/edge-sites/{site}/regenerate"),
        format!("/admin/edge-sites/{site}/delete"),
        "/admin/webhooks".into(),
    ] {
        let page = viewer.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "viewer GET {path}");
    }
    let still = app.get(&owner, &format!("/api/v1/edge-sites/{site}")).await;
    assert_eq!(still.status, StatusCode::OK);
}

/// Reads server-sent events from `response` until `until` is seen or 10 s pass.
async fn read_events(mut response: reqwest::Response, until: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(until) {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    seen
}

async fn live_stream_carries_only_the_viewers_tenant(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let mine = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let theirs = id(&app.create_site(&other, "Paris", "paris").await);
    let tenant = |slug: &'static str| async move {
        app.store.tenant_by_slug(slug).await.expect("tenant").id
    };
    let (acme_id, other_id) = (tenant("acme").await, tenant("other").await);

    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let cookie = format!("sr_session={}", browser.cookie.clone().expect("cookie"));
    let open = |path: String| {
        let cookie = cookie.clone();
        let http = browser.http.clone();
        let base = app.base.clone();
        async move {
            let response = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("stream");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                response.headers()["content-type"].to_str().expect("type"),
                "text/event-stream"
            );
            response
        }
    };
    let list = open("/admin/events".into()).await;
    let detail = open(format!("/admin/events?site={mine}")).await;
    // Let both streams subscribe before anything happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = |tenant_id, site_id: &str| AgentIdentity {
        tenant_id,
        site_id: site_id.parse().expect("site"),
        agent_id: uuid::Uuid::now_v7(),
        common_name: "agent".into(),
    };
    // The other tenant's site changes first, then ours.
    web.health
        .agent_seen(&seen(other_id, &theirs))
        .await
        .expect("other tenant's change");
    web.health
        .agent_seen(&seen(acme_id, &mine))
        .await
        .expect("our change");
    let list_events = read_events(list, &mine).await;
    assert!(list_events.contains("event: site"), "{list_events}");
    assert!(list_events.contains(&mine), "{list_events}");
    assert!(
        !list_events.contains(&theirs),
        "tenant B's event on tenant A's stream: {list_events}"
    );
    let detail_events = read_events(detail, "\"site_status\":\"active\"").await;
    assert!(detail_events.contains("event: state"), "{detail_events}");
    assert!(
        detail_events.contains("\"site_status\":\"active\""),
        "{detail_events}"
    );
    assert!(!detail_events.contains(&theirs), "{detail_events}");
    // The JSON snapshot says the same.
    let state = browser
        .get(&format!("/admin/edge-sites/{mine}/state"))
        .await;
    assert!(state.body.contains("\"agent_seen\":true"), "{}", state.body);
    // Without a session there is no stream.
    let anonymous = Browser::new(&app.base).get("/admin/events").await;
    assert!(anonymous.status.is_redirection());
    // Open streams end when the server stops, instead of holding up its
    // graceful shutdown for the whole grace period (20 s).
    let mut open_stream = open("/admin/events".into()).await;
    let started = std::time::Instant::now();
    drop(web);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = open_stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream outlived the server's stop");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Unfiltered, the list shows the tenant's exact site count at any size; a
/// filtered list counts at most 200 matching sites ("200+"), and under the
/// cap (a first page that is the whole list, or more than a page) it is
/// exact.
async fn the_filtered_site_count_stops_at_two_hundred(db: Db) {
    use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    app.tenant("acme").await;
    let tenant = app.store.tenant_by_slug("acme").await.unwrap();
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    for i in 0..1_001 {
        scoped
            .create_site(
                &serviceradar_store::NewSite {
                    name: DisplayName::parse(&format!("Site {i:04}")).unwrap(),
                    slug: Slug::parse(&format!("site-{i:04}")).unwrap(),
                    nats_leaf_url: NatsUrl::parse("nats://10.0.0.1:4222").unwrap(),
                    upstream_url: "tls://hub:7422".into(),
                    local_listen: ListenAddr::parse("0.0.0.0:4222").unwrap(),
                },
                None,
            )
            .await
            .unwrap();
    }
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let count = |body: &str| {
        body.split("id=\"site-count\" class=\"muted\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or_default()
            .to_string()
    };
    let all = browser.get("/admin/edge-sites").await;
    assert_eq!(count(&all.body), "1,001 sites", "{}", all.body);
    let capped = browser.get("/admin/edge-sites?name=site").await;
    assert_eq!(count(&capped.body), "200+ sites match the filter");
    let hundred = browser.get("/admin/edge-sites?name=site%2001").await;
    assert_eq!(count(&hundred.body), "100 sites match the filter");
    let ten = browser.get("/admin/edge-sites?name=site%20000").await;
    assert_eq!(count(&ten.body), "10 sites match the filter");
    let one = browser.get("/admin/edge-sites?name=site%201000").await;
    assert_eq!(count(&one.body), "1 site matches the filter");
    let none = browser.get("/admin/edge-sites?status=active").await;
    assert_eq!(count(&none.body), "0 sites match the filter");
}

async fn wizard_creates_a_site_and_checks_slugs(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    app.create_site(&acme, "NYC Office", "nyc-office").await;
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let taken = browser
        .get("/admin/edge-sites/slug-check?slug=nyc-office")
        .await;
    assert!(taken.body.contains("\"available\":false"), "{}", taken.body);
    let bad = browser
        .get("/admin/edge-sites/slug-check?slug=Not%20A%20Slug")
        .await;
    assert!(bad.body.contains("\"available\":false"), "{}", bad.body);
    let free = browser
        .get("/admin/edge-sites/slug-check?slug=boston")
        .await;
    assert!(free.body.contains("\"available\":true"), "{}", free.body);
    // Field errors re-render step 1 with the values kept.
    let invalid = browser
        .submit(
            "/admin/edge-sites/new",
            &[
                ("name", "Boston"),
                ("slug", "boston"),
                ("nats_leaf_url", "http://nope"),
            ],
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(invalid.body.contains("nats_leaf_url"));
    assert!(invalid.body.contains("value=\"Boston\""));
    let duplicate = browser
        .submit(
            "/admin/edge-sites/new",
            &[
                ("name", "NYC again"),
                ("slug", "nyc-office"),
                ("nats_leaf_url", "nats://10.0.0.9:4222"),
            ],
        )
        .await;
    assert_eq!(
        duplicate.status,
        StatusCode::BAD_REQUEST,
        "{}",
        duplicate.body
    );
    let created = browser
        .submit(
            "/admin/edge-sites/new",
            &[
                ("name", "Boston Lab"),
                ("slug", ""),
                ("nats_leaf_url", "nats://10.0.0.9:4222"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let step2 = created.location().to_string();
    assert!(step2.ends_with("/setup/method?m=systemd"), "{step2}");
    let method = browser.get(&step2).await;
    assert!(method.body.contains("sudo ./setup.sh"));
    assert!(
        method
            .body
            .contains("serviceradar-site-acme-boston-lab.tar.gz")
    );
    let docker = browser.get(&step2.replace("m=systemd", "m=docker")).await;
    assert!(docker.body.contains("docker compose up -d"));
    // Not provisioned here (no job workers): the download waits.
    let download = browser
        .get(&step2.replace("method?m=systemd", "download"))
        .await;
    assert!(download.body.contains("aria-disabled=\"true\""));
    assert!(download.body.contains("Waiting for the platform"));
    let list = browser.get("/admin/edge-sites").await;
    assert!(list.body.contains("Boston Lab"));
    assert!(list.body.contains("2 sites"));

    // A refusal the leaf authorization callout recorded for the site is
    // what step 4, the site page and the live snapshot show while waiting.
    let site_id = step2
        .split("/admin/edge-sites/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("site id")
        .to_string();
    let verify = format!("/admin/edge-sites/{site_id}/setup/verify");
    assert!(!browser.get(&verify).await.body.contains("The hub refused"));
    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    app.store
        .scoped(TenantScope::for_system_task(tenant.id))
        .record_leaf_refusal(
            site_id.parse().expect("site"),
            "certificate: issued for another site",
            serviceradar_store::now_ms(),
        )
        .await
        .expect("record refusal");
    let page = browser.get(&verify).await;
    assert!(
        page.body
            .contains("The hub refused this site&#x27;s leaf just now")
            || page
                .body
                .contains("The hub refused this site&#39;s leaf just now"),
        "{}",
        page.body
    );
    assert!(page.body.contains("certificate: issued for another site"));
    let detail = browser.get(&format!("/admin/edge-sites/{site_id}")).await;
    assert!(detail.body.contains("certificate: issued for another site"));
    let state = browser
        .get(&format!("/admin/edge-sites/{site_id}/state"))
        .await;
    assert!(
        state.body.contains("issued for another site"),
        "{}",
        state.body
    );
    // The agent card: its latest check results and why a renewal was refused.
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    let agent = agent_at(&scoped, &site_id).await;
    scoped
        .record_agent_checks(
            agent.id,
            &[serviceradar_store::AgentCheck {
                name: "dns:hub.example.com".into(),
                kind: "dns".into(),
                target: "hub.example.com".into(),
                status: "fail".into(),
                message: "no such host <b>".into(),
                response_time_us: 900,
                observed_at: serviceradar_store::now_ms(),
            }],
        )
        .await
        .expect("checks");
    scoped
        .record_agent_renewal(
            agent.id,
            serviceradar_store::RenewalOutcome::Refused("the agent was revoked at 2026-11-29"),
        )
        .await
        .expect("refusal");
    let detail = browser.get(&format!("/admin/edge-sites/{site_id}")).await;
    assert!(
        detail.body.contains("dns:hub.example.com"),
        "{}",
        detail.body
    );
    assert!(
        detail.body.contains("no such host &#60;b&#62;"),
        "escaped: {}",
        detail.body
    );
    assert!(detail.body.contains("Renewal refused"));
    // No hub is followed here: the leaf card says the hub's view is missing.
    assert!(detail.body.contains("Hub&#39;s view") || detail.body.contains("Hub's view"));
    assert!(
        detail.body.contains("could not ask the hub"),
        "{}",
        detail.body
    );
    assert!(detail.body.contains("the agent was revoked at 2026-11-29"));
    // The leaf card says when provisioning ran: not yet, then its time.
    assert!(
        detail
            .body
            .contains(r#"<dd id="provisioned-at">not yet</dd>"#),
        "{}",
        detail.body
    );
    let leaf = scoped
        .leaf_for_site(site_id.parse().expect("site"))
        .await
        .expect("leaf");
    scoped
        .store_leaf_provisioning(
            leaf.id,
            &serviceradar_store::LeafProvisioning {
                leaf_cert_pem: "cert".into(),
                leaf_key_sealed: vec![1; 8],
                server_cert_pem: "cert".into(),
                server_key_sealed: vec![2; 8],
                ca_chain_pem: "chain".into(),
                creds_sealed: vec![3; 8],
                cert_expires_at: serviceradar_store::now_ms() + 86_400_000,
                config_checksum: "sha256:00".into(),
                node_certs: Vec::new(),
            },
            &serviceradar_store::ProvisionedFrom::default(),
        )
        .await
        .expect("provisioning");
    let detail = browser.get(&format!("/admin/edge-sites/{site_id}")).await;
    assert!(
        detail
            .body
            .contains(r#"<dd id="provisioned-at"><time datetime="#),
        "{}",
        detail.body
    );
    // Another tenant's refusals are not this tenant's business.
    let other = app.tenant("other").await;
    let theirs = id(&app.create_site(&other, "Paris", "paris").await);
    assert!(
        !browser
            .get(&format!("/admin/edge-sites/{theirs}/setup/verify"))
            .await
            .status
            .is_success()
    );
}

/// The command history of `site` as the JSON API lists it.
async fn api_commands(app: &support::TestApp, who: &support::Caller, site: &str) -> Vec<Value> {
    app.get(who, &format!("/api/v1/edge-sites/{site}/agent/commands"))
        .await
        .body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// How many sites the JSON API lists (first page).
async fn api_site_count(app: &support::TestApp, who: &support::Caller) -> usize {
    app.get(who, "/api/v1/edge-sites").await.body["items"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The configured checks of `site`'s agent as the JSON API lists them.
async fn api_checks(app: &support::TestApp, who: &support::Caller, site: &str) -> Vec<Value> {
    let reply = app
        .get(who, &format!("/api/v1/edge-sites/{site}/agent/checks"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

/// The site page lists the agent's configured checks with the config
/// version it acknowledged, and adds, changes and removes them through the
/// same use-cases as the API; a refused form comes back with each message
/// next to its field and the values kept.
async fn agent_checks_are_added_changed_and_removed_on_the_site_page(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    let agent = agent_at(&scoped, &site).await;
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let page = format!("/admin/edge-sites/{site}");
    let empty = browser.get(&page).await;
    assert!(empty.body.contains("Configured checks"), "{}", empty.body);
    assert!(empty.body.contains("No check configured yet."));
    assert!(empty.body.contains("has not acknowledged a config yet"));
    assert!(empty.body.contains("id=\"add-check\""));

    // Bad input: every message next to its field, the values kept, nothing written.
    let add = format!("{page}/checks");
    let bad = browser
        .submit(
            &add,
            &[
                ("name", "web"),
                ("kind", "tcp"),
                ("target", "no-port-here"),
                ("interval_secs", "10"),
                ("timeout_ms", "20000"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("id=\"check-target-error\""),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("must be host:port"), "{}", bad.body);
    assert!(bad.body.contains("id=\"check-timeout_ms-error\""));
    assert!(bad.body.contains("must be shorter than the interval"));
    assert!(bad.body.contains("value=\"no-port-here\""), "kept");
    assert!(bad.body.contains("aria-invalid=\"true\""));
    let not_a_number = browser
        .submit(
            &add,
            &[
                ("name", "web"),
                ("kind", "tcp"),
                ("target", "10.0.0.5:443"),
                ("interval_secs", "ten"),
            ],
        )
        .await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    assert!(
        not_a_number
            .body
            .contains("must be a whole number of seconds"),
        "{}",
        not_a_number.body
    );
    let bad_kind = browser
        .submit(&add, &[("name", "web"), ("kind", "smtp"), ("target", "x")])
        .await;
    assert_eq!(bad_kind.status, StatusCode::BAD_REQUEST);
    assert!(bad_kind.body.contains("must be one of nats_leaf, tcp"));
    assert!(
        api_checks(app, &acme, &site).await.is_empty(),
        "nothing written"
    );

    // A good one is added and listed.
    let added = browser
        .submit(
            &add,
            &[
                ("name", "web"),
                ("kind", "tcp"),
                ("target", "10.0.0.5:443"),
                ("interval_secs", "10"),
                ("timeout_ms", "2000"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(added.location(), format!("{page}#checks-h"));
    let listed = browser.get(&page).await;
    assert!(
        listed.body.contains("data-check=\"web\""),
        "{}",
        listed.body
    );
    assert!(listed.body.contains("<code>10.0.0.5:443</code>"));
    assert!(listed.body.contains("10 s") && listed.body.contains("2000 ms"));
    let checks = api_checks(app, &acme, &site).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["target"], "10.0.0.5:443");
    // The same name again: a conflict, said on the form.
    let twice = browser
        .submit(
            &add,
            &[("name", "web"), ("kind", "dns"), ("target", "example.com")],
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
    assert!(twice.body.contains("a check with this name exists"));

    // The agent acknowledges the config: the page names the version.
    scoped
        .ack_agent_config(agent.id, "cfg-7f3a")
        .await
        .expect("ack");
    let acked = browser.get(&page).await;
    assert!(
        acked.body.contains("config version <code>cfg-7f3a</code>"),
        "{}",
        acked.body
    );
    assert!(acked.body.contains("the current checks"));

    // Change: the form shows the stored values; a bad change is refused
    // with the message and changes nothing; a good one is saved.
    let edit = format!("{page}/checks/web");
    let form = browser.get(&edit).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains("value=\"10.0.0.5:443\""));
    assert!(form.body.contains("<option value=\"tcp\" selected>"));
    let bad_change = browser
        .submit(&edit, &[("kind", "http"), ("target", "ftp://example.com/")])
        .await;
    assert_eq!(bad_change.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_change
            .body
            .contains("must be an http:// or https:// URL"),
        "{}",
        bad_change.body
    );
    assert_eq!(api_checks(app, &acme, &site).await[0]["kind"], "tcp");
    let changed = browser
        .submit(
            &edit,
            &[
                ("kind", "http"),
                ("target", "https://intranet.example.com/health"),
                ("interval_secs", "60"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let checks = api_checks(app, &acme, &site).await;
    assert_eq!(checks[0]["kind"], "http");
    assert_eq!(checks[0]["interval_secs"], 60);
    // The acknowledgement is now of an earlier config.
    let stale = browser.get(&page).await;
    assert!(
        stale.body.contains("has not acknowledged that yet"),
        "{}",
        stale.body
    );
    assert_eq!(
        browser.get(&format!("{page}/checks/nope")).await.status,
        StatusCode::NOT_FOUND
    );

    // Remove.
    let removed = browser.submit(&format!("{edit}/delete"), &[]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    assert!(api_checks(app, &acme, &site).await.is_empty());
    assert!(
        browser
            .get(&page)
            .await
            .body
            .contains("No check configured yet.")
    );
    let again = browser.submit(&format!("{edit}/delete"), &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// Every new form of the site page (add, change, remove a check; send a
/// command): refused without the session's CSRF token (403), on another
/// tenant's site (404, with that tenant's own valid token), for a viewer
/// (403, who also sees none of the controls), and nothing is written.
async fn check_forms_refuse_csrf_failures_other_tenants_viewers_and_bad_input(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    app.tenant("other").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    agent_at(&scoped, &site).await;
    let created = app
        .post(
            &acme,
            &format!("/api/v1/edge-sites/{site}/agent/checks"),
            serde_json::json!({"name": "db", "kind": "tcp", "target": "10.0.0.7:5432"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let mut mine = Browser::new(&app.base);
    mine.sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let mut theirs = Browser::new(&app.base);
    theirs
        .sign_in("other", &owner_email("other"), support::OWNER_PASSWORD)
        .await;
    let viewer_email = user_with_password(app, &acme, "viewer").await;
    let mut viewer = Browser::new(&app.base);
    viewer
        .sign_in("acme", &viewer_email, support::OWNER_PASSWORD)
        .await;

    let page = format!("/admin/edge-sites/{site}");
    let check_fields = [("name", "web"), ("kind", "tcp"), ("target", "10.0.0.5:443")];
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{page}/checks"), check_fields.to_vec()),
        (
            format!("{page}/checks/db"),
            vec![("kind", "tcp"), ("target", "10.0.0.8:5432")],
        ),
        (format!("{page}/checks/db/delete"), vec![]),
        (format!("{page}/commands"), vec![("kind", "run_checks")]),
    ];
    for (path, fields) in &forms {
        for csrf in [None, Some("not-the-token"), Some(theirs.csrf.as_str())] {
            let refused = mine.post(path, fields, csrf).await;
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "{path} with CSRF token {csrf:?}"
            );
        }
        let cross = mine.send_cross_origin(path, fields).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{path} cross-origin");
        let other = theirs.submit(path, fields).await;
        assert_eq!(
            other.status,
            StatusCode::NOT_FOUND,
            "{path} from another tenant: {}",
            other.body
        );
        let denied = viewer.submit(path, fields).await;
        assert_eq!(
            denied.status,
            StatusCode::FORBIDDEN,
            "{path} as a viewer: {}",
            denied.body
        );
    }
    // Bad input from another tenant or a viewer is still 404 / 403, not a
    // 400 that would say the form was looked at.
    let bad_number = [
        ("name", "web"),
        ("kind", "tcp"),
        ("target", "x"),
        ("interval_secs", "x"),
    ];
    assert_eq!(
        theirs
            .submit(&format!("{page}/checks"), &bad_number)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        viewer
            .submit(&format!("{page}/checks"), &bad_number)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer.get(&format!("{page}/checks/db")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        theirs.get(&format!("{page}/checks/db")).await.status,
        StatusCode::NOT_FOUND
    );
    // Nothing was written: the one check as created, no command.
    let checks = api_checks(app, &acme, &site).await;
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["target"], "10.0.0.7:5432");
    let commands = app
        .get(&acme, &format!("/api/v1/edge-sites/{site}/agent/commands"))
        .await;
    assert_eq!(
        commands.body["items"].as_array().map(Vec::len),
        Some(0),
        "{}",
        commands.text
    );
    // The viewer sees the list and the history, and no control.
    let seen = viewer.get(&page).await;
    assert!(seen.body.contains("data-check=\"db\""), "{}", seen.body);
    assert!(seen.body.contains("Recent commands"));
    let change_link = format!("href=\"{page}/checks/db\"");
    for control in [
        "id=\"add-check\"",
        "/checks/db/delete",
        change_link.as_str(),
        "id=\"send-command\"",
    ] {
        assert!(!seen.body.contains(control), "viewer sees {control}");
    }
    // The owner does see them.
    let owned = mine.get(&page).await;
    for control in [
        "id=\"add-check\"",
        "/checks/db/delete",
        change_link.as_str(),
        "id=\"send-command\"",
    ] {
        assert!(owned.body.contains(control), "owner misses {control}");
    }
}

/// The site page sends a command through the same use-case as the API; to
/// an agent with no open control stream (none here: nothing runs one) it
/// is recorded offline and the page says so clearly, in the history too;
/// a kind nobody knows is a 400 naming the field, with nothing written.
async fn commands_are_sent_from_the_site_page_and_an_offline_agent_is_told(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let site = id(&app.create_site(&acme, "NYC Office", "nyc-office").await);
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let page = format!("/admin/edge-sites/{site}");
    // No agent yet: no command form, and a command is 404.
    let before = browser.get(&page).await;
    assert!(!before.body.contains("id=\"send-command\""));
    let no_agent = browser
        .submit(&format!("{page}/commands"), &[("kind", "run_checks")])
        .await;
    assert_eq!(no_agent.status, StatusCode::NOT_FOUND);

    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    let scoped = app.store.scoped(TenantScope::for_system_task(tenant.id));
    agent_at(&scoped, &site).await;
    let shown = browser.get(&page).await;
    assert!(shown.body.contains("id=\"send-command\""), "{}", shown.body);
    for kind in [
        "run_checks",
        "reload_config",
        "renew_certificates",
        "collect_diagnostics",
    ] {
        assert!(shown.body.contains(&format!("<option value=\"{kind}\">")));
    }
    assert!(shown.body.contains("No command sent yet."));

    let unknown = browser
        .submit(&format!("{page}/commands"), &[("kind", "reboot")])
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert!(
        unknown.body.contains("must be one of run_checks"),
        "{}",
        unknown.body
    );
    assert!(
        api_commands(app, &acme, &site).await.is_empty(),
        "nothing written"
    );

    let offline = browser
        .submit(
            &format!("{page}/commands"),
            &[("kind", "collect_diagnostics")],
        )
        .await;
    assert_eq!(offline.status, StatusCode::CONFLICT, "{}", offline.body);
    assert!(
        offline.body.contains("id=\"command-failed\""),
        "{}",
        offline.body
    );
    assert!(
        offline
            .body
            .contains("Collect diagnostics failed: the site&#39;s agent is not connected")
            || offline
                .body
                .contains("Collect diagnostics failed: the site&#x27;s agent is not connected"),
        "{}",
        offline.body
    );
    assert!(offline.body.contains("<code>collect_diagnostics</code>"));
    assert!(offline.body.contains(">offline<"), "in the history");
    let stored = api_commands(app, &acme, &site).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "offline");
    // The live snapshot carries the history for the page's script.
    let state = browser.get(&format!("{page}/state")).await;
    assert!(state.body.contains("\"commands\":[{"), "{}", state.body);
    assert!(
        state.body.contains("\"status\":\"offline\""),
        "{}",
        state.body
    );
    assert!(state.body.contains("\"tone\":\"bad\""));
}

/// Step 1 offers one leaf server or a 3-node cluster (node URLs and route
/// port optional); step 2 then shows each node's `setup.sh --node N` (and
/// its compose file, the StatefulSet); the layout's rules are the API's,
/// and a refused layout creates nothing.
async fn wizard_offers_a_three_node_leaf_cluster(db: Db) {
    let web = spawn(db, |_| {}).await;
    let app = &web.app;
    let acme = app.tenant("acme").await;
    let mut browser = Browser::new(&app.base);
    browser
        .sign_in("acme", &owner_email("acme"), support::OWNER_PASSWORD)
        .await;
    let step1 = browser.get("/admin/edge-sites/new").await;
    assert!(step1.body.contains("id=\"leaf_nodes_3\""), "{}", step1.body);
    assert!(step1.body.contains("name=\"leaf_node_url_2\""));
    let urls = [
        ("leaf_node_url_0", "tls://10.0.2.10:4222"),
        ("leaf_node_url_1", "tls://10.0.2.11:4222"),
        ("leaf_node_url_2", "tls://10.0.2.12:4222"),
    ];
    let base = [
        ("name", "Plant"),
        ("slug", "plant"),
        ("nats_leaf_url", "tls://10.0.2.10:4222"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all: Vec<(&str, &str)> = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    // Refused layouts: a count other than 1 or 3, two URLs, a bad port.
    for (fields, says) in [
        (
            with(&[("leaf_nodes", "2")]),
            "must be 1 (one leaf server) or 3 (a leaf cluster)",
        ),
        (
            with(&[("leaf_nodes", "3"), urls[0], urls[1]]),
            "exactly 3 nodes",
        ),
        (
            with(&[
                ("leaf_nodes", "3"),
                urls[0],
                urls[1],
                urls[2],
                ("leaf_cluster_port", "http"),
            ]),
            "must be a port number",
        ),
        (
            with(&[
                ("leaf_nodes", "3"),
                urls[0],
                urls[1],
                urls[2],
                ("leaf_cluster_port", "70000"),
            ]),
            "must be a port number",
        ),
    ] {
        let refused = browser.submit("/admin/edge-sites/new", &fields).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{fields:?}: {}",
            refused.body
        );
        assert!(refused.body.contains(says), "{fields:?}: {}", refused.body);
        assert!(refused.body.contains("value=\"Plant\""), "values kept");
    }
    // The cluster's fields are kept when a cluster was refused.
    let kept = browser
        .submit(
            "/admin/edge-sites/new",
            &with(&[("leaf_nodes", "3"), urls[0], urls[1]]),
        )
        .await;
    assert!(kept.body.contains("value=\"tls://10.0.2.11:4222\""));
    assert!(
        kept.body
            .contains("id=\"leaf_nodes_3\" name=\"leaf_nodes\" value=\"3\" checked")
    );
    assert_eq!(api_site_count(app, &acme).await, 0, "nothing created");
    // A viewer may not, whatever the layout says.
    let viewer_email = user_with_password(app, &acme, "viewer").await;
    let mut viewer = Browser::new(&app.base);
    viewer
        .sign_in("acme", &viewer_email, support::OWNER_PASSWORD)
        .await;
    let denied = viewer
        .submit(
            "/admin/edge-sites/new",
            &with(&[("leaf_nodes", "3"), ("leaf_cluster_port", "x")]),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let created = browser
        .submit(
            "/admin/edge-sites/new",
            &with(&[("leaf_nodes", "3"), urls[0], urls[1], urls[2]]),
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let step2 = created.location().to_string();
    let site = step2
        .split("/admin/edge-sites/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("site id")
        .to_string();
    let leaf = app
        .get(&acme, &format!("/api/v1/edge-sites/{site}/leaf-server"))
        .await;
    assert_eq!(leaf.body["leaf_nodes"], 3, "{}", leaf.text);
    let systemd = browser.get(&step2).await;
    for i in 0..3 {
        assert!(
            systemd
                .body
                .contains(&format!("sudo ./setup.sh --node {i}")),
            "{}",
            systemd.body
        );
        assert!(systemd.body.contains(&format!("tls://10.0.2.1{i}:4222")));
    }
    assert!(systemd.body.contains("id=\"cluster-nodes\""));
    assert!(systemd.body.contains("<td>6222</td>"));
    assert!(systemd.body.contains("serviceradar-site-acme-plant.tar.gz"));
    let docker = browser.get(&step2.replace("m=systemd", "m=docker")).await;
    assert!(
        docker
            .body
            .contains("docker compose -f nodes/node-1/docker-compose.yml up -d")
    );
    let kubernetes = browser
        .get(&step2.replace("m=systemd", "m=kubernetes"))
        .await;
    assert!(
        kubernetes
            .body
            .contains("kubectl apply -n serviceradar-edge -k serviceradar-site-acme-plant"),
        "{}",
        kubernetes.body
    );
    assert!(kubernetes.body.contains("statefulset/sr-leaf-plant"));
    let manual = browser.get(&step2.replace("m=systemd", "m=manual")).await;
    assert!(manual.body.contains("./setup.sh --node 2 --prefix"));

    // A cluster without URLs: the StatefulSet's pod names.
    let pods = browser
        .submit(
            "/admin/edge-sites/new",
            &[
                ("name", "Kube"),
                ("slug", "kube"),
                ("nats_leaf_url", "tls://10.0.3.1:4222"),
                ("leaf_nodes", "3"),
                ("leaf_node_url_0", ""),
                ("leaf_node_url_1", ""),
                ("leaf_node_url_2", ""),
                ("leaf_cluster_port", ""),
            ],
        )
        .await;
    assert_eq!(pods.status, StatusCode::SEE_OTHER, "{}", pods.body);
    let step2 = browser.get(pods.location()).await;
    assert!(
        step2
            .body
            .contains("tls://sr-leaf-kube-0.sr-leaf-kube:4222"),
        "{}",
        step2.body
    );
    // One server: what was typed in the hidden cluster fields is ignored.
    let single = browser
        .submit(
            "/admin/edge-sites/new",
            &[
                ("name", "Shop"),
                ("slug", "shop"),
                ("nats_leaf_url", "nats://10.0.4.1:4222"),
                ("leaf_nodes", "1"),
                ("leaf_node_url_0", "tls://10.0.4.1:4222"),
                ("leaf_cluster_port", "6222"),
            ],
        )
        .await;
    assert_eq!(single.status, StatusCode::SEE_OTHER, "{}", single.body);
    let step2 = browser.get(single.location()).await;
    assert!(step2.body.contains("sudo ./setup.sh"));
    assert!(!step2.body.contains("--node"), "{}", step2.body);
    assert!(!step2.body.contains("id=\"cluster-nodes\""));

    // Regenerating a clustered site offers new node keys; a one-server
    // site's confirmation does not, and the server refuses the option for it.
    let confirm = browser
        .get(&format!("/admin/edge-sites/{site}/regenerate"))
        .await;
    assert!(confirm.body.contains("id=\"option\""), "{}", confirm.body);
    assert!(confirm.body.contains("new keys"), "{}", confirm.body);
    let rotated = browser
        .submit(
            &format!("/admin/edge-sites/{site}/regenerate"),
            &[("confirm", "yes"), ("option", "yes")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::SEE_OTHER, "{}", rotated.body);
    assert!(
        support::captured_logs()
            .lines()
            .any(|l| l.contains("leaf cluster node keys rotated") && l.contains(&site)),
        "the rotation reached the control layer"
    );
    let shop = single
        .location()
        .split("/admin/edge-sites/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("site id")
        .to_string();
    let confirm = browser
        .get(&format!("/admin/edge-sites/{shop}/regenerate"))
        .await;
    assert!(!confirm.body.contains("id=\"option\""), "{}", confirm.body);
    let refused = browser
        .submit(
            &format!("/admin/edge-sites/{shop}/regenerate"),
            &[("confirm", "yes"), ("option", "yes")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("3-node leaf"), "{}", refused.body);
}
