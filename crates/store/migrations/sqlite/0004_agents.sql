-- Edge agents, site health, disconnect alerts and webhook notifications (issue 5).
-- The postgres migration has the same tables and constraint names.

-- One edge agent per site. Its certificate (issued by the tenant CA during
-- provisioning) names the agent id in its SPIFFE URI; the gateway maps that id
-- back to this row. The private key is sealed (AAD binds tenant and agent id).
CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id     TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    cert_pem         TEXT NOT NULL,
    key_sealed       BLOB NOT NULL,
    cert_serial      TEXT NOT NULL,
    cert_expires_at  INTEGER NOT NULL,
    agent_version    TEXT,
    capabilities     TEXT,
    hostname         TEXT,
    last_seen_at     INTEGER,
    revoked_at       INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CONSTRAINT agents_site_key UNIQUE (edge_site_id)
);
CREATE INDEX agents_tenant ON agents (tenant_id, created_at, id);

-- When the leaf's link status last changed (drives the disconnect alert rule).
ALTER TABLE nats_leaf_servers ADD COLUMN link_changed_at INTEGER;
CREATE INDEX edge_sites_status_seen ON edge_sites (status, last_seen_at);

-- Alerts: pending -> acknowledged -> resolved. At most one unresolved alert
-- per (site, kind), so concurrent sweepers raise it once.
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id     TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    message          TEXT NOT NULL,
    acknowledged_by  TEXT,
    acknowledged_at  INTEGER,
    resolved_at      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX alerts_open_key ON alerts (edge_site_id, kind) WHERE status <> 'resolved';
CREATE INDEX alerts_tenant_page ON alerts (tenant_id, created_at, id);

-- Webhook endpoints of a tenant; the HMAC secret is sealed.
CREATE TABLE webhooks (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url            TEXT NOT NULL,
    secret_sealed  BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX webhooks_tenant_page ON webhooks (tenant_id, created_at, id);

-- One row per delivery attempt.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    webhook_id   TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    alert_id     TEXT NOT NULL,
    event        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_tenant_page ON webhook_deliveries (tenant_id, created_at, id);

-- Gateway calls whose claims disagreed with the caller's certificate.
CREATE TABLE gateway_audit (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    agent_id    TEXT,
    peer_cn     TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX gateway_audit_time ON gateway_audit (created_at);
