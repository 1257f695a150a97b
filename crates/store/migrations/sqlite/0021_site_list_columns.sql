-- What the web UI's site list reads, kept on the rows it reads (issue 13:
-- the edge-sites page at the JSON list's rate). Reading the leaf's status
-- with a subquery per listed site and counting up to 1,001 matching sites
-- for every page view cost PostgreSQL about three times the JSON list's
-- statement; these two columns make the unfiltered page one index scan like
-- the JSON list, plus one primary-key lookup.
--
-- edge_sites.leaf_status: a copy of the site's nats_leaf_servers.status,
-- written in the same transaction as every change of it (store:
-- Scoped::mirror_leaf_status).
ALTER TABLE edge_sites ADD COLUMN leaf_status TEXT;
UPDATE edge_sites SET leaf_status =
    (SELECT l.status FROM nats_leaf_servers l WHERE l.edge_site_id = edge_sites.id);

-- tenants.site_count: the tenant's number of sites, changed in the
-- transaction that creates or deletes a site.
ALTER TABLE tenants ADD COLUMN site_count INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET site_count =
    (SELECT COUNT(*) FROM edge_sites s WHERE s.tenant_id = tenants.id);
