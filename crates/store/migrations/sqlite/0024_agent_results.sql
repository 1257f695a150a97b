-- Agents, second wave (issue 18): results uploads kept, the time an agent's
-- config last changed, and the gateway's own certificate kept across restarts.
-- The other dialect's migration has the same tables and constraint names.

-- When the checks configured for an agent last changed (Unix ms), set in
-- the transaction that changes them; ServiceRadar's GetConfig reports it as
-- its config_timestamp. NULL: never changed (the agent's created_at counts).
ALTER TABLE agents ADD COLUMN config_changed_at INTEGER;

-- A PushResults upload of an agent: one row per (agent, upload_id), its
-- chunks below. next_chunk moves with a compare-and-set in the transaction
-- that stores a chunk, so a resumed or re-sent chunk is stored once, on any
-- replica and across gateway restarts. Kept for --results-retention-days.
CREATE TABLE agent_uploads (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id   TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    upload_id      TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    next_chunk     INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    completed_at   INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT agent_uploads_key UNIQUE (tenant_id, agent_id, upload_id)
);
CREATE INDEX agent_uploads_site ON agent_uploads (tenant_id, edge_site_id, created_at, id);

CREATE TABLE agent_upload_chunks (
    upload_id      TEXT NOT NULL REFERENCES agent_uploads(id) ON DELETE CASCADE,
    chunk_index    INTEGER NOT NULL,
    data           BLOB NOT NULL,
    PRIMARY KEY (upload_id, chunk_index)
);

-- The gateway's server certificate (one row per name, 'gateway'), reused
-- across restarts and replicas and re-issued only near its expiry or when
-- its host names change. The key is sealed like every key.
CREATE TABLE gateway_certificates (
    name           TEXT PRIMARY KEY NOT NULL,
    hosts          TEXT NOT NULL,
    cert_pem       TEXT NOT NULL,
    key_sealed     BLOB NOT NULL,
    not_after      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
