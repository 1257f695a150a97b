-- Hub sessions of edge leaves: the per-connection NATS user key the leaf
-- authorization callout issued into the tenant's account, so deleting a site
-- can revoke (and so disconnect) its live leaf connection. No foreign key to
-- the site: the rows are read just before the site is deleted and pruned by age.
CREATE TABLE leaf_hub_sessions (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    site_id     TEXT NOT NULL,
    user_key    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_key)
);
CREATE INDEX leaf_hub_sessions_site ON leaf_hub_sessions (tenant_id, site_id, created_at);
