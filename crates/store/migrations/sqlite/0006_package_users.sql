-- NATS user keys minted for a collector package's bundles (space separated),
-- revoked on the hub when the package is revoked or deleted.
ALTER TABLE collector_packages ADD COLUMN nats_user_keys TEXT NOT NULL DEFAULT '';
