-- The device indexes of the telemetry tables hold only devices' rows.
-- Collectors' telemetry (device_id NULL, most rows) never enters them: every
-- list by device filters `device_id = ...` or `device_id IN (...)`, which
-- implies NOT NULL, so the planner uses the partial index for the same
-- queries. Each ingested collector row then updates three indexes, not four:
-- a `COPY` of 300,000 events took 14% less time with one tenant and 23% less
-- with 1,000 tenants interleaved (whose rows land in as many places of each
-- tenant-led index; BENCHMARKS.md, issue 15, session 20).
DROP INDEX events_tenant_device_time;
DROP INDEX metrics_tenant_device_time;
DROP INDEX logs_tenant_device_time;
CREATE INDEX events_tenant_device_time ON events (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;
CREATE INDEX metrics_tenant_device_time ON metrics (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;
CREATE INDEX logs_tenant_device_time ON logs (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;
