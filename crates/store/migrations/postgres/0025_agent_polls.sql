-- Gateway-initiated mode (issue 18, seed 004): a site's agent that listens
-- and is polled by the gateway instead of dialling out. One row per polled
-- agent; no row means the default, dial-out. The other dialect's migration
-- has the same table and constraint names.
--
-- The endpoint is set by an operator through the API (parsed by
-- domain::agent_poll::AgentEndpoint), never from what the agent sends.
-- A replica polls an agent only while it holds the row's lease
-- (lease_owner / lease_until, taken with a compare-and-set), so one replica
-- polls a given agent at a time; a dead replica's lease runs out.
CREATE TABLE agent_polls (
    agent_id            TEXT PRIMARY KEY NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id        TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    endpoint            TEXT NOT NULL,
    interval_secs       BIGINT NOT NULL,
    -- unknown | reachable | unreachable
    reachability        TEXT NOT NULL,
    -- Consecutive failed polls, and when the first of them failed (Unix ms).
    failures            BIGINT NOT NULL,
    failing_since       BIGINT,
    last_success_at     BIGINT,
    last_error          TEXT,
    next_poll_at        BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_until         BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    CONSTRAINT agent_polls_site_key UNIQUE (edge_site_id)
);
CREATE INDEX agent_polls_due ON agent_polls (next_poll_at);
