-- Retention: how many days of telemetry a tenant keeps (NULL: the server's
-- default, --telemetry-retention-days). Finished jobs are deleted by age.
ALTER TABLE tenants ADD COLUMN telemetry_retention_days BIGINT;
CREATE INDEX jobs_finished ON jobs (status, updated_at);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries (created_at);
