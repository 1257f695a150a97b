-- Enrollment tokens (issue 14): an edge box joins a site with one signed
-- token. Only the token's SHA-256 is stored; the row is the token's state
-- (uses, expiry, revocation). Every redemption is one row per host, so the
-- same host re-running `site init` resumes instead of using the token
-- again, and another host is refused as a conflict.
CREATE TABLE enrollment_tokens (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id  TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    max_uses      INTEGER NOT NULL,
    uses          INTEGER NOT NULL DEFAULT 0,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoked_by    TEXT
);
CREATE INDEX enrollment_tokens_site ON enrollment_tokens (tenant_id, edge_site_id, created_at, id);
CREATE INDEX enrollment_tokens_page ON enrollment_tokens (tenant_id, created_at, id);

CREATE TABLE enrollment_redemptions (
    token_id          TEXT NOT NULL REFERENCES enrollment_tokens(id) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    host_fingerprint  TEXT NOT NULL,
    hostname          TEXT,
    redeemed_at       INTEGER NOT NULL,
    PRIMARY KEY (token_id, host_fingerprint)
);

-- Who did what with a token: created, redeemed, resumed, refused, conflict,
-- revoked. `actor` is a user id, or NULL for the edge; `remote_addr` is
-- where a redemption came from.
CREATE TABLE enrollment_events (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    token_id     TEXT NOT NULL REFERENCES enrollment_tokens(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    actor        TEXT,
    remote_addr  TEXT,
    detail       TEXT,
    at           INTEGER NOT NULL
);
CREATE INDEX enrollment_events_token ON enrollment_events (tenant_id, token_id, at);
