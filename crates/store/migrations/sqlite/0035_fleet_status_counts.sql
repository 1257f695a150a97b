-- Sites and leaves per tenant and status, kept as the rows change instead of
-- counted every time the fleet gauges are read (every 30 s). At 1,000,000
-- sites those counts read a million index entries per table each time
-- (BENCHMARKS.md, issue 15, sessions 30 and 32). The same tables and
-- triggers as migrations/postgres/0035; see there for the design.
--
-- Writers only append to fleet_status_deltas, from triggers, so every write
-- path (the store's statements, a foreign key's cascade) is counted.
-- Store::fold_status_deltas (the health sweeper, every pass) folds the
-- deltas into fleet_status_counts; Store::fleet_counts reads the totals plus
-- the deltas not folded yet. SQLite triggers run per row; a status change is
-- counted only when the status (or tenant) really changed.

CREATE TABLE fleet_status_counts (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, status)
);

CREATE TABLE fleet_status_deltas (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL,
    delta     INTEGER NOT NULL
);

CREATE TRIGGER edge_sites_count_insert AFTER INSERT ON edge_sites
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (NEW.tenant_id, 'site', NEW.status, 1);
END;
CREATE TRIGGER edge_sites_count_update AFTER UPDATE OF tenant_id, status ON edge_sites
    WHEN OLD.status IS NOT NEW.status OR OLD.tenant_id IS NOT NEW.tenant_id
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (OLD.tenant_id, 'site', OLD.status, -1), (NEW.tenant_id, 'site', NEW.status, 1);
END;
CREATE TRIGGER edge_sites_count_delete AFTER DELETE ON edge_sites
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (OLD.tenant_id, 'site', OLD.status, -1);
END;

CREATE TRIGGER nats_leaf_servers_count_insert AFTER INSERT ON nats_leaf_servers
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (NEW.tenant_id, 'leaf', NEW.status, 1);
END;
CREATE TRIGGER nats_leaf_servers_count_update AFTER UPDATE OF tenant_id, status ON nats_leaf_servers
    WHEN OLD.status IS NOT NEW.status OR OLD.tenant_id IS NOT NEW.tenant_id
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (OLD.tenant_id, 'leaf', OLD.status, -1), (NEW.tenant_id, 'leaf', NEW.status, 1);
END;
CREATE TRIGGER nats_leaf_servers_count_delete AFTER DELETE ON nats_leaf_servers
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (OLD.tenant_id, 'leaf', OLD.status, -1);
END;

-- What exists already (the migration runs in one transaction).
INSERT INTO fleet_status_counts (tenant_id, kind, status, n)
SELECT tenant_id, 'site', status, COUNT(*) FROM edge_sites GROUP BY tenant_id, status;
INSERT INTO fleet_status_counts (tenant_id, kind, status, n)
SELECT tenant_id, 'leaf', status, COUNT(*) FROM nats_leaf_servers GROUP BY tenant_id, status;
