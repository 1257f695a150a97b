-- Onboarding packages and enrollment conflicts to resolve (issue 14).
--
-- An onboarding package is a site's onboarding material with the package
-- lifecycle (domain::state::PackageStatus): one per site/agent enrollment
-- token (source 'token', created with it, expiring with it) and one per
-- classic site-bundle download (source 'bundle', created downloaded). It
-- moves to downloaded when its token is redeemed, to installed when the
-- site's agent first says Hello, to revoked when its token is revoked
-- before the material was fetched.
CREATE TABLE onboarding_packages (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    edge_site_id   TEXT NOT NULL REFERENCES edge_sites(id) ON DELETE CASCADE,
    token_id       TEXT REFERENCES enrollment_tokens(id) ON DELETE CASCADE,
    source         TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    downloaded_at  BIGINT,
    installed_at   BIGINT
);
CREATE UNIQUE INDEX onboarding_packages_token ON onboarding_packages (token_id);
CREATE INDEX onboarding_packages_site ON onboarding_packages (tenant_id, edge_site_id, created_at, id);
CREATE INDEX onboarding_packages_status ON onboarding_packages (tenant_id, edge_site_id, status);

-- Tokens issued before this migration get their package, in the state their
-- token is in (an unredeemed one past its expiry is expired on next read).
INSERT INTO onboarding_packages (id, tenant_id, edge_site_id, token_id, source, status,
    created_at, updated_at, expires_at, downloaded_at, installed_at)
SELECT id, tenant_id, edge_site_id, id, 'token',
       CASE WHEN uses > 0 THEN 'downloaded'
            WHEN revoked_at IS NOT NULL THEN 'revoked'
            ELSE 'created' END,
       created_at, created_at, expires_at, NULL, NULL
FROM enrollment_tokens
WHERE scope IN ('site', 'agent');

-- A conflict event (kind 'conflict': another host on a spent token, or a
-- renewal from another machine) is open until an operator resolves it.
ALTER TABLE enrollment_events ADD COLUMN hostname TEXT;
ALTER TABLE enrollment_events ADD COLUMN resolved_at BIGINT;
ALTER TABLE enrollment_events ADD COLUMN resolved_by TEXT;
CREATE INDEX enrollment_events_kind ON enrollment_events (tenant_id, kind, at, id);
