-- The latest result of each check an edge agent runs (issue 13: the site
-- page shows them). One row per agent and check name, replaced by newer
-- results; removed with the agent.
CREATE TABLE agent_checks (
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    target            TEXT NOT NULL,
    status            TEXT NOT NULL,
    message           TEXT NOT NULL,
    response_time_us  INTEGER NOT NULL,
    observed_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, name)
);
