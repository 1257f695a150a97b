//! What `serviceradar-core serve` prints once it listens: where everything
//! is, the first owner's password (once), and the next step for a new user.
//!
//! Why here: it is first-run guidance, like the demo this crate runs, and a
//! pure function of what `serve` knows, so it is tested without starting a
//! server (the binary only gathers the facts and prints the text).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// The hub `serve` uses.
#[derive(Debug, Clone)]
pub enum HubReport<'a> {
    /// The `nats-server` it runs itself.
    Embedded {
        /// Where its config and log are.
        dir: &'a Path,
        /// Its client URL.
        client: String,
        /// Its leafnode listen address.
        leafnode: &'a str,
        /// Its monitoring listen address, if any.
        monitoring: Option<&'a str>,
    },
    /// An external hub's client URL(s).
    External(String),
}

/// The tenant and owner created on the first start.
#[derive(Debug, Clone)]
pub struct FirstOwner<'a> {
    /// The tenant's slug.
    pub tenant: &'a str,
    /// The owner's e-mail.
    pub email: &'a str,
    /// The generated password, shown once (none when one was given).
    pub password: Option<&'a str>,
}

/// Everything the start-up report says.
#[derive(Debug, Clone)]
pub struct ServeReport<'a> {
    /// The base URL users reach the API and UI at.
    pub base: &'a str,
    /// The data dir.
    pub data_dir: &'a Path,
    /// Whether it is the default one (then commands need no `--data-dir`).
    pub data_dir_is_default: bool,
    /// The database URL without its password.
    pub database: &'a str,
    /// The hub.
    pub hub: HubReport<'a>,
    /// The URL sites' leaves dial.
    pub sites_dial: &'a str,
    /// The URL agents dial and the gateway's listen address; `None`: off.
    pub gateway: Option<(&'a str, SocketAddr)>,
    /// Where Prometheus scrapes, if anywhere.
    pub metrics: Option<String>,
    /// Set on the first start only.
    pub first_owner: Option<FirstOwner<'a>>,
    /// The tenant and owner e-mail the next-step commands name.
    pub tenant: &'a str,
    /// See [`ServeReport::tenant`].
    pub email: &'a str,
}

impl fmt::Display for ServeReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.base;
        writeln!(
            f,
            "serviceradar-core listening on {base}  (API: {base}/api/v1, reference {base}/api/v1/openapi.json)"
        )?;
        writeln!(f, "  data dir:  {}", self.data_dir.display())?;
        writeln!(f, "  database:  {}", self.database)?;
        match &self.hub {
            HubReport::Embedded {
                dir,
                client,
                leafnode,
                monitoring,
            } => {
                let monitoring =
                    monitoring.map_or_else(|| "off".to_owned(), |m| format!("http://{m}"));
                writeln!(
                    f,
                    "  hub:       embedded nats-server (config and log in {})\n             clients {client}  leafnodes {leafnode}  monitoring {monitoring}",
                    dir.display()
                )?;
            }
            HubReport::External(client) => writeln!(f, "  hub:       external, clients {client}")?,
        }
        writeln!(
            f,
            "  sites dial the hub at {} (--hub-leafnode-url)",
            self.sites_dial
        )?;
        match self.gateway {
            Some((url, listen)) => writeln!(
                f,
                "  gateway:   agents dial {url} (listening on {listen}, --gateway-listen)"
            )?,
            None => writeln!(
                f,
                "  gateway:   off (--gateway-listen): sites never become active"
            )?,
        }
        if let Some(metrics) = &self.metrics {
            writeln!(f, "Prometheus metrics: {metrics}")?;
        }
        if let Some(owner) = &self.first_owner {
            writeln!(
                f,
                "\nFirst start: created tenant '{}' with owner {}",
                owner.tenant, owner.email
            )?;
            if let Some(password) = owner.password {
                writeln!(f, "  owner password (shown once, store it now): {password}")?;
            }
        }
        self.next_steps(f)
    }
}

impl ServeReport<'_> {
    /// The next step, on every start: the demo, or a token and a first site
    /// by hand, with only the flags that differ from the defaults.
    fn next_steps(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (base, sites_dial, tenant, email) =
            (self.base, self.sites_dial, self.tenant, self.email);
        let data_dir = if self.data_dir_is_default {
            String::new()
        } else {
            format!(" --data-dir {}", self.data_dir.display())
        };
        let api_flag = if base == "http://127.0.0.1:8080" {
            String::new()
        } else {
            format!(" --api {base}")
        };
        writeln!(
            f,
            "\nNext: see a site connect on this machine (a demo leaf and agent, no root):\n  \
             serviceradar-core quickstart{data_dir}{api_flag}\n\
             Or by hand: a token, then a site (its bundle's leaf dials {sites_dial}):\n  \
             TOKEN=$(serviceradar-core admin create-token{data_dir} --tenant {tenant} --email {email} --scope read,write,admin)\n  \
             curl -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -X POST {base}/api/v1/edge-sites \\\n    \
             -d '{{\"name\":\"Demo\",\"slug\":\"demo\",\"nats_leaf_url\":\"nats://127.0.0.1:4222\"}}'\n  \
             then download {base}/api/v1/edge-sites/<id>/bundle and run its setup.sh (README: \"First run on one machine\").\n\
             A real edge box joins with one token, its keys made on the box (docs/enrollment.md):\n  \
             serviceradar-cli login --url {base} --token $TOKEN; serviceradar-cli tokens create --site <id>\n  \
             then on the box: serviceradar-cli site init --token sr1...; nats setup; agent setup\n\
             Sign-in for people: {base}/ (web UI) or POST {base}/api/v1/auth/login; API reference: {base}/api/v1/openapi.json\n"
        )
    }
}

/// `url` with the password of its user info replaced by `***`, for printing.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(base: &str, default_dir: bool) -> String {
        ServeReport {
            base,
            data_dir: Path::new("/srv/sr"),
            data_dir_is_default: default_dir,
            database: "sqlite:///srv/sr/serviceradar.db",
            hub: HubReport::External("nats://hub:4222".into()),
            sites_dial: "tls://hub:7422",
            gateway: None,
            metrics: None,
            first_owner: Some(FirstOwner {
                tenant: "default",
                email: "admin@example.com",
                password: Some("s3cret-once"),
            }),
            tenant: "default",
            email: "admin@example.com",
        }
        .to_string()
    }

    #[test]
    fn the_next_step_names_only_flags_that_differ_from_the_defaults() {
        let plain = report("http://127.0.0.1:8080", true);
        assert!(
            plain.contains("  serviceradar-core quickstart\n"),
            "{plain}"
        );
        assert!(
            plain.contains("admin create-token --tenant default"),
            "{plain}"
        );
        let custom = report("http://10.0.0.5:9000", false);
        assert!(
            custom.contains(
                "serviceradar-core quickstart --data-dir /srv/sr --api http://10.0.0.5:9000\n"
            ),
            "{custom}"
        );
        assert!(
            custom.contains("admin create-token --data-dir /srv/sr --tenant"),
            "{custom}"
        );
    }

    #[test]
    fn the_report_says_what_is_off_and_shows_a_generated_password_once() {
        let text = report("http://127.0.0.1:8080", true);
        assert!(text.contains("gateway:   off (--gateway-listen)"), "{text}");
        assert!(
            text.contains("hub:       external, clients nats://hub:4222"),
            "{text}"
        );
        assert_eq!(text.matches("s3cret-once").count(), 1, "{text}");
        assert!(!text.contains("Prometheus"), "{text}");
    }

    #[test]
    fn database_passwords_are_never_printed() {
        assert_eq!(
            redact_url("postgres://sr:hunter2@db:5432/sr"),
            "postgres://sr:***@db:5432/sr"
        );
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }
}
