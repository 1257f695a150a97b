-- Telemetry ingested from the tenants' hub streams (events, metrics, logs).
-- created_at is the event time (the payload's ts, else the stream time), so the
-- shared keyset pagination on (created_at, id) lists in event-time order.
-- (tenant_id, stream_seq) is unique: redelivered messages insert nothing.

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream_seq  BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    message     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    CONSTRAINT events_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
CREATE INDEX events_tenant_time ON events (tenant_id, created_at, id);

CREATE TABLE metrics (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream_seq  BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    CONSTRAINT metrics_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
CREATE INDEX metrics_tenant_time ON metrics (tenant_id, created_at, id);

CREATE TABLE logs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream_seq  BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    source      TEXT NOT NULL,
    level       TEXT NOT NULL,
    message     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    CONSTRAINT logs_stream_seq_key UNIQUE (tenant_id, stream_seq)
);
CREATE INDEX logs_tenant_time ON logs (tenant_id, created_at, id);
