//! Collector bundles: config, certificates and credentials for one collector.
//!
//! A collector (flowgger, trapd, otel, netflow, syslog) publishes into NATS. When
//! its package is assigned to an edge site it must talk to that site's local
//! NATS leaf (low latency, buffered through WAN outages); otherwise straight to
//! the SaaS NATS (seed 001, 4.1). [`NatsTarget`] makes that choice explicit and
//! the bundle's `collector.json` and `README.md` say which URL is used and why.
//! A site whose leaf is a 3-node cluster gives the collector every node's URL
//! (`nats.urls`), so it can publish through any node that lives.
//!
//! Layout (under `serviceradar-collector-{tenant}-{type}/`):
//!
//! | path | mode |
//! | --- | --- |
//! | `README.md` | 0644 |
//! | `collector.json` | 0644 |
//! | `certs/collector.pem`, `certs/ca.pem` | 0644 |
//! | `certs/collector-key.pem` | 0600 |
//! | `creds/collector.creds` | 0600 |

use serde::Serialize;
use uuid::Uuid;

use crate::archive::ArchiveBuilder;
use crate::validate::{self, PemKind};
use crate::{BundleError, SecretText};

pub use serviceradar_domain::resources::CollectorType;

/// Which NATS a collector publishes to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsTarget {
    /// The package is assigned to an edge site: use the site's local leaf.
    EdgeSite {
        /// The site's display name (free text, shown in the README only).
        site_name: String,
        /// The site's slug.
        site_slug: String,
        /// The leaf's URL as seen from collectors (`nats://10.0.1.50:4222`).
        nats_leaf_url: String,
        /// A leaf cluster's other nodes' URLs (empty for one leaf server).
        other_node_urls: Vec<String>,
    },
    /// No edge site: publish straight to the ServiceRadar SaaS NATS.
    Saas {
        /// The SaaS NATS URL.
        url: String,
    },
}

/// An edge site as far as choosing a collector's NATS URL is concerned.
#[derive(Debug, Clone, Copy)]
pub struct EdgeSiteRef<'a> {
    /// Display name.
    pub name: &'a str,
    /// Slug.
    pub slug: &'a str,
    /// The site's `nats_leaf_url`.
    pub nats_leaf_url: &'a str,
    /// Every node's URL when the site's leaf is a cluster (the first is
    /// `nats_leaf_url`'s node); empty for one leaf server.
    pub node_urls: &'a [String],
}

impl NatsTarget {
    /// Seed 001 4.1.2 (`get_nats_url`): the site's leaf when the package has an
    /// edge site, else the SaaS NATS URL.
    pub fn for_package(edge_site: Option<EdgeSiteRef<'_>>, saas_url: &str) -> Self {
        match edge_site {
            Some(site) => Self::EdgeSite {
                site_name: site.name.to_owned(),
                site_slug: site.slug.to_owned(),
                nats_leaf_url: site.nats_leaf_url.to_owned(),
                other_node_urls: site
                    .node_urls
                    .iter()
                    .filter(|u| u.as_str() != site.nats_leaf_url)
                    .cloned()
                    .collect(),
            },
            None => Self::Saas {
                url: saas_url.to_owned(),
            },
        }
    }

    /// The URL the collector connects to.
    pub fn url(&self) -> &str {
        match self {
            Self::EdgeSite { nats_leaf_url, .. } => nats_leaf_url,
            Self::Saas { url } => url,
        }
    }

    /// Every URL the collector may connect to: [`NatsTarget::url`] first,
    /// then a leaf cluster's other nodes.
    pub fn urls(&self) -> Vec<&str> {
        let mut urls = vec![self.url()];
        if let Self::EdgeSite {
            other_node_urls, ..
        } = self
        {
            urls.extend(other_node_urls.iter().map(String::as_str));
        }
        urls
    }

    fn validate(&self) -> Result<(), BundleError> {
        match self {
            Self::EdgeSite {
                site_name,
                site_slug,
                nats_leaf_url,
                other_node_urls,
            } => {
                validate::display_text("site_name", site_name)?;
                validate::slug("site_slug", site_slug)?;
                for url in other_node_urls {
                    validate::nats_url("node url", url)?;
                }
                validate::nats_url("nats_leaf_url", nats_leaf_url)
            }
            Self::Saas { url } => validate::nats_url("saas_url", url),
        }
    }
}

/// Everything that goes into one collector bundle.
#[derive(Debug, Clone)]
pub struct CollectorBundle {
    /// Kind of collector.
    pub collector_type: CollectorType,
    /// The collector package's id.
    pub package_id: Uuid,
    /// Tenant slug.
    pub tenant_slug: String,
    /// Where the collector publishes.
    pub target: NatsTarget,
    /// The collector's NATS `.creds` file.
    pub creds: SecretText,
    /// Client certificate (PEM).
    pub client_cert_pem: String,
    /// Client key (PEM).
    pub client_key_pem: SecretText,
    /// CA certificate(s) to verify the NATS server with (PEM).
    pub ca_pem: String,
}

impl CollectorBundle {
    /// The bundle's top-level directory: `serviceradar-collector-{tenant}-{type}`.
    pub fn root_dir(&self) -> String {
        format!(
            "serviceradar-collector-{}-{}",
            self.tenant_slug,
            self.collector_type.as_str()
        )
    }

    /// A file name for the download: `{root_dir}.tar.gz`.
    pub fn file_name(&self) -> String {
        format!("{}.tar.gz", self.root_dir())
    }

    fn validate(&self) -> Result<(), BundleError> {
        validate::slug("tenant_slug", &self.tenant_slug)?;
        self.target.validate()?;
        validate::creds("creds", self.creds.expose())?;
        validate::pem(
            "client_cert_pem",
            &self.client_cert_pem,
            PemKind::Certificate,
        )?;
        validate::pem(
            "client_key_pem",
            self.client_key_pem.expose(),
            PemKind::PrivateKey,
        )?;
        validate::pem("ca_pem", &self.ca_pem, PemKind::Certificate)
    }
}

#[derive(Serialize)]
struct ConfigFile<'a> {
    collector_type: CollectorType,
    package_id: String,
    tenant: &'a str,
    subject_prefix: String,
    nats: NatsSection<'a>,
}

#[derive(Serialize)]
struct NatsSection<'a> {
    url: &'a str,
    /// Every URL the collector may use (`url` first; a leaf cluster's other
    /// nodes after it).
    urls: Vec<&'a str>,
    /// `edge_site` or `saas`.
    target: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge_site_slug: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge_site_name: Option<&'a str>,
    creds_file: String,
    tls: TlsSection,
}

#[derive(Serialize)]
struct TlsSection {
    cert_file: String,
    key_file: String,
    ca_file: String,
}

impl CollectorBundle {
    /// What the collector publishes under: `{family}.{tenant}` to the SaaS hub,
    /// `edge.{tenant}.{site}.{family}` at an edge site, where the leaf's
    /// buffer stream (`edge.{tenant}.{site}.>`) keeps it through WAN outages and
    /// the hub sources it from there.
    pub fn subject_prefix(&self) -> String {
        match &self.target {
            NatsTarget::EdgeSite { site_slug, .. } => format!(
                "edge.{}.{site_slug}.{}",
                self.tenant_slug,
                self.collector_type.subject_family()
            ),
            NatsTarget::Saas { .. } => self.collector_type.subject_prefix(&self.tenant_slug),
        }
    }
}

fn config_json(b: &CollectorBundle) -> Result<String, BundleError> {
    let dir = b.collector_type.install_dir();
    let (target, slug, name) = match &b.target {
        NatsTarget::EdgeSite {
            site_name,
            site_slug,
            ..
        } => (
            "edge_site",
            Some(site_slug.as_str()),
            Some(site_name.as_str()),
        ),
        NatsTarget::Saas { .. } => ("saas", None, None),
    };
    let config = ConfigFile {
        collector_type: b.collector_type,
        package_id: b.package_id.to_string(),
        tenant: &b.tenant_slug,
        subject_prefix: b.subject_prefix(),
        nats: NatsSection {
            url: b.target.url(),
            urls: b.target.urls(),
            target,
            edge_site_slug: slug,
            edge_site_name: name,
            creds_file: format!("{dir}/creds/collector.creds"),
            tls: TlsSection {
                cert_file: format!("{dir}/certs/collector.pem"),
                key_file: format!("{dir}/certs/collector-key.pem"),
                ca_file: format!("{dir}/certs/ca.pem"),
            },
        },
    };
    let mut json = serde_json::to_string_pretty(&config).map_err(std::io::Error::other)?;
    json.push('\n');
    Ok(json)
}

fn readme(b: &CollectorBundle) -> String {
    let kind = b.collector_type.as_str();
    let dir = b.collector_type.install_dir();
    let urls = b.target.urls();
    let url = urls.join("`, `");
    let subject = b.subject_prefix();
    let why = match &b.target {
        NatsTarget::EdgeSite {
            site_name,
            site_slug,
            other_node_urls,
            ..
        } => {
            let cluster = if other_node_urls.is_empty() {
                String::new()
            } else {
                format!(
                    " The site's leaf is a {}-node cluster: give the collector every \
                     URL above (NATS clients take a server list) and it publishes \
                     through any node that is up.",
                    urls.len()
                )
            };
            format!(
                "This collector connects to the local NATS leaf of edge site {site_name} \
                 (`{site_slug}`) at `{url}` - data is buffered there during WAN \
                 outages and forwarded to ServiceRadar when the link is back. The collector \
                 host must reach `{url}`; it needs no internet access itself.{cluster}\n"
            )
        }
        NatsTarget::Saas { url } => format!(
            "This collector connects directly to the ServiceRadar SaaS NATS at `{url}` \
             (its package is not assigned to an edge site). The collector host needs \
             outbound access to `{url}`. To buffer locally through WAN outages, assign \
             the package to an edge site and download the bundle again.\n"
        ),
    };
    format!(
        "# ServiceRadar collector bundle: {kind}\n\
         \n\
         | | |\n\
         | --- | --- |\n\
         | tenant | `{tenant}` |\n\
         | package id | `{package}` |\n\
         | NATS URL | `{url}` |\n\
         | subjects | `{subject}.>` |\n\
         \n\
         ## Which NATS this collector uses\n\
         \n\
         {why}\
         \n\
         ## Contents\n\
         \n\
         | file | purpose |\n\
         | --- | --- |\n\
         | `collector.json` | NATS URL, subject prefix and the paths of the files below |\n\
         | `certs/collector.pem`, `certs/collector-key.pem` | client certificate and key (mutual TLS) |\n\
         | `certs/ca.pem` | CA to verify the NATS server |\n\
         | `creds/collector.creds` | NATS credentials |\n\
         \n\
         The key and credentials are secrets: keep the bundle private.\n\
         \n\
         ## Install\n\
         \n\
         `collector.json` refers to the files below `{dir}`:\n\
         \n\
         ```sh\n\
         sudo install -d -m 0755 {dir}\n\
         sudo install -d -m 0750 {dir}/certs {dir}/creds\n\
         sudo install -m 0644 collector.json {dir}/collector.json\n\
         sudo install -m 0644 certs/collector.pem certs/ca.pem {dir}/certs/\n\
         sudo install -m 0600 certs/collector-key.pem {dir}/certs/\n\
         sudo install -m 0600 creds/collector.creds {dir}/creds/\n\
         ```\n\
         \n\
         Then point the {kind} collector's NATS output at `{url}` using the files\n\
         above (see `collector.json`) and restart it.\n\
         \n\
         {publishing}",
        tenant = b.tenant_slug,
        package = b.package_id,
        publishing = publishing(b),
    )
}

/// The README's telemetry contract: where to publish, how (with JetStream
/// acknowledgements), and what a message of this collector's kind holds.
fn publishing(b: &CollectorBundle) -> String {
    let kind = b.collector_type.as_str();
    let family = b.collector_type.subject_family();
    let subject = b.subject_prefix();
    let (fields, example) = match family {
        "events" => (
            "| `message` | string, required | what happened |\n\
             | `severity` | string of 1-32 bytes, optional (default `info`) | e.g. `critical`, `warning` |\n",
            r#"{"message":"link down on ge-0/0/1","severity":"critical","ts":1767225600000}"#,
        ),
        "metrics" => (
            "| `name` | string of at most 200 bytes, required | e.g. `ifInOctets` |\n\
             | `value` | finite number, required | the measurement |\n\
             | `labels` | object, optional | kept with the record |\n",
            r#"{"name":"ifInOctets","value":123456,"labels":{"if":"ge-0/0/1"},"ts":1767225600000}"#,
        ),
        _ => (
            "| `message` | string, required | the log line |\n\
             | `level` | string of 1-32 bytes, optional (default `info`) | e.g. `err`, `warning` |\n",
            r#"{"message":"sshd[812]: Accepted publickey for ops","level":"info","ts":1767225600000}"#,
        ),
    };
    format!(
        "## Publishing: the telemetry contract\n\
         \n\
         A {kind} collector publishes **{family}** (`{why}`) on `{subject}.<source>`,\n\
         where `<source>` is one or more tokens of your choosing (host, device, ...).\n\
         \n\
         **Publish with JetStream acknowledgements** (`js.publish(...)` and wait for\n\
         the ack; not a plain NATS publish). A message is kept only once the server\n\
         acknowledges it; a publish that is not acknowledged (no reply, or an error\n\
         such as \"no responders\" while the site's buffer is being set up) was not\n\
         stored and must be retried. A plain publish nobody stores is lost without\n\
         an error.\n\
         \n\
         Each message is one JSON object of at most 64 KiB:\n\
         \n\
         | field | type | meaning |\n\
         | --- | --- | --- |\n\
         {fields}\
         | `ts` | integer, optional | event time, Unix milliseconds (default: when it was stored) |\n\
         \n\
         Other members are kept as part of the record. Text fields may not contain\n\
         the NUL character (U+0000). A message that breaks these rules is not\n\
         stored: it goes to your tenant's dead letters with the reason, listed by\n\
         `GET /api/v1/dead-letters` (kept 14 days by default).\n\
         \n\
         Example:\n\
         \n\
         ```json\n\
         {example}\n\
         ```\n",
        why = match family {
            "events" => "discrete occurrences such as SNMP traps",
            "metrics" => "named numeric measurements such as flow or OTLP counters",
            _ => "log lines such as syslog",
        },
    )
}

/// Builds the collector bundle (tar.gz bytes). Deterministic.
///
/// # Errors
///
/// A [`BundleError`] naming the first input that fails validation.
pub fn collector_bundle(bundle: &CollectorBundle) -> Result<Vec<u8>, BundleError> {
    bundle.validate()?;
    let mut archive = ArchiveBuilder::new(&bundle.root_dir())?;
    archive.add_file("collector.json", config_json(bundle)?, 0o644)?;
    archive.add_file("README.md", readme(bundle), 0o644)?;
    archive.add_file(
        "certs/collector.pem",
        validate::with_newline(&bundle.client_cert_pem),
        0o644,
    )?;
    archive.add_file(
        "certs/collector-key.pem",
        validate::with_newline(bundle.client_key_pem.expose()),
        0o600,
    )?;
    archive.add_file(
        "certs/ca.pem",
        validate::with_newline(&bundle.ca_pem),
        0o644,
    )?;
    archive.add_file(
        "creds/collector.creds",
        validate::with_newline(bundle.creds.expose()),
        0o600,
    )?;
    archive.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    const CREDS: &str = "-----BEGIN NATS USER JWT-----\neyJ\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUA\n------END USER NKEY SEED------\n";

    fn sample(target: NatsTarget) -> CollectorBundle {
        CollectorBundle {
            collector_type: CollectorType::Flowgger,
            package_id: Uuid::nil(),
            tenant_slug: "acme".into(),
            target,
            creds: CREDS.into(),
            client_cert_pem: CERT.into(),
            client_key_pem: KEY.into(),
            ca_pem: CERT.into(),
        }
    }

    #[test]
    fn for_package_prefers_the_edge_site() {
        let site = EdgeSiteRef {
            name: "NYC",
            slug: "nyc",
            nats_leaf_url: "nats://10.0.1.50:4222",
            node_urls: &[],
        };
        assert_eq!(
            NatsTarget::for_package(Some(site), "tls://saas:4222").url(),
            "nats://10.0.1.50:4222"
        );
        assert_eq!(
            NatsTarget::for_package(None, "tls://saas:4222").url(),
            "tls://saas:4222"
        );
    }

    #[test]
    fn subjects_by_type() {
        assert_eq!(CollectorType::Flowgger.subject_prefix("acme"), "logs.acme");
        assert_eq!(CollectorType::Syslog.subject_prefix("acme"), "logs.acme");
        assert_eq!(CollectorType::Trapd.subject_prefix("acme"), "events.acme");
        assert_eq!(CollectorType::Otel.subject_prefix("acme"), "metrics.acme");
        assert_eq!(
            CollectorType::Netflow.subject_prefix("acme"),
            "metrics.acme"
        );
    }

    #[test]
    fn config_and_readme_name_the_edge_leaf() {
        let b = sample(NatsTarget::EdgeSite {
            site_name: "NYC \"Office\"".into(),
            site_slug: "nyc".into(),
            nats_leaf_url: "nats://10.0.1.50:4222".into(),
            other_node_urls: Vec::new(),
        });
        let json: serde_json::Value =
            serde_json::from_str(&config_json(&b).expect("json")).expect("parse");
        assert_eq!(json["nats"]["url"], "nats://10.0.1.50:4222");
        assert_eq!(json["nats"]["target"], "edge_site");
        assert_eq!(json["nats"]["edge_site_name"], "NYC \"Office\"");
        assert_eq!(
            json["subject_prefix"], "edge.acme.nyc.logs",
            "buffered by the site leaf"
        );
        let r = readme(&b);
        assert!(r.contains(
            "connects to the local NATS leaf of edge site NYC \"Office\" (`nyc`) at `nats://10.0.1.50:4222`"
        ));
        assert!(r.contains("buffered there during WAN outages"));
    }

    #[test]
    fn a_leaf_cluster_site_gives_the_collector_every_node_url() {
        let nodes: Vec<String> = (0..3).map(|i| format!("tls://10.0.1.5{i}:4222")).collect();
        let b = sample(NatsTarget::for_package(
            Some(EdgeSiteRef {
                name: "NYC",
                slug: "nyc",
                nats_leaf_url: "tls://10.0.1.50:4222",
                node_urls: &nodes,
            }),
            "tls://saas:4222",
        ));
        let json: serde_json::Value =
            serde_json::from_str(&config_json(&b).expect("json")).expect("parse");
        assert_eq!(json["nats"]["url"], "tls://10.0.1.50:4222");
        assert_eq!(json["nats"]["urls"], serde_json::json!(nodes));
        let r = readme(&b);
        for url in &nodes {
            assert!(r.contains(url.as_str()), "README names {url}");
        }
        assert!(r.contains("3-node cluster"));
        // One leaf server: one URL, no cluster sentence.
        let one = sample(NatsTarget::for_package(
            Some(EdgeSiteRef {
                name: "NYC",
                slug: "nyc",
                nats_leaf_url: "tls://10.0.1.50:4222",
                node_urls: &[],
            }),
            "tls://saas:4222",
        ));
        let json: serde_json::Value =
            serde_json::from_str(&config_json(&one).expect("json")).expect("parse");
        assert_eq!(
            json["nats"]["urls"],
            serde_json::json!(["tls://10.0.1.50:4222"])
        );
        assert!(!readme(&one).contains("cluster"));
        // A node URL is checked like the site's own.
        let bad = sample(NatsTarget::EdgeSite {
            site_name: "NYC".into(),
            site_slug: "nyc".into(),
            nats_leaf_url: "tls://10.0.1.50:4222".into(),
            other_node_urls: vec!["tls://x:1\"\ninclude /etc/passwd".into()],
        });
        assert!(collector_bundle(&bad).is_err());
    }

    #[test]
    fn config_and_readme_name_the_saas_url() {
        let b = sample(NatsTarget::Saas {
            url: "tls://nats.serviceradar.cloud:4222".into(),
        });
        let json: serde_json::Value =
            serde_json::from_str(&config_json(&b).expect("json")).expect("parse");
        assert_eq!(json["nats"]["url"], "tls://nats.serviceradar.cloud:4222");
        assert_eq!(json["nats"]["target"], "saas");
        assert!(json["nats"].get("edge_site_slug").is_none());
        assert!(readme(&b).contains(
            "connects directly to the ServiceRadar SaaS NATS at `tls://nats.serviceradar.cloud:4222`"
        ));
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut b = sample(NatsTarget::Saas {
            url: "nats://$(x):1".into(),
        });
        assert!(collector_bundle(&b).is_err());
        b.target = NatsTarget::EdgeSite {
            site_name: "a\nb".into(),
            site_slug: "nyc".into(),
            nats_leaf_url: "nats://x:1".into(),
            other_node_urls: Vec::new(),
        };
        assert!(collector_bundle(&b).is_err());
        b.target = NatsTarget::Saas {
            url: "nats://x:1".into(),
        };
        b.tenant_slug = "ACME".into();
        assert!(collector_bundle(&b).is_err());
        b.tenant_slug = "acme".into();
        b.client_key_pem = CERT.into();
        assert!(collector_bundle(&b).is_err());
    }

    #[test]
    fn deterministic() {
        let t = NatsTarget::Saas {
            url: "nats://x:1".into(),
        };
        assert_eq!(
            collector_bundle(&sample(t.clone())).expect("bundle"),
            collector_bundle(&sample(t)).expect("bundle")
        );
    }
}
