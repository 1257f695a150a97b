//! Events, metrics and log lines ingested from the tenants' hub streams.
//!
//! A batch is written in one transaction. Rows are unique on `(tenant_id,
//! stream_seq)`, so a batch redelivered after a crash writes nothing twice:
//! SQLite uses multi-row `INSERT ... ON CONFLICT DO NOTHING`; PostgreSQL bulk
//! loads with `COPY` and falls back to `ON CONFLICT DO NOTHING` through a
//! staging table when the batch overlaps rows already written. Lists are
//! tenant-scoped, in event-time order, with an optional time range.

use serviceradar_domain::telemetry::{RecordMeta, TelemetryKind, TelemetryRecord};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Transaction};

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::Cols;

/// Rows per `INSERT` statement (11 bound values each, well under SQLite's limit).
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
    /// The device that published it, if a device did.
    pub device_id: Option<String>,
}

/// Which records a list shows: a time range, and optionally one device's
/// or the devices of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryFilter {
    /// Time range.
    pub range: TimeRange,
    /// Only this device's records.
    pub device_id: Option<String>,
    /// Only records of devices registered at this site.
    pub device_site_id: Option<String>,
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
    pub async fn insert_telemetry(
        &self,
        records: &[TelemetryRecord<'_>],
    ) -> Result<u64, StoreError> {
        if let Some(pg) = &self.store.pg {
            return self.insert_telemetry_copy(pg, records).await;
        }
        let mut tx = self.store.begin_write().await?;
        let all: Vec<&TelemetryRecord<'_>> = records.iter().collect();
        let inserted = self.insert_in(&mut tx, &all, now_ms()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Writes this tenant's `records` in `tx`, each kind in statements of up
    /// to [`ROWS_PER_STATEMENT`] rows; how many rows were new.
    async fn insert_in(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
        records: &[&TelemetryRecord<'_>],
        received_at: i64,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for kind in TelemetryKind::ALL {
            let of_kind: Vec<&TelemetryRecord<'_>> = records
                .iter()
                .copied()
                .filter(|r| r.kind() == kind)
                .collect();
            for chunk in of_kind.chunks(ROWS_PER_STATEMENT) {
                inserted += self.insert_chunk(tx, kind, chunk, received_at).await?;
            }
        }
        Ok(inserted)
    }

    /// Writes `records` like [`Scoped::insert_telemetry`], except that rows
    /// the database refuses (see [`StoreError::is_refused_data`]) do not fail
    /// the others: a refused batch is split in halves, each written in its
    /// own transaction, until every refused row is alone; those are returned
    /// (index into `records`, the database's reason) and everything else is
    /// written. Any other error fails the call, as before; rows committed by
    /// then are skipped when the caller retries (writes are idempotent).
    ///
    /// It exists so that one record the database cannot hold — a value no
    /// decoding rule foresaw — is dead-lettered with a reason instead of
    /// failing its batch on every retry and stopping the tenant's ingestion.
    pub async fn insert_telemetry_isolating(
        &self,
        records: &[TelemetryRecord<'_>],
    ) -> Result<Isolated, StoreError> {
        isolate(records.len(), |range| {
            self.insert_telemetry(&records[range])
        })
        .await
    }

    /// PostgreSQL: `COPY` each kind straight into its table, in one
    /// transaction. A batch that was (partly) written before, i.e. a
    /// redelivery after a crash between commit and acknowledgement, fails that
    /// `COPY` on the `(tenant_id, stream_seq)` constraint; it is then written
    /// again through a per-session temporary staging table with `INSERT ...
    /// SELECT ... ON CONFLICT DO NOTHING`, which skips the rows already there.
    /// Either way each row is written once.
    async fn insert_telemetry_copy(
        &self,
        pg: &sqlx::PgPool,
        records: &[TelemetryRecord<'_>],
    ) -> Result<u64, StoreError> {
        let tenant = self.tenant();
        copy_records(
            pg,
            records.iter().map(|r| (tenant.as_str(), r)),
            records.len(),
        )
        .await
    }

    async fn insert_chunk(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
        kind: TelemetryKind,
        chunk: &[&TelemetryRecord<'_>],
        received_at: i64,
    ) -> Result<u64, StoreError> {
        let (label_col, text_col) = columns(kind);
        let mut sql = format!(
            "INSERT INTO {} (id, tenant_id, stream_seq, subject, source, {label_col}, {text_col}, \
             body, created_at, received_at, device_id) VALUES ",
            table(kind)
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 11;
            sql.push('(');
            for n in 1..=11 {
                if n > 1 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", b + n));
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (tenant_id, stream_seq) DO NOTHING");
        let tenant = self.tenant();
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for record in chunk {
            let meta: &RecordMeta<'_> = record.meta();
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(tenant.clone())
                .bind(meta.stream_seq)
                .bind(meta.subject.as_ref())
                .bind(meta.source.as_ref());
            query = match record {
                TelemetryRecord::Event {
                    severity, message, ..
                } => query.bind(severity.as_ref()).bind(message.as_ref()),
                TelemetryRecord::Log { level, message, .. } => {
                    query.bind(level.as_ref()).bind(message.as_ref())
                }
                TelemetryRecord::Metric { name, value, .. } => {
                    query.bind(name.as_ref()).bind(*value)
                }
            };
            query = query
                .bind(meta.body.as_ref())
                .bind(meta.time_ms)
                .bind(received_at)
                .bind(meta.device_id.map(|d| d.to_string()));
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
        let filter = TelemetryFilter {
            range,
            ..TelemetryFilter::default()
        };
        self.list_telemetry_filtered(kind, &filter, page).await
    }

    /// A page of `kind` records in event-time order that `filter` selects.
    pub async fn list_telemetry_filtered(
        &self,
        kind: TelemetryKind,
        filter: &TelemetryFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredRecord>, StoreError> {
        let select = match kind {
            TelemetryKind::Event => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.severity AS label, \
                 t.message, CAST(0 AS DOUBLE PRECISION) AS value, t.body, t.created_at, t.received_at, \
                 t.device_id FROM events t"
            }
            TelemetryKind::Metric => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.name AS label, \
                 CAST('' AS TEXT) AS message, t.value, t.body, t.created_at, t.received_at, \
                 t.device_id FROM metrics t"
            }
            TelemetryKind::Log => {
                "SELECT t.id, t.stream_seq, t.subject, t.source, t.level AS label, \
                 t.message, CAST(0 AS DOUBLE PRECISION) AS value, t.body, t.created_at, t.received_at, \
                 t.device_id FROM logs t"
            }
        };
        let mut q = ListQuery::new(select, "t", self.tenant());
        if let Some(from) = filter.range.from {
            q.cmp("t.created_at", ">=", Arg::Int(from));
        }
        if let Some(to) = filter.range.to {
            q.cmp("t.created_at", "<", Arg::Int(to));
        }
        if let Some(device) = &filter.device_id {
            q.eq("t.device_id", Arg::Text(device.clone()));
        }
        if let Some(site) = &filter.device_site_id {
            q.in_select(
                "t.device_id",
                "SELECT d.id FROM devices d WHERE d.edge_site_id = ",
                Arg::Text(site.clone()),
            );
        }
        q.page("t", page)
            .fetch(&self.store.pool, decode(table(kind)))
            .await
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
        Cols::of(&row, table(kind)).get("n")
    }
}

/// What [`Scoped::insert_telemetry_isolating`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Isolated {
    /// Rows newly written.
    pub inserted: u64,
    /// Records the database refused: index into the batch, and why (the
    /// database's own words, without its source location).
    pub refused: Vec<(usize, String)>,
}

/// `COPY`s `records` (each with its tenant id), `len` of them, in one
/// transaction; a batch overlapping rows already written is written again
/// through the staging tables with `ON CONFLICT DO NOTHING`.
async fn copy_records<'r, 'a: 'r>(
    pg: &sqlx::PgPool,
    records: impl Iterator<Item = (&'r str, &'r TelemetryRecord<'a>)> + Clone,
    len: usize,
) -> Result<u64, StoreError> {
    let received_at = now_ms();
    let mut buffers: Vec<(TelemetryKind, Vec<u8>)> = Vec::with_capacity(1);
    for kind in TelemetryKind::ALL {
        let mut rows = Vec::new();
        for (tenant, record) in records.clone().filter(|(_, r)| r.kind() == kind) {
            if rows.is_empty() {
                rows.reserve(len * COPY_ROW_ESTIMATE);
            }
            copy_row(&mut rows, record, tenant, received_at);
        }
        if !rows.is_empty() {
            buffers.push((kind, rows));
        }
    }
    if buffers.is_empty() {
        return Ok(0);
    }
    match copy_batch(pg, &buffers, CopyPath::Direct).await {
        Ok(inserted) => Ok(inserted),
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation() || e.code().as_deref() == Some(DEADLOCK_DETECTED) =>
        {
            tracing::debug!(
                error = %e,
                "batch overlaps rows already written; writing it with ON CONFLICT DO NOTHING"
            );
            Ok(copy_batch(pg, &buffers, CopyPath::Staged).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a batch through `write` (given a range of it); when the database
/// refuses a record's data the range is split in halves, each written on
/// its own, until every refused record is alone. See
/// [`Scoped::insert_telemetry_isolating`].
async fn isolate<F, Fut>(len: usize, mut write: F) -> Result<Isolated, StoreError>
where
    F: FnMut(std::ops::Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut written = Isolated::default();
    // Ranges still to write, the next one last (depth-first, in order).
    let mut pending = Vec::with_capacity(8);
    pending.push(0..len);
    while let Some(range) = pending.pop() {
        if range.is_empty() {
            continue;
        }
        match write(range.clone()).await {
            Ok(inserted) => written.inserted += inserted,
            Err(e) if e.is_refused_data() => {
                if range.len() == 1 {
                    written.refused.push((range.start, refusal(&e)));
                } else {
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

impl crate::Store {
    /// Writes records of several tenants (each with its tenant id), as
    /// [`Scoped::insert_telemetry_isolating`] does for one: idempotent on
    /// `(tenant_id, stream_seq)`, refused records split out and returned.
    /// Platform ingestion reads every tenant's telemetry from one stream;
    /// each record's tenant comes from the stream's source it arrived
    /// through, which the caller checked. On PostgreSQL one `COPY` per
    /// table carries every tenant's rows; on SQLite one transaction.
    pub async fn insert_telemetry_of_tenants(
        &self,
        records: &[(serviceradar_domain::TenantId, TelemetryRecord<'_>)],
    ) -> Result<Isolated, StoreError> {
        isolate(records.len(), |range| self.insert_mixed(&records[range])).await
    }

    async fn insert_mixed(
        &self,
        records: &[(serviceradar_domain::TenantId, TelemetryRecord<'_>)],
    ) -> Result<u64, StoreError> {
        if let Some(pg) = &self.pg {
            // Each tenant's id as text once, not once per row.
            let mut ids: std::collections::HashMap<serviceradar_domain::TenantId, String> =
                std::collections::HashMap::new();
            for (tenant, _) in records {
                ids.entry(*tenant).or_insert_with(|| tenant.to_string());
            }
            let rows = records
                .iter()
                .map(|(t, r)| (ids.get(t).map_or("", String::as_str), r));
            return copy_records(pg, rows, records.len()).await;
        }
        let mut by_tenant: std::collections::BTreeMap<
            serviceradar_domain::TenantId,
            Vec<&TelemetryRecord<'_>>,
        > = std::collections::BTreeMap::new();
        for (tenant, record) in records {
            by_tenant.entry(*tenant).or_default().push(record);
        }
        let mut tx = self.begin_write().await?;
        let received_at = now_ms();
        let mut inserted = 0;
        for (tenant, records) in &by_tenant {
            inserted += self
                .scoped(serviceradar_domain::TenantScope::for_system_task(*tenant))
                .insert_in(&mut tx, records, received_at)
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// The reason a refused row is reported with: the database's message (and
/// detail), not the text of the wrapping errors.
fn refusal(error: &StoreError) -> String {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            format!("the database refused the record: {}", db.message())
        }
        other => format!("the database refused the record: {other}"),
    }
}

fn columns(kind: TelemetryKind) -> (&'static str, &'static str) {
    match kind {
        TelemetryKind::Event => ("severity", "message"),
        TelemetryKind::Metric => ("name", "value"),
        TelemetryKind::Log => ("level", "message"),
    }
}

/// PostgreSQL's SQLSTATE for a detected deadlock (two redelivered batches
/// overlapping in both directions); retried like a unique violation.
const DEADLOCK_DETECTED: &str = "40P01";

/// Bytes reserved per row of a `COPY` buffer (a 200-byte payload gives a row
/// of about 330 bytes).
const COPY_ROW_ESTIMATE: usize = 384;

/// The column list of `kind`'s table, in `COPY` row order.
fn copy_columns(kind: TelemetryKind) -> String {
    let (label_col, text_col) = columns(kind);
    format!(
        "id, tenant_id, stream_seq, subject, source, {label_col}, {text_col}, body, created_at, \
         received_at, device_id"
    )
}

/// How [`copy_batch`] writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyPath {
    /// The fast path: `COPY` straight into the tables.
    Direct,
    /// The redelivery path: `COPY` into a per-session temporary staging
    /// table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`.
    Staged,
}

/// Writes every kind's buffer in one transaction along `path`; returns the
/// rows written.
///
/// A connection on which this fails, or whose write is abandoned (the task
/// cancelled), is closed, never returned to the pool: a `COPY` or
/// transaction cut short can leave the session in a state the next borrower
/// trips over (`there is already a transaction in progress`, `unexpected
/// message type 0x51 during COPY`), which once made one tenant's poison fail
/// every tenant's writes.
async fn copy_batch(
    pg: &sqlx::PgPool,
    buffers: &[(TelemetryKind, Vec<u8>)],
    path: CopyPath,
) -> Result<u64, sqlx::Error> {
    let mut conn = CloseUnlessDone {
        conn: pg.acquire().await?,
        done: false,
    };
    let written = copy_batch_on(&mut conn.conn, buffers, path).await?;
    conn.done = true;
    Ok(written)
}

/// A pooled connection that goes back to the pool only when `done` was set;
/// dropped any other way (an error, a cancelled task) it is closed.
struct CloseUnlessDone {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    done: bool,
}

impl Drop for CloseUnlessDone {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// [`copy_batch`] on one connection.
async fn copy_batch_on(
    conn: &mut sqlx::PgConnection,
    buffers: &[(TelemetryKind, Vec<u8>)],
    path: CopyPath,
) -> Result<u64, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let mut inserted = 0;
    for (kind, rows) in buffers {
        let table = table(*kind);
        let cols = copy_columns(*kind);
        inserted += match path {
            CopyPath::Direct => copy_in(&mut tx, table, &cols, rows).await?,
            CopyPath::Staged => {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {table}_stage (LIKE {table} INCLUDING DEFAULTS) \
                     ON COMMIT DELETE ROWS"
                )))
                .execute(&mut *tx)
                .await?;
                copy_in(&mut tx, &format!("{table}_stage"), &cols, rows).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM {table}_stage \
                     ON CONFLICT (tenant_id, stream_seq) DO NOTHING"
                )))
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
        };
    }
    tx.commit().await?;
    Ok(inserted)
}

/// `COPY`s `rows` (text format) into `columns` of `table`; returns the rows written.
async fn copy_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    columns: &str,
    rows: &[u8],
) -> Result<u64, sqlx::Error> {
    let statement = format!("COPY {table} ({columns}) FROM STDIN");
    let mut copy = tx.copy_in_raw(&statement).await?;
    copy.send(rows).await?;
    copy.finish().await
}

/// Appends one row of `COPY ... FROM STDIN` text format to `out`:
/// tab-separated, newline-terminated, with backslash, tab, newline and
/// carriage return escaped. Built straight from the (borrowed) record, with
/// no intermediate strings.
fn copy_row(out: &mut Vec<u8>, record: &TelemetryRecord<'_>, tenant: &str, received_at: i64) {
    let meta = record.meta();
    copy_uuid(out, uuid::Uuid::now_v7());
    out.push(b'\t');
    copy_text(out, tenant);
    copy_int(out, meta.stream_seq);
    copy_text(out, &meta.subject);
    copy_text(out, &meta.source);
    match record {
        TelemetryRecord::Event {
            severity, message, ..
        } => {
            copy_text(out, severity);
            copy_text(out, message);
        }
        TelemetryRecord::Log { level, message, .. } => {
            copy_text(out, level);
            copy_text(out, message);
        }
        TelemetryRecord::Metric { name, value, .. } => {
            copy_text(out, name);
            // `{}` of a finite f64 is a literal PostgreSQL's float8 input reads back exactly.
            out.extend_from_slice(value.to_string().as_bytes());
            out.push(b'\t');
        }
    }
    copy_text(out, &meta.body);
    copy_int(out, meta.time_ms);
    copy_int(out, received_at);
    match meta.device_id {
        // `\N`: NULL in `COPY` text format.
        None => out.extend_from_slice(b"\\N"),
        Some(device) => copy_uuid(out, device),
    }
    out.push(b'\n');
}

/// A UUID in its hyphenated lowercase form (no allocation).
fn copy_uuid(out: &mut Vec<u8>, id: uuid::Uuid) {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(id.hyphenated().encode_lower(&mut text).as_bytes());
}

/// A text field and its trailing tab, escaped for `COPY` text format. Runs
/// of plain bytes are copied in one piece.
fn copy_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\t');
}

/// An integer field and its trailing tab.
fn copy_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = itoa_buf();
    out.extend_from_slice(format_int(&mut digits, n));
    out.push(b'\t');
}

/// Room for any `i64` in decimal.
fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written at the end of `buf` (no allocation).
fn format_int(buf: &mut [u8; 20], n: i64) -> &[u8] {
    let mut i = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Decodes a row of `table` (any of the three) as [`Scoped::list_telemetry`]
/// selects it: `label`, `message` and `value` are aliased to one shape.
fn decode(table: &'static str) -> impl Fn(&AnyRow) -> Result<StoredRecord, StoreError> {
    move |row| {
        let r = Cols::of(row, table);
        Ok(StoredRecord {
            id: r.get("id")?,
            stream_seq: r.get("stream_seq")?,
            subject: r.get("subject")?,
            source: r.get("source")?,
            time_ms: r.get("created_at")?,
            received_at: r.get("received_at")?,
            label: r.get("label")?,
            message: r.get("message")?,
            value: r.get("value")?,
            body: r.get("body")?,
            device_id: r.get("device_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serviceradar_domain::telemetry::{IncomingMessage, decode};

    #[test]
    fn integers_are_written_in_decimal() {
        for n in [0, 7, -7, 10, 1_700_000_000_000, i64::MAX, i64::MIN] {
            let mut buf = itoa_buf();
            assert_eq!(format_int(&mut buf, n), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn copy_rows_escape_text_and_end_with_a_newline() {
        // JSON escapes decode to a real tab, newline, backslash and carriage return.
        let payload = br#"{"message":"tab\there\nnew \\ back\r","severity":"warning","ts":5}"#;
        let record = decode(
            "acme",
            IncomingMessage {
                subject: "events.acme.nyc",
                payload,
                stream_seq: 42,
                stored_at_ms: 0,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        copy_row(&mut out, &record, "tenant-1", 99);
        let row = String::from_utf8(out).unwrap();
        assert!(row.ends_with("\t99\t\\N\n"), "{row:?}");
        assert_eq!(row.matches('\n').count(), 1);
        let fields: Vec<&str> = row.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 11, "{row:?}");
        assert!(uuid::Uuid::parse_str(fields[0]).is_ok());
        assert_eq!(
            &fields[1..6],
            ["tenant-1", "42", "events.acme.nyc", "nyc", "warning"]
        );
        assert_eq!(fields[6], r"tab\there\nnew \\ back\r");
        // The body keeps its JSON escapes; COPY doubles their backslashes.
        assert!(
            fields[7].contains(r#""tab\\there\\nnew \\\\ back\\r""#),
            "{}",
            fields[7]
        );
        assert_eq!(fields[8..], ["5", "99", r"\N"]);
    }
}
