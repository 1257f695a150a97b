-- The leaf authorization callout's last refusal per site (the web UI's setup
-- wizard and site page show it while the leaf is not connected). Only
-- refusals of credentials the platform issued are recorded (their tags name
-- the site); one row per site, replaced by each refusal, removed when the
-- leaf is admitted.
CREATE TABLE leaf_refusals (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    site_id     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    refused_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, site_id)
);
