//! Identity: the platform's keyring, CAs and NATS identities, backed by the store.
//!
//! * One platform root CA and one NATS operator (with its system account),
//!   created on first need and stored with their private parts sealed under
//!   the master key.
//! * One intermediate CA and one NATS account per tenant, created lazily on
//!   first need. Creation is atomic across replicas: the first row stored wins
//!   (`INSERT ... ON CONFLICT DO NOTHING`) and every caller continues with the
//!   stored row, never with what it generated itself.
//!
//! Every sealed blob is bound to its row with associated data (see [`aad`]),
//! so a blob copied into another tenant's row does not open. Private keys and
//! seeds only exist in clear in memory, never in a log line or an API body.
//!
//! The master key comes from `SERVICERADAR_MASTER_KEY_FILE` (a file of
//! `<key_id>:<base64>` lines: the first is the current key, the others are
//! older keys still accepted for opening, for rotation) or
//! `SERVICERADAR_MASTER_KEY`; the embedded default generates a development key
//! in the data directory on first start and says so in the log.
//!
//! [`devices`]: certificates for devices registered at edge sites, for keys
//! the devices hold (CSRs), shared by operator issue and device renewal.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};

use serviceradar_domain::resources::Tenant;
use serviceradar_domain::{EdgeSiteId, TenantId, TenantScope};
use serviceradar_natsconf::jwt::JwtError;
use serviceradar_natsconf::jwt::{
    ANY_ACCOUNT, AccountClaims, CONNECTION_LEAFNODE, CONNECTION_STANDARD, CredsFile,
    ExternalAuthorization, KeyKind, NKey, Operator, UserClaims, creds_file,
};
use serviceradar_pki::ca::{DEFAULT_INTERMEDIATE_VALIDITY, DEFAULT_ROOT_VALIDITY};
use serviceradar_pki::{
    CaError, CertificateAuthority, IssueOptions, Keyring, MasterKey, SealError,
};
use serviceradar_store::{Store, StoreError};
use zeroize::Zeroizing;

pub mod devices;

pub use devices::DeviceCertificate;

/// Name of the NATS operator.
pub const OPERATOR_NAME: &str = "serviceradar";
/// Common name of the platform root CA.
pub const ROOT_CA_NAME: &str = "ServiceRadar Platform Root CA";

const ROOT_CA: &str = "root_ca";
const NATS_OPERATOR: &str = "nats_operator";
const NATS_SYSTEM_ACCOUNT: &str = "nats_system_account";
const NATS_LEAF_AUTH_ACCOUNT: &str = "nats_leaf_auth_account";
const NATS_LEAF_AUTH_SERVICE: &str = "nats_leaf_auth_service";
const NATS_PLATFORM_INGEST_ACCOUNT: &str = "nats_platform_ingest_account";
const ENROLLMENT_SIGNING_KEY: &str = "enrollment_signing_key";

/// Name of the NATS account every leaf authenticates in (see [`Pki::leaf_auth`]).
pub const LEAF_AUTH_ACCOUNT_NAME: &str = "LEAVES";
/// Tag of a leaf's NATS user naming its tenant (`sr-tenant:{tenant_id}`).
pub const LEAF_TENANT_TAG: &str = "sr-tenant:";
/// Tag of a leaf's NATS user naming its site (`sr-site:{site_id}`).
pub const LEAF_SITE_TAG: &str = "sr-site:";

/// What failed in the keyring, the CAs or the NATS identities.
///
/// Each variant names what failed and carries the cause as its
/// [`source`](std::error::Error::source). `{e}` prints this error's own
/// message; `{e:#}` appends the causes (`message: cause: cause`), as `anyhow`
/// does, so callers that log `format!("{e:#}")` keep the whole story. No
/// message holds key material: paths, names and public keys only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read, created or written.
    Io {
        /// What was being done (`"reading master key file"`, `"creating"`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The master key text or file holds no key line.
    NoMasterKey {
        /// Where the keys were read from (`"the master key text"`, `"master key file ..."`).
        origin: String,
    },
    /// A master key line could not be read, or two keys share an id.
    MasterKey {
        /// Where the keys were read from.
        origin: String,
        /// Which key (`"the master key"` or `"a previous master key"`).
        which: &'static str,
        /// The cause (never the key material).
        source: SealError,
    },
    /// A new master key could not be generated.
    GenerateMasterKey(#[source] SealError),
    /// A sealed blob did not open: another master key, another row's
    /// associated data, or tampered.
    Sealed {
        /// The blob (`"platform secret root_ca"`, `"the tenant account seed"`, ...).
        what: String,
        /// The cause.
        source: SealError,
    },
    /// A sealed blob opened but is not UTF-8 text.
    NotUtf8 {
        /// The blob.
        what: String,
        /// The cause.
        source: std::str::Utf8Error,
    },
    /// The store failed.
    Store(#[from] StoreError),
    /// Creating, loading or extending a CA failed.
    Ca {
        /// What was being done (`"opening the tenant CA key"`, ...).
        what: &'static str,
        /// The cause.
        source: CaError,
    },
    /// Creating, reading or signing a NATS key, JWT or creds file failed.
    Nats {
        /// What was being done (`"signing the tenant account JWT"`, ...).
        what: String,
        /// The cause.
        source: JwtError,
    },
    /// The stored tenant account seed does not belong to the stored public key.
    AccountKeyMismatch,
    /// The stored tenant account JWT names another account than the stored
    /// public key.
    AccountJwtMismatch,
    /// The tenant has no NATS account (yet) to revoke users in.
    NoTenantAccount,
    /// The tenant's account JWT changed under every attempt to store a
    /// revocation (concurrent writers); nothing was stored.
    RevocationContended,
    /// The enrollment token signing key could not be generated or loaded.
    EnrollmentKey(#[source] serviceradar_pki::token::TokenError),
    /// Issuing an end-entity certificate failed.
    Issue {
        /// What was being issued.
        what: &'static str,
        /// The cause.
        source: serviceradar_pki::IssueError,
    },
    /// The device is revoked (or was revoked while its certificate was
    /// being issued): no certificate.
    DeviceRevoked,
    /// A tenant's platform ingest exports or imports could not be rendered.
    PlatformIngest(#[source] serviceradar_natsconf::ConfigError),
    /// One step of creating a tenant's identity failed.
    TenantIdentity {
        /// The step (`"creating the tenant CA"`, `"creating the tenant NATS account"`).
        step: &'static str,
        /// The cause.
        source: Box<IdentityError>,
    },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { action, path, .. } => write!(f, "{action} {}", path.display()),
            Self::NoMasterKey { origin } => write!(f, "{origin} holds no key"),
            Self::MasterKey { origin, which, .. } => write!(f, "{origin}: reading {which}"),
            Self::GenerateMasterKey(_) => f.write_str("generating a master key"),
            Self::Sealed { what, .. } => write!(f, "opening {what}"),
            Self::NotUtf8 { what, .. } => write!(f, "{what} is not UTF-8 text"),
            Self::Store(_) => f.write_str("the store failed"),
            Self::Ca { what, .. } => f.write_str(what),
            Self::Nats { what, .. } => f.write_str(what),
            Self::AccountKeyMismatch => {
                f.write_str("the tenant account seed does not match its public key")
            }
            Self::AccountJwtMismatch => {
                f.write_str("the tenant's stored account JWT is another account's")
            }
            Self::NoTenantAccount => f.write_str("the tenant has no NATS account"),
            Self::RevocationContended => {
                f.write_str("the tenant's account JWT kept changing; revocation not stored")
            }
            Self::TenantIdentity { step, .. } => f.write_str(step),
            Self::PlatformIngest(_) => f.write_str("the tenant's platform ingest subjects"),
            Self::Issue { what, .. } => f.write_str(what),
            Self::DeviceRevoked => f.write_str("the device is revoked"),
            Self::EnrollmentKey(_) => f.write_str("the enrollment token signing key"),
        }?;
        if f.alternate() {
            let mut cause = self.source();
            while let Some(error) = cause {
                write!(f, ": {error}")?;
                cause = error.source();
            }
        }
        Ok(())
    }
}

fn ca_error(what: &'static str) -> impl FnOnce(CaError) -> IdentityError {
    move |source| IdentityError::Ca { what, source }
}

fn nats_error(what: &'static str) -> impl FnOnce(JwtError) -> IdentityError {
    move |source| IdentityError::Nats {
        what: what.to_owned(),
        source,
    }
}

/// Like [`nats_error`], naming `name` after `what` (formatted on failure only).
fn nats_error_of<'a>(
    what: &'static str,
    name: &'a str,
) -> impl FnOnce(JwtError) -> IdentityError + 'a {
    move |source| IdentityError::Nats {
        what: format!("{what} {name}"),
        source,
    }
}

/// The enrollment token signing key: its PKCS#8 document (secret) and its
/// public key.
pub struct EnrollmentKey {
    /// PKCS#8 of the Ed25519 key.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The 32-byte public key.
    pub public: Vec<u8>,
}

impl fmt::Debug for EnrollmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentKey")
            .field("public", &hex::encode(&self.public))
            .field("pkcs8", &"...")
            .finish()
    }
}

/// Associated data binding each sealed blob to its row.
pub mod aad {
    use std::fmt::Display;

    /// A platform secret's sealed part.
    pub fn platform(name: &str) -> Vec<u8> {
        format!("platform:{name}:secret").into_bytes()
    }
    /// A tenant CA's key.
    pub fn tenant_ca(tenant: impl Display) -> Vec<u8> {
        format!("tenant:{tenant}:tenant-ca-key").into_bytes()
    }
    /// A tenant NATS account's seed.
    pub fn tenant_account(tenant: impl Display) -> Vec<u8> {
        format!("tenant:{tenant}:nats-account-seed").into_bytes()
    }
    /// One secret (`client-key`, `server-key`, `creds`) of a leaf server.
    pub fn leaf(tenant: impl Display, leaf: impl Display, what: &str) -> Vec<u8> {
        format!("tenant:{tenant}:leaf:{leaf}:{what}").into_bytes()
    }
    /// An edge agent's private key.
    pub fn agent_key(tenant: impl Display, agent: impl Display) -> Vec<u8> {
        format!("tenant:{tenant}:agent:{agent}:key").into_bytes()
    }
}

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A file of `<key_id>:<key>` lines (first = current, rest = previous).
    File(PathBuf),
    /// The same text, given directly (e.g. `SERVICERADAR_MASTER_KEY`).
    Text(Zeroizing<String>),
    /// The embedded default: this file, generated (0600) if missing.
    DevFile(PathBuf),
    /// A random key held in memory only (tests): sealed data does not survive
    /// a restart.
    Ephemeral,
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Text(_) => f.write_str("Text(..)"),
            Self::DevFile(p) => f.debug_tuple("DevFile").field(p).finish(),
            Self::Ephemeral => f.write_str("Ephemeral"),
        }
    }
}

/// The keyring of `text` (`<key_id>:<key>` lines); `origin` names where the
/// text came from in errors.
fn keyring_from_text(text: &str, origin: &str) -> Result<Keyring, IdentityError> {
    let key_error = |which| {
        move |source| IdentityError::MasterKey {
            origin: origin.to_owned(),
            which,
            source,
        }
    };
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(MasterKey::from_file_text);
    let current = keys
        .next()
        .ok_or_else(|| IdentityError::NoMasterKey {
            origin: origin.to_owned(),
        })?
        .map_err(key_error("the master key"))?;
    let mut ring = Keyring::new(current);
    for key in keys {
        ring = key
            .and_then(|key| ring.with_previous(key))
            .map_err(key_error("a previous master key"))?;
    }
    Ok(ring)
}

fn read_key_file(path: &Path) -> Result<Keyring, IdentityError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
                action: "reading master key file",
                path: path.to_owned(),
                source,
            })?,
        );
    keyring_from_text(&text, &format!("master key file {}", path.display()))
}

impl MasterKeySource {
    /// Loads (or, for [`MasterKeySource::DevFile`], creates) the keyring.
    pub fn load(&self) -> Result<Keyring, IdentityError> {
        match self {
            Self::File(path) => read_key_file(path),
            Self::Text(text) => keyring_from_text(text, "the master key text"),
            Self::DevFile(path) => {
                if !path.exists() {
                    let key =
                        MasterKey::generate("dev-1").map_err(IdentityError::GenerateMasterKey)?;
                    write_secret_file(path, key.to_file_text().as_bytes())?;
                    tracing::warn!(path = %path.display(),
                        "generated a development master key; set SERVICERADAR_MASTER_KEY_FILE in production");
                }
                read_key_file(path)
            }
            Self::Ephemeral => {
                tracing::warn!(
                    "using an ephemeral in-memory master key; sealed keys will not survive a restart"
                );
                Ok(Keyring::new(
                    MasterKey::generate("ephemeral").map_err(IdentityError::GenerateMasterKey)?,
                ))
            }
        }
    }
}

/// Writes `bytes` to a new file readable by its owner only. Fails with
/// [`IdentityError::Io`] naming the file.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |action| {
        move |source| IdentityError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let mut file = options.open(path).map_err(io("creating"))?;
    file.write_all(bytes).map_err(io("writing"))
}

/// How long the NATS users the control plane mints for itself (ingestion,
/// account pushes, the leaf authorization service) are valid. Each service
/// renews its user well before (see [`ServiceUserLifetime`]); a leaked
/// service credential stops working within this time.
pub const SERVICE_USER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The validity of a service's NATS user and when the service renews it.
///
/// It exists so that every service (ingestion, account pushes, the leaf
/// authorization service) mints users that expire and reconnects with a new
/// one at the same point of their lifetime: after three quarters of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceUserLifetime(pub std::time::Duration);

impl Default for ServiceUserLifetime {
    fn default() -> Self {
        Self(SERVICE_USER_LIFETIME)
    }
}

impl ServiceUserLifetime {
    /// The expiry (Unix seconds) of a user minted now.
    pub fn expires_at(self) -> i64 {
        let secs = i64::try_from(self.0.as_secs().max(1)).unwrap_or(i64::MAX);
        // Rounded up, so that a short lifetime still ends after the renewal.
        time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .saturating_add(secs)
            .saturating_add(1)
    }

    /// When a service that minted its user now should renew it: after three
    /// quarters of the lifetime.
    pub fn renew_at(self) -> std::time::Instant {
        std::time::Instant::now() + self.0.mul_f64(0.75)
    }
}

/// Largest message a collector may publish (bytes).
pub const COLLECTOR_MAX_PAYLOAD: i64 = 1024 * 1024;
/// Most subscriptions a collector connection may hold.
pub const COLLECTOR_MAX_SUBS: i64 = 100;

/// A tenant's intermediate CA as stored: certificate, sealed key, expiry.
pub struct TenantCaMaterial {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key, sealed for the tenant's row.
    pub key_sealed: Vec<u8>,
    /// Expiry (Unix ms).
    pub not_after: i64,
}

/// A tenant's NATS account as stored: public key, sealed seed, JWT.
pub struct TenantAccountMaterial {
    /// Account public key.
    pub public_key: String,
    /// Account seed, sealed for the tenant's row.
    pub seed_sealed: Vec<u8>,
    /// Account JWT signed by the operator.
    pub jwt: String,
}

/// The platform PKI: master keyring, trust domain, and the store-backed CAs
/// and NATS identities.
pub struct Pki {
    keyring: Keyring,
    trust_domain: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("key_id", &self.keyring.current_key_id())
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

/// `t` as Unix milliseconds (saturating).
pub fn to_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Pki {
    /// A PKI over `keyring` issuing in `trust_domain`.
    pub fn new(keyring: Keyring, trust_domain: &str) -> Self {
        Self {
            keyring,
            trust_domain: trust_domain.to_owned(),
        }
    }

    /// The master keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The SPIFFE trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Options for issuing end-entity certificates.
    pub fn issue_options(&self) -> IssueOptions {
        IssueOptions {
            trust_domain: self.trust_domain.clone(),
            ..IssueOptions::default()
        }
    }

    /// Opens a sealed blob ([`IdentityError::Sealed`] or
    /// [`IdentityError::NotUtf8`] on failure; callers add which blob).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<String>, IdentityError> {
        self.open_named(sealed, aad, || "sealed data".to_owned())
    }

    /// Opens a sealed blob; `what` names it in errors.
    fn open_named(
        &self,
        sealed: &[u8],
        aad: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Zeroizing<String>, IdentityError> {
        let clear = self
            .keyring
            .open(sealed, aad)
            .map_err(|source| IdentityError::Sealed {
                what: what(),
                source,
            })?;
        let text = std::str::from_utf8(&clear).map_err(|source| IdentityError::NotUtf8 {
            what: what(),
            source,
        })?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// Seals `text`.
    pub fn seal(&self, text: &str, aad: &[u8]) -> Vec<u8> {
        self.keyring.seal(text.as_bytes(), aad)
    }

    /// A platform secret, created with `create` (public text, secret text) if absent.
    async fn platform_secret(
        &self,
        store: &Store,
        name: &str,
        create: impl FnOnce() -> Result<(String, Zeroizing<String>), IdentityError>,
    ) -> Result<(String, Zeroizing<String>), IdentityError> {
        let aad = aad::platform(name);
        let row = match store.platform_secret(name).await? {
            Some(row) => row,
            None => {
                let (public, secret) = create()?;
                let row = store
                    .insert_platform_secret(name, &public, &self.seal(&secret, &aad))
                    .await?;
                if row.public_text == public {
                    tracing::info!(name, "created platform secret");
                }
                row
            }
        };
        let secret = self.open_named(&row.secret_sealed, &aad, || {
            format!("platform secret {name}")
        })?;
        Ok((row.public_text, secret))
    }

    /// The private key (PEM) of node `node` of the hub cluster `cluster`,
    /// created on first use and kept (sealed) from then on: every render of
    /// the cluster's configs issues the node a new certificate for the same
    /// key, so the routes' pins of the nodes' keys stay the same whoever
    /// renders them (each Kubernetes pod renders the whole cluster for
    /// itself) and whenever (re-rendering to renew certificates).
    pub async fn hub_node_key(
        &self,
        store: &Store,
        cluster: &str,
        node: usize,
    ) -> Result<Zeroizing<String>, IdentityError> {
        let name = hub_node_key_name(cluster, node);
        let (_, key) = self
            .platform_secret(store, &name, || Ok((String::new(), new_hub_node_key()?)))
            .await?;
        Ok(key)
    }

    /// Gives node `node` of the hub cluster `cluster` a new key, replacing
    /// the kept one (a key that may have leaked): renders from now on issue
    /// the node's certificate for the new key and pin it, so the old key no
    /// longer joins the routes once every node runs a config rendered after.
    pub async fn rotate_hub_node_key(
        &self,
        store: &Store,
        cluster: &str,
        node: usize,
    ) -> Result<(), IdentityError> {
        let name = hub_node_key_name(cluster, node);
        let key = new_hub_node_key()?;
        store
            .replace_platform_secret(&name, "", &self.seal(&key, &aad::platform(&name)))
            .await?;
        tracing::warn!(cluster, node, "hub cluster node key rotated");
        Ok(())
    }

    /// The platform root CA (created on first use).
    pub async fn root_ca(&self, store: &Store) -> Result<CertificateAuthority, IdentityError> {
        let (cert, key) = self
            .platform_secret(store, ROOT_CA, || {
                let ca = CertificateAuthority::generate_root(ROOT_CA_NAME, DEFAULT_ROOT_VALIDITY)
                    .map_err(ca_error("generating the platform root CA"))?;
                Ok((ca.cert_pem().to_owned(), ca.key_pem()))
            })
            .await?;
        CertificateAuthority::from_pem(&cert, &key)
            .map_err(ca_error("loading the platform root CA"))
    }

    /// The intermediate CA of `tenant` (created on first use), with the root
    /// attached as its issuer chain.
    pub async fn tenant_ca(
        &self,
        store: &Store,
        tenant: &Tenant,
    ) -> Result<CertificateAuthority, IdentityError> {
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        let aad = aad::tenant_ca(tenant.id);
        let root = self.root_ca(store).await?;
        let record = match scoped.tenant_ca().await? {
            Some(record) => record,
            None => {
                let ca = self.generate_tenant_ca(&root, tenant.id, tenant.slug.as_str())?;
                let record = scoped
                    .insert_tenant_ca(&ca.cert_pem, &ca.key_sealed, ca.not_after)
                    .await?;
                tracing::info!(tenant_id = %tenant.id, "tenant CA ready");
                record
            }
        };
        let ca = CertificateAuthority::from_sealed_key(
            &record.cert_pem,
            &record.key_sealed,
            &self.keyring,
            &aad,
        )
        .map_err(ca_error("opening the tenant CA key"))?;
        ca.with_issuer_chain(root.cert_pem())
            .map_err(ca_error("attaching the root CA to the tenant CA's chain"))
    }

    /// A platform NATS key of `kind` stored as the platform secret `name`
    /// (public key in the clear, seed sealed), generated on first need.
    async fn platform_nkey(
        &self,
        store: &Store,
        name: &str,
        kind: KeyKind,
    ) -> Result<NKey, IdentityError> {
        let (_, seed) = self
            .platform_secret(store, name, || {
                let key = NKey::generate(kind);
                let seed = key
                    .seed()
                    .map_err(nats_error_of("exporting the seed of platform key", name))?;
                Ok((key.public_key(), seed))
            })
            .await?;
        NKey::from_seed_of_kind(&seed, kind)
            .map_err(nats_error_of("reading the seed of platform key", name))
    }

    /// The NATS operator with its system account set, and the system account key.
    pub async fn operator(&self, store: &Store) -> Result<(Operator, NKey), IdentityError> {
        let sys = self
            .platform_nkey(store, NATS_SYSTEM_ACCOUNT, KeyKind::Account)
            .await?;
        let op = self
            .platform_nkey(store, NATS_OPERATOR, KeyKind::Operator)
            .await?;
        let operator = Operator::from_key(OPERATOR_NAME, op)
            .map_err(nats_error("loading the NATS operator"))?
            .with_system_account(&sys.public_key())
            .map_err(nats_error("setting the operator's system account"))?;
        Ok((operator, sys))
    }

    /// The system account's JWT, signed by the operator.
    pub async fn system_account_jwt(&self, store: &Store) -> Result<String, IdentityError> {
        let (operator, sys) = self.operator(store).await?;
        operator
            .sign_account(&AccountClaims::system(&sys.public_key()))
            .map_err(nats_error("signing the system account JWT"))
    }

    /// The NATS account of `tenant` (created on first use): its key and JWT.
    pub async fn tenant_account(
        &self,
        store: &Store,
        tenant: &Tenant,
    ) -> Result<(NKey, String), IdentityError> {
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        let aad = aad::tenant_account(tenant.id);
        let record = match scoped.nats_account().await? {
            Some(record) => record,
            None => {
                let (operator, _) = self.operator(store).await?;
                let account =
                    self.generate_tenant_account(&operator, tenant.id, tenant.slug.as_str())?;
                let record = scoped
                    .insert_nats_account(&account.public_key, &account.seed_sealed, &account.jwt)
                    .await?;
                tracing::info!(tenant_id = %tenant.id, account = %record.account_public_key,
                    "tenant NATS account ready");
                record
            }
        };
        let seed = self.open_named(&record.account_seed_sealed, &aad, || {
            "the tenant account seed".to_owned()
        })?;
        let key = NKey::from_seed_of_kind(&seed, KeyKind::Account)
            .map_err(nats_error("reading the tenant account seed"))?;
        if key.public_key() != record.account_public_key {
            return Err(IdentityError::AccountKeyMismatch);
        }
        Ok((key, record.account_jwt))
    }

    /// A new intermediate CA for tenant `id`, its key sealed for its row.
    fn generate_tenant_ca(
        &self,
        root: &CertificateAuthority,
        id: TenantId,
        slug: &str,
    ) -> Result<TenantCaMaterial, IdentityError> {
        let ca = CertificateAuthority::generate_tenant_intermediate(
            root,
            id.as_uuid(),
            slug,
            &self.trust_domain,
            DEFAULT_INTERMEDIATE_VALIDITY,
        )
        .map_err(ca_error("generating the tenant CA"))?;
        Ok(TenantCaMaterial {
            cert_pem: ca.cert_pem().to_owned(),
            key_sealed: ca.seal_key(&self.keyring, &aad::tenant_ca(id)),
            not_after: to_ms(ca.not_after()),
        })
    }

    /// A new NATS account for tenant `id`, signed by `operator`, its seed
    /// sealed for its row.
    fn generate_tenant_account(
        &self,
        operator: &Operator,
        id: TenantId,
        slug: &str,
    ) -> Result<TenantAccountMaterial, IdentityError> {
        let key = NKey::generate(KeyKind::Account);
        let public_key = key.public_key();
        let jwt = operator
            .sign_account(&AccountClaims::tenant(&public_key, slug))
            .map_err(nats_error("signing the tenant account JWT"))?;
        let seed = key
            .seed()
            .map_err(nats_error("exporting the tenant account seed"))?;
        Ok(TenantAccountMaterial {
            public_key,
            seed_sealed: self.seal(&seed, &aad::tenant_account(id)),
            jwt,
        })
    }

    /// A new tenant's intermediate CA and NATS account, generated and sealed
    /// but not stored: the caller stores them together with the tenant row
    /// in one transaction (`Store::create_tenant_with_identity`).
    pub async fn new_tenant_identity(
        &self,
        store: &Store,
        id: TenantId,
        slug: &str,
    ) -> Result<(TenantCaMaterial, TenantAccountMaterial), IdentityError> {
        let root = self.root_ca(store).await?;
        let (operator, _) = self.operator(store).await?;
        Ok((
            self.generate_tenant_ca(&root, id, slug)?,
            self.generate_tenant_account(&operator, id, slug)?,
        ))
    }

    /// Creates `tenant`'s intermediate CA and NATS account if it has none yet.
    /// Called when a tenant is created; the lazy paths in [`Pki::tenant_ca`]
    /// and [`Pki::tenant_account`] repair a tenant whose creation was
    /// interrupted between the tenant row and its PKI.
    pub async fn ensure_tenant_identity(
        &self,
        store: &Store,
        tenant: &Tenant,
    ) -> Result<(), IdentityError> {
        let step = |step| {
            move |source| IdentityError::TenantIdentity {
                step,
                source: Box::new(source),
            }
        };
        self.tenant_ca(store, tenant)
            .await
            .map_err(step("creating the tenant CA"))?;
        self.tenant_account(store, tenant)
            .await
            .map_err(step("creating the tenant NATS account"))?;
        Ok(())
    }

    /// Credentials of a collector package in `tenant`'s account: it may only
    /// publish the tenant's telemetry (`events|metrics|logs.{tenant}.>`, and
    /// `edge.{tenant}.>` at its site's leaf) and use JetStream publish acks
    /// (replies on `_INBOX.>`); it subscribes to nothing else. Payloads are
    /// capped at [`COLLECTOR_MAX_PAYLOAD`] and subscriptions at
    /// [`COLLECTOR_MAX_SUBS`].
    pub async fn collector_creds(
        &self,
        store: &Store,
        tenant: &Tenant,
        name: &str,
    ) -> Result<CredsFile, IdentityError> {
        let (account, _) = self.tenant_account(store, tenant).await?;
        let user = NKey::generate(KeyKind::User);
        let slug = tenant.slug.as_str();
        creds_for(&account, &user, name, |claims| {
            collector_limits(claims, slug)
        })
    }

    /// The JWT of a collector user whose key was generated at the edge (only
    /// `user_public_key` is here): the same permissions and limits as
    /// [`Pki::collector_creds`].
    pub async fn collector_user_jwt(
        &self,
        store: &Store,
        tenant: &Tenant,
        name: &str,
        user_public_key: &str,
    ) -> Result<String, IdentityError> {
        let (account, _) = self.tenant_account(store, tenant).await?;
        let mut claims = UserClaims::new(user_public_key, name);
        collector_limits(&mut claims, tenant.slug.as_str());
        claims
            .sign(&account)
            .map_err(nats_error_of("signing the collector user JWT of", name))
    }

    /// The NATS account every leaf authenticates in, and the key of the
    /// authorization service's user (created on first use).
    ///
    /// Why: nats-server only checks that a leaf's certificate chains to the
    /// platform root, and lets the user JWT choose the account. So leaves do
    /// not get users of their tenant's account. Their creds are users of this
    /// account, whose JWT enables external authorization (auth callout): the
    /// hub hands each leaf connection, with its verified certificate chain, to
    /// `serviceradar_hub::leaf_auth`, which admits it into the tenant's account only
    /// when the certificate's tenant and site match the creds'. Only the
    /// service's own user (`auth_users`) connects here without the callout.
    pub async fn leaf_auth(&self, store: &Store) -> Result<(NKey, NKey), IdentityError> {
        Ok((
            self.platform_nkey(store, NATS_LEAF_AUTH_ACCOUNT, KeyKind::Account)
                .await?,
            self.platform_nkey(store, NATS_LEAF_AUTH_SERVICE, KeyKind::User)
                .await?,
        ))
    }

    /// The JWT of the leaf authorization account ([`Pki::leaf_auth`]):
    /// no JetStream, external authorization by the service user, which may
    /// place leaves in any account (each response is still signed by the
    /// tenant account it places the leaf in, which only we hold).
    pub async fn leaf_auth_account_jwt(&self, store: &Store) -> Result<String, IdentityError> {
        let (operator, _) = self.operator(store).await?;
        let (account, service) = self.leaf_auth(store).await?;
        let mut claims = AccountClaims::tenant(&account.public_key(), LEAF_AUTH_ACCOUNT_NAME);
        claims.jetstream = None;
        claims.external_authorization = Some(ExternalAuthorization {
            auth_users: vec![service.public_key()],
            allowed_accounts: vec![ANY_ACCOUNT.into()],
        });
        operator
            .sign_account(&claims)
            .map_err(nats_error("signing the leaf authorization account JWT"))
    }

    /// Creds of the leaf authorization service (the account's auth user),
    /// valid until `expires` (Unix seconds; see [`ServiceUserLifetime`]).
    pub async fn leaf_auth_service_creds(
        &self,
        store: &Store,
        expires: i64,
    ) -> Result<CredsFile, IdentityError> {
        let (account, service) = self.leaf_auth(store).await?;
        creds_for(&account, &service, "serviceradar-leaf-auth", |claims| {
            claims.allowed_connection_types = vec![CONNECTION_STANDARD.into()];
            claims.expires = Some(expires);
        })
    }

    /// Creds of the leaf of `site` (in `tenant`) called `name`: a user of the
    /// leaf authorization account, tagged with the tenant and site ids, that
    /// may only connect as a leafnode. Keeps the user key of `previous` creds
    /// when given (re-provisioning keeps a leaf's NATS user), else a new key.
    pub async fn leaf_creds(
        &self,
        store: &Store,
        tenant: &Tenant,
        site: EdgeSiteId,
        name: &str,
        previous: Option<&str>,
    ) -> Result<CredsFile, IdentityError> {
        let (account, _) = self.leaf_auth(store).await?;
        let user = match previous.and_then(creds_seed) {
            Some(seed) => NKey::from_seed_of_kind(&seed, KeyKind::User).map_err(nats_error(
                "reading the user seed of the leaf's previous creds",
            ))?,
            None => NKey::generate(KeyKind::User),
        };
        creds_for(&account, &user, name, |claims| {
            claims.allowed_connection_types = vec![CONNECTION_LEAFNODE.into()];
            claims.tags = vec![
                format!("{LEAF_TENANT_TAG}{}", tenant.id),
                format!("{LEAF_SITE_TAG}{site}"),
            ];
        })
    }

    /// The JWT of a leaf user whose key was generated at the edge (only its
    /// public key `user_public_key` is here): the same claims as
    /// [`Pki::leaf_creds`], without a seed. The edge writes the creds file.
    pub async fn leaf_user_jwt(
        &self,
        store: &Store,
        tenant: &Tenant,
        site: EdgeSiteId,
        name: &str,
        user_public_key: &str,
    ) -> Result<String, IdentityError> {
        let (account, _) = self.leaf_auth(store).await?;
        let mut claims = UserClaims::new(user_public_key, name);
        claims.allowed_connection_types = vec![CONNECTION_LEAFNODE.into()];
        claims.tags = vec![
            format!("{LEAF_TENANT_TAG}{}", tenant.id),
            format!("{LEAF_SITE_TAG}{site}"),
        ];
        claims
            .sign(&account)
            .map_err(nats_error_of("signing the enrolled leaf user JWT of", name))
    }

    /// The control plane's enrollment token signing key (Ed25519, created
    /// on first need, sealed like every platform secret).
    pub async fn enrollment_key(&self, store: &Store) -> Result<EnrollmentKey, IdentityError> {
        let (public, secret) = self
            .platform_secret(store, ENROLLMENT_SIGNING_KEY, || {
                let pkcs8 = serviceradar_pki::token::new_signing_key()
                    .map_err(IdentityError::EnrollmentKey)?;
                let public = serviceradar_pki::token::public_key(&pkcs8)
                    .map_err(IdentityError::EnrollmentKey)?;
                Ok((hex::encode(public), Zeroizing::new(hex::encode(&*pkcs8))))
            })
            .await?;
        let corrupt = || IdentityError::EnrollmentKey(serviceradar_pki::token::TokenError::Key);
        Ok(EnrollmentKey {
            pkcs8: Zeroizing::new(hex::decode(secret.as_str()).map_err(|_| corrupt())?),
            public: hex::decode(public).map_err(|_| corrupt())?,
        })
    }

    /// The user JWT that admits one leaf connection into `tenant`'s account:
    /// subject `user_key` (the key nats-server chose for the connection),
    /// leafnode connections only, confined to `link` (what one site's leaf
    /// may exchange with the hub: `natsconf::leaf::site_link_permissions`),
    /// expiring at `expires` (unix seconds).
    pub async fn leaf_session_jwt(
        &self,
        store: &Store,
        tenant: &Tenant,
        user_key: &str,
        name: &str,
        link: &serviceradar_natsconf::leaf::LinkPermissions,
        expires: i64,
    ) -> Result<String, IdentityError> {
        let (account, _) = self.tenant_account(store, tenant).await?;
        let mut claims = UserClaims::new(user_key, name);
        claims.publish = link.publish.clone();
        claims.subscribe = link.subscribe.clone();
        claims.allowed_connection_types = vec![CONNECTION_LEAFNODE.into()];
        claims.expires = Some(expires);
        claims
            .sign(&account)
            .map_err(nats_error_of("signing the leaf session JWT of", name))
    }

    /// Revokes every JWT issued so far to the users `user_keys` of `tenant`'s
    /// account: the account JWT is re-signed with them in `revocations` and
    /// stored; the ingest supervisor pushes it to the running hub, which
    /// disconnects and refuses those users from then on.
    pub async fn revoke_users(
        &self,
        store: &Store,
        tenant: &Tenant,
        user_keys: &[String],
    ) -> Result<(), IdentityError> {
        if user_keys.is_empty() {
            return Ok(());
        }
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        let (operator, _) = self.operator(store).await?;
        for _ in 0..5 {
            let record = scoped
                .nats_account()
                .await?
                .ok_or(IdentityError::NoTenantAccount)?;
            let current = serviceradar_natsconf::jwt::decode_claims(&record.account_jwt)
                .map_err(nats_error("reading the tenant account JWT"))?;
            let mut claims =
                AccountClaims::tenant(&record.account_public_key, tenant.slug.as_str());
            if let Some(existing) = current["nats"]["revocations"].as_object() {
                for (key, at) in existing {
                    claims
                        .revoke_user(key, at.as_i64().unwrap_or(0))
                        .map_err(nats_error_of("keeping the revocation of", key))?;
                }
            }
            for key in user_keys {
                claims
                    .revoke_user_now(key)
                    .map_err(nats_error_of("revoking", key))?;
            }
            let jwt = operator
                .sign_account(&claims)
                .map_err(nats_error("signing the tenant account JWT"))?;
            if scoped
                .replace_nats_account_jwt(&record.account_jwt, &jwt)
                .await?
            {
                tracing::info!(tenant_id = %tenant.id, users = user_keys.len(), "NATS users revoked");
                return Ok(());
            }
        }
        Err(IdentityError::RevocationContended)
    }

    /// A new user of the NATS system account called `name`, valid until
    /// `expires` (Unix seconds), as a `.creds` file: what the control plane
    /// uses to push account JWTs to the hub (`$SYS.REQ.CLAIMS.UPDATE`).
    pub async fn system_user_creds(
        &self,
        store: &Store,
        name: &str,
        expires: i64,
    ) -> Result<CredsFile, IdentityError> {
        let (_, sys) = self.operator(store).await?;
        creds_for(&sys, &NKey::generate(KeyKind::User), name, |claims| {
            claims.allowed_connection_types = vec![CONNECTION_STANDARD.into()];
            claims.expires = Some(expires);
        })
    }

    /// The platform ingest account's key (created on first use): the account
    /// whose one stream sources every tenant's `INGEST` stream (see
    /// [`serviceradar_natsconf::platform`]).
    pub async fn platform_ingest_account(&self, store: &Store) -> Result<NKey, IdentityError> {
        self.platform_nkey(store, NATS_PLATFORM_INGEST_ACCOUNT, KeyKind::Account)
            .await
    }

    /// The platform ingest account's JWT, importing from each of `tenants`
    /// (slug, account public key) what its source needs; JetStream on.
    pub async fn platform_ingest_account_jwt(
        &self,
        store: &Store,
        tenants: &[(String, String)],
    ) -> Result<String, IdentityError> {
        let (operator, _) = self.operator(store).await?;
        let account = self.platform_ingest_account(store).await?;
        let mut claims = AccountClaims::tenant(
            &account.public_key(),
            serviceradar_natsconf::platform::PLATFORM_ACCOUNT_NAME,
        );
        for (slug, key) in tenants {
            claims.imports.extend(
                serviceradar_natsconf::platform::platform_imports(slug, key)
                    .map_err(IdentityError::PlatformIngest)?,
            );
        }
        operator
            .sign_account(&claims)
            .map_err(nats_error("signing the platform ingest account JWT"))
    }

    /// A new user of the platform ingest account called `name`, valid until
    /// `expires` (Unix seconds), as a `.creds` file (plain client
    /// connections only).
    pub async fn platform_ingest_user_creds(
        &self,
        store: &Store,
        name: &str,
        expires: i64,
    ) -> Result<CredsFile, IdentityError> {
        let account = self.platform_ingest_account(store).await?;
        creds_for(&account, &NKey::generate(KeyKind::User), name, |claims| {
            claims.allowed_connection_types = vec![CONNECTION_STANDARD.into()];
            claims.expires = Some(expires);
        })
    }

    /// What signs tenants' account JWTs for platform ingestion
    /// ([`PlatformExportSigner::tenant_account_jwt`]): the operator, loaded
    /// once for a set-up pass that may sign every tenant's (at 1,000
    /// tenants, loading it per tenant was 2,000 reads of sealed keys, their
    /// unsealing and key derivations on every restart).
    pub async fn platform_export_signer(
        &self,
        store: &Store,
    ) -> Result<PlatformExportSigner, IdentityError> {
        let (operator, _) = self.operator(store).await?;
        Ok(PlatformExportSigner { operator })
    }

    /// A new NATS user of `tenant`'s account called `name`, valid until
    /// `expires` (Unix seconds), as a `.creds` file. It connects as a plain
    /// client only: a leaf enters a tenant's account through the leaf
    /// authorization callout, never with these.
    pub async fn user_creds(
        &self,
        store: &Store,
        tenant: &Tenant,
        name: &str,
        expires: i64,
    ) -> Result<CredsFile, IdentityError> {
        let (account, _) = self.tenant_account(store, tenant).await?;
        creds_for(&account, &NKey::generate(KeyKind::User), name, |claims| {
            claims.allowed_connection_types = vec![CONNECTION_STANDARD.into()];
            claims.expires = Some(expires);
        })
    }
}

/// The `.creds` file of `user` called `name`: its JWT (adjusted by
/// `restrict`) signed by `signer` (an account key), and its seed.
/// What a collector may do: publish the tenant's telemetry and JetStream
/// acks, nothing else, with payload and subscription caps.
fn collector_limits(claims: &mut UserClaims, slug: &str) {
    claims.publish.allow = ["events", "metrics", "logs", "edge"]
        .iter()
        .map(|family| format!("{family}.{slug}.>"))
        .collect();
    claims.subscribe.allow = vec!["_INBOX.>".into()];
    claims.allowed_connection_types = vec![CONNECTION_STANDARD.into()];
    claims.payload = COLLECTOR_MAX_PAYLOAD;
    claims.subs = COLLECTOR_MAX_SUBS;
}

fn creds_for(
    signer: &NKey,
    user: &NKey,
    name: &str,
    restrict: impl FnOnce(&mut UserClaims),
) -> Result<CredsFile, IdentityError> {
    let mut claims = UserClaims::new(&user.public_key(), name);
    restrict(&mut claims);
    let jwt = claims
        .sign(signer)
        .map_err(nats_error_of("signing the user JWT of", name))?;
    let seed = user
        .seed()
        .map_err(nats_error_of("exporting the user seed of", name))?;
    creds_file(&jwt, &seed).map_err(nats_error_of("writing the creds file of", name))
}

/// The user seed (`SU...`) in a `.creds` file.
fn creds_seed(creds: &str) -> Option<Zeroizing<String>> {
    let mut lines = creds.lines();
    lines.find(|l| l.contains("BEGIN USER NKEY SEED"))?;
    let seed = lines.next()?.trim();
    seed.starts_with("SU")
        .then(|| Zeroizing::new(seed.to_owned()))
}

/// Signs tenants' account JWTs with the exports platform ingestion needs
/// ([`Pki::platform_export_signer`]). Pure: no store, no sealed key.
pub struct PlatformExportSigner {
    operator: Operator,
}

impl fmt::Debug for PlatformExportSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformExportSigner")
            .finish_non_exhaustive()
    }
}

impl PlatformExportSigner {
    /// `tenant`'s account JWT as the hub needs it for platform ingestion,
    /// from the account's public key and its stored JWT (both as
    /// [`Pki::tenant_account`] keeps them): the stored JWT's revocations,
    /// issued now (and after the stored JWT: the hub keeps the newer of two
    /// JWTs of an account, and its config preloads the stored one, which
    /// must not replace this one), plus the exports the platform stream's
    /// source of this tenant needs
    /// ([`serviceradar_natsconf::platform::tenant_exports`]).
    pub fn tenant_account_jwt(
        &self,
        tenant: &Tenant,
        account_public_key: &str,
        stored: &str,
    ) -> Result<String, IdentityError> {
        let current = serviceradar_natsconf::jwt::decode_claims(stored)
            .map_err(nats_error("reading the tenant account JWT"))?;
        if current["sub"].as_str() != Some(account_public_key) {
            return Err(IdentityError::AccountJwtMismatch);
        }
        let mut claims = AccountClaims::tenant(account_public_key, tenant.slug.as_str());
        if let Some(existing) = current["nats"]["revocations"].as_object() {
            for (key, at) in existing {
                claims
                    .revoke_user(key, at.as_i64().unwrap_or(0))
                    .map_err(nats_error_of("keeping the revocation of", key))?;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        claims.issued_at = Some(current["iat"].as_i64().map_or(now, |iat| now.max(iat + 1)));
        claims.exports = serviceradar_natsconf::platform::tenant_exports(tenant.slug.as_str())
            .map_err(IdentityError::PlatformIngest)?;
        self.operator
            .sign_account(&claims)
            .map_err(nats_error("signing the tenant account JWT"))
    }
}

/// The user public key (`U...`) of a `.creds` file (the JWT's subject).
pub fn creds_user_key(creds: &str) -> Option<String> {
    let mut lines = creds.lines();
    lines.find(|l| l.contains("BEGIN NATS USER JWT"))?;
    let jwt = lines.next()?.trim();
    serviceradar_natsconf::jwt::decode_claims(jwt).ok()?["sub"]
        .as_str()
        .map(str::to_owned)
}

/// The platform secret holding node `node`'s key of hub cluster `cluster`.
fn hub_node_key_name(cluster: &str, node: usize) -> String {
    format!("hub_cluster_node_key:{cluster}:{node}")
}

/// A fresh hub cluster node key (PEM).
fn new_hub_node_key() -> Result<Zeroizing<String>, IdentityError> {
    serviceradar_pki::new_server_key().map_err(|source| IdentityError::Issue {
        what: "generating a hub cluster node's key",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_errors_name_the_origin_and_key_but_not_the_material() {
        let origin = "master key file /etc/sr/key";
        assert!(matches!(
            keyring_from_text("# only a comment\n\n", origin),
            Err(IdentityError::NoMasterKey { .. })
        ));
        assert_eq!(
            keyring_from_text("# only a comment\n", origin)
                .unwrap_err()
                .to_string(),
            "master key file /etc/sr/key holds no key"
        );

        let material = "c2VjcmV0LW1hdGVyaWFsLXRoYXQtaXMtdG9vLXNob3J0";
        let e = keyring_from_text(&format!("k1:{material}\n"), origin).unwrap_err();
        assert!(matches!(
            e,
            IdentityError::MasterKey {
                which: "the master key",
                source: SealError::InvalidKeyMaterial { .. },
                ..
            }
        ));
        let full = format!("{e:#}");
        assert!(full.starts_with("master key file /etc/sr/key: reading the master key: "));
        assert!(!full.contains(material) && !format!("{e:?}").contains(material));

        let key = MasterKey::generate("k1").unwrap().to_file_text();
        let e = keyring_from_text(&format!("{}\n{}\n", *key, *key), origin).unwrap_err();
        assert!(matches!(
            e,
            IdentityError::MasterKey {
                which: "a previous master key",
                source: SealError::DuplicateKeyId(_),
                ..
            }
        ));
        let (_, secret) = key.split_once(':').unwrap();
        assert!(!format!("{e:#} {e:?}").contains(secret));
    }

    #[tokio::test]
    async fn platform_exports_are_signed_from_the_stored_account_and_refuse_another_accounts_jwt() {
        use serviceradar_domain::validate::{DisplayName, Slug};
        use serviceradar_natsconf::jwt::decode_claims;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = Store::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        let pki = Pki::new(
            MasterKeySource::Ephemeral.load().unwrap(),
            "serviceradar.io",
        );
        let tenant = |slug: &str| {
            let store = store.clone();
            let slug = Slug::parse(slug).unwrap();
            async move {
                store
                    .create_tenant(&slug, &DisplayName::parse("A tenant").unwrap())
                    .await
                    .unwrap()
            }
        };
        let (acme, other) = (tenant("acme").await, tenant("other").await);
        let (key, _) = pki.tenant_account(&store, &acme).await.unwrap();
        let revoked = NKey::generate(KeyKind::User).public_key();
        pki.revoke_users(&store, &acme, std::slice::from_ref(&revoked))
            .await
            .unwrap();
        let (_, stored) = pki.tenant_account(&store, &acme).await.unwrap();

        let signer = pki.platform_export_signer(&store).await.unwrap();
        let jwt = signer
            .tenant_account_jwt(&acme, &key.public_key(), &stored)
            .unwrap();
        let (claims, was) = (
            decode_claims(&jwt).unwrap(),
            decode_claims(&stored).unwrap(),
        );
        assert_eq!(claims["sub"].as_str(), Some(key.public_key().as_str()));
        assert_eq!(claims["iss"], was["iss"], "signed by the operator");
        assert!(
            claims["iat"].as_i64() > was["iat"].as_i64(),
            "newer than the stored JWT"
        );
        assert!(claims["nats"]["revocations"][&revoked].is_i64(), "{claims}");
        assert_eq!(
            claims["nats"]["exports"].as_array().map(Vec::len),
            Some(3),
            "{claims}"
        );

        // Another account's stored JWT is not signed under this key.
        let (_, others) = pki.tenant_account(&store, &other).await.unwrap();
        assert!(matches!(
            signer.tenant_account_jwt(&acme, &key.public_key(), &others),
            Err(IdentityError::AccountJwtMismatch)
        ));
    }

    #[test]
    fn write_secret_file_fails_with_the_path() {
        let dir =
            std::env::temp_dir().join(format!("sr-identity-missing-{}", uuid::Uuid::new_v4()));
        let path = dir.join("key.pem");
        let e = write_secret_file(&path, b"secret").unwrap_err();
        let IdentityError::Io {
            action,
            path: failed,
            source,
        } = &e
        else {
            panic!("an io error, got {e:?}");
        };
        assert_eq!((*action, failed), ("creating", &path));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), format!("creating {}", path.display()));
        assert!(format!("{e:#}").starts_with(&format!("creating {}: ", path.display())));
    }

    #[test]
    fn sealed_blobs_name_what_did_not_open() {
        let pki = Pki::new(
            MasterKeySource::Ephemeral.load().unwrap(),
            "serviceradar.io",
        );
        let sealed = pki.seal("seed", &aad::tenant_account("t1"));
        let opened = pki.open(&sealed, &aad::tenant_account("t1")).unwrap();
        assert_eq!(opened.as_str(), "seed");
        // Another row's associated data does not open.
        let e = pki
            .open_named(&sealed, &aad::tenant_account("t2"), || {
                "the tenant account seed".to_owned()
            })
            .unwrap_err();
        assert!(matches!(
            e,
            IdentityError::Sealed {
                source: SealError::Authentication,
                ..
            }
        ));
        assert_eq!(e.to_string(), "opening the tenant account seed");
        assert_eq!(
            format!("{e:#}"),
            format!(
                "opening the tenant account seed: {}",
                SealError::Authentication
            )
        );
    }
}
