-- Foundation schema: tenancy, access, edge resources, jobs.
-- Times are Unix milliseconds (INTEGER); ids are UUID text. The SQLite migration
-- in ../sqlite/ has the same tables and constraint names.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email)
);
CREATE INDEX users_tenant_page ON users (tenant_id, created_at, id);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
CREATE INDEX api_tokens_tenant_page ON api_tokens (tenant_id, created_at, id);

CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE edge_sites (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    slug           TEXT NOT NULL,
    status         TEXT NOT NULL,
    nats_leaf_url  TEXT NOT NULL,
    last_seen_at   INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    CONSTRAINT edge_sites_tenant_slug_key UNIQUE (tenant_id, slug)
);
CREATE INDEX edge_sites_tenant_page ON edge_sites (tenant_id, created_at, id);

CREATE TABLE nats_leaf_servers (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id       TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    status             TEXT NOT NULL,
    upstream_url       TEXT NOT NULL,
    local_listen       TEXT NOT NULL,
    leaf_cert_pem      TEXT,
    leaf_key_sealed    BLOB,
    server_cert_pem    TEXT,
    server_key_sealed  BLOB,
    ca_chain_pem       TEXT,
    creds_sealed       BLOB,
    cert_expires_at    INTEGER,
    config_checksum    TEXT,
    last_error         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    CONSTRAINT nats_leaf_servers_site_key UNIQUE (edge_site_id)
);
CREATE INDEX nats_leaf_servers_tenant_page ON nats_leaf_servers (tenant_id, created_at, id);

CREATE TABLE collector_packages (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    collector_type  TEXT NOT NULL,
    edge_site_id    TEXT REFERENCES edge_sites(id) ON DELETE SET NULL,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX collector_packages_tenant_page ON collector_packages (tenant_id, created_at, id);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    locked_by     TEXT,
    locked_until  INTEGER,
    last_error    TEXT,
    dedupe_key    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CONSTRAINT jobs_dedupe_key UNIQUE (dedupe_key)
);
CREATE INDEX jobs_ready ON jobs (status, run_at);
