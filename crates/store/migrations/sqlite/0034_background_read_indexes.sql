-- Indexes for the reads the control plane makes on its own every few
-- seconds, so that their cost follows what they find, not the fleet's size.
-- Without them, at 1,000,000 sites each was a scan of a whole table, in
-- parallel workers on PostgreSQL: the leaf-disconnected alert sweep (every
-- 15 s) 0.2-0.7 s, and the fleet gauges (every 30 s) 0.5-1.3 s for sites,
-- about as long for leaves, 0.2 s for leaf certificate expiries. On a
-- two-core host that took a core from the API for seconds at a time
-- (BENCHMARKS.md, issue 15, session 30).
--
-- The alert sweep finds leaves disconnected since before a cutoff, as
-- edge_sites_status_seen does for offline sites.
CREATE INDEX nats_leaf_servers_status_link ON nats_leaf_servers (status, link_changed_at);
-- The gauges count sites and leaves per tenant and status from these alone
-- (an index-only scan), not from the tables' rows.
CREATE INDEX edge_sites_tenant_status ON edge_sites (tenant_id, status);
CREATE INDEX nats_leaf_servers_tenant_status ON nats_leaf_servers (tenant_id, status);
-- A tenant's soonest leaf certificate expiry is the first entry of its range.
CREATE INDEX nats_leaf_servers_tenant_cert_expiry ON nats_leaf_servers (tenant_id, cert_expires_at);
