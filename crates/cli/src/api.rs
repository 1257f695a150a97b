//! The operator's commands against the JSON API (`login`, `sites`,
//! `tokens`, `bundle`, `agent command`, `agent checks`), with the URL and API token kept in a config file
//! (0600) by `login`. Each command is one or two requests; errors print the
//! API's own message.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::exit::{Context, Failure, Outcome, REFUSED, UNREACHABLE, USAGE};
use crate::files::write_private;

/// Arguments of `login`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  serviceradar-cli login --url http://127.0.0.1:8080 --token srt_…\n\n\
Create the token in the web UI (Tokens) or with POST /api/v1/tokens."
)]
pub struct LoginArgs {
    /// The control plane's base URL.
    #[arg(long)]
    pub url: String,
    /// An API token (`srt_…`).
    #[arg(long, env = "SERVICERADAR_API_TOKEN", hide_env_values = true)]
    pub token: String,
    #[command(flatten)]
    pub config: ConfigFile,
}

/// Where `login` keeps the URL and token.
#[derive(Debug, Clone, Args)]
pub struct ConfigFile {
    /// Config file (default: $XDG_CONFIG_HOME/serviceradar/cli.json, else ~/.config/serviceradar/cli.json).
    #[arg(long = "config", env = "SERVICERADAR_CLI_CONFIG")]
    pub path: Option<PathBuf>,
}

/// `sites …`
#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// List edge sites.
    List {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Create an edge site.
    #[command(
        after_help = "Example:\n  serviceradar-cli sites create --name 'Edge Lab' --slug edge-lab"
    )]
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Slug (default: from the name).
        #[arg(long)]
        slug: Option<String>,
        /// The URL collectors at the site use to reach its leaf.
        #[arg(long, default_value = "nats://localhost:4222")]
        nats_leaf_url: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Show one site.
    Show {
        /// Site id.
        id: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Delete a site (its leaf and agent are cut off).
    Delete {
        /// Site id.
        id: String,
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// `tokens …` (enrollment tokens)
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an enrollment token for a site (shown once).
    #[command(
        after_help = "Example:\n  serviceradar-cli tokens create --site 0190… --expires-in 2h"
    )]
    Create {
        /// Site id.
        #[arg(long)]
        site: String,
        /// `site` (leaf + agent), `agent` or `collector:<type>`.
        #[arg(long, default_value = "site")]
        scope: String,
        /// Lifetime: 10m to 90d.
        #[arg(long, default_value = "24h")]
        expires_in: String,
        /// How many hosts may redeem it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Gateway-initiated mode: `host:port` where the platform's gateway
        /// reaches the agent this token enrolls (the agent then listens
        /// there and dials nothing). A public address unless the operator
        /// allows the range. Omitted: the agent dials out.
        #[arg(long)]
        agent_endpoint: Option<String>,
        /// Seconds between the gateway's polls (with --agent-endpoint).
        #[arg(long, requires = "agent_endpoint")]
        poll_interval_secs: Option<i64>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// List enrollment tokens and their status.
    List {
        /// Only this site's.
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// One token with its history (created, redeemed, refused, conflicts, revoked).
    Show {
        /// Token id.
        id: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// `bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Download a site bundle (holds the site's private keys).
    Download {
        /// Site id.
        site: String,
        /// Output file (default: the server's file name, in the current directory).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    url: String,
    token: String,
}

fn config_path(config: &ConfigFile) -> Outcome<PathBuf> {
    if let Some(path) = &config.path {
        return Ok(path.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Failure::new(USAGE, "no HOME: pass --config FILE"))?;
    Ok(base.join("serviceradar").join("cli.json"))
}

/// A client for the saved control plane.
pub(crate) struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(url: &str, token: &str) -> Outcome<Self> {
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .or_fail(|| "building the HTTP client".into())?,
        })
    }

    pub(crate) fn load(config: &ConfigFile) -> Outcome<Self> {
        let path = config_path(config)?;
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Failure::new(
                USAGE,
                format!("not logged in ({} missing): run `serviceradar-cli login --url URL --token srt_…`", path.display()),
            )
        })?;
        let saved: Saved =
            serde_json::from_str(&text).or_fail(|| format!("reading {}", path.display()))?;
        Self::new(&saved.url, &saved.token)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Outcome<reqwest::Response> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::new(UNREACHABLE, format!("cannot reach {} ({e})", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = error_message(response).await;
        Err(Failure::new(
            match status.as_u16() {
                400 | 422 => USAGE,
                401 | 403 | 404 | 409 => REFUSED,
                _ => crate::exit::FAILED,
            },
            message,
        ))
    }

    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Outcome<Value> {
        self.call(method, path, body)
            .await?
            .json()
            .await
            .or_fail(|| "reading the answer".into())
    }
}

/// The API's error message (`{"error": {"message", "fields"}}`), or the status.
pub async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<Value>().await {
        Ok(body) => {
            let mut message = body["error"]["message"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_owned);
            if let Some(fields) = body["error"]["fields"].as_array() {
                for field in fields {
                    message.push_str(&format!(
                        "\n  {}: {}",
                        field["field"].as_str().unwrap_or("?"),
                        field["message"].as_str().unwrap_or("?")
                    ));
                }
            }
            message
        }
        Err(_) => status.to_string(),
    }
}

pub(crate) fn print(json: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        human(value);
    }
}

/// `login`: checks the token with `GET /me`, then saves URL and token.
pub async fn login(args: &LoginArgs, json: bool) -> Outcome {
    let api = Api::new(&args.url, &args.token)?;
    let me = api.json(reqwest::Method::GET, "/me", None).await?;
    let path = config_path(&args.config)?;
    let saved = serde_json::to_string_pretty(&Saved {
        url: api.url.clone(),
        token: args.token.clone(),
    })
    .or_fail(|| "encoding the config".into())?;
    write_private(&path, &saved)?;
    print(json, &me, |me| {
        println!(
            "Logged in to {} as {} ({} in tenant {}); saved to {}.",
            api.url,
            me["user_id"].as_str().unwrap_or("?"),
            me["role"].as_str().unwrap_or("?"),
            me["tenant_slug"].as_str().unwrap_or("?"),
            path.display()
        );
    });
    Ok(())
}

/// `sites …`
pub async fn sites(command: SitesCommand, json: bool) -> Outcome {
    use reqwest::Method;
    match command {
        SitesCommand::List { config } => {
            let api = Api::load(&config)?;
            let page = api.json(Method::GET, "/edge-sites?limit=200", None).await?;
            print(json, &page, |page| {
                println!("{:<38} {:<24} {:<10} NAME", "ID", "SLUG", "STATUS");
                for site in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<24} {:<10} {}",
                        site["id"].as_str().unwrap_or(""),
                        site["slug"].as_str().unwrap_or(""),
                        site["status"].as_str().unwrap_or(""),
                        site["name"].as_str().unwrap_or("")
                    );
                }
            });
        }
        SitesCommand::Create {
            name,
            slug,
            nats_leaf_url,
            config,
        } => {
            let api = Api::load(&config)?;
            let mut body = json!({"name": name, "nats_leaf_url": nats_leaf_url});
            if let Some(slug) = slug {
                body["slug"] = Value::String(slug);
            }
            let site = api.json(Method::POST, "/edge-sites", Some(body)).await?;
            print(json, &site, |site| {
                let id = site["id"].as_str().unwrap_or("?");
                println!(
                    "Created site {} ({id}).",
                    site["slug"].as_str().unwrap_or("?")
                );
                println!("Next: serviceradar-cli tokens create --site {id}");
            });
        }
        SitesCommand::Show { id, config } => {
            let api = Api::load(&config)?;
            let site = api
                .json(Method::GET, &format!("/edge-sites/{id}"), None)
                .await?;
            print(json, &site, |site| {
                println!("{}", serde_json::to_string_pretty(site).unwrap_or_default())
            });
        }
        SitesCommand::Delete { id, config } => {
            let api = Api::load(&config)?;
            api.call(Method::DELETE, &format!("/edge-sites/{id}"), None)
                .await?;
            print(json, &json!({"deleted": id}), |_| {
                println!("Deleted site {id}; its leaf and agent are cut off.")
            });
        }
    }
    Ok(())
}

/// `tokens …`
pub async fn tokens(command: TokensCommand, json: bool) -> Outcome {
    use reqwest::Method;
    match command {
        TokensCommand::Create {
            site,
            scope,
            expires_in,
            uses,
            agent_endpoint,
            poll_interval_secs,
            config,
        } => {
            let api = Api::load(&config)?;
            let mut body = json!({"scope": scope, "expires_in": expires_in, "uses": uses});
            if let Some(endpoint) = agent_endpoint {
                body["agent_endpoint"] = json!(endpoint);
            }
            if let Some(secs) = poll_interval_secs {
                body["poll_interval_secs"] = json!(secs);
            }
            let created = api
                .json(
                    Method::POST,
                    &format!("/edge-sites/{site}/enrollment-tokens"),
                    Some(body),
                )
                .await?;
            print(json, &created, |created| {
                println!(
                    "Enrollment token {} ({}, {} use(s), expires {}). Shown once:\n",
                    created["token"]["id"].as_str().unwrap_or("?"),
                    created["token"]["scope"].as_str().unwrap_or("?"),
                    created["token"]["max_uses"],
                    crate::status::when(created["token"]["expires_at"].as_i64().unwrap_or(0)),
                );
                println!("  {}\n", created["secret"].as_str().unwrap_or("?"));
                if let Some(endpoint) = created["token"]["agent_endpoint"].as_str() {
                    println!(
                        "Gateway-initiated: the platform's gateway will poll the agent at {endpoint} \
                         every {} s (its agent listens; allow TCP from the platform's gateways to it).\n",
                        created["token"]["poll_interval_secs"]
                    );
                }
                println!(
                    "On the edge box, run:\n  {}",
                    created["command"].as_str().unwrap_or("?")
                );
            });
        }
        TokensCommand::List { site, config } => {
            let api = Api::load(&config)?;
            let path = match site {
                Some(site) => format!("/enrollment-tokens?limit=200&site_id={site}"),
                None => "/enrollment-tokens?limit=200".into(),
            };
            let page = api.json(Method::GET, &path, None).await?;
            print(json, &page, |page| {
                println!(
                    "{:<38} {:<18} {:<9} {:<5} EXPIRES",
                    "ID", "SCOPE", "STATUS", "USES"
                );
                for t in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<18} {:<9} {:<5} {}",
                        t["id"].as_str().unwrap_or(""),
                        t["scope"].as_str().unwrap_or(""),
                        t["status"].as_str().unwrap_or(""),
                        format!("{}/{}", t["uses"], t["max_uses"]),
                        crate::status::when(t["expires_at"].as_i64().unwrap_or(0))
                    );
                }
            });
        }
        TokensCommand::Show { id, config } => {
            let api = Api::load(&config)?;
            let detail = api
                .json(Method::GET, &format!("/enrollment-tokens/{id}"), None)
                .await?;
            print(json, &detail, |d| {
                println!(
                    "Token {} for site {}: {} ({}/{} uses), expires {}",
                    d["token"]["id"].as_str().unwrap_or("?"),
                    d["token"]["site_id"].as_str().unwrap_or("?"),
                    d["token"]["status"].as_str().unwrap_or("?"),
                    d["token"]["uses"],
                    d["token"]["max_uses"],
                    crate::status::when(d["token"]["expires_at"].as_i64().unwrap_or(0))
                );
                for e in d["events"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {:<9} {}{}",
                        crate::status::when(e["at"].as_i64().unwrap_or(0)),
                        e["kind"].as_str().unwrap_or(""),
                        e["detail"].as_str().unwrap_or(""),
                        e["remote_addr"]
                            .as_str()
                            .map(|a| format!(" from {a}"))
                            .unwrap_or_default()
                    );
                }
            });
        }
        TokensCommand::Revoke { id, config } => {
            let api = Api::load(&config)?;
            let token = api
                .json(
                    Method::POST,
                    &format!("/enrollment-tokens/{id}/revoke"),
                    None,
                )
                .await?;
            print(json, &token, |_| println!("Revoked enrollment token {id}."));
        }
    }
    Ok(())
}

/// `bundle download`
pub async fn bundle(command: BundleCommand, json: bool) -> Outcome {
    let BundleCommand::Download {
        site,
        output,
        config,
    } = command;
    let api = Api::load(&config)?;
    let response = api
        .call(
            reqwest::Method::GET,
            &format!("/edge-sites/{site}/bundle"),
            None,
        )
        .await?;
    let name = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=").nth(1))
        .map(|n| n.trim_matches('"').to_string())
        .filter(|n| !n.contains('/') && !n.is_empty())
        .unwrap_or_else(|| format!("serviceradar-site-{site}.tar.gz"));
    let bytes = response
        .bytes()
        .await
        .or_fail(|| "downloading the bundle".into())?;
    let path = output.unwrap_or_else(|| PathBuf::from(&name));
    crate::files::write_atomic(&path, &bytes, 0o600)?;
    print(json, &json!({"file": path, "bytes": bytes.len()}), |_| {
        println!(
            "Saved {} ({} bytes; it holds the site's private keys: keep it safe).",
            path.display(),
            bytes.len()
        );
    });
    Ok(())
}

/// `agent command <site> <kind>`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  serviceradar-cli agent command 0190… collect_diagnostics\n  \
serviceradar-cli agent command 0190… run_checks --no-wait\n\n\
Kinds: run_checks, reload_config, renew_certificates, collect_diagnostics.\n\
Refused at once (exit 3, agent_offline) when the site's agent has no open control\n\
stream; otherwise waits for the agent's result (up to the TTL) and prints it.\n\
A listening agent (gateway-initiated mode) gets the command at a poll brought\n\
forward to now and returns the result with a poll a second later (while the agent\n\
does not answer, the command waits for the gateway's next retry)."
)]
pub struct AgentCommandArgs {
    /// Site id.
    pub site: String,
    /// What the agent should do.
    pub kind: String,
    /// Seconds the agent has to finish (1-3600).
    #[arg(long, default_value_t = 60)]
    pub ttl_secs: i64,
    /// Print the command as issued instead of waiting for its result.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub config: ConfigFile,
}

/// `agent results`: the results uploads of a site's agent.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  serviceradar-cli agent results 0190… --from 1767225600000")]
pub struct AgentResultsArgs {
    /// Site id.
    pub site: String,
    /// Only uploads created at or after this time (Unix ms).
    #[arg(long)]
    pub from: Option<i64>,
    /// Only uploads created before this time (Unix ms).
    #[arg(long)]
    pub to: Option<i64>,
    #[command(flatten)]
    pub config: ConfigFile,
}

/// `agent results`: one line per upload (the range is checked by the API).
pub async fn agent_results(args: AgentResultsArgs, json: bool) -> Outcome {
    let query = [("from", args.from), ("to", args.to)]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&");
    let value = Api::load(&args.config)?
        .json(
            reqwest::Method::GET,
            &format!("/edge-sites/{}/agent/results?{query}", args.site),
            None,
        )
        .await?;
    print(json, &value, |v| {
        for u in v["items"].as_array().into_iter().flatten() {
            println!(
                "{}  {}  {} bytes  {}  {}",
                u["id"].as_str().unwrap_or("?"),
                u["upload_id"].as_str().unwrap_or("?"),
                u["bytes"],
                u["content_type"].as_str().unwrap_or("?"),
                if u["complete"] == true {
                    "complete"
                } else {
                    "incomplete"
                }
            );
        }
    });
    Ok(())
}

/// `agent checks …`
#[derive(Debug, Subcommand)]
pub enum ChecksCommand {
    /// The checks configured for the site's agent and the config version it runs.
    List {
        /// Site id.
        site: String,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Add a check (pushed to the agent at once).
    #[command(
        after_help = "Example:\n  serviceradar-cli agent checks add 0190… --name db --kind tcp --target 10.0.0.5:5432"
    )]
    Add {
        /// Site id.
        site: String,
        /// Name, unique per agent.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Change a check (pushed to the agent at once).
    Change {
        /// Site id.
        site: String,
        /// The check's name.
        name: String,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Remove a check (pushed to the agent at once).
    Remove {
        /// Site id.
        site: String,
        /// The check's name.
        name: String,
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// A check's fields (validated by the API).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// nats_leaf, tcp, http, dns or icmp.
    #[arg(long)]
    pub kind: String,
    /// host:port (tcp), URL (http, nats_leaf), name (dns), host (icmp).
    #[arg(long)]
    pub target: String,
    /// Seconds between runs (5-86400).
    #[arg(long)]
    pub interval_secs: Option<i64>,
    /// Milliseconds one run may take (100-60000, less than the interval).
    #[arg(long)]
    pub timeout_ms: Option<i64>,
}

impl CheckArgs {
    fn body(&self, name: Option<&str>) -> Value {
        let mut body = json!({ "kind": self.kind, "target": self.target });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        if let Some(i) = self.interval_secs {
            body["interval_secs"] = json!(i);
        }
        if let Some(t) = self.timeout_ms {
            body["timeout_ms"] = json!(t);
        }
        body
    }
}

/// `agent command`: issue, then wait for the result.
pub async fn agent_command(args: AgentCommandArgs, json: bool) -> Outcome {
    use reqwest::Method;
    let api = Api::load(&args.config)?;
    let base = format!("/edge-sites/{}/agent/commands", args.site);
    let mut command = api
        .json(
            Method::POST,
            &base,
            Some(json!({ "kind": args.kind, "ttl_secs": args.ttl_secs })),
        )
        .await?;
    if !args.no_wait {
        let id = command["id"].as_str().unwrap_or_default().to_owned();
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs(u64::try_from(args.ttl_secs).unwrap_or(60) + 2);
        while !matches!(
            command["status"].as_str(),
            Some("succeeded" | "failed" | "expired" | "offline")
        ) && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            command = api.json(Method::GET, &format!("{base}/{id}"), None).await?;
        }
    }
    print(json, &command, |c| {
        println!(
            "Command {} ({}): {}{}",
            c["id"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
            c["message"]
                .as_str()
                .map(|m| format!(" - {m}"))
                .unwrap_or_default()
        );
        if !c["result"].is_null() {
            println!(
                "{}",
                serde_json::to_string_pretty(&c["result"]).unwrap_or_default()
            );
        }
    });
    match command["status"].as_str() {
        Some("failed" | "expired") => Err(Failure::new(
            crate::exit::FAILED,
            format!(
                "the command {}",
                command["status"].as_str().unwrap_or("failed")
            ),
        )),
        _ => Ok(()),
    }
}

/// `agent checks …`
pub async fn agent_checks(command: ChecksCommand, json: bool) -> Outcome {
    use reqwest::Method;
    let path = |site: &str| format!("/edge-sites/{site}/agent/checks");
    let value = match command {
        ChecksCommand::List { site, config } => {
            Api::load(&config)?
                .json(Method::GET, &path(&site), None)
                .await?
        }
        ChecksCommand::Add {
            site,
            name,
            check,
            config,
        } => {
            Api::load(&config)?
                .json(Method::POST, &path(&site), Some(check.body(Some(&name))))
                .await?
        }
        ChecksCommand::Change {
            site,
            name,
            check,
            config,
        } => {
            Api::load(&config)?
                .json(
                    Method::PUT,
                    &format!("{}/{name}", path(&site)),
                    Some(check.body(None)),
                )
                .await?
        }
        ChecksCommand::Remove { site, name, config } => {
            Api::load(&config)?
                .call(Method::DELETE, &format!("{}/{name}", path(&site)), None)
                .await?;
            json!({ "removed": name })
        }
    };
    print(json, &value, |v| {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
    });
    Ok(())
}
