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
--
-- SQLite cannot drop a constraint: each table is rebuilt without it (its
-- rows copied, then its indexes made again, as migrations 0005, 0029 and
-- 0031 left them).

CREATE TABLE events_rebuilt (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    stream_seq  INTEGER NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    message     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    device_id   TEXT,
    CONSTRAINT events_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
INSERT INTO events_rebuilt (id, tenant_id, stream_seq, subject, source, severity, message,
    body, created_at, received_at, device_id)
    SELECT id, tenant_id, stream_seq, subject, source, severity, message,
    body, created_at, received_at, device_id FROM events;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_tenant_time ON events (tenant_id, created_at, id);
CREATE INDEX events_tenant_device_time ON events (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;

CREATE TABLE metrics_rebuilt (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    stream_seq  INTEGER NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       REAL NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    device_id   TEXT,
    CONSTRAINT metrics_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
INSERT INTO metrics_rebuilt (id, tenant_id, stream_seq, subject, source, name, value,
    body, created_at, received_at, device_id)
    SELECT id, tenant_id, stream_seq, subject, source, name, value,
    body, created_at, received_at, device_id FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_rebuilt RENAME TO metrics;
CREATE INDEX metrics_tenant_time ON metrics (tenant_id, created_at, id);
CREATE INDEX metrics_tenant_device_time ON metrics (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;

CREATE TABLE logs_rebuilt (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    stream_seq  INTEGER NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    device_id   TEXT,
    CONSTRAINT logs_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
INSERT INTO logs_rebuilt (id, tenant_id, stream_seq, subject, source, level, message,
    body, created_at, received_at, device_id)
    SELECT id, tenant_id, stream_seq, subject, source, level, message,
    body, created_at, received_at, device_id FROM logs;
DROP TABLE logs;
ALTER TABLE logs_rebuilt RENAME TO logs;
CREATE INDEX logs_tenant_time ON logs (tenant_id, created_at, id);
CREATE INDEX logs_tenant_device_time ON logs (tenant_id, device_id, created_at, id)
    WHERE device_id IS NOT NULL;
