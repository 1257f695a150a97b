-- PKI and NATS identities of the platform and of each tenant.
-- Private keys and nkey seeds are sealed (AEAD, see serviceradar-pki's seal module)
-- under the master key before they reach these tables; the associated data binds
-- each blob to its row (name or tenant id), so a blob copied elsewhere does not open.
-- The sqlite migration has the same tables and constraint names.

-- Platform-wide secrets, one row per name: 'root_ca' (public_text = certificate
-- PEM, secret_sealed = its key), 'nats_operator' and 'nats_system_account'
-- (public_text = public nkey, secret_sealed = seed). Created once, first writer wins.
CREATE TABLE platform_secrets (
    name           TEXT PRIMARY KEY,
    public_text    TEXT NOT NULL,
    secret_sealed  BYTEA NOT NULL,
    created_at     BIGINT NOT NULL
);

-- One intermediate CA per tenant (path length 0), signed by the root.
CREATE TABLE tenant_cas (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    cert_pem    TEXT NOT NULL,
    key_sealed  BYTEA NOT NULL,
    not_after   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One NATS account per tenant (isolation on the hub is enforced by nats-server).
CREATE TABLE tenant_nats_accounts (
    tenant_id            TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    account_public_key   TEXT NOT NULL,
    account_seed_sealed  BYTEA NOT NULL,
    account_jwt          TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    CONSTRAINT tenant_nats_accounts_public_key_key UNIQUE (account_public_key)
);
