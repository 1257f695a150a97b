//! A small pool of native PostgreSQL connections for the hot reads (the
//! credential lookups and the site lists), without sqlx's ping on return.
//!
//! sqlx's pool sends a `Sync` and waits for its answer every time a
//! connection is returned (to catch a connection left mid-query by a
//! cancelled future): a second round trip, and a spawned task, for every
//! one-statement read. Here a connection goes back to the idle list only
//! when its read completed (the whole answer received, so it is idle and in
//! a known state); a read that failed or was cancelled (its future dropped)
//! drops the connection instead, and the next read opens a new one. Nor is a
//! connection pinged when it is taken: a read on an idle connection that
//! turns out to be dead (the database restarted) is run again, once, on a
//! new connection, which is safe because these are reads.
//!
//! Each connection keeps sqlx's cache of prepared statements, so a read is
//! one `Bind`/`Execute`/`Sync` exchange.
//!
//! A read's first poll runs while no tracing span is current
//! ([`without_span_capture`]): sqlx re-enters the span current when it makes
//! a statement's row streams around every row it yields, which a list read
//! pays for fifty times over, for a span that is current around the read
//! anyway.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::StoreError;

/// How long a read waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool (see the module doc).
pub(crate) struct HotPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
}

impl HotPool {
    /// At most `max` connections to `options`' database, opened on demand.
    pub(crate) fn new(options: PgConnectOptions, max: u32) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1)),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        // The list stays valid whatever panicked while it was held.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the query `make` builds and returns every row.
    pub(crate) async fn fetch_all<'q>(
        &self,
        make: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let _permit = self.permit().await?;
        let idle = self.idle().pop();
        if let Some(mut conn) = idle {
            match without_span_capture(make().fetch_all(&mut conn)).await {
                Ok(rows) => {
                    self.idle().push(conn);
                    return Ok(rows);
                }
                // Dead while idle: once more on a new connection.
                Err(e) if connection_lost(&e) => {}
                // `conn` is dropped (closed) on an error or a cancellation.
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let rows = without_span_capture(make().fetch_all(&mut conn)).await?;
        self.idle().push(conn);
        Ok(rows)
    }

    /// Runs the query `make` builds and returns its row, if any.
    pub(crate) async fn fetch_optional<'q>(
        &self,
        make: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, StoreError> {
        let _permit = self.permit().await?;
        let idle = self.idle().pop();
        if let Some(mut conn) = idle {
            match without_span_capture(make().fetch_optional(&mut conn)).await {
                Ok(row) => {
                    self.idle().push(conn);
                    return Ok(row);
                }
                Err(e) if connection_lost(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let row = without_span_capture(make().fetch_optional(&mut conn)).await?;
        self.idle().push(conn);
        Ok(row)
    }

    /// Runs the query `make` builds, which returns exactly one row.
    pub(crate) async fn fetch_one<'q>(
        &self,
        make: impl Fn() -> Query<'q, Postgres, PgArguments>,
    ) -> Result<PgRow, StoreError> {
        self.fetch_optional(make)
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// One of the `max` places.
    async fn permit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))
    }

    /// Refuses new reads and closes the idle connections.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<PgConnection> = std::mem::take(&mut *self.idle());
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// Runs `read`, a sqlx read, with no tracing span current during its first
/// poll.
///
/// sqlx wraps the row streams of a statement in the span current when it
/// makes them (`Instrument::in_current_span`) and enters and exits that
/// span around every row they yield: two streams, so four calls into the
/// subscriber per row, about 500 instructions, or a sixteenth of a 50-row
/// list request. It makes both streams in the read's first poll when the
/// statement is prepared already (a first read on a connection prepares
/// it, and pays the calls once). Made while no span is current, they hold
/// none, and yield their rows without those calls. The logs keep what they
/// had: sqlx sends no event in that first poll (it logs a statement when
/// the statement finishes), and every later poll runs inside the request's
/// instrumented future, whose span is current then, so a slow statement's
/// warning still carries the request's tenant and site.
async fn without_span_capture<F: Future>(read: F) -> F::Output {
    let mut read = std::pin::pin!(read);
    let mut first = true;
    std::future::poll_fn(move |cx| {
        if std::mem::take(&mut first) {
            tracing::dispatcher::with_default(&tracing::Dispatch::none(), || read.as_mut().poll(cx))
        } else {
            read.as_mut().poll(cx)
        }
    })
    .await
}

/// Whether `e` says the connection itself is gone (closed, reset, or
/// terminated by the server: SQLSTATE classes 08 and 57P), not the query.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
