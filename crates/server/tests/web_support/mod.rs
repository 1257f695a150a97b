//! Helpers for the web UI's tests: an app whose health service the test can
//! drive, and a browser-like HTTP client (no redirects followed, the session
//! cookie kept by hand, the CSRF token read from the page's `meta` tag).

#![allow(dead_code)]

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;
use serviceradar_health::Health;
use serviceradar_server::app::{Application, Settings};

use super::support::{self, Caller, Db, OWNER_PASSWORD, TestApp};

/// A running app and its health service.
pub struct WebApp {
    pub app: TestApp,
    pub health: Health,
}

/// Starts an app (like `support::spawn_app_with`) keeping its `Health`.
pub async fn spawn(db: Db, configure: impl FnOnce(&mut Settings)) -> WebApp {
    support::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
        Db::Postgres => serviceradar_testkit::postgres().create_database(),
    };
    spawn_on(&url, dir, configure).await
}

/// Starts an app on the database `url` (a second replica of another app).
pub async fn spawn_on(
    url: &str,
    dir: tempfile::TempDir,
    configure: impl FnOnce(&mut Settings),
) -> WebApp {
    support::init();
    let url = url.to_string();
    let mut settings = Settings::new(url);
    settings.bootstrap.admin_password = Some(OWNER_PASSWORD.into());
    settings.job_workers = 0;
    configure(&mut settings);
    let app = Application::build(settings).await.expect("build app");
    let health = app.health().clone();
    let test_app = TestApp::from_application(app, dir);
    WebApp {
        app: test_app,
        health,
    }
}

/// Percent-encodes a form.
pub fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A response.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A browser-like client of the web UI.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(c) => request.header("cookie", format!("sr_session={c}")),
            None => request,
        };
        let resp = request.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// Posts `pairs` as a form, with `csrf` as its `csrf_token` field when given.
    pub async fn post(&self, path: &str, pairs: &[(&str, &str)], csrf: Option<&str>) -> Page {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        if let Some(token) = csrf {
            all.push(("csrf_token", token));
        }
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&all)),
        )
        .await
    }

    /// Posts with the session's own CSRF token.
    pub async fn submit(&self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        self.post(path, pairs, Some(&csrf)).await
    }

    /// Posts a form as a page of another site would (its `Origin`).
    pub async fn send_cross_origin(&self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        let csrf = self.csrf.clone();
        all.push(("csrf_token", &csrf));
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", "https://evil.example")
                .body(form(&all)),
        )
        .await
    }

    /// Signs in through the form and reads the CSRF token from the next page.
    pub async fn sign_in(&mut self, tenant: &str, email: &str, password: &str) {
        let page = self
            .post(
                "/sign-in",
                &[("tenant", tenant), ("email", email), ("password", password)],
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let set_cookie = page
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("sr_session="))
            .expect("session cookie")
            .to_string();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        self.cookie = Some(
            set_cookie
                .trim_start_matches("sr_session=")
                .split(';')
                .next()
                .unwrap_or("")
                .to_string(),
        );
        let home = self.get("/admin/edge-sites").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        self.csrf = meta_csrf(&home.body);
    }
}

/// The CSRF token of a page (`<meta name="csrf-token" content="...">`).
pub fn meta_csrf(body: &str) -> String {
    body.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf meta tag")
        .to_string()
}

/// Creates a user with a password through the API (as `owner`).
pub async fn user_with_password(app: &TestApp, owner: &Caller, role: &str) -> String {
    let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
    let reply = app
        .post(
            owner,
            "/api/v1/users",
            json!({"email": email, "role": role, "password": OWNER_PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    email
}

/// The owner's e-mail of a tenant made by `TestApp::tenant`.
pub fn owner_email(tenant: &str) -> String {
    format!("owner@{tenant}.example.com")
}
