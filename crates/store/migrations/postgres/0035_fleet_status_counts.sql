-- Sites and leaves per tenant and status, kept as the rows change instead of
-- counted every time the fleet gauges are read (every 30 s on every
-- replica). At 1,000,000 sites those counts read a million index entries per
-- table each time, up to a second under load on a two-core host, and the
-- API's requests of that second waited behind them (BENCHMARKS.md, issue 15,
-- sessions 30 and 32).
--
-- Writers only append to fleet_status_deltas, from triggers, so every write
-- path (the store's statements, COPY, a foreign key's cascade) is counted
-- and no two writers wait on a shared counter row. Store::fold_status_deltas
-- (the health sweeper, every pass) folds the deltas into fleet_status_counts;
-- Store::fleet_counts reads the totals plus the deltas not folded yet: a few
-- rows per tenant.
-- Neither table is keyed by a foreign key: a tenant's rows are joined to
-- tenants when read, and a cascade that removes a tenant must not be refused
-- by the counts it updates.

-- The running totals, one row per tenant, kind ('site' or 'leaf') and status.
CREATE TABLE fleet_status_counts (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind, status)
);

-- Changes not folded in yet: +n rows entered a status, -n left it. An
-- append-only queue, emptied whole by each fold; no row is read on its own.
CREATE TABLE fleet_status_deltas (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL,
    delta     BIGINT NOT NULL
);

-- Inserts and deletes are counted per statement from its transition table:
-- one grouped row per tenant and status, however many rows a COPY loads.
CREATE FUNCTION fleet_status_rows_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    SELECT tenant_id, TG_ARGV[0], status, COUNT(*) FROM added GROUP BY tenant_id, status;
    RETURN NULL;
END
$$;

CREATE FUNCTION fleet_status_rows_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    SELECT tenant_id, TG_ARGV[0], status, -COUNT(*) FROM removed GROUP BY tenant_id, status;
    RETURN NULL;
END
$$;

-- A status change is counted per row, and only when the status (or tenant)
-- really changed: the WHEN clause runs without calling the function, so the
-- frequent updates that leave the status alone (last_seen_at) cost nothing.
CREATE FUNCTION fleet_status_row_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet_status_deltas (tenant_id, kind, status, delta)
    VALUES (OLD.tenant_id, TG_ARGV[0], OLD.status, -1),
           (NEW.tenant_id, TG_ARGV[0], NEW.status, 1);
    RETURN NULL;
END
$$;

-- The triggers come before the counts below: creating them waits for the
-- writers in progress and holds off new ones until this migration commits,
-- so no row is counted twice or missed.
CREATE TRIGGER edge_sites_count_insert AFTER INSERT ON edge_sites
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION fleet_status_rows_added('site');
CREATE TRIGGER edge_sites_count_update AFTER UPDATE OF tenant_id, status ON edge_sites
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION fleet_status_row_moved('site');
CREATE TRIGGER edge_sites_count_delete AFTER DELETE ON edge_sites
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION fleet_status_rows_removed('site');

CREATE TRIGGER nats_leaf_servers_count_insert AFTER INSERT ON nats_leaf_servers
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION fleet_status_rows_added('leaf');
CREATE TRIGGER nats_leaf_servers_count_update AFTER UPDATE OF tenant_id, status ON nats_leaf_servers
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION fleet_status_row_moved('leaf');
CREATE TRIGGER nats_leaf_servers_count_delete AFTER DELETE ON nats_leaf_servers
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION fleet_status_rows_removed('leaf');

-- What exists already.
INSERT INTO fleet_status_counts (tenant_id, kind, status, n)
SELECT tenant_id, 'site', status, COUNT(*) FROM edge_sites GROUP BY tenant_id, status;
INSERT INTO fleet_status_counts (tenant_id, kind, status, n)
SELECT tenant_id, 'leaf', status, COUNT(*) FROM nats_leaf_servers GROUP BY tenant_id, status;
