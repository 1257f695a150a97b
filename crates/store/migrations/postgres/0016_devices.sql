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
    max_payload        BIGINT NOT NULL,
    max_subscriptions  BIGINT NOT NULL,
    data_rate          BIGINT NOT NULL,
    cert_serial        TEXT,
    cert_not_after     BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    revoked_at         BIGINT,
    CONSTRAINT devices_site_name UNIQUE (edge_site_id, name)
);
CREATE INDEX devices_tenant_page ON devices (tenant_id, created_at, id);
