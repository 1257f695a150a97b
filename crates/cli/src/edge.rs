//! `site init`: redeem an enrollment token with keys generated here.
//!
//! The token is read (not verified: only the control plane can) for the
//! control plane's URL and the pin of its root CA. Every private key and the
//! NATS user seed are generated on this box; the request carries CSRs and the
//! public key only. The root CA that comes back must match the token's pin,
//! or nothing is written. Files are written keys first and `identity.json`
//! last, each atomically, so an interrupted run leaves no identity behind.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use serviceradar_domain::enrollment::{Enrolled, RedeemRequest};
use serviceradar_natsconf::jwt::{KeyKind, NKey, creds_file};
use serviceradar_pki::new_key_and_request;
use sha2::{Digest, Sha256};

use crate::StateDir;
use crate::exit::{Context, EXISTS, Failure, Outcome, REFUSED, UNREACHABLE, USAGE};
use crate::files::{Identity, Layout, write_private, write_public};

/// How long `site init` waits for a site that is still being provisioned.
const PROVISIONING_WAIT: Duration = Duration::from_secs(60);

/// Arguments of `site init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The enrollment token (`sr1.…`), as shown when it was created.
    #[arg(long, env = "SERVICERADAR_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub dir: StateDir,
    /// Replace an existing identity in the state dir.
    #[arg(long)]
    pub force: bool,
    /// What to enroll: `site` (leaf and agent) or `agent`.
    #[arg(long, default_value = "site")]
    pub scope: String,
    /// This host's identity for duplicate detection (default: the SHA-256 of
    /// /etc/machine-id). A cloned image must get a new machine id.
    #[arg(long, env = "SERVICERADAR_HOST_ID", hide_env_values = true)]
    pub host_id: Option<String>,
}

/// Arguments of `collector add`.
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// The collector type: flowgger, trapd, otel, netflow or syslog.
    pub collector_type: String,
    /// An enrollment token of scope `collector:<type>`.
    #[arg(long, env = "SERVICERADAR_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub dir: StateDir,
    /// This host's identity (default: the SHA-256 of /etc/machine-id).
    #[arg(long, env = "SERVICERADAR_HOST_ID", hide_env_values = true)]
    pub host_id: Option<String>,
}

/// Runs `collector add`.
pub async fn collector_add(args: &CollectorArgs, json: bool) -> Outcome {
    let kind = args.collector_type.trim().to_lowercase();
    if !["flowgger", "trapd", "otel", "netflow", "syslog"].contains(&kind.as_str()) {
        return Err(Failure::new(
            USAGE,
            format!(
                "unknown collector type {kind:?}: expected flowgger, trapd, otel, netflow or syslog"
            ),
        ));
    }
    let claims = serviceradar_pki::token::read(&args.token)
        .map_err(|e| Failure::new(USAGE, format!("{e}; copy the token again in full")))?;
    let scope = format!("collector:{kind}");
    if claims.scope != scope {
        return Err(Failure::new(
            USAGE,
            format!(
                "this token is for {:?}, not {scope:?}: ask for a token with --scope {scope}",
                claims.scope
            ),
        ));
    }
    let dir = crate::files::absolute(&args.dir.state_dir)?
        .join("collectors")
        .join(&kind);
    let (key, csr) =
        new_key_and_request("collector").or_fail(|| "generating the collector key".into())?;
    let user = NKey::generate(KeyKind::User);
    let request = RedeemRequest {
        token: args.token.trim().to_string(),
        scope: Some(scope),
        host_fingerprint: host_fingerprint(args.host_id.as_deref()),
        hostname: hostname(),
        leaf_client_csr: None,
        leaf_server_csr: None,
        nats_user_public_key: Some(user.public_key()),
        agent_csr: None,
        collector_csr: Some(csr),
    };
    let enrolled = redeem_pinned(&claims, &request, json).await?;
    let collector = enrolled
        .collector
        .as_ref()
        .ok_or_else(|| Failure::failed("the control plane sent no collector identity"))?;
    let cert = dir.join("certs").join("collector.pem");
    let key_file = dir.join("certs").join("collector-key.pem");
    let ca = dir.join("certs").join("ca.pem");
    let creds_path = dir.join("creds").join("collector.creds");
    write_private(&key_file, &key)?;
    write_public(&cert, &collector.cert_pem)?;
    write_public(
        &ca,
        &format!("{}{}", enrolled.tenant_ca_pem, enrolled.root_ca_pem),
    )?;
    let seed = user
        .seed()
        .or_fail(|| "exporting the NATS user seed".into())?;
    let creds = creds_file(&collector.user_jwt, &seed).or_fail(|| "writing the creds".into())?;
    write_private(&creds_path, creds.as_str())?;
    let config = serde_json::json!({
        "collector_type": collector.collector_type,
        "package_id": collector.package_id,
        "tenant": enrolled.tenant_slug,
        "subject_prefix": collector.subject_prefix,
        "nats": {
            "url": collector.nats_url,
            "target": "edge_site",
            "edge_site_slug": enrolled.site_slug,
            "edge_site_name": enrolled.site_name,
            "creds_file": creds_path,
            "tls": {"cert_file": cert, "key_file": key_file, "ca_file": ca},
        },
    });
    let text = serde_json::to_string_pretty(&config).or_fail(|| "encoding the config".into())?;
    write_public(&dir.join("collector.json"), &format!("{text}\n"))?;
    if json {
        println!("{text}");
    } else {
        println!(
            "Collector {kind} enrolled at site {:?} (package {}): publish to {} under {}.>",
            enrolled.site_name, collector.package_id, collector.nats_url, collector.subject_prefix
        );
        println!("  config: {}", dir.join("collector.json").display());
    }
    Ok(())
}

/// A stable fingerprint of this host: SHA-256 of the given id, else of
/// `/etc/machine-id` (or D-Bus's copy), else of the host name.
fn host_fingerprint(given: Option<&str>) -> String {
    let source = given.map(str::to_owned).unwrap_or_else(|| {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(hostname)
    });
    hex::encode(Sha256::digest(source.trim().as_bytes()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// SHA-256 (hex) of the first certificate of a PEM text (DER).
pub fn pem_sha256(pem: &str) -> Outcome<String> {
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Failure::failed(format!("reading a certificate: {e}")))?
        .1
        .contents;
    Ok(hex::encode(Sha256::digest(der)))
}

/// Runs `site init`.
pub async fn init(args: &InitArgs, json: bool) -> Outcome {
    let claims = serviceradar_pki::token::read(&args.token)
        .map_err(|e| Failure::new(USAGE, format!("{e}; copy the token again in full")))?;
    let layout = Layout::new(&args.dir.state_dir);
    if layout.identity().exists() && !args.force {
        return Err(Failure::new(
            EXISTS,
            format!(
                "{} already holds an identity; run with --force to replace it \
                 (on the same box this resumes the same site identity)",
                layout.root.display()
            ),
        ));
    }
    let site = args.scope == "site";
    if !site && args.scope != "agent" {
        return Err(Failure::new(USAGE, "--scope must be site or agent"));
    }
    let fingerprint = host_fingerprint(args.host_id.as_deref());
    let host = hostname();
    progress(json, &format!("Generating keys on this box ({host})…"));
    let (agent_key, agent_csr) =
        new_key_and_request("agent").or_fail(|| "generating the agent key".into())?;
    let mut leaf_keys = None;
    let mut request = RedeemRequest {
        token: args.token.trim().to_string(),
        scope: Some(args.scope.clone()),
        host_fingerprint: fingerprint.clone(),
        hostname: host.clone(),
        leaf_client_csr: None,
        leaf_server_csr: None,
        nats_user_public_key: None,
        agent_csr: Some(agent_csr),
        collector_csr: None,
    };
    if site {
        let (client_key, client_csr) =
            new_key_and_request("leaf").or_fail(|| "generating the leaf client key".into())?;
        let (server_key, server_csr) = new_key_and_request("leaf-server")
            .or_fail(|| "generating the leaf server key".into())?;
        let user = NKey::generate(KeyKind::User);
        request.leaf_client_csr = Some(client_csr);
        request.leaf_server_csr = Some(server_csr);
        request.nats_user_public_key = Some(user.public_key());
        leaf_keys = Some((client_key, server_key, user));
    }
    let enrolled = redeem_pinned(&claims, &request, json).await?;
    write_material(&layout, &enrolled, agent_key.as_str(), leaf_keys.as_ref())?;
    let identity = Identity {
        control_url: claims.url.clone(),
        tenant_id: enrolled.tenant_id.clone(),
        tenant_slug: enrolled.tenant_slug.clone(),
        site_id: enrolled.site_id.clone(),
        site_slug: enrolled.site_slug.clone(),
        site_name: enrolled.site_name.clone(),
        scope: enrolled.scope.clone(),
        agent_id: enrolled.agent.as_ref().map(|a| a.agent_id.clone()),
        gateway_url: enrolled.agent.as_ref().map(|a| a.gateway_url.clone()),
        agent_endpoint: enrolled.agent.as_ref().and_then(|a| a.endpoint.clone()),
        hub_url: enrolled.leaf.as_ref().map(|l| l.hub_url.clone()),
        client_listen: enrolled.leaf.as_ref().map(|l| l.client_listen.clone()),
        monitoring_listen: enrolled
            .leaf
            .as_ref()
            .and_then(|l| l.monitoring_listen.clone()),
        host_fingerprint: fingerprint,
        expires_at: enrolled.expires_at,
        enrolled_at: now_ms(),
        resumed: enrolled.resumed,
    };
    identity.save(&layout)?;
    if json {
        let text =
            serde_json::to_string_pretty(&identity).or_fail(|| "encoding identity".into())?;
        println!("{text}");
    } else {
        println!(
            "{} site {:?} ({}) of tenant {} as {}; certificates valid until {}.",
            if enrolled.resumed {
                "Resumed"
            } else {
                "Joined"
            },
            enrolled.site_name,
            enrolled.site_slug,
            enrolled.tenant_slug,
            host,
            crate::status::when(enrolled.expires_at)
        );
        println!("  identity: {}", layout.identity().display());
        let dir = state_dir_flag(&layout.root);
        if site {
            println!(
                "Next: serviceradar-cli nats setup{dir}   (then: serviceradar-cli agent setup{dir})"
            );
        } else {
            println!("Next: serviceradar-cli agent setup{dir}");
        }
    }
    Ok(())
}

/// ` --state-dir X` when it is not the default.
pub fn state_dir_flag(root: &Path) -> String {
    if root == Path::new("/etc/serviceradar") {
        String::new()
    } else {
        format!(" --state-dir {}", root.display())
    }
}

fn write_material(
    layout: &Layout,
    enrolled: &Enrolled,
    agent_key: &str,
    leaf_keys: Option<&(zeroize::Zeroizing<String>, zeroize::Zeroizing<String>, NKey)>,
) -> Outcome {
    let root_ca = &enrolled.root_ca_pem;
    let tenant_ca = &enrolled.tenant_ca_pem;
    write_public(&layout.cert("root-ca.pem"), root_ca)?;
    write_public(&layout.cert("tenant-ca.pem"), tenant_ca)?;
    write_public(
        &layout.cert("ca-chain.pem"),
        &format!("{tenant_ca}{root_ca}"),
    )?;
    if let Some(agent) = &enrolled.agent {
        write_private(&layout.cert("agent-key.pem"), agent_key)?;
        write_public(&layout.cert("agent.pem"), &agent.cert_pem)?;
    }
    if let (Some(leaf), Some((client_key, server_key, user))) = (&enrolled.leaf, leaf_keys) {
        write_private(&layout.cert("leaf-client-key.pem"), client_key)?;
        write_public(&layout.cert("leaf-client.pem"), &leaf.client_cert_pem)?;
        write_private(&layout.cert("leaf-server-key.pem"), server_key)?;
        write_public(&layout.cert("leaf-server.pem"), &leaf.server_cert_pem)?;
        let seed = user
            .seed()
            .or_fail(|| "exporting the NATS user seed".into())?;
        let creds = creds_file(&leaf.user_jwt, &seed).or_fail(|| "writing the creds".into())?;
        write_private(&layout.creds(), creds.as_str())?;
        let stream = serde_json::to_string_pretty(&leaf.edge_buffer_stream)
            .or_fail(|| "encoding the buffer stream".into())?;
        write_public(&layout.edge_buffer(), &format!("{stream}\n"))?;
    }
    Ok(())
}

/// Redeems the token at the control plane its claims name and checks that
/// the root CA it sent is the one the token pins (else nothing is written).
async fn redeem_pinned(
    claims: &serviceradar_pki::token::EnrollmentClaims,
    request: &RedeemRequest,
    json: bool,
) -> Outcome<Enrolled> {
    progress(json, &format!("Redeeming the token at {}…", claims.url));
    let enrolled = redeem(&claims.url, request, json).await?;
    // The trust anchor must be the one the token was issued with.
    let pin = pem_sha256(&enrolled.root_ca_pem)?;
    if pin != claims.ca_sha256 {
        return Err(Failure::new(
            REFUSED,
            format!(
                "the control plane at {} sent a root CA (sha256 {pin}) that does not match the \
                 token's pin ({}); nothing was written. Check that the URL reaches your control \
                 plane and not something in between.",
                claims.url, claims.ca_sha256
            ),
        ));
    }
    Ok(enrolled)
}

async fn redeem(url: &str, request: &RedeemRequest, json: bool) -> Outcome<Enrolled> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .or_fail(|| "building the HTTP client".into())?;
    let endpoint = format!("{}/api/v1/enroll", url.trim_end_matches('/'));
    let started = Instant::now();
    loop {
        let response = client
            .post(&endpoint)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    UNREACHABLE,
                    format!(
                        "cannot reach the control plane at {url} ({e}); check the box's network, \
                         DNS and proxy, and that the token's URL is reachable from here"
                    ),
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<Enrolled>()
                .await
                .or_fail(|| "reading the control plane's answer".into());
        }
        let message = crate::api::error_message(response).await;
        match status.as_u16() {
            503 if started.elapsed() < PROVISIONING_WAIT => {
                progress(json, "  the site is still being provisioned; waiting…");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            400 | 422 => return Err(Failure::new(USAGE, message)),
            401 | 403 | 404 | 409 => return Err(Failure::new(REFUSED, message)),
            _ => {
                return Err(Failure::failed(format!(
                    "the control plane answered {status}: {message}"
                )));
            }
        }
    }
}

/// A progress line on stderr (not with `--json`, whose stdout is the result).
pub fn progress(json: bool, line: &str) {
    if !json {
        eprintln!("{line}");
    }
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_fingerprint_is_stable_and_differs_between_hosts() {
        assert_eq!(host_fingerprint(Some("a")), host_fingerprint(Some("a\n")));
        assert_ne!(host_fingerprint(Some("a")), host_fingerprint(Some("b")));
        assert_eq!(host_fingerprint(None).len(), 64);
    }
}
