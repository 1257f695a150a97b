//! `devices …`: the devices registered at an edge site (issue 16), over the
//! JSON API with the saved login: register, list, revoke, and `cert`, which
//! gets a device certificate for a CSR. The key stays where the CSR was
//! made: pass the device's own CSR with `--csr`, or, run on the device,
//! let `cert` generate the key here (0600) and send only the request.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::{Api, ConfigFile, print};
use crate::exit::{Context, Outcome};

/// `devices …`
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register a device at a site (defaults: 64 KiB messages, 100 subscriptions, 1 MiB/s).
    #[command(
        after_help = "Example:\n  serviceradar-cli devices register --site 0190… --name sensor-1 --max-payload 32768"
    )]
    Register {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Name, unique in the site: [a-z0-9-], 1-63 characters.
        #[arg(long)]
        name: String,
        /// Largest message in bytes (1 to 1048576).
        #[arg(long)]
        max_payload: Option<i64>,
        /// Most subscriptions at once (1 to 10000).
        #[arg(long)]
        max_subscriptions: Option<i64>,
        /// Data rate in bytes per second (1 to 104857600).
        #[arg(long)]
        data_rate: Option<i64>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// List a site's devices.
    #[command(
        after_help = "Example:\n  serviceradar-cli devices list --site 0190… --status active"
    )]
    List {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Only `active` or `revoked` devices.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Revoke a device: no certificate or renewal from then on.
    #[command(after_help = "Example:\n  serviceradar-cli devices revoke --site 0190… 0191…")]
    Revoke {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Device id.
        id: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Get a device certificate (7 days) for a CSR; the key never leaves where it was made.
    #[command(after_help = "Examples:\n  \
serviceradar-cli devices cert --site 0190… 0191… --csr device.csr --out-dir ./sensor-1\n  \
serviceradar-cli devices cert --site 0190… 0191… --out-dir ./sensor-1\n\n\
Writes <out-dir>/device.pem (the certificate, then the tenant CA: what the\n\
device presents) and <out-dir>/root-ca.pem. Without --csr a key is generated\n\
here and written to <out-dir>/device-key.pem (0600): run it on the device.\n\
The device renews over its own certificate at the agent gateway\n\
(DeviceEnrollment.SimpleReenroll).")]
    Cert {
        /// Site id.
        #[arg(long)]
        site: String,
        /// Device id.
        id: String,
        /// The device's PKCS#10 request (PEM); without it a key is made here.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// `devices …`
pub async fn devices(command: DevicesCommand, json: bool) -> Outcome {
    use reqwest::Method;
    match command {
        DevicesCommand::Register {
            site,
            name,
            max_payload,
            max_subscriptions,
            data_rate,
            config,
        } => {
            let api = Api::load(&config)?;
            let mut body = json!({"name": name});
            for (field, value) in [
                ("max_payload", max_payload),
                ("max_subscriptions", max_subscriptions),
                ("data_rate", data_rate),
            ] {
                if let Some(value) = value {
                    body[field] = Value::from(value);
                }
            }
            let device = api
                .json(
                    Method::POST,
                    &format!("/edge-sites/{site}/devices"),
                    Some(body),
                )
                .await?;
            print(json, &device, |d| {
                let id = d["id"].as_str().unwrap_or("?");
                println!(
                    "Registered device {} ({id}).",
                    d["name"].as_str().unwrap_or("?")
                );
                println!("Next: serviceradar-cli devices cert --site {site} {id} --csr device.csr");
            });
        }
        DevicesCommand::List {
            site,
            status,
            config,
        } => {
            let api = Api::load(&config)?;
            let mut path = format!("/edge-sites/{site}/devices?limit=200");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let page = api.json(Method::GET, &path, None).await?;
            print(json, &page, |page| {
                println!(
                    "{:<38} {:<24} {:<8} {:>8} {:>5} {:>9} CERT EXPIRES",
                    "ID", "NAME", "STATUS", "PAYLOAD", "SUBS", "RATE"
                );
                for d in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<24} {:<8} {:>8} {:>5} {:>9} {}",
                        d["id"].as_str().unwrap_or(""),
                        d["name"].as_str().unwrap_or(""),
                        d["status"].as_str().unwrap_or(""),
                        d["max_payload"].as_i64().unwrap_or(0),
                        d["max_subscriptions"].as_i64().unwrap_or(0),
                        d["data_rate"].as_i64().unwrap_or(0),
                        d["cert_not_after"]
                            .as_i64()
                            .map_or_else(|| "-".into(), crate::status::when)
                    );
                }
            });
        }
        DevicesCommand::Revoke { site, id, config } => {
            let api = Api::load(&config)?;
            let device = api
                .json(
                    Method::POST,
                    &format!("/edge-sites/{site}/devices/{id}/revoke"),
                    None,
                )
                .await?;
            print(json, &device, |_| println!("Revoked device {id}."));
        }
        DevicesCommand::Cert {
            site,
            id,
            csr,
            out_dir,
            config,
        } => {
            let api = Api::load(&config)?;
            let (key, csr) = match csr {
                Some(path) => (
                    None,
                    std::fs::read_to_string(&path)
                        .or_fail(|| format!("reading {}", path.display()))?,
                ),
                None => {
                    let (key, csr) = serviceradar_pki::new_key_and_request(&format!("device-{id}"))
                        .or_fail(|| "generating the device key".into())?;
                    (Some(key), csr)
                }
            };
            let cert = api
                .json(
                    Method::POST,
                    &format!("/edge-sites/{site}/devices/{id}/certificate"),
                    Some(json!({"csr": csr})),
                )
                .await?;
            std::fs::create_dir_all(&out_dir)
                .or_fail(|| format!("creating {}", out_dir.display()))?;
            let chain = cert["certificate_pem"].as_str().unwrap_or_default();
            let root = cert["root_ca_pem"].as_str().unwrap_or_default();
            let cert_path = out_dir.join("device.pem");
            crate::files::write_atomic(&cert_path, chain.as_bytes(), 0o644)?;
            crate::files::write_atomic(&out_dir.join("root-ca.pem"), root.as_bytes(), 0o644)?;
            let key_path = match &key {
                Some(key) => {
                    let path = out_dir.join("device-key.pem");
                    crate::files::write_private(&path, key)?;
                    Some(path)
                }
                None => None,
            };
            let summary = json!({
                "certificate": cert_path,
                "root_ca": out_dir.join("root-ca.pem"),
                "key": key_path,
                "serial": cert["serial"],
                "not_after": cert["not_after"],
            });
            print(json, &summary, |_| {
                println!(
                    "Wrote {} (expires {}) and root-ca.pem{}.",
                    cert_path.display(),
                    crate::status::when(cert["not_after"].as_i64().unwrap_or(0)),
                    if key.is_some() {
                        " and device-key.pem (0600, generated here)"
                    } else {
                        ""
                    }
                );
            });
        }
    }
    Ok(())
}
