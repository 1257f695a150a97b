//! Keyset pagination shared by every list endpoint.
//!
//! Lists are ordered by `(created_at, id)` (ids are UUID v7, so this is
//! creation order) and continue after an opaque cursor. Keyset pages cost the
//! same at page 1 and page 1,000, unlike `OFFSET`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Postgres, Row};

use crate::error::StoreError;
use crate::hot::HotPool;

/// Where a page starts: just after the row with this `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    created_at: i64,
    id: String,
}

impl Cursor {
    /// The opaque text form given to API clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.created_at, self.id))
    }

    /// Parses the text form; `None` if it was not produced by [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (created_at, id) = text.split_once('|')?;
        let id = uuid::Uuid::parse_str(id).ok()?.to_string();
        Some(Self {
            created_at: created_at.parse().ok()?,
            id,
        })
    }
}

/// A page request: how many rows, after which cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows per page, 1..=[`PageRequest::MAX_LIMIT`].
    pub limit: u32,
    /// Continue after this row.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// Default page size.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 200;

    /// The first page of the default size.
    pub fn first() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first()
    }
}

/// One page of results.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Cursor for the next page, `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// A bound value for [`ListQuery`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// Builds a tenant-scoped list query from static SQL fragments and bound
/// values. Only fragments written in this crate become SQL text; every user
/// value is a bind parameter.
pub(crate) struct ListQuery {
    sql: String,
    args: Vec<Arg>,
    limit: u32,
}

impl ListQuery {
    /// `select` must end just before `WHERE`; `table_alias` prefixes the
    /// `tenant_id`, `created_at` and `id` columns.
    pub(crate) fn new(select: &'static str, alias: &'static str, tenant_id: String) -> Self {
        let mut q = Self {
            sql: select.to_string(),
            args: Vec::new(),
            limit: PageRequest::DEFAULT_LIMIT,
        };
        q.sql.push_str(" WHERE ");
        q.sql.push_str(alias);
        q.sql.push_str(".tenant_id = ");
        q.push_arg(Arg::Text(tenant_id));
        q
    }

    fn push_arg(&mut self, arg: Arg) {
        self.args.push(arg);
        self.sql.push_str(&format!("${}", self.args.len()));
    }

    /// Adds `AND <column> = $n`.
    pub(crate) fn eq(&mut self, column: &'static str, value: Arg) -> &mut Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(column);
        self.sql.push_str(" = ");
        self.push_arg(value);
        self
    }

    /// Adds `AND <column> <op> $n`; `op` is one of this crate's literals.
    pub(crate) fn cmp(&mut self, column: &'static str, op: &'static str, value: Arg) -> &mut Self {
        debug_assert!(matches!(op, "<" | "<=" | ">" | ">=" | "="));
        self.sql.push_str(" AND ");
        self.sql.push_str(column);
        self.sql.push(' ');
        self.sql.push_str(op);
        self.sql.push(' ');
        self.push_arg(value);
        self
    }

    /// Adds `AND <column> IN (<select>$n)`; `select` is one of this crate's
    /// literals, ending where its one value goes.
    pub(crate) fn in_select(
        &mut self,
        column: &'static str,
        select: &'static str,
        value: Arg,
    ) -> &mut Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(column);
        self.sql.push_str(" IN (");
        self.sql.push_str(select);
        self.push_arg(value);
        self.sql.push(')');
        self
    }

    /// Adds `AND <column> IS NULL` (or `IS NOT NULL`).
    pub(crate) fn null(&mut self, column: &'static str, is_null: bool) -> &mut Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(column);
        self.sql
            .push_str(if is_null { " IS NULL" } else { " IS NOT NULL" });
        self
    }

    /// Runs the query (a `SELECT COUNT(*) ...` without a page) and returns
    /// its single integer.
    pub(crate) async fn count(&self, pool: &sqlx::AnyPool) -> Result<i64, StoreError> {
        let row = self.query().fetch_one(pool).await?;
        Ok(row.try_get(0)?)
    }

    /// Turns a `SELECT 1 FROM ...` query (without a page) into a count of at
    /// most `cap` of its rows: the database stops after `cap` matches
    /// instead of counting the whole filter.
    pub(crate) fn count_up_to(&mut self, cap: u32) -> &mut Self {
        self.sql = format!("SELECT COUNT(*) AS n FROM ({} LIMIT {cap}) c", self.sql);
        self
    }

    /// Puts `WITH <name> AS (<filter> LIMIT <cap>)` in front of the query,
    /// so its select list can count the filter's matches up to `cap`
    /// (`(SELECT COUNT(*) FROM <name>)`) in the same statement as the page:
    /// one round trip instead of two. `filter` must have been built with the
    /// same conditions in the same order as this query so far: its
    /// placeholders (`$1`..`$k`) then name the same values as this query's
    /// first `k` arguments, which both backends allow a statement to reuse.
    pub(crate) fn with_count_up_to(
        &mut self,
        name: &'static str,
        filter: &ListQuery,
        cap: u32,
    ) -> &mut Self {
        debug_assert!(
            self.args.starts_with(&filter.args),
            "the count's filter must be this query's prefix"
        );
        self.sql = format!("WITH {name} AS ({} LIMIT {cap}) {}", filter.sql, self.sql);
        self
    }

    /// Adds a case-insensitive substring match on `column`.
    pub(crate) fn contains(&mut self, column: &'static str, needle: &str) -> &mut Self {
        let escaped: String = needle
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        self.sql.push_str(" AND LOWER(");
        self.sql.push_str(column);
        self.sql.push_str(") LIKE ");
        self.push_arg(Arg::Text(format!("%{escaped}%")));
        self.sql.push_str(" ESCAPE '\\'");
        self
    }

    /// Adds the keyset condition, ordering and limit (fetching one extra row
    /// to know whether there is a next page).
    pub(crate) fn page(&mut self, alias: &'static str, page: &PageRequest) -> &mut Self {
        if let Some(after) = &page.after {
            self.sql.push_str(&format!(" AND ({alias}.created_at > "));
            self.push_arg(Arg::Int(after.created_at));
            self.sql.push_str(&format!(" OR ({alias}.created_at = "));
            self.push_arg(Arg::Int(after.created_at));
            self.sql.push_str(&format!(" AND {alias}.id > "));
            self.push_arg(Arg::Text(after.id.clone()));
            self.sql.push_str("))");
        }
        self.limit = page.limit.clamp(1, PageRequest::MAX_LIMIT);
        self.sql.push_str(&format!(
            " ORDER BY {alias}.created_at, {alias}.id LIMIT {}",
            self.limit + 1
        ));
        self
    }

    fn query(&self) -> Query<'_, Any, AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql.clone()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.clone()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }

    /// The same statement for sqlx's native PostgreSQL driver.
    fn pg_query(&self) -> Query<'_, Postgres, PgArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql.clone()));
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.clone()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }

    /// [`ListQuery::count`] on the native PostgreSQL pool.
    pub(crate) async fn count_pg(&self, pool: &HotPool) -> Result<i64, StoreError> {
        let row = pool.fetch_one(|| self.pg_query()).await?;
        Ok(row.try_get(0)?)
    }

    /// [`ListQuery::fetch`] on the hot-read PostgreSQL connections: the rows
    /// are decoded straight from PostgreSQL's wire format, without `Any`'s
    /// copy of every value into an `AnyRow` (the hot list reads).
    pub(crate) async fn fetch_pg<T>(
        &self,
        pool: &HotPool,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        decoded(self.fetch_rows_pg(pool).await?, decode)
    }

    /// [`ListQuery::fetch_pg`] without decoding: the page's rows, for a
    /// reader that borrows from them.
    pub(crate) async fn fetch_rows_pg(&self, pool: &HotPool) -> Result<Page<PgRow>, StoreError> {
        page_rows(pool.fetch_all(|| self.pg_query()).await?, self.limit)
    }

    /// [`ListQuery::fetch`] without decoding: the page's rows.
    pub(crate) async fn fetch_rows(
        &self,
        pool: &sqlx::AnyPool,
    ) -> Result<Page<AnyRow>, StoreError> {
        page_rows(self.query().fetch_all(pool).await?, self.limit)
    }

    /// Fetches the single row matching `column = value` in the tenant, or
    /// [`StoreError::NotFound`] (also for rows of other tenants).
    pub(crate) async fn fetch_one<T>(
        mut self,
        alias: &'static str,
        column: &'static str,
        value: String,
        pool: &sqlx::AnyPool,
        decode: impl Fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.eq(column, Arg::Text(value))
            .page(alias, &PageRequest::first());
        self.fetch(pool, decode)
            .await?
            .items
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Runs the query and decodes rows with `decode`; `created_at` and `id`
    /// columns must be selected (unaliased) for the cursor.
    pub(crate) async fn fetch<T>(
        &self,
        pool: &sqlx::AnyPool,
        decode: impl Fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        decoded(self.fetch_rows(pool).await?, decode)
    }
}

/// A page of rows decoded with `decode`, keeping its cursor; for
/// any-dialect and native PostgreSQL rows alike.
fn decoded<R, T>(
    rows: Page<R>,
    decode: impl Fn(&R) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let items = rows.items.iter().map(decode).collect::<Result<_, _>>()?;
    Ok(Page {
        items,
        next_cursor: rows.next_cursor,
    })
}

/// `rows` (fetched with one row beyond `limit`) cut to the page, with the
/// cursor after its last row: a page of rows still to decode.
fn page_rows<R>(mut rows: Vec<R>, limit: u32) -> Result<Page<R>, StoreError>
where
    R: Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(
            Cursor {
                created_at: last.try_get("created_at")?,
                id: last.try_get("id")?,
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_reject_garbage() {
        let c = Cursor {
            created_at: 1_700_000_000_000,
            id: uuid::Uuid::now_v7().to_string(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "!!!",
            "MTIz",
            &URL_SAFE_NO_PAD.encode("1|'; DROP TABLE x"),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
