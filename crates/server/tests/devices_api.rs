//! Devices at the edge through the API (issue 16), on SQLite and
//! PostgreSQL: register, list, read and revoke a site's devices; another
//! tenant's device and site are 404; a viewer cannot register; bad names and
//! limits are precise 400s that write nothing; a certificate issued for a
//! device's CSR verifies with `openssl verify` against the tenant chain and
//! names the device (SPIFFE id and CN); a revoked device gets none.

mod support;

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use serviceradar_domain::policy::Role;
use support::{Db, TestApp, spawn_app};

both_backends!(
    devices_are_registered_listed_and_revoked,
    a_device_certificate_is_issued_for_its_csr
);

async fn register(app: &TestApp, who: &support::Caller, site: &str, body: Value) -> support::Reply {
    app.post(who, &format!("/api/v1/edge-sites/{site}/devices"), body)
        .await
}

async fn device_names(
    app: &TestApp,
    who: &support::Caller,
    site: &str,
    query: &str,
) -> Vec<String> {
    let reply = app
        .get(who, &format!("/api/v1/edge-sites/{site}/devices{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["name"].as_str().expect("name").to_owned())
        .collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

async fn devices_are_registered_listed_and_revoked(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    let site = id_of(&app.create_site(&owner, "Edge", "edge").await);
    let other_site = id_of(&app.create_site(&owner, "Lab", "lab").await);

    // Defaults from the seed.
    let reply = register(&app, &owner, &site, json!({"name": "sensor-1"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let sensor = reply.body.clone();
    assert_eq!(sensor["status"], "active");
    assert_eq!(sensor["edge_site_id"], site.as_str());
    assert_eq!(sensor["max_payload"], 65536);
    assert_eq!(sensor["max_subscriptions"], 100);
    assert_eq!(sensor["data_rate"], 1048576);
    assert_eq!(sensor["cert_serial"], Value::Null);
    // Limits of one's own choosing.
    let reply = register(
        &app,
        &owner,
        &site,
        json!({"name": "camera", "max_payload": 1048576, "max_subscriptions": 5, "data_rate": 4096}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["max_subscriptions"], 5);
    let camera = id_of(&reply.body);

    // A name is unique per site, not per tenant.
    let dup = register(&app, &owner, &site, json!({"name": "sensor-1"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text);
    let elsewhere = register(&app, &owner, &other_site, json!({"name": "sensor-1"})).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.text);

    // Bad input: every bad field named, nothing written.
    let bad = register(
        &app,
        &owner,
        &site,
        json!({"name": "Sensor 2", "max_payload": 0, "max_subscriptions": 10001, "data_rate": -1}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let fields: Vec<&str> = bad.body["error"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("fields: {}", bad.text))
        .iter()
        .map(|f| f["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        ["name", "max_payload", "max_subscriptions", "data_rate"],
        "{}",
        bad.text
    );
    let too_big = register(
        &app,
        &owner,
        &site,
        json!({"name": "big", "max_payload": 1048577}),
    )
    .await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST, "{}", too_big.text);
    let unknown = register(&app, &owner, &site, json!({"name": "x", "owner": "me"})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    assert_eq!(
        device_names(&app, &owner, &site, "").await,
        ["sensor-1", "camera"]
    );

    // Reading one; a device of another site through this site's path is 404.
    let path = format!("/api/v1/edge-sites/{site}/devices/{camera}");
    let got = app.get(&owner, &path).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(got.body["name"], "camera");
    let wrong_site = app
        .get(
            &owner,
            &format!("/api/v1/edge-sites/{other_site}/devices/{camera}"),
        )
        .await;
    assert_eq!(
        wrong_site.status,
        StatusCode::NOT_FOUND,
        "{}",
        wrong_site.text
    );

    // Another tenant: the site and the device do not exist for it.
    assert_eq!(app.get(&beta, &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&beta, &format!("/api/v1/edge-sites/{site}/devices"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        register(&app, &beta, &site, json!({"name": "intruder"}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&beta, &format!("{path}/revoke"), json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A viewer reads but cannot register or revoke.
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    assert_eq!(
        device_names(&app, &viewer, &site, "").await,
        ["sensor-1", "camera"]
    );
    let denied = register(&app, &viewer, &site, json!({"name": "viewer-dev"})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);
    assert_eq!(
        app.post(&viewer, &format!("{path}/revoke"), json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // An operator may.
    let operator = app.user_with_role("acme", Role::Operator).await;
    let revoked = app
        .post(&operator, &format!("{path}/revoke"), json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert_eq!(revoked.body["status"], "revoked");
    assert!(revoked.body["revoked_at"].as_i64().is_some());
    let again = app.post(&owner, &format!("{path}/revoke"), json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(
        device_names(&app, &owner, &site, "?status=revoked").await,
        ["camera"]
    );
    assert_eq!(
        device_names(&app, &owner, &site, "?status=active").await,
        ["sensor-1"]
    );
    let bad_filter = app
        .get(
            &owner,
            &format!("/api/v1/edge-sites/{site}/devices?status=gone"),
        )
        .await;
    assert_eq!(
        bad_filter.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_filter.text
    );

    // Devices go with their site.
    assert_eq!(
        app.delete(&owner, &format!("/api/v1/edge-sites/{other_site}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&owner, &format!("/api/v1/edge-sites/{other_site}/devices"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn a_device_certificate_is_issued_for_its_csr(db: Db) {
    let app = spawn_app(db).await;
    let owner = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    let site = id_of(&app.create_site(&owner, "Edge", "edge").await);
    let device = id_of(
        &register(&app, &owner, &site, json!({"name": "sensor-1"}))
            .await
            .body,
    );
    let cert_path = format!("/api/v1/edge-sites/{site}/devices/{device}/certificate");

    // The device makes its key and CSR; only the CSR travels.
    let (key, csr) = serviceradar_pki::request::new_key_and_request("sensor-1").expect("csr");
    let reply = app.post(&owner, &cert_path, json!({"csr": csr})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!reply.text.contains("PRIVATE KEY"), "{}", reply.text);
    let chain = reply.body["certificate_pem"].as_str().expect("chain");
    let root = reply.body["root_ca_pem"].as_str().expect("root");
    let serial = reply.body["serial"].as_str().expect("serial").to_owned();
    let not_after = reply.body["not_after"].as_i64().expect("not_after");
    let week = 7 * 24 * 3600 * 1000;
    let now = serviceradar_store::now_ms();
    assert!(
        (now + week - 120_000..=now + week + 120_000).contains(&not_after),
        "7 days by default: {not_after}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = split_pem(chain);
    assert_eq!(certs.len(), 2, "device certificate then tenant CA");
    let leaf = dir.path().join("device.pem");
    let tenant_ca = dir.path().join("tenant-ca.pem");
    let root_file = dir.path().join("root.pem");
    std::fs::write(&leaf, &certs[0]).expect("write");
    std::fs::write(&tenant_ca, &certs[1]).expect("write");
    std::fs::write(&root_file, root).expect("write");
    let (ok, out) = openssl_verify(&root_file, &tenant_ca, &leaf);
    assert!(ok, "openssl verify: {out}");
    // Another tenant's CA does not vouch for it.
    let beta_site = id_of(&app.create_site(&beta, "B", "b").await);
    let beta_device = id_of(
        &register(&app, &beta, &beta_site, json!({"name": "sensor-1"}))
            .await
            .body,
    );
    let (_, beta_csr) = serviceradar_pki::request::new_key_and_request("b").expect("csr");
    let beta_cert = app
        .post(
            &beta,
            &format!("/api/v1/edge-sites/{beta_site}/devices/{beta_device}/certificate"),
            json!({"csr": beta_csr}),
        )
        .await;
    assert_eq!(beta_cert.status, StatusCode::OK, "{}", beta_cert.text);
    let beta_ca = dir.path().join("beta-ca.pem");
    std::fs::write(
        &beta_ca,
        &split_pem(beta_cert.body["certificate_pem"].as_str().expect("chain"))[1],
    )
    .expect("write");
    let (ok, _) = openssl_verify(&root_file, &beta_ca, &leaf);
    assert!(!ok, "another tenant's CA must not verify the device");

    // The names: SPIFFE id and CN (openssl's own reading).
    let text = openssl(
        &[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-serial",
            "-in",
        ],
        &leaf,
    );
    let tenant = app.store.tenant_by_slug("acme").await.expect("tenant");
    assert!(
        text.contains(&format!(
            "spiffe://serviceradar.io/tenant/{}/device/{device}",
            tenant.id
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("CN=device-{device}.edge.acme.serviceradar"))
            || text.contains(&format!("CN = device-{device}.edge.acme.serviceradar")),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("serial={serial}")),
        "{text}"
    );
    // For the device's own key.
    let key_file = dir.path().join("device-key.pem");
    std::fs::write(&key_file, key.as_bytes()).expect("write");
    assert_eq!(
        openssl(&["pkey", "-pubout", "-in"], &key_file),
        openssl(&["x509", "-noout", "-pubkey", "-in"], &leaf)
    );
    // Recorded on the device.
    let got = app
        .get(
            &owner,
            &format!("/api/v1/edge-sites/{site}/devices/{device}"),
        )
        .await;
    assert_eq!(got.body["cert_serial"], serial.as_str());
    assert_eq!(got.body["cert_not_after"], not_after);

    // Bad CSRs are 400 on the csr field; a private key is refused as a field.
    for bad in [
        "",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        key.as_str(),
    ] {
        let reply = app.post(&owner, &cert_path, json!({"csr": bad})).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        assert_eq!(
            reply.body["error"]["fields"][0]["field"], "csr",
            "{}",
            reply.text
        );
    }
    // Other tenants, viewers: no.
    assert_eq!(
        app.post(&beta, &cert_path, json!({"csr": csr}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let viewer = app.user_with_role("acme", Role::Viewer).await;
    assert_eq!(
        app.post(&viewer, &cert_path, json!({"csr": csr}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // A revoked device gets no certificate.
    let revoked = app
        .post(
            &owner,
            &format!("/api/v1/edge-sites/{site}/devices/{device}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    let refused = app.post(&owner, &cert_path, json!({"csr": csr})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
}

/// The PEM blocks of `text`, each with its armour.
fn split_pem(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| format!("{}\n", b.trim()))
        .collect()
}

fn openssl_verify(root: &Path, tenant_ca: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(tenant_ca)
        .arg(cert)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn openssl(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
