-- When provisioning last issued a leaf's certificate and config (first run,
-- regenerate or renewal; issue 13: the leaf card shows "provisioned"
-- beside "connected since").
-- Unix ms; NULL while pending and for leaves provisioned before this column.
ALTER TABLE nats_leaf_servers ADD COLUMN provisioned_at BIGINT;
