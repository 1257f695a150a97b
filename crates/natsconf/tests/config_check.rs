//! Rendered configs against the real `nats-server`: golden files, `nats-server -t`
//! on several input variations, and injection attempts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Ca, Identities, poll, subdir, user_creds, write, write_pair};
use serviceradar_natsconf::jwt::{AccountClaims, KeyKind, NKey, Operator};
use serviceradar_natsconf::syntax::quote;
use serviceradar_natsconf::{
    ConfigError, HubConfigInput, LeafConfigInput, TlsFiles, render_hub_config, render_leaf_config,
};
use serviceradar_testkit::{NatsServer, check_nats_config, free_port};

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
    );
}

/// Keys derived from fixed bytes, so the hub golden file is reproducible.
fn fixed_key(kind: nkeys::KeyPairType, byte: u8) -> NKey {
    let pair = nkeys::KeyPair::new_from_raw(kind, [byte; 32]).expect("raw key");
    NKey::from_seed(&pair.seed().expect("seed")).expect("restore key")
}

#[test]
fn leaf_golden() {
    let input = LeafConfigInput::new("acme", "nyc-office", "tls://hub.example.com:7422");
    golden("leaf_default.conf", &render_leaf_config(&input).unwrap());
}

#[test]
fn hub_golden() {
    const IAT: i64 = 1_767_225_600; // 2026-01-01
    let sys = fixed_key(nkeys::KeyPairType::Account, 2);
    let tenant = fixed_key(nkeys::KeyPairType::Account, 3);
    let operator = Operator::from_key("serviceradar", fixed_key(nkeys::KeyPairType::Operator, 1))
        .unwrap()
        .with_system_account(&sys.public_key())
        .unwrap();
    let mut sys_claims = AccountClaims::system(&sys.public_key());
    sys_claims.issued_at = Some(IAT);
    let mut tenant_claims = AccountClaims::tenant(&tenant.public_key(), "acme");
    tenant_claims.issued_at = Some(IAT);
    let input = HubConfigInput::new(
        &operator.operator_jwt_issued_at(Some(IAT)).unwrap(),
        &sys.public_key(),
        vec![
            operator.sign_account(&sys_claims).unwrap(),
            operator.sign_account(&tenant_claims).unwrap(),
        ],
        TlsFiles::new(
            "/etc/serviceradar/nats/certs/hub-server.pem",
            "/etc/serviceradar/nats/certs/hub-server-key.pem",
            "/etc/serviceradar/nats/certs/root-ca.pem",
        ),
    );
    golden("hub_default.conf", &render_hub_config(&input).unwrap());
}

/// Certificates and files for configs that `nats-server -t` can load.
struct Files {
    dir: tempfile::TempDir,
    leaf_server: (String, String),
    leaf_client: (String, String),
    hub_server: (String, String),
    tenant_ca: String,
    root_ca: String,
    creds: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::root("test root");
    let tenant = root.intermediate("tenant acme");
    let ids = Identities::new();
    Files {
        leaf_server: write_pair(
            dir.path(),
            "leaf-server",
            &tenant.issue("leaf.nyc.acme.serviceradar", &["127.0.0.1", "localhost"]),
        ),
        leaf_client: write_pair(
            dir.path(),
            "leaf-client",
            &tenant.issue("leaf.nyc.acme.serviceradar", &[]),
        ),
        hub_server: write_pair(
            dir.path(),
            "hub-server",
            &root.issue("hub", &["127.0.0.1", "localhost"]),
        ),
        tenant_ca: write(dir.path(), "tenant-ca.pem", &tenant.cert_pem),
        root_ca: write(dir.path(), "root-ca.pem", &root.cert_pem),
        creds: user_creds(dir.path(), &ids.tenant, "leaf").1,
        dir,
    }
}

fn leaf_input(f: &Files, site: &str) -> LeafConfigInput {
    let mut input = LeafConfigInput::new("acme", site, "tls://127.0.0.1:7422");
    input.client_tls = TlsFiles::new(&f.leaf_server.0, &f.leaf_server.1, &f.tenant_ca);
    input.remote_tls = TlsFiles::new(&f.leaf_client.0, &f.leaf_client.1, &f.root_ca);
    input.credentials_file = f.creds.clone();
    input.jetstream_store_dir = subdir(f.dir.path(), &format!("js-{site}"));
    input
}

fn check(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    if let Err(err) = check_nats_config(&path) {
        panic!("nats-server -t rejected {name}: {err}\n{text}");
    }
}

#[test]
fn leaf_variations_pass_nats_server_t() {
    let f = files();
    let dir = f.dir.path();

    check(
        dir,
        "leaf-default.conf",
        &render_leaf_config(&leaf_input(&f, "nyc")).unwrap(),
    );

    let mut v = leaf_input(&f, "factory-3");
    v.client_listen = "[::]:14222".into();
    v.monitoring_listen = None;
    v.max_memory_store = Some(256 * 1024 * 1024);
    v.hub_url = "nats://hub.example.com:17422".into();
    v.server_name = Some("leaf.custom_name-1".into());
    check(dir, "leaf-ipv6.conf", &render_leaf_config(&v).unwrap());

    let mut v = leaf_input(&f, "lab");
    v.client_listen = "10.0.1.50:4222".into();
    v.monitoring_listen = Some("0.0.0.0:18222".into());
    v.jetstream_domain = Some("custom_domain-1".into());
    v.hub_url = "tls://[::1]:7422".into();
    v.pid_file = Some(format!("{}/leaf.pid", dir.display()));
    check(
        dir,
        "leaf-public-monitoring.conf",
        &render_leaf_config(&v).unwrap(),
    );

    // A long tenant/site pair: the derived domain is shortened but still valid.
    let mut v = leaf_input(&f, &"s".repeat(63));
    v.tenant_slug = "t".repeat(63);
    check(dir, "leaf-long.conf", &render_leaf_config(&v).unwrap());
}

fn hub_input(f: &Files, ids: &Identities, extra_tenants: usize) -> HubConfigInput {
    let mut accounts = vec![ids.sys_jwt(), ids.tenant_jwt()];
    for i in 0..extra_tenants {
        let key = NKey::generate(KeyKind::Account);
        accounts.push(
            ids.operator
                .sign_account(&AccountClaims::tenant(&key.public_key(), &format!("t{i}")))
                .unwrap(),
        );
    }
    let mut input = HubConfigInput::new(
        &ids.operator.operator_jwt().unwrap(),
        &ids.sys.public_key(),
        accounts,
        TlsFiles::new(&f.hub_server.0, &f.hub_server.1, &f.root_ca),
    );
    input.jetstream_store_dir = subdir(f.dir.path(), "hub-js");
    input.resolver_dir = subdir(f.dir.path(), "hub-accounts");
    input
}

#[test]
fn hub_variations_pass_nats_server_t() {
    let f = files();
    let dir = f.dir.path();
    let ids = Identities::new();

    check(
        dir,
        "hub-default.conf",
        &render_hub_config(&hub_input(&f, &ids, 0)).unwrap(),
    );

    let mut v = hub_input(&f, &ids, 5);
    v.client_tls = Some(TlsFiles::new(&f.hub_server.0, &f.hub_server.1, &f.root_ca));
    v.monitoring_listen = None;
    v.max_file_store = Some(1 << 30);
    v.max_memory_store = Some(1 << 28);
    v.client_listen = "[::]:14222".into();
    v.leafnode_listen = "[::]:17422".into();
    v.server_name = "hub-a.eu-1".into();
    check(dir, "hub-tls.conf", &render_hub_config(&v).unwrap());

    let mut v = hub_input(&f, &ids, 0);
    v.jetstream_domain = "platform_hub".into();
    v.monitoring_listen = Some("[::1]:18222".into());
    check(dir, "hub-custom.conf", &render_hub_config(&v).unwrap());
}

const PAYLOADS: &[&str] = &[
    "x\"y",
    "x\ny",
    "${X}",
    "$(rm -rf /)",
    "x}",
    "include /etc/passwd",
    "x\ninclude /etc/passwd",
    "x\" }\ninclude \"/etc/passwd",
    "x#y",
    "x;y",
    "x\\y",
    "x\r\ny",
    "x\u{0}y",
];

fn assert_rejected(what: &str, payload: &str, result: Result<String, ConfigError>) {
    match result {
        Ok(text) => panic!("{what} = {payload:?} was rendered:\n{text}"),
        Err(err) => {
            let message = err.to_string();
            assert!(
                !message.contains('\n'),
                "error message for {what} carries a raw newline: {message}"
            );
        }
    }
}

#[test]
fn leaf_injection_attempts_are_rejected() {
    let base = LeafConfigInput::new("acme", "nyc", "tls://hub.example.com:7422");
    type Setter = fn(&mut LeafConfigInput, String);
    let fields: &[(&str, Setter)] = &[
        ("tenant_slug", |i, v| i.tenant_slug = v),
        ("site_slug", |i, v| i.site_slug = v),
        ("server_name", |i, v| i.server_name = Some(v)),
        ("client_listen", |i, v| {
            i.client_listen = format!("{v}:4222")
        }),
        ("client_listen port", |i, v| {
            i.client_listen = format!("0.0.0.0:{v}")
        }),
        ("client cert_file", |i, v| {
            i.client_tls.cert_file = format!("/etc/{v}")
        }),
        ("client key_file", |i, v| i.client_tls.key_file = v),
        ("client ca_file", |i, v| i.client_tls.ca_file = v),
        ("monitoring_listen", |i, v| {
            i.monitoring_listen = Some(format!("127.0.0.1:8222{v}"))
        }),
        ("jetstream_store_dir", |i, v| {
            i.jetstream_store_dir = format!("/var/{v}")
        }),
        ("jetstream_domain", |i, v| i.jetstream_domain = Some(v)),
        ("hub_url", |i, v| {
            i.hub_url = format!("tls://hub.example.com:7422{v}")
        }),
        ("hub_url host", |i, v| i.hub_url = format!("tls://{v}:7422")),
        ("credentials_file", |i, v| i.credentials_file = v),
        ("remote cert_file", |i, v| i.remote_tls.cert_file = v),
        ("remote key_file", |i, v| i.remote_tls.key_file = v),
        ("remote ca_file", |i, v| {
            i.remote_tls.ca_file = format!("{v}/ca.pem")
        }),
    ];
    for (name, set) in fields {
        for payload in PAYLOADS {
            let mut input = base.clone();
            set(&mut input, (*payload).to_owned());
            assert_rejected(name, payload, render_leaf_config(&input));
        }
    }
}

#[test]
fn hub_injection_attempts_are_rejected() {
    let ids = Identities::new();
    let base = HubConfigInput::new(
        &ids.operator.operator_jwt().unwrap(),
        &ids.sys.public_key(),
        vec![ids.sys_jwt(), ids.tenant_jwt()],
        TlsFiles::new("/c/hub.pem", "/c/hub-key.pem", "/c/root.pem"),
    );
    render_hub_config(&base).expect("the base input renders");
    type Setter = fn(&mut HubConfigInput, String);
    let fields: &[(&str, Setter)] = &[
        ("server_name", |i, v| i.server_name = v),
        ("client_listen", |i, v| {
            i.client_listen = format!("{v}:4222")
        }),
        ("monitoring_listen", |i, v| {
            i.monitoring_listen = Some(format!("{v}:8222"))
        }),
        ("leafnode_listen", |i, v| {
            i.leafnode_listen = format!("0.0.0.0:7422{v}")
        }),
        ("jetstream_store_dir", |i, v| i.jetstream_store_dir = v),
        ("jetstream_domain", |i, v| i.jetstream_domain = v),
        ("leafnode cert_file", |i, v| i.leafnode_tls.cert_file = v),
        ("client tls key_file", |i, v| {
            i.client_tls = Some(TlsFiles::new("/c/a.pem", &v, "/c/ca.pem"))
        }),
        ("resolver_dir", |i, v| i.resolver_dir = format!("/var/{v}")),
        ("operator_jwt", |i, v| i.operator_jwt.push_str(&v)),
        ("system_account", |i, v| i.system_account.push_str(&v)),
        ("account jwt", |i, v| i.account_jwts[1].push_str(&v)),
    ];
    for (name, set) in fields {
        for payload in PAYLOADS {
            let mut input = base.clone();
            set(&mut input, (*payload).to_owned());
            assert_rejected(name, payload, render_hub_config(&input));
        }
    }
}

/// The second line of defence: even a hostile string that validation would never
/// let through is parsed by nats-server as exactly that string when quoted.
#[test]
fn quoted_strings_reach_nats_server_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // nats-server refuses spaces in server names; tabs stand in for them.
    let hostile = "x\"}\n${X}\t$(rm\t-rf\t/)\ninclude\t/etc/passwd\t#;//\\\u{1}";
    let port = free_port();
    let monitor = free_port();
    let config = format!(
        "server_name: {}\nhost: \"127.0.0.1\"\nport: {port}\nhttp: \"127.0.0.1:{monitor}\"\n",
        quote(hostile)
    );
    let server = NatsServer::start(dir.path(), "quoted", &config, monitor)
        .unwrap_or_else(|e| panic!("server refused the quoted config: {e}\n{config}"));
    let name = poll(Duration::from_secs(10), || {
        common::http_json(monitor, "/varz")
            .and_then(|v| v["server_name"].as_str().map(str::to_owned))
    })
    .unwrap_or_else(|| panic!("no /varz; log:\n{}", server.log()));
    assert_eq!(name, hostile);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Issue 11 (property fuzzing): any valid input — slugs of any valid
    /// shape and length, listeners, hub hosts and ports, limits — renders,
    /// and `nats-server -t` accepts what it renders.
    #[test]
    fn every_accepted_leaf_input_passes_nats_server_t(
        tenant in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        site in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        port in 1024u16..65535,
        ipv6 in proptest::bool::ANY,
        monitoring in proptest::option::of(1024u16..65535),
        hub_host in "[a-z]([a-z0-9-]{0,19}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,19}[a-z0-9])?){0,3}",
        hub_port in 1u16..65535,
        scheme in proptest::sample::select(vec!["tls", "nats"]),
        memory in proptest::option::of(1u64..(1 << 40)),
    ) {
        let f = files();
        let mut input = leaf_input(&f, &site);
        input.tenant_slug = tenant;
        input.client_listen = if ipv6 { format!("[::]:{port}") } else { format!("0.0.0.0:{port}") };
        input.monitoring_listen = monitoring.map(|p| format!("127.0.0.1:{p}"));
        input.hub_url = format!("{scheme}://{hub_host}:{hub_port}");
        input.max_memory_store = memory;
        let text = render_leaf_config(&input);
        proptest::prop_assert!(text.is_ok(), "{:?}", text);
        check(f.dir.path(), "leaf-prop.conf", &text.unwrap());
    }
}
