-- The telemetry tables (events, metrics, logs) keep their tenant id without
-- a foreign key to tenants. Every row's tenant is set by the platform, never
-- by a publisher: the per-tenant pipeline writes only its own tenant's rows,
-- and platform mode only tenants it read from this database (the source a
-- message came through names it). No tenant is ever deleted, so the
-- `ON DELETE CASCADE` never ran; a tenant deletion, if one is added, must
-- delete the tenant's telemetry itself (ARCHITECTURE.md, "Ingestion").
--
-- What the key cost: for every row, a look-up in tenants and, the first
-- time a transaction writes a tenant's row, a row lock on that tenant (WAL
-- and a dirtied page). A platform batch of 1,000 messages over 1,000 tenants
-- locks ~630 tenant rows; without the key, `bench-ingest-tenants` drained
-- 1,000 tenants' messages 10-25% faster (BENCHMARKS.md, issue 15, session 20).
ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey;
ALTER TABLE metrics DROP CONSTRAINT metrics_tenant_id_fkey;
ALTER TABLE logs DROP CONSTRAINT logs_tenant_id_fkey;
