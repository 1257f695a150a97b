//! Types that hold secrets never print them in `Debug` (which is what a
//! `tracing` field with `?value`, a panic message or a `{:?}` in a log shows):
//! passwords in login and user requests and in the server's flags, created
//! tokens and webhook secrets, the master key, session cookies and CSRF
//! tokens. Each type is built with a known secret and formatted; the secret
//! must not appear.

use clap::Parser;
use serviceradar_control::alerts::CreatedWebhook;
use serviceradar_control::sessions::{Login, NewSession};
use serviceradar_control::tokens::CreatedToken;
use serviceradar_control::users::{CreateUser, CreatedUser, UpdateUser};
use serviceradar_domain::policy::{Role, ScopeSet};
use serviceradar_domain::resources::{ApiToken, User};
use serviceradar_domain::validate::Email;
use serviceradar_domain::{ApiTokenId, TenantId, UserId};
use serviceradar_identity::MasterKeySource;
use serviceradar_provisioning::bootstrap::{BootstrapAdmin, BootstrapSettings};
use serviceradar_server::config::ServeConfig;
use serviceradar_store::SessionRecord;
use serviceradar_store::health::Webhook;

const SECRET: &str = "s3cret-Value-that-must-not-print";

fn assert_hidden(what: &str, debug: String) {
    assert!(!debug.contains(SECRET), "{what} prints its secret: {debug}");
}

fn user() -> User {
    User {
        id: UserId::new(),
        tenant_id: TenantId::new(),
        email: Email::parse("a@example.com").expect("email"),
        role: Role::Admin,
        created_at: 0,
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

#[test]
fn secrets_never_appear_in_debug_output() {
    assert_hidden(
        "Login",
        format!(
            "{:?}",
            Login {
                tenant: "acme".into(),
                email: "a@example.com".into(),
                password: SECRET.into()
            }
        ),
    );
    assert_hidden(
        "CreateUser",
        format!(
            "{:?}",
            CreateUser {
                email: "a@example.com".into(),
                role: "admin".into(),
                password: Some(SECRET.into())
            }
        ),
    );
    assert_hidden(
        "UpdateUser",
        format!(
            "{:?}",
            UpdateUser {
                role: None,
                password: Some(SECRET.into()),
                current_password: Some(SECRET.into())
            }
        ),
    );
    assert_hidden(
        "CreatedUser",
        format!(
            "{:?}",
            CreatedUser {
                user: user(),
                initial_password: Some(SECRET.into())
            }
        ),
    );
    let token = ApiToken {
        id: ApiTokenId::new(),
        tenant_id: TenantId::new(),
        user_id: UserId::new(),
        name: "cli".into(),
        scopes: ScopeSet::ALL,
        created_at: 0,
        expires_at: 1,
        revoked_at: None,
        last_used_at: None,
    };
    assert_hidden(
        "CreatedToken",
        format!(
            "{:?}",
            CreatedToken {
                token,
                secret: SECRET.into()
            }
        ),
    );
    let webhook = Webhook {
        id: uuid::Uuid::now_v7(),
        tenant_id: TenantId::new(),
        url: "https://hooks.example.com/x".into(),
        created_at: 0,
    };
    assert_hidden(
        "CreatedWebhook",
        format!(
            "{:?}",
            CreatedWebhook {
                webhook,
                secret: SECRET.into()
            }
        ),
    );
    assert_hidden(
        "NewSession",
        format!(
            "{:?}",
            NewSession {
                user: user(),
                cookie: SECRET.into(),
                csrf_token: SECRET.into(),
                expires_at: 0,
                max_age_secs: 0
            }
        ),
    );
    assert_hidden(
        "SessionRecord",
        format!(
            "{:?}",
            SessionRecord {
                tenant_id: TenantId::new(),
                user_id: UserId::new(),
                role: Role::Admin,
                csrf_token: SECRET.into(),
                expires_at: 0
            }
        ),
    );
    assert_hidden(
        "BootstrapSettings",
        format!(
            "{:?}",
            BootstrapSettings {
                tenant: "default".into(),
                admin_email: "a@example.com".into(),
                admin_password: Some(SECRET.into())
            }
        ),
    );
    assert_hidden(
        "BootstrapAdmin",
        format!(
            "{:?}",
            BootstrapAdmin {
                tenant: "default".into(),
                email: "a@example.com".into(),
                generated_password: Some(SECRET.into())
            }
        ),
    );
    assert_hidden(
        "MasterKeySource",
        format!(
            "{:?}",
            MasterKeySource::Text(zeroize::Zeroizing::new(SECRET.into()))
        ),
    );
    // The server's own flags: the admin password and the master key text.
    let cli = Cli::parse_from([
        "serviceradar-core",
        "--admin-password",
        SECRET,
        "--master-key",
        SECRET,
    ]);
    assert_hidden("ServeConfig", format!("{:?}", cli.serve));
    assert_hidden("Settings", format!("{:?}", cli.serve.settings()));
    // Enrollment: the token in a redemption request, a created token, the
    // signing key.
    let request: serviceradar_domain::enrollment::RedeemRequest =
        serde_json::from_value(serde_json::json!({
            "token": SECRET, "host_fingerprint": "00", "hostname": "h"
        }))
        .expect("request");
    assert_hidden("RedeemRequest", format!("{request:?}"));
    let created = serviceradar_control::enrollment::CreatedEnrollmentToken {
        token: serviceradar_control::enrollment::EnrollmentTokenView {
            id: String::new(),
            site_id: String::new(),
            scope: "site".into(),
            status: "issued",
            uses: 0,
            max_uses: 1,
            created_by: None,
            created_at: 0,
            expires_at: 0,
            revoked_at: None,
            agent_mode: "dial_out",
            agent_endpoint: None,
            poll_interval_secs: None,
        },
        secret: serviceradar_domain::Secret::new(SECRET.to_string()),
        command: serviceradar_domain::Secret::new(format!("site init --token '{SECRET}'")),
    };
    assert_hidden("CreatedEnrollmentToken", format!("{created:?}"));
    let key = serviceradar_identity::EnrollmentKey {
        pkcs8: zeroize::Zeroizing::new(SECRET.as_bytes().to_vec()),
        public: vec![1, 2, 3],
    };
    assert_hidden("EnrollmentKey", format!("{key:?}"));
    let bytes = format!("{:?}", SECRET.as_bytes());
    assert!(!format!("{key:?}").contains(&bytes[1..20]));
}
