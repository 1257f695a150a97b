//! The four-step "add edge site" wizard: 1 name (slug suggested and checked
//! live) and the leaf's layout (one server or a 3-node cluster), 2
//! deployment method with the exact commands for what the bundle contains
//! (per node, `setup.sh --node N`, for a cluster), 3 the bundle download (enabled once the leaf is provisioned,
//! waiting live until then), 4 verification (waiting live for the hub's view
//! of the leaf link and the agent's first contact).

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serviceradar_control::ControlError;
use serviceradar_control::sites::CreateSite;
use serviceradar_domain::leaf_cluster::LeafCluster;
use serviceradar_domain::state::LeafStatus;
use serviceradar_domain::validate::{FieldError, Slug};
use serviceradar_store::now_ms;

use super::render;
use super::sites::{SiteView, site_id};
use crate::session::{Posted, Viewer};
use crate::view::{Badge, Chrome};
use crate::{WebError, WebState};

/// The URL collectors use when the form's field is left as suggested.
const DEFAULT_LEAF_URL: &str = "nats://127.0.0.1:4222";

#[derive(Template)]
#[template(path = "wizard_name.html")]
struct NamePage {
    chrome: Chrome,
    title: String,
    live: String,
    step: u8,
    name: String,
    slug: String,
    nats_leaf_url: String,
    layout: Layout,
    errors: Vec<FieldError>,
}

/// Step 1's leaf layout fields as typed: one server, or a 3-node cluster
/// with optional node URLs and route port.
#[derive(Debug, Default)]
struct Layout {
    /// Whether the cluster is chosen.
    cluster: bool,
    /// The three node URL fields (empty: the StatefulSet's pod names).
    urls: [String; 3],
    /// The route port field (empty: 6222).
    port: String,
}

impl Layout {
    fn of(form: &NameForm) -> Self {
        Self {
            cluster: form.leaf_nodes.trim() == "3",
            urls: [
                form.leaf_node_url_0.clone(),
                form.leaf_node_url_1.clone(),
                form.leaf_node_url_2.clone(),
            ],
            port: form.leaf_cluster_port.clone(),
        }
    }

    /// The use-case's `leaf_nodes`, `leaf_node_urls` and
    /// `leaf_cluster_port`. One server sends none of the cluster's fields
    /// (they may still hold what was typed before switching back); a
    /// cluster sends the URLs typed (none: the StatefulSet's pod names;
    /// fewer than three: the use-case says a cluster has three). Only the form's own
    /// syntax (a number where a number goes) is checked here; the layout's
    /// rules are the use-case's.
    #[allow(clippy::type_complexity)]
    fn input(
        form: &NameForm,
    ) -> Result<(Option<i64>, Option<Vec<String>>, Option<i64>), Vec<FieldError>> {
        let nodes = form.leaf_nodes.trim();
        let nodes = match nodes {
            "" => None,
            raw => Some(raw.parse::<i64>().map_err(|_| {
                vec![FieldError::new(
                    "leaf_nodes",
                    "choose one leaf server or a 3-node cluster",
                )]
            })?),
        };
        if nodes != Some(3) {
            return Ok((nodes, None, None));
        }
        let urls: Vec<String> = [
            &form.leaf_node_url_0,
            &form.leaf_node_url_1,
            &form.leaf_node_url_2,
        ]
        .iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
        let urls = (!urls.is_empty()).then_some(urls);
        let port = match form.leaf_cluster_port.trim() {
            "" => None,
            raw => Some(raw.parse::<i64>().map_err(|_| {
                vec![FieldError::new(
                    "leaf_cluster_port",
                    "must be a port number from 1 to 65535",
                )]
            })?),
        };
        Ok((nodes, urls, port))
    }
}

/// `GET /admin/edge-sites/new`: step 1.
pub async fn name_step(viewer: Viewer) -> Result<Response, WebError> {
    viewer
        .auth
        .actor
        .authorize(serviceradar_domain::Action::WriteSites)
        .map_err(ControlError::from)?;
    render(&NamePage {
        chrome: Chrome::new(&viewer, "sites"),
        title: "Add an edge site".into(),
        live: String::new(),
        step: 1,
        name: String::new(),
        slug: String::new(),
        nats_leaf_url: DEFAULT_LEAF_URL.into(),
        layout: Layout::default(),
        errors: Vec::new(),
    })
}

/// The step 1 form.
#[derive(Debug, Deserialize)]
pub struct NameForm {
    name: String,
    #[serde(default)]
    slug: String,
    nats_leaf_url: String,
    /// `1` (default) or `3`.
    #[serde(default)]
    leaf_nodes: String,
    #[serde(default)]
    leaf_node_url_0: String,
    #[serde(default)]
    leaf_node_url_1: String,
    #[serde(default)]
    leaf_node_url_2: String,
    #[serde(default)]
    leaf_cluster_port: String,
}

/// `POST /admin/edge-sites/new`: creates the site, then step 2. Field
/// errors re-render step 1 with the values kept.
pub async fn create(
    State(state): State<WebState>,
    viewer: Viewer,
    posted: Posted<NameForm>,
) -> Result<Response, WebError> {
    let form = posted.form;
    let slug = form.slug.trim();
    let created = match Layout::input(&form) {
        Ok((leaf_nodes, leaf_node_urls, leaf_cluster_port)) => {
            let input = CreateSite {
                name: form.name.clone(),
                slug: (!slug.is_empty()).then(|| slug.to_string()),
                nats_leaf_url: form.nats_leaf_url.trim().to_string(),
                local_listen: None,
                leaf_nodes,
                leaf_node_urls,
                leaf_cluster_port,
            };
            state.control.create_site(&posted.auth.actor, &input).await
        }
        Err(errors) => {
            // The right first, as the use-case does for any other input.
            posted
                .auth
                .actor
                .authorize(serviceradar_domain::Action::WriteSites)
                .map_err(ControlError::from)?;
            Err(ControlError::Invalid(
                serviceradar_domain::validate::FieldErrors(errors),
            ))
        }
    };
    match created {
        Ok((site, _)) => Ok(Redirect::to(&format!(
            "/admin/edge-sites/{}/setup/method?m=systemd",
            site.id
        ))
        .into_response()),
        Err(err @ (ControlError::Invalid(_) | ControlError::Conflict(_))) => {
            let errors = match err {
                ControlError::Invalid(errors) => errors.0,
                other => vec![FieldError::new("slug", other.to_string())],
            };
            let page = NamePage {
                chrome: Chrome::new(&viewer, "sites"),
                title: "Add an edge site".into(),
                live: String::new(),
                step: 1,
                layout: Layout::of(&form),
                name: form.name,
                slug: form.slug,
                nats_leaf_url: form.nats_leaf_url,
                errors,
            };
            Ok((
                axum::http::StatusCode::BAD_REQUEST,
                axum::response::Html(page.render()?),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// Query of the slug check.
#[derive(Debug, Deserialize)]
pub struct SlugQuery {
    slug: String,
}

/// The slug check's answer.
#[derive(Debug, Serialize)]
pub struct SlugAnswer {
    available: bool,
    message: String,
}

/// `GET /admin/edge-sites/slug-check?slug=`: valid and unused in the tenant?
pub async fn slug_check(
    State(state): State<WebState>,
    viewer: Viewer,
    Query(q): Query<SlugQuery>,
) -> Result<Json<SlugAnswer>, WebError> {
    let answer = match state
        .control
        .check_site_slug(&viewer.auth.actor, q.slug.trim())
        .await?
    {
        Ok(_) => SlugAnswer {
            available: true,
            message: String::new(),
        },
        Err(message) => SlugAnswer {
            available: false,
            message,
        },
    };
    Ok(Json(answer))
}

const METHODS: [(&str, &str); 4] = [
    ("systemd", "systemd package"),
    ("docker", "Docker"),
    ("kubernetes", "Kubernetes"),
    ("manual", "Manual"),
];

#[derive(Template)]
#[template(path = "wizard_method.html")]
struct MethodPage {
    chrome: Chrome,
    title: String,
    live: String,
    step: u8,
    site: SiteView,
    method: &'static str,
    methods: Vec<(&'static str, &'static str)>,
    notes: Vec<String>,
    blocks: Vec<(String, String)>,
    /// A clustered leaf's nodes: number, client URL, route port.
    nodes: Vec<(usize, String, u16)>,
}

/// Query naming the deployment method.
#[derive(Debug, Default, Deserialize)]
pub struct MethodQuery {
    m: Option<String>,
}

fn method(raw: Option<&str>) -> &'static str {
    METHODS
        .iter()
        .map(|(m, _)| *m)
        .find(|m| Some(*m) == raw)
        .unwrap_or("systemd")
}

/// The exact commands for `method` with the bundle of `root` (its top
/// directory, `{root}.tar.gz` the download). They use what the bundle
/// contains: `setup.sh` (systemd, `--no-start`, `--prefix`),
/// `docker-compose.yml`, `run-foreground.sh`; there is no Kubernetes
/// manifest in the bundle, which the page says.
fn commands(method: &str, root: &str) -> (Vec<String>, Vec<(String, String)>) {
    let unpack = format!("tar -xzf {root}.tar.gz\ncd {root}");
    match method {
        "docker" => (
            vec!["The bundle's docker-compose.yml runs the official nats image with host networking, mounting the bundle's config, certificates and credentials read-only. Keep the directory: the container reads from it.".into()],
            vec![
                ("Unpack".into(), unpack),
                ("Start".into(), "docker compose up -d\ndocker compose logs -f".into()),
            ],
        ),
        "kubernetes" => (
            vec![
                "The bundle has no Kubernetes manifest yet. Store its files as a Secret and run the nats image with the bundle's nats-leaf.conf, mounting the Secret where the config expects it (/etc/serviceradar/nats) and a volume for JetStream (/var/lib/serviceradar/nats/jetstream).".into(),
            ],
            vec![
                ("Unpack".into(), unpack),
                (
                    "Store the files as a Secret".into(),
                    "kubectl create namespace serviceradar\nkubectl -n serviceradar create secret generic serviceradar-nats-leaf \\\n  --from-file=nats-leaf.conf --from-file=certs/ --from-file=creds/leaf.creds".into(),
                ),
            ],
        ),
        "manual" => (
            vec!["Install the files without a service and run the leaf in the foreground; nats-server 2.10 or newer must be on PATH.".into()],
            vec![
                ("Unpack".into(), unpack),
                (
                    "Install and run (root)".into(),
                    "sudo ./setup.sh --no-start\nsudo -u serviceradar-nats nats-server -c /etc/serviceradar/nats/nats-leaf.conf".into(),
                ),
                (
                    "Or without root, below a directory".into(),
                    "./setup.sh --prefix \"$HOME/serviceradar-leaf\"\n./run-foreground.sh \"$HOME/serviceradar-leaf/etc/serviceradar/nats/nats-leaf.conf\"".into(),
                ),
            ],
        ),
        _ => (
            vec!["setup.sh installs the config, certificates and credentials, checks the config with nats-server -t and enables the systemd unit serviceradar-nats-leaf. nats-server 2.10 or newer must be on PATH.".into()],
            vec![
                ("Unpack".into(), unpack),
                ("Install and start".into(), "sudo ./setup.sh".into()),
                ("Follow the log".into(), "journalctl -u serviceradar-nats-leaf -f".into()),
            ],
        ),
    }
}

/// The exact commands for `method` when the site's leaf is a 3-node
/// cluster: one node per machine with `setup.sh --node N`, the node's own
/// compose file, or the bundle's StatefulSet (`kubectl apply -k`).
fn cluster_commands(
    method: &str,
    root: &str,
    cluster: &LeafCluster,
    slug: &Slug,
) -> (Vec<String>, Vec<(String, String)>) {
    let unpack = format!("tar -xzf {root}.tar.gz\ncd {root}");
    let on_each = |what: &dyn Fn(usize) -> String| -> Vec<(String, String)> {
        cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("On node {i}'s machine ({url})"), what(i)))
            .collect()
    };
    let intro = "This site's leaf is a 3-node cluster: each node runs its own nats-server with its own certificate, routes to the two others over mutual TLS and links to the hub itself; the site stays linked while any two run. Copy the same bundle to each node's machine.".to_string();
    match method {
        "docker" => {
            let mut blocks = vec![("Unpack (on each machine)".to_string(), unpack)];
            blocks.extend(on_each(&|i| {
                format!("docker compose -f nodes/node-{i}/docker-compose.yml up -d")
            }));
            (
                vec![intro, "Each node has its own compose file under nodes/node-N/ (host networking, the bundle's files mounted read-only); keep the directory.".into()],
                blocks,
            )
        }
        "kubernetes" => {
            let name = serviceradar_domain::leaf_cluster::kubernetes_name(slug);
            (
                vec![
                    intro,
                    format!(
                        "The bundle's kustomization.yaml turns its files into a Secret and kubernetes/leaf-cluster.yaml runs the StatefulSet {name} of 3 pods on different machines, a volume per pod for JetStream, the headless service {name} and the client service {name}-client."
                    ),
                ],
                vec![
                    ("Unpack".into(), format!("tar -xzf {root}.tar.gz")),
                    (
                        "Apply".into(),
                        format!(
                            "kubectl create namespace serviceradar-edge\nkubectl apply -n serviceradar-edge -k {root}\nkubectl -n serviceradar-edge rollout status statefulset/{name}"
                        ),
                    ),
                ],
            )
        }
        "manual" => {
            let mut blocks = vec![("Unpack (on each machine)".to_string(), unpack)];
            blocks.extend(on_each(&|i| {
                format!("sudo ./setup.sh --node {i} --no-start\nsudo -u serviceradar-nats nats-server -c /etc/serviceradar/nats/nats-leaf.conf")
            }));
            blocks.push((
                "Or a lab on one machine, without root".into(),
                (0..cluster.nodes().len())
                    .map(|i| format!("./setup.sh --node {i} --prefix \"$HOME/leaf-node-{i}\" --no-start"))
                    .chain(std::iter::once(
                        "./run-foreground.sh \"$HOME/leaf-node-0/etc/serviceradar/nats/nats-leaf.conf\"  # and nodes 1 and 2 likewise".into(),
                    ))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
            (
                vec![intro, "Install each node's files without a service and run it in the foreground; nats-server 2.10 or newer must be on PATH.".into()],
                blocks,
            )
        }
        _ => {
            let mut blocks = vec![("Unpack (on each machine)".to_string(), unpack)];
            blocks.extend(on_each(&|i| format!("sudo ./setup.sh --node {i}")));
            blocks.push((
                "Follow the log, check the routes".into(),
                "journalctl -u serviceradar-nats-leaf -f\ncurl -s http://127.0.0.1:8222/routez"
                    .into(),
            ));
            (
                vec![intro, "setup.sh --node N installs node N's config and certificate with the shared files, checks the config with nats-server -t and enables the systemd unit serviceradar-nats-leaf; without --node it refuses to guess. nats-server 2.10 or newer must be on PATH.".into()],
                blocks,
            )
        }
    }
}

async fn bundle_root(state: &WebState, viewer: &Viewer, slug: &str) -> Result<String, WebError> {
    let tenant = state.control.my_tenant(&viewer.auth).await?;
    Ok(format!("serviceradar-site-{}-{slug}", tenant.slug))
}

/// `GET /admin/edge-sites/{id}/setup/method`: step 2.
pub async fn method_step(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<MethodQuery>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let (site, leaf) = state.control.site(&viewer.auth.actor, id).await?;
    let method = method(q.m.as_deref());
    let root = bundle_root(&state, &viewer, site.slug.as_str()).await?;
    let (notes, blocks) = match &leaf.cluster {
        Some(cluster) => cluster_commands(method, &root, cluster, &site.slug),
        None => commands(method, &root),
    };
    let nodes = leaf.cluster.as_ref().map_or_else(Vec::new, |c| {
        c.nodes()
            .iter()
            .enumerate()
            .map(|(i, url)| (i, url.to_string(), c.route_port(i)))
            .collect()
    });
    render(&MethodPage {
        chrome: Chrome::new(&viewer, "sites"),
        title: format!("Set up {}", site.name),
        live: String::new(),
        step: 2,
        site: SiteView::of(&site, now_ms()),
        method,
        methods: METHODS.to_vec(),
        notes,
        blocks,
        nodes,
    })
}

#[derive(Template)]
#[template(path = "wizard_download.html")]
struct DownloadPage {
    chrome: Chrome,
    title: String,
    live: String,
    step: u8,
    site: SiteView,
    method: &'static str,
    leaf: Badge,
    bundle_ready: bool,
    file_name: String,
    last_error: String,
}

/// `GET /admin/edge-sites/{id}/setup/download`: step 3.
pub async fn download_step(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<MethodQuery>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let (site, leaf) = state.control.site(&viewer.auth.actor, id).await?;
    let root = bundle_root(&state, &viewer, site.slug.as_str()).await?;
    render(&DownloadPage {
        chrome: Chrome::new(&viewer, "sites"),
        title: format!("Set up {}", site.name),
        live: format!("/admin/events?site={id}"),
        step: 3,
        method: method(q.m.as_deref()),
        leaf: Badge::of(leaf.status.as_str()),
        bundle_ready: leaf.status != LeafStatus::Pending,
        file_name: format!("{root}.tar.gz"),
        last_error: leaf.last_error.clone().unwrap_or_default(),
        site: SiteView::of(&site, now_ms()),
    })
}

#[derive(Template)]
#[template(path = "wizard_verify.html")]
struct VerifyPage {
    chrome: Chrome,
    title: String,
    live: String,
    step: u8,
    site: SiteView,
    leaf: Badge,
    site_badge: Badge,
    leaf_connected: bool,
    agent_seen: bool,
    hub_url: String,
    last_error: String,
    refusal: String,
}

/// `GET /admin/edge-sites/{id}/setup/verify`: step 4.
pub async fn verify_step(
    State(state): State<WebState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = site_id(&id)?;
    let (site, leaf) = state.control.site(&viewer.auth.actor, id).await?;
    let live = crate::live::site_state(&state.control, &viewer.auth, id).await?;
    render(&VerifyPage {
        refusal: live.refusal.unwrap_or_default(),
        chrome: Chrome::new(&viewer, "sites"),
        title: format!("Verify {}", site.name),
        live: format!("/admin/events?site={id}"),
        step: 4,
        leaf: Badge::of(leaf.status.as_str()),
        site_badge: Badge::of(site.status.as_str()),
        leaf_connected: leaf.status == LeafStatus::Connected,
        agent_seen: site.last_seen_at.is_some(),
        hub_url: leaf.upstream_url.clone(),
        last_error: leaf.last_error.clone().unwrap_or_default(),
        site: SiteView::of(&site, now_ms()),
    })
}
