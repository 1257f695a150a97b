-- Devices at the edge (issue 16): registered per tenant and site, each with
-- the NATS limits its leaf gives it and the last certificate issued for a
-- key the device holds (serial and expiry only: the platform never has the
-- key). Removed with the site.
CREATE TABLE devices (
    id                 TEXT NOT NULL PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id       TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    status             TEXT NOT NULL,
    max_payload        INTEGER NOT NULL,
    max_subscriptions  INTEGER NOT NULL,
    data_rate          INTEGER NOT NULL,
    cert_serial        TEXT,
    cert_not_after     INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    CONSTRAINT devices_site_name UNIQUE (edge_site_id, name)
);
CREATE INDEX devices_tenant_page ON devices (tenant_id, created_at, id);
