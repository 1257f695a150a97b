-- The telemetry tables (events, metrics, logs) compare their ids as bytes
-- (PostgreSQL only; SQLite always compares text as bytes).
--
-- Every ingested row goes into three b-tree indexes keyed on text ids: the
-- primary key (`id`), `(tenant_id, stream_seq)` and `(tenant_id,
-- created_at, id)`. Under the database's default collation (C.UTF-8 here,
-- often en_US.UTF-8 elsewhere) each comparison on an insert's way down an
-- index goes through the C library's strcoll; with tenants' rows
-- interleaved in a batch the tenant ids differ, so the tenant-led indexes
-- pay it on almost every comparison. The ids are UUIDs (ASCII hex and
-- hyphens), whose byte order is the order every such collation gives them,
-- so no list changes order. In a COPY of 300,000 events over 1,000 tenants
-- the collation functions (strcoll, strcmp, varstr_cmp, the locale look-up)
-- were ~6% of the backend's profile with the default collation and are gone
-- with `COLLATE "C"` (varstr_cmp's own 1% stays); the backend's CPU for the
-- COPY fell 8% at the median of 8 alternated runs (BENCHMARKS.md, issue 15,
-- session 27).
--
-- Only `id` and `tenant_id`: nothing compares them with another table's
-- column (a comparison of two columns of different collations is refused).
-- `device_id` is compared with `devices.id` (the device filter), so it
-- keeps the default. The indexes on these columns are rebuilt: on a large
-- table this holds the table's lock for the length of that rebuild.
ALTER TABLE events ALTER COLUMN id TYPE TEXT COLLATE "C",
                   ALTER COLUMN tenant_id TYPE TEXT COLLATE "C";
ALTER TABLE metrics ALTER COLUMN id TYPE TEXT COLLATE "C",
                    ALTER COLUMN tenant_id TYPE TEXT COLLATE "C";
ALTER TABLE logs ALTER COLUMN id TYPE TEXT COLLATE "C",
                 ALTER COLUMN tenant_id TYPE TEXT COLLATE "C";
