-- Devices' data (issue 16): a device's metrics and status are stored with
-- the collectors' telemetry, with the device that published them. The id
-- comes from the subject the site's leaf let the device publish on, never
-- from the payload; NULL for data that no device published. Lists by
-- device (and, through the devices table, by site) use the index.
ALTER TABLE events ADD COLUMN device_id TEXT;
ALTER TABLE metrics ADD COLUMN device_id TEXT;
ALTER TABLE logs ADD COLUMN device_id TEXT;
CREATE INDEX events_tenant_device_time ON events (tenant_id, device_id, created_at, id);
CREATE INDEX metrics_tenant_device_time ON metrics (tenant_id, device_id, created_at, id);
CREATE INDEX logs_tenant_device_time ON logs (tenant_id, device_id, created_at, id);
