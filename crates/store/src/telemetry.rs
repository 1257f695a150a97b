//! Events, metrics and log lines ingested from the tenants' hub streams.
//!
//! A batch is written in one transaction with multi-row inserts; rows are
//! unique on `(tenant_id, stream_seq)` and inserted with `ON CONFLICT DO
//! NOTHING`, so a batch redelivered after a crash writes nothing twice. Lists
//! are tenant-scoped, in event-time order, with an optional time range.

use serviceradar_domain::telemetry::{RecordMeta, TelemetryKind, TelemetryRecord};
use sqlx::Row;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Transaction};

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};

/// Rows per `INSERT` statement (10 bound values each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// A stored record, as listed by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// Row id.
    pub id: String,
    /// Stream sequence it came from.
    pub stream_seq: i64,
    /// Subject it arrived on.
    pub subject: String,
    /// Subject tokens after the tenant.
    pub source: String,
    /// Event time (ms).
    pub time_ms: i64,
    /// When it was written (ms).
    pub received_at: i64,
    /// Severity (events), level (logs) or name (metrics).
    pub label: String,
    /// Message (events, logs); empty for metrics.
    pub message: String,
    /// Value (metrics); 0 otherwise.
    pub value: f64,
    /// The payload as received.
    pub body: String,
}

/// Time range of a list (`from <= time < to`, both optional, ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: Option<i64>,
    /// Exclusive end.
    pub to: Option<i64>,
}

fn table(kind: TelemetryKind) -> &'static str {
    match kind {
        TelemetryKind::Event => "events",
        TelemetryKind::Metric => "metrics",
        TelemetryKind::Log => "logs",
    }
}

impl Scoped<'_> {
    /// Writes `records` in one transaction; returns how many rows were new
    /// (redelivered records are skipped).
    pub async fn insert_telemetry(&self, records: &[TelemetryRecord]) -> Result<u64, StoreError> {
        if let Some(pg) = &self.store.pg {
            return self.insert_telemetry_copy(pg, records).await;
        }
        let mut tx = self.store.pool.begin().await?;
        let received_at = now_ms();
        let mut inserted = 0;
        for kind in TelemetryKind::ALL {
            let of_kind: Vec<&TelemetryRecord> =
                records.iter().filter(|r| r.kind() == kind).collect();
            for chunk in of_kind.chunks(ROWS_PER_STATEMENT) {
                inserted += self.insert_chunk(&mut tx, kind, chunk, received_at).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// PostgreSQL: `COPY` each kind into a per-session temporary staging
    /// table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (plain `COPY`
    /// cannot skip redelivered rows), all in one transaction.
    async fn insert_telemetry_copy(
        &self,
        pg: &sqlx::PgPool,
        records: &[TelemetryRecord],
    ) -> Result<u64, StoreError> {
        let mut tx = pg.begin().await?;
        let received_at = now_ms();
        let tenant = self.tenant();
        let mut inserted = 0;
        for kind in TelemetryKind::ALL {
            let of_kind: Vec<&TelemetryRecord> =
                records.iter().filter(|r| r.kind() == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let table = table(kind);
            let (label_col, text_col) = columns(kind);
            let cols = format!(
                "id, tenant_id, stream_seq, subject, source, {label_col}, {text_col}, body, \
                 created_at, received_at"
            );
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TEMP TABLE IF NOT EXISTS {table}_stage (LIKE {table} INCLUDING DEFAULTS) \
                 ON COMMIT DELETE ROWS"
            )))
            .execute(&mut *tx)
            .await?;
            let mut rows = String::with_capacity(of_kind.len() * 320);
            for record in &of_kind {
                copy_row(&mut rows, record, &tenant, received_at);
            }
            let statement = format!("COPY {table}_stage ({cols}) FROM STDIN");
            let mut copy = tx.copy_in_raw(&statement).await?;
            copy.send(rows.as_bytes()).await?;
            copy.finish().await?;
            inserted += sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {table}_stage \
                 ON CONFLICT (tenant_id, stream_seq) DO NOTHING"
            )))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn insert_chunk(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
        kind: TelemetryKind,
        chunk: &[&TelemetryRecord],
        received_at: i64,
    ) -> Result<u64, StoreError> {
        let (label_col, text_col) = columns(kind);
        let mut sql = format!(
            "INSERT INTO {} (id, tenant_id, stream_seq, subject, source, {label_col}, {text_col}, \
             body, created_at, received_at) VALUES ",
            table(kind)
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 10;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10
            ));
        }
        sql.push_str(" ON CONFLICT (tenant_id, stream_seq) DO NOTHING");
        let tenant = self.tenant();
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for record in chunk {
            let meta: &RecordMeta = record.meta();
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(tenant.clone())
                .bind(meta.stream_seq)
                .bind(meta.subject.clone())
                .bind(meta.source.clone());
            query = match record {
                TelemetryRecord::Event {
                    severity, message, ..
                } => query.bind(severity.clone()).bind(message.clone()),
                TelemetryRecord::Log { level, message, .. } => {
                    query.bind(level.clone()).bind(message.clone())
                }
                TelemetryRecord::Metric { name, value, .. } => {
                    query.bind(name.clone()).bind(*value)
                }
            };
            query = query
                .bind(meta.body.clone())
                .bind(meta.time_ms)
                .bind(received_at);
        }
        Ok(query.execute(&mut **tx).await?.rows_affected())
    }

    /// A page of `kind` records in event-time order within `range`.
    pub async fn list_telemetry(
        &self,
        kind: TelemetryKind,
        range: TimeRange,
        page: &PageRequest,
    ) -> Result<Page<StoredRecord>, StoreError> {
        let select = match kind {
            TelemetryKind::Event => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.severity AS label, \
                 t.message, CAST(0 AS DOUBLE PRECISION) AS value, t.body, t.created_at, t.received_at FROM events t"
            }
            TelemetryKind::Metric => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.name AS label, \
                 CAST('' AS TEXT) AS message, t.value, t.body, t.created_at, t.received_at FROM metrics t"
            }
            TelemetryKind::Log => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.level AS label, \
                 t.message, CAST(0 AS DOUBLE PRECISION) AS value, t.body, t.created_at, t.received_at FROM logs t"
            }
        };
        let mut q = ListQuery::new(select, "t", self.tenant());
        if let Some(from) = range.from {
            q.cmp("t.created_at", ">=", Arg::Int(from));
        }
        if let Some(to) = range.to {
            q.cmp("t.created_at", "<", Arg::Int(to));
        }
        q.page("t", page).fetch(&self.store.pool, decode).await
    }

    /// Number of `kind` rows of the tenant.
    pub async fn count_telemetry(&self, kind: TelemetryKind) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE tenant_id = $1",
            table(kind)
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(self.tenant())
            .fetch_one(&self.store.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

fn columns(kind: TelemetryKind) -> (&'static str, &'static str) {
    match kind {
        TelemetryKind::Event => ("severity", "message"),
        TelemetryKind::Metric => ("name", "value"),
        TelemetryKind::Log => ("level", "message"),
    }
}

/// One row of `COPY ... FROM STDIN` text format: tab-separated, with
/// backslash, tab, newline and carriage return escaped.
fn copy_row(out: &mut String, record: &TelemetryRecord, tenant: &str, received_at: i64) {
    use std::fmt::Write as _;
    let field = |out: &mut String, text: &str| {
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('\t');
    };
    let meta = record.meta();
    field(out, &uuid::Uuid::now_v7().to_string());
    field(out, tenant);
    field(out, &meta.stream_seq.to_string());
    field(out, &meta.subject);
    field(out, &meta.source);
    match record {
        TelemetryRecord::Event {
            severity, message, ..
        } => {
            field(out, severity);
            field(out, message);
        }
        TelemetryRecord::Log { level, message, .. } => {
            field(out, level);
            field(out, message);
        }
        TelemetryRecord::Metric { name, value, .. } => {
            field(out, name);
            field(out, &value.to_string());
        }
    }
    field(out, &meta.body);
    field(out, &meta.time_ms.to_string());
    let _ = write!(out, "{received_at}");
    out.push('\n');
}

fn decode(row: &AnyRow) -> Result<StoredRecord, StoreError> {
    Ok(StoredRecord {
        id: row.try_get("id")?,
        stream_seq: row.try_get("stream_seq")?,
        subject: row.try_get("subject")?,
        source: row.try_get("source")?,
        time_ms: row.try_get("created_at")?,
        received_at: row.try_get("received_at")?,
        label: row.try_get("label")?,
        message: row.try_get("message")?,
        value: row.try_get("value")?,
        body: row.try_get("body")?,
    })
}
