//! Helpers shared by the integration tests: a test PKI made with rcgen, NATS
//! identities, file writing, a tiny HTTP GET for the monitoring port, polling.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serviceradar_natsconf::jwt::{AccountClaims, KeyKind, NKey, Operator, UserClaims, creds_file};

/// A CA: its certificate (PEM), the chain above it that peers do not hold (for an
/// intermediate: itself), and an rcgen issuer.
pub struct Ca {
    pub cert_pem: String,
    /// Certificates to append after an end-entity cert issued by this CA so a
    /// peer holding only the root can build the chain.
    pub chain_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str, path_len: Option<u8>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

impl Ca {
    /// A self-signed root.
    pub fn root(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate root key");
        let params = ca_params(name, None);
        let cert = params.self_signed(&key).expect("self-sign root");
        Self {
            cert_pem: cert.pem(),
            chain_pem: String::new(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate (path length 0) under this CA, as a tenant CA is.
    pub fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("generate intermediate key");
        let params = ca_params(name, Some(0));
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign intermediate");
        let pem = cert.pem();
        Self {
            chain_pem: format!("{pem}{}", self.chain_pem),
            cert_pem: pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// An end-entity certificate with the given CN and SANs (DNS names or IPs),
    /// usable as TLS server and client. Returns (cert + chain PEM, key PEM).
    pub fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        self.issue_with(cn, sans, |_| {})
    }

    /// Like [`Ca::issue`], but valid only during 2020 (long expired).
    pub fn issue_expired(&self, cn: &str, sans: &[&str]) -> (String, String) {
        self.issue_with(cn, sans, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        cn: &str,
        sans: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate().expect("generate key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("sign cert");
        (
            format!("{}{}", cert.pem(), self.chain_pem),
            key.serialize_pem(),
        )
    }
}

/// Writes `contents` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// A certificate and key written to `dir` as `{stem}.pem` and `{stem}-key.pem`.
pub fn write_pair(dir: &Path, stem: &str, pair: &(String, String)) -> (String, String) {
    (
        write(dir, &format!("{stem}.pem"), &pair.0),
        write(dir, &format!("{stem}-key.pem"), &pair.1),
    )
}

/// Operator, system account and a tenant account with its key.
pub struct Identities {
    pub operator: Operator,
    pub sys: NKey,
    pub tenant: NKey,
}

impl Identities {
    pub fn new() -> Self {
        let sys = NKey::generate(KeyKind::Account);
        let operator = Operator::generate("serviceradar-test")
            .expect("operator")
            .with_system_account(&sys.public_key())
            .expect("system account");
        Self {
            operator,
            sys,
            tenant: NKey::generate(KeyKind::Account),
        }
    }

    pub fn sys_jwt(&self) -> String {
        self.operator
            .sign_account(&AccountClaims::system(&self.sys.public_key()))
            .expect("sign system account")
    }

    pub fn tenant_claims(&self) -> AccountClaims {
        AccountClaims::tenant(&self.tenant.public_key(), "acme")
    }

    pub fn tenant_jwt(&self) -> String {
        self.operator
            .sign_account(&self.tenant_claims())
            .expect("sign tenant account")
    }
}

/// A new user of `account`, written as a creds file `dir/{name}.creds`.
/// Returns (user key, creds path).
pub fn user_creds(dir: &Path, account: &NKey, name: &str) -> (NKey, String) {
    let user = NKey::generate(KeyKind::User);
    let jwt = UserClaims::new(&user.public_key(), name)
        .sign(account)
        .expect("sign user");
    let seed = user.seed().expect("seed");
    let creds = creds_file(&jwt, &seed).expect("creds");
    let path = write(dir, &format!("{name}.creds"), &creds);
    (user, path)
}

// Not every test binary that includes this module uses both.
#[allow(unused_imports)]
pub use serviceradar_testkit::{http_get, leafz};

/// `GET path` parsed as JSON.
pub fn http_json(port: u16, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(port, path)?).ok()
}

/// Polls `check` every 100 ms until it returns `Some`, or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A subdirectory of `dir`, created.
pub fn subdir(dir: &Path, name: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::create_dir_all(&path).expect("create dir");
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// Waits until 127.0.0.1:port accepts connections.
pub fn wait_port(port: u16) {
    serviceradar_testkit::wait_for_port(port, "listener", Duration::from_secs(15))
        .expect("port opens");
}
