//! Row decoding shared by every repository.
//!
//! Every table stores the same few shapes: plain values (integers, text,
//! blobs, their nullable forms), typed ids and state enums as text, validated
//! newtypes (slugs, names, URLs) as text, and the odd JSON document. [`Cols`]
//! reads each shape, including the text-to-type parsing and the "corrupt row"
//! error, in one place, so a decoder is a list of `field: r.<shape>("column")?`
//! lines and every decoding failure names its table and column the same way.
//!
//! [`found`] and [`all`] are the two ways a query's rows become values
//! (exactly one row or [`StoreError::NotFound`]; every row), and
//! [`affected`] is the same "no such row" rule for an `UPDATE` or `DELETE`.

use std::cell::Cell;
use std::fmt::Display;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use sqlx::any::{AnyQueryResult, AnyRow};
use sqlx::postgres::PgRow;
use sqlx::{Column, ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::error::StoreError;

/// The columns of one row of `table`, read by name. `R` is the row type:
/// sqlx's `Any` row by default, or a native PostgreSQL row on the hot read
/// paths that skip `Any`'s per-row conversion (the same decoders serve both).
///
/// A decoder that reads the columns in the order its `SELECT` lists them
/// (they all do) finds each one at the position after the last, checked by
/// comparing the name, instead of hashing the name into the row's column
/// map: a list page reads 50 rows of about ten columns. Reading out of
/// order still works; it costs that lookup.
pub(crate) struct Cols<'r, R: Row = AnyRow> {
    row: &'r R,
    table: &'static str,
    next: Cell<usize>,
}

/// How [`Cols`] reads one value from a row type.
pub(crate) trait ReadValue: Row {
    /// The value at column `at`, decoded as `T`.
    fn read<'r, T>(&'r self, at: usize) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Self::Database> + Type<Self::Database>;

    /// The bytes of the text at column `at`, not checked as UTF-8 (for a
    /// parser that accepts only ASCII).
    fn read_text_bytes(&self, at: usize) -> Result<&[u8], sqlx::Error>;
}

/// `Any` rows (SQLite's dynamic typing among them) always check the value's
/// SQL type against `T`.
impl ReadValue for AnyRow {
    fn read<'r, T>(&'r self, at: usize) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Self::Database> + Type<Self::Database>,
    {
        self.try_get(at)
    }

    fn read_text_bytes(&self, at: usize) -> Result<&[u8], sqlx::Error> {
        self.try_get::<&str, _>(at).map(str::as_bytes)
    }
}

/// Native PostgreSQL rows, whose column types the schema fixes, check the
/// SQL type against `T` in debug builds, so every test run (each decoder
/// against the real schema) does, and skip that per-value comparison in
/// release builds, where the list pages decode hundreds of values per
/// request. A decoder that asks for the wrong type fails every PostgreSQL
/// test that reads its table; in release it would mostly fail in the
/// decoder (wrong length, invalid UTF-8) or in the validating constructor
/// that follows, but is not guaranteed to.
impl ReadValue for PgRow {
    fn read<'r, T>(&'r self, at: usize) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Self::Database> + Type<Self::Database>,
    {
        if cfg!(debug_assertions) {
            self.try_get(at)
        } else {
            self.try_get_unchecked(at)
        }
    }

    fn read_text_bytes(&self, at: usize) -> Result<&[u8], sqlx::Error> {
        if cfg!(debug_assertions) {
            // The type check `read` makes in debug builds.
            self.try_get::<&str, _>(at)?;
        }
        self.try_get_raw(at)?
            .as_bytes()
            .map_err(|source| sqlx::Error::ColumnDecode {
                index: at.to_string(),
                source,
            })
    }
}

impl<'r, R: ReadValue> Cols<'r, R>
where
    for<'c> &'c str: ColumnIndex<R>,
{
    /// Reads `row`, a row of `table` (the table names decoding errors).
    pub(crate) fn of(row: &'r R, table: &'static str) -> Self {
        Self {
            row,
            table,
            next: Cell::new(0),
        }
    }

    /// A column as stored: `i64`, `f64`, `String`, `Vec<u8>` or their
    /// `Option` for nullable columns.
    pub(crate) fn get<T>(&self, col: &str) -> Result<T, StoreError>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(self.row.read(self.position(col)?)?)
    }

    /// Where `col` is in the row: right after the column read last when the
    /// name matches there, else looked up by name.
    fn position(&self, col: &str) -> Result<usize, sqlx::Error> {
        let next = self.next.get();
        let at = match self.row.columns().get(next) {
            Some(c) if c.name() == col => next,
            _ => col.index(self.row)?,
        };
        self.next.set(at + 1);
        Ok(at)
    }

    /// A nullable column that must be set where this row is read (e.g. the
    /// material of a provisioned leaf).
    pub(crate) fn required<T>(&self, col: &str) -> Result<T, StoreError>
    where
        Option<T>: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.get::<Option<T>>(col)?
            .ok_or_else(|| StoreError::corrupt(self.table, format!("{col} missing")))
    }

    /// A text column through a validating constructor (`Slug::parse`, ...),
    /// read in place from the row (no copy of the text before the
    /// constructor makes its own).
    pub(crate) fn valid<T, E: Display>(
        &self,
        col: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, StoreError>
    where
        &'r str: Decode<'r, R::Database> + Type<R::Database>,
    {
        let text: &'r str = self.get(col)?;
        parse(text).map_err(|e| self.corrupt(col, e))
    }

    /// A text column parsed with [`FromStr`]: typed ids, state enums, roles.
    pub(crate) fn parse<T: FromStr>(&self, col: &str) -> Result<T, StoreError>
    where
        T::Err: Display,
        &'r str: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.valid(col, str::parse)
    }

    /// A typed id (`EdgeSiteId`, `TenantId`, ...) from its text column.
    /// The UUID is read from the column's bytes: its own parser refuses
    /// anything but ASCII hex and hyphens, so the UTF-8 check a `&str` read
    /// makes first would be a second pass over the same 36 bytes (two ids
    /// per row of a list page).
    pub(crate) fn id<T: From<Uuid>>(&self, col: &str) -> Result<T, StoreError> {
        let at = self.position(col)?;
        let text = self.row.read_text_bytes(at)?;
        Uuid::try_parse_ascii(text)
            .map(T::from)
            .map_err(|e| self.corrupt(col, e))
    }

    /// A nullable text column parsed with [`FromStr`].
    pub(crate) fn parse_opt<T: FromStr>(&self, col: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: Display,
        Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.get::<Option<String>>(col)?
            .map(|text| text.parse().map_err(|e| self.corrupt(col, e)))
            .transpose()
    }

    /// A text column holding a JSON document.
    pub(crate) fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError>
    where
        &'r str: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.valid(col, |text| serde_json::from_str(text))
    }

    fn corrupt(&self, col: &str, err: impl Display) -> StoreError {
        StoreError::corrupt(self.table, format!("{col}: {err}"))
    }
}

/// The single row a lookup found, decoded, or [`StoreError::NotFound`].
pub(crate) fn found<T, R>(
    row: Option<R>,
    decode: impl FnOnce(&R) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    row.as_ref().ok_or(StoreError::NotFound).and_then(decode)
}

/// Every row, decoded (the first failure wins).
pub(crate) fn all<T>(
    rows: &[AnyRow],
    decode: impl FnMut(&AnyRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect()
}

/// `Ok` if the statement changed a row, [`StoreError::NotFound`] if it
/// matched none (e.g. the id belongs to another tenant).
pub(crate) fn affected(done: &AnyQueryResult) -> Result<(), StoreError> {
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serviceradar_domain::EdgeSiteId;
    use sqlx::Connection as _;

    use super::*;

    /// Texts an id column could hold: every form `Uuid::parse_str` takes,
    /// and text it refuses (non-hex, wrong length, non-ASCII, empty).
    const TEXTS: [&str; 10] = [
        "01a230b7-9ee4-7d3c-9b1e-557d3575ddc0",
        "01A230B7-9EE4-7D3C-9B1E-557D3575DDC0",
        "01a230b79ee47d3c9b1e557d3575ddc0",
        "{01a230b7-9ee4-7d3c-9b1e-557d3575ddc0}",
        "urn:uuid:01a230b7-9ee4-7d3c-9b1e-557d3575ddc0",
        "01a230b7-9ee4-7d3c-9b1e-557d3575ddcz",
        "01a230b7-9ee4-7d3c-9b1e-557d3575ddc",
        "01a230b7-9ee4-7d3c-9b1e-557d3575ddé",
        "",
        "not an id",
    ];

    /// What `Cols::id` made of a text, beside what `str::parse` makes of it.
    fn compare(text: &str, by_bytes: Result<EdgeSiteId, StoreError>) {
        match (text.parse::<EdgeSiteId>(), by_bytes) {
            (Ok(parsed), Ok(read)) => assert_eq!(parsed, read, "{text}"),
            (Err(_), Err(StoreError::Corrupt { table, detail })) => {
                assert_eq!(table, "edge_sites");
                assert!(detail.starts_with("id: "), "{text}: {detail}");
            }
            (parsed, read) => panic!("{text}: str::parse {parsed:?}, Cols::id {read:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_read_from_bytes_are_the_ids_str_parse_reads_postgres() {
        let url =
            tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
                .await
                .expect("create a test database");
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        for text in TEXTS {
            let row: PgRow = sqlx::query("SELECT $1::text AS id")
                .bind(text)
                .fetch_one(&mut conn)
                .await
                .expect("select");
            compare(text, Cols::of(&row, "edge_sites").id("id"));
        }
        let row: PgRow = sqlx::query("SELECT NULL::text AS id")
            .fetch_one(&mut conn)
            .await
            .expect("select");
        assert!(Cols::of(&row, "edge_sites").id::<EdgeSiteId>("id").is_err());
    }

    #[tokio::test]
    async fn ids_read_from_bytes_are_the_ids_str_parse_reads_sqlite() {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .expect("connect");
        for text in TEXTS {
            let row: AnyRow = sqlx::query("SELECT ? AS id")
                .bind(text)
                .fetch_one(&mut conn)
                .await
                .expect("select");
            compare(text, Cols::of(&row, "edge_sites").id("id"));
        }
    }
}
