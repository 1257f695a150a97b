-- A site's leaf as a 3-node cluster (issue 17).
-- cluster: the layout as JSON ({"nodes": [3 client URLs], "cluster_port": n},
-- domain::leaf_cluster::LeafCluster); NULL for a single leaf server.
ALTER TABLE nats_leaf_servers ADD COLUMN cluster TEXT;

-- Each cluster node's own server certificate (SANs of that node) and its
-- sealed key (node 0, 1 or 2), written with the leaf's other provisioning material.
CREATE TABLE leaf_node_certs (
    leaf_server_id  TEXT NOT NULL REFERENCES nats_leaf_servers(id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    node            INTEGER NOT NULL,
    cert_pem        TEXT NOT NULL,
    key_sealed      BLOB NOT NULL,
    CONSTRAINT leaf_node_certs_pkey PRIMARY KEY (leaf_server_id, node)
);
CREATE INDEX leaf_node_certs_tenant ON leaf_node_certs (tenant_id);
