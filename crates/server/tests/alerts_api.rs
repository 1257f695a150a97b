//! Alerts and webhooks through the API, on SQLite and PostgreSQL: listing and
//! the `open -> acknowledged -> resolved` lifecycle, roles, tenant
//! isolation, webhook validation, secrets shown once, and signed delivery
//! with a retry to a real local HTTP receiver.

mod support;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_domain::TenantScope;
use serviceradar_domain::policy::Role;
use serviceradar_store::health::ALERT_SITE_OFFLINE;
use support::{Db, spawn_app, spawn_app_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(
    alert_lifecycle_roles_and_isolation,
    webhook_management,
    webhook_delivery_is_signed_retried_and_logged,
    webhooks_to_internal_addresses_are_refused
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn raise(app: &support::TestApp, tenant: &str, site_id: &str) -> String {
    let t = app.store.tenant_by_slug(tenant).await.expect("tenant");
    let alert = app
        .store
        .scoped(TenantScope::for_system_task(t.id))
        .raise_alert(
            site_id.parse().expect("site id"),
            ALERT_SITE_OFFLINE,
            "no agent contact for 10 min",
        )
        .await
        .expect("raise")
        .expect("new alert");
    // A second raise for the same site and kind is a no-op while unresolved.
    assert!(
        app.store
            .scoped(TenantScope::for_system_task(t.id))
            .raise_alert(
                site_id.parse().expect("site id"),
                ALERT_SITE_OFFLINE,
                "again"
            )
            .await
            .expect("raise")
            .is_none()
    );
    alert.id.to_string()
}

async fn alert_lifecycle_roles_and_isolation(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    let site = app.create_site(&acme, "NYC Office", "nyc-office").await;
    let alert_id = raise(&app, "acme", &id(&site)).await;

    let list = app.get(&viewer, "/api/v1/alerts?status=open").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["items"].as_array().expect("items").len(), 1);
    assert_eq!(list.body["items"][0]["kind"], "site_offline");
    assert_eq!(list.body["items"][0]["edge_site_id"], site["id"]);
    let bad = app.get(&acme, "/api/v1/alerts?status=sleeping").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Viewers read but do not acknowledge.
    let ack_path = format!("/api/v1/alerts/{alert_id}/acknowledge");
    let denied = app.post(&viewer, &ack_path, json!({})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // Another tenant sees nothing.
    assert_eq!(
        app.get(&other, &format!("/api/v1/alerts/{alert_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&other, &ack_path, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&other, "/api/v1/alerts").await.body["items"]
            .as_array()
            .expect("items")
            .len(),
        0
    );
    assert_eq!(
        app.get(&acme, "/api/v1/alerts/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );

    let acked = app.post(&acme, &ack_path, json!({})).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text);
    assert_eq!(acked.body["status"], "acknowledged");
    assert!(acked.body["acknowledged_by"].is_string());
    assert!(acked.body["acknowledged_at"].is_i64());
    let again = app.post(&acme, &ack_path, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    let resolved = app
        .post(
            &acme,
            &format!("/api/v1/alerts/{alert_id}/resolve"),
            json!({}),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK);
    assert_eq!(resolved.body["status"], "resolved");
    let again = app
        .post(
            &acme,
            &format!("/api/v1/alerts/{alert_id}/resolve"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // Resolved: the same condition may alert again.
    raise(&app, "acme", &id(&site)).await;
}

async fn webhook_management(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let operator = app.user_with_role("acme", Role::Operator).await;

    for bad in ["ftp://x/", "not a url", "https://u:p@example.com/", ""] {
        let r = app
            .post(&acme, "/api/v1/webhooks", json!({"url": bad}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = app
        .post(
            &acme,
            "/api/v1/webhooks",
            json!({"url": "https://x/", "extra": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let denied = app
        .post(
            &operator,
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/a"}),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let created = app
        .post(
            &acme,
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/a"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64);
    let hook = id(&created.body);

    let list = app.get(&acme, "/api/v1/webhooks").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["items"].as_array().expect("items").len(), 1);
    assert!(!list.text.contains(&secret), "the secret is shown once");
    assert!(list.body["items"][0].get("secret").is_none());

    assert_eq!(
        app.get(&other, "/api/v1/webhooks").await.body["items"]
            .as_array()
            .expect("items")
            .len(),
        0
    );
    assert_eq!(
        app.delete(&other, &format!("/api/v1/webhooks/{hook}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&other, &format!("/api/v1/webhooks/{hook}/deliveries"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let deliveries = app
        .get(&acme, &format!("/api/v1/webhooks/{hook}/deliveries"))
        .await;
    assert_eq!(deliveries.status, StatusCode::OK);
    assert_eq!(
        app.delete(&acme, &format!("/api/v1/webhooks/{hook}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&acme, &format!("/api/v1/webhooks/{hook}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// A request the receiver got.
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 receiver answering with `statuses` in turn (then 200).
async fn receiver(statuses: Vec<u16>) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (None, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    break (Some(pos + 4), length);
                }
            };
            let Some(head_end) = head_end else { continue };
            while buf.len() < head_end + length {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let status = statuses.next().unwrap_or(200);
            let _ = conn
                .write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
            let _ = tx.send(Received {
                headers,
                body: buf[head_end..].to_vec(),
            });
        }
    });
    (port, rx)
}

async fn webhook_delivery_is_signed_retried_and_logged(db: Db) {
    // The receiver is on loopback: this install allows it as a webhook target.
    let app = spawn_app_with(db, |s| {
        s.job_workers = 1;
        s.webhooks.allow_internal = vec!["127.0.0.0/8".parse().expect("range")];
    })
    .await;
    let acme = app.tenant("acme").await;
    let (port, mut rx) = receiver(vec![500]).await;
    let created = app
        .post(
            &acme,
            "/api/v1/webhooks",
            json!({"url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().expect("secret").to_string();
    let hook = id(&created.body);
    let site = app.create_site(&acme, "NYC Office", "nyc-office").await;
    let alert_id = raise(&app, "acme", &id(&site)).await;
    let t = app.store.tenant_by_slug("acme").await.expect("tenant");
    let alert = app
        .store
        .scoped(TenantScope::for_system_task(t.id))
        .alert(alert_id.parse().expect("id"))
        .await
        .expect("alert");
    serviceradar_health::webhooks::notify(&app.store, &alert, "alert.raised").await;

    let wait = std::time::Duration::from_secs(30);
    let first = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("first attempt")
        .expect("req");
    let second = tokio::time::timeout(wait, rx.recv())
        .await
        .expect("retry")
        .expect("req");
    for r in [&first, &second] {
        let ts = r.header("x-serviceradar-timestamp").expect("timestamp");
        let sig = r.header("x-serviceradar-signature").expect("signature");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["event"], "alert.raised");
        assert_eq!(body["alert"]["id"], alert_id.as_str());
        assert_eq!(r.header("x-serviceradar-event"), Some("alert.raised"));
    }
    // The delivery log has both attempts (the job records before finishing).
    let deadline = std::time::Instant::now() + wait;
    loop {
        let log = app
            .get(&acme, &format!("/api/v1/webhooks/{hook}/deliveries"))
            .await;
        let items = log.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 {
            assert_eq!(items[0]["status_code"], 500);
            assert!(items[0]["error"].is_string());
            assert_eq!(items[1]["status_code"], 200);
            assert!(items[1]["error"].is_null());
            assert_eq!(items[1]["attempt"], 2);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", log.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Issue 11 finding 2: webhooks reached internal addresses (SSRF) in every
/// notation. Without an operator allowance they are refused at creation
/// (400 on `url`, nothing stored); a loopback receiver that only an allowed
/// range may reach is refused when the allowance is missing.
async fn webhooks_to_internal_addresses_are_refused(db: Db) {
    let app = spawn_app(db).await;
    let acme = app.tenant("acme").await;
    for url in [
        "http://127.0.0.1:9000/x",
        "http://localhost:9000/x",
        "http://LOCALHOST./x",
        "http://api.localhost/x",
        "http://[::1]/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",
        "http://0x7f.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://172.20.0.1/x",
        "http://100.64.0.1/x",
        "http://[fd00::1]/x",
        "http://224.0.0.1/x",
    ] {
        let r = app
            .post(&acme, "/api/v1/webhooks", json!({"url": url}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
        assert_eq!(r.body["error"]["fields"][0]["field"], "url", "{url}");
    }
    let list = app.get(&acme, "/api/v1/webhooks").await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(0));
    // Public hosts are still fine.
    let ok = app
        .post(
            &acme,
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
}
