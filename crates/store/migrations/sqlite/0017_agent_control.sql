-- The agent control stream (issue 18): commands people issue to an edge
-- agent with their status and result, the checks configured for an agent,
-- and the config version the agent acknowledged running.
-- The other dialect's migration has the same tables and constraint names.

-- A command: pending -> sent -> acked -> succeeded | failed | expired, or
-- offline when no replica held the agent's control stream when issued.
-- Status changes are compare-and-set on the old status
-- (domain::agent_control::CommandStatus::allowed_from). Kept per site.
CREATE TABLE agent_commands (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id   TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL,
    issued_by      TEXT NOT NULL,
    ttl_secs       INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    message        TEXT,
    result         TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX agent_commands_site ON agent_commands (tenant_id, edge_site_id, created_at, id);

-- The checks an operator configured for an agent (in addition to the
-- platform's own leaf check). Pushed to the agent on every change.
CREATE TABLE agent_check_configs (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    target         TEXT NOT NULL,
    interval_secs  INTEGER NOT NULL,
    timeout_ms     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, name)
);

-- The config version an agent last acknowledged over its control stream.
CREATE TABLE agent_config_acks (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id       TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    version        TEXT NOT NULL,
    acked_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
