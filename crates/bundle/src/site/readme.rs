//! The site bundle's `README.md`: the exact steps for each way to run the leaf.
//!
//! The README is the only place the site's free-text display name appears
//! verbatim (it is text for a person, never executed). Everything else in it is
//! validated slugs, URLs, paths and numbers.

use super::{SiteBundle, names};

/// Renders `README.md`.
pub(super) fn render(b: &SiteBundle) -> String {
    let p = &b.paths;
    let conf = p.config_file();
    let mon = b.monitoring_port;
    let unit = names::UNIT;
    let mut out = String::new();

    out.push_str(&format!(
        "# ServiceRadar Edge: NATS leaf for site {name}\n\
         \n\
         Site: {name}\n\
         \n\
         | | |\n\
         | --- | --- |\n\
         | tenant | `{tenant}` |\n\
         | site slug | `{site}` |\n\
         | site id | `{id}` |\n\
         | upstream hub (leafnode, outbound only) | `{hub}` |\n\
         | URL for collectors at this site | `{leaf_url}` |\n\
         | local client port | {client} |\n\
         | monitoring | `http://127.0.0.1:{mon}` (localhost only) |\n\
         \n\
         This bundle runs the site's NATS leaf server. The leaf dials **out** to the\n\
         ServiceRadar hub over TLS (mutual TLS plus NATS credentials); no inbound\n\
         firewall rule is needed towards this machine from the internet. Collectors at\n\
         this site publish to the leaf; while the WAN link is down the leaf buffers\n\
         in its own JetStream store and the hub catches up when the link returns.\n\
         \n\
         The bundle contains private keys and credentials: keep it private and delete\n\
         the downloaded archive once the leaf is installed.\n\
         \n\
         ## Contents\n\
         \n\
         | file | purpose |\n\
         | --- | --- |\n\
         | `setup.sh` | installer (systemd), see below |\n\
         | `nats-leaf.conf` | leaf configuration (absolute paths below `{config_dir}`) |\n\
         | `certs/leaf-client.pem`, `certs/leaf-client-key.pem` | client certificate the leaf presents to the hub |\n\
         | `certs/leaf-server.pem`, `certs/leaf-server-key.pem` | server certificate the leaf presents to collectors |\n\
         | `certs/tenant-ca.pem` | tenant CA: collectors' client certificates must chain to it |\n\
         | `certs/ca-chain.pem`, `certs/root-ca.pem` | tenant CA + root chain, and the platform root CA |\n\
         | `creds/leaf.creds` | NATS credentials of the leafnode connection |\n\
         | `{unit}` | systemd unit |\n\
         | `docker-compose.yml` | container variant |\n\
         | `run-foreground.sh` | run the leaf in the foreground |\n",
        name = b.site_name,
        tenant = b.tenant_slug,
        site = b.site_slug,
        id = b.site_id,
        hub = b.hub_leafnode_url,
        leaf_url = b.nats_leaf_url,
        client = b.client_port,
        config_dir = p.config_dir,
    ));
    if b.pki.agent.is_some() {
        out.push_str(
            "| `certs/agent.pem`, `certs/agent-key.pem` | certificate of the edge agent (`serviceradar-agent`) |\n",
        );
    }
    if b.edge_buffer_stream_json.is_some() {
        out.push_str("| `streams/edge-buffer.json` | JetStream buffer stream definition |\n");
    }

    out.push_str(&format!(
        "\n\
         ## Requirements\n\
         \n\
         - Linux with `bash`; systemd for the default variant, or Docker with compose.\n\
         - `nats-server` 2.10 or newer on `PATH` (systemd and foreground variants), e.g.\n\
         \x20 from the NATS releases or your distribution (Debian's `nats-server` 2.9 is too old).\n\
         - Outbound TCP to `{hub}`.\n\
         - Collectors must reach this machine on port {client}.\n\
         \n\
         ## Option 1 (default): systemd\n\
         \n\
         ```sh\n\
         tar -xzf {root}.tar.gz\n\
         cd {root}\n\
         sudo ./setup.sh\n\
         ```\n\
         \n\
         `setup.sh` creates the system user `{user}` if it does not exist, installs\n\
         \n\
         - `{conf}` (0644),\n\
         - certificates into `{certs}` (directory 0750, private keys 0600 owned by `{user}`),\n\
         - the leaf's NATS credentials as `{creds}` (0600, owned by `{user}`),\n\
         - the JetStream store directory `{js}` (0750, owned by `{user}`),\n\
         - the unit `/etc/systemd/system/{unit}`,\n\
         \n\
         checks the configuration with `nats-server -t`, then runs\n\
         `systemctl daemon-reload` and `systemctl enable --now {unit}`.\n\
         Running it again is safe: identical files are reported as `unchanged`, and\n\
         the service is restarted only when something changed.\n\
         \n\
         Options:\n\
         \n\
         | option | effect |\n\
         | --- | --- |\n\
         | `--dry-run` | print every action, change nothing |\n\
         | `--no-start` | install, but do not enable or start the service |\n\
         | `--prefix DIR` | install below `DIR` instead of `/` without root; no user, no systemd; paths in the installed `nats-leaf.conf` point below `DIR` |\n\
         | `--help` | usage |\n\
         \n\
         Logs: `journalctl -u {unit} -f`.\n\
         \n\
         ## Option 2: docker compose\n\
         \n\
         ```sh\n\
         tar -xzf {root}.tar.gz\n\
         cd {root}\n\
         docker compose up -d\n\
         docker compose logs -f\n\
         ```\n\
         \n\
         The official `{nats_image}` image runs with host networking (so the\n\
         leaf listens exactly as in option 1: no `ports:` mapping is needed), with\n\
         `nats-leaf.conf`, `certs/` and `creds/leaf.creds` of this directory mounted\n\
         read-only where the config expects them, and JetStream data in a named volume.\n\
         Keep this directory: the container reads its files from here.\n\
         \n\
         ## Option 3: foreground\n\
         \n\
         Install the files without the service, then run the leaf in your terminal:\n\
         \n\
         ```sh\n\
         sudo ./setup.sh --no-start\n\
         sudo -u {user} nats-server -c {conf}\n\
         ```\n\
         \n\
         (`run-foreground.sh [CONFIG]` does the same: `exec nats-server -c CONFIG`.)\n\
         \n\
         Or, without root, below a directory of your choice:\n\
         \n\
         ```sh\n\
         ./setup.sh --prefix \"$HOME/serviceradar-leaf\"\n\
         ./run-foreground.sh \"$HOME/serviceradar-leaf{conf}\"\n\
         ```\n\
         \n\
         ## Verify\n\
         \n\
         ```sh\n\
         curl -s http://127.0.0.1:{mon}/healthz\n\
         curl -s http://127.0.0.1:{mon}/leafz\n\
         ```\n\
         \n\
         `/leafz` lists the leafnode connection to the hub once it is up (one entry\n\
         in `leafs`). The monitoring port has no authentication and listens on\n\
         localhost only.\n\
         \n\
         ## Collectors\n\
         \n\
         Collectors at this site connect to **`{leaf_url}`** (this leaf), not to the\n\
         ServiceRadar cloud directly. Download their bundles from ServiceRadar with\n\
         this site selected as the collector's edge site: those bundles already point\n\
         at `{leaf_url}` and carry the client certificates the leaf requires.\n",
        hub = b.hub_leafnode_url,
        client = b.client_port,
        root = b.root_dir(),
        user = names::SERVICE_USER,
        certs = p.certs_dir,
        creds = p.creds_file(),
        js = p.jetstream_dir,
        leaf_url = b.nats_leaf_url,
        nats_image = super::NATS_IMAGE,
    ));
    if b.edge_buffer_stream_json.is_some() {
        out.push_str(&format!(
            "\n\
             ## JetStream buffer stream\n\
             \n\
             `streams/edge-buffer.json` (installed to `{config_dir}/streams/`) defines the\n\
             stream in which this leaf buffers collector data. The edge agent creates it on\n\
             the leaf as soon as the leaf runs (collectors can publish from the first second,\n\
             hub or no hub); the control plane also creates it through the hub when the leaf\n\
             joins without it. Without the agent, create it with the `nats` CLI and a\n\
             client certificate of the tenant CA:\n\
             `nats --server {leaf_url} stream add --config {config_dir}/streams/edge-buffer.json`.\n",
            config_dir = p.config_dir,
            leaf_url = b.nats_leaf_url,
        ));
    }
    if b.pki.agent.is_some() {
        out.push_str(&format!(
            "\n\
             ## Edge agent\n\
             \n\
             `setup.sh` also installs the edge agent's certificate to\n\
             `{certs}/agent.pem`, its key to `{certs}/agent-key.pem` (0600,\n\
             root) and its configuration to `{config_dir}/agent.toml` (with the\n\
             certificate paths rewritten to where they were installed).\n\
             \n\
             The agent itself is the `serviceradar-agent` binary. Put it **beside\n\
             `setup.sh`** (it is then installed to `/usr/local/bin`, or below `--prefix`)\n\
             or on `PATH` before running `setup.sh`, which then also installs\n\
             `serviceradar-agent.service` and starts it with the leaf. Get the binary\n\
             from your platform operator's release, or build it from the ServiceRadar\n\
             Edge source (`cargo build --release -p serviceradar-agent`, then copy\n\
             `target/release/serviceradar-agent`). To run it by hand:\n\
             \n\
             ```sh\n\
             serviceradar-agent --config {config_dir}/agent.toml\n\
             ```\n\
             \n\
             The agent exits with status 3, and systemd does not restart it, when the\n\
             platform no longer accepts it (the site was deleted or the agent revoked).\n\
             `serviceradar-agent --once --check tcp=127.0.0.1:4222` runs local checks and\n\
             prints them without contacting the gateway (it changes no state).\n",
            certs = p.certs_dir,
            config_dir = p.config_dir,
        ));
    }
    if super::uses_device_auth(b) {
        out.push_str(&format!(
            "\n\
             ## Device authorization\n\
             \n\
             This leaf hands every client connection (devices and collectors) to the\n\
             device authorization service that `serviceradar-agent` runs beside it\n\
             (NATS auth callout). `setup.sh` makes the service's keys on this machine\n\
             with the agent binary (`serviceradar-agent device-auth init --nats-dir\n\
             {config_dir}`: `device-auth.seeds`, 0600, and `device-auth.conf`, which\n\
             `nats-leaf.conf` includes), so the agent binary is required here. The\n\
             agent starts the service by itself because the installed `nats-leaf.conf`\n\
             includes `device-auth.conf`. Until it runs, the leaf admits no client at\n\
             all: it fails closed. A device gets in only with its own certificate and\n\
             only while it is registered at this site and not revoked; it may publish\n\
             only `device.<id>.metrics.>` and `device.<id>.status`.\n",
            config_dir = p.config_dir,
        ));
    }
    if let Some(cluster) = &b.cluster {
        out.push_str(
            "\n\
             ## This site is a 3-node leaf cluster\n\
             \n\
             The leaf runs on three machines (or pods). Each node has its own\n\
             `nats-leaf.conf` and server certificate under `nodes/node-N/`, routes to\n\
             the two others over mutual TLS, and its own link to the hub; the\n\
             JetStream buffer keeps 3 replicas, so the site stays linked and keeps\n\
             its data while any two nodes run. The options above take `--node N`:\n\
             \n\
             | node | collectors reach it at | routes | monitoring |\n\
             | --- | --- | --- | --- |\n",
        );
        for (i, n) in cluster.nodes.iter().enumerate() {
            out.push_str(&format!(
                "| {i} | `{}` | port {} | `127.0.0.1:{}` |\n",
                n.url, n.route_port, n.monitoring_port
            ));
        }
        out.push_str(&format!(
            "\n\
             * systemd: on node N's machine, `sudo ./setup.sh --node N`.\n\
             * docker compose: on node N's machine,\n\
             \x20 `docker compose -f nodes/node-N/docker-compose.yml up -d`.\n\
             * Kubernetes: `kubectl apply -n NAMESPACE -k .` (a StatefulSet\n\
             \x20 `{name}` of 3 pods on different nodes, a volume per pod for\n\
             \x20 JetStream, the headless service `{name}` whose pod names the node\n\
             \x20 certificates carry, and the client service `{name}-client`).\n\
             \n\
             Give collectors all three node URLs; `curl -s http://127.0.0.1:PORT/routez`\n\
             on a node lists its routes to the two others.\n",
            name = cluster.kubernetes_name,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn readme_mentions_urls_and_steps() {
        let r = render(&sample());
        assert!(r.contains("Site: NYC Office\n"));
        assert!(r.contains("nats://10.0.1.50:4222"));
        assert!(r.contains("tls://hub.example.com:7422"));
        assert!(r.contains("curl -s http://127.0.0.1:8222/leafz"));
        assert!(r.contains("sudo ./setup.sh\n"));
        assert!(r.contains("docker compose up -d"));
        assert!(r.contains("./run-foreground.sh"));
        assert!(!r.contains("agent-key.pem"));
    }
}
