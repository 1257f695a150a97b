//! Connecting, migrating, and the clock every repository stamps rows with.

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tokio::sync::watch;

use crate::auth_cache::{AUTH_CHANNEL, AuthCache, Invalidation, POSTGRES_MAX_AGE, SQLITE_MAX_AGE};
use crate::error::StoreError;
use crate::hot::HotPool;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (embedded default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The database handle. Cheap to clone (a pool).
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// A native pool on PostgreSQL, for what `Any` cannot do (`COPY`,
    /// `LISTEN`).
    pub(crate) pg: Option<sqlx::PgPool>,
    /// Native PostgreSQL connections for the hot reads (site lists,
    /// credential lookups): no `Any` row conversion, no ping on return.
    pub(crate) hot: Option<Arc<HotPool>>,
    backend: Backend,
    /// Credential lookups of this replica (see `auth_cache`).
    pub(crate) auth_cache: Arc<AuthCache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects to `url`: `sqlite://path/to/file.db` (created if missing) or
    /// `postgres://user@host:port/db`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "database URL must start with sqlite:// or postgres://".into(),
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        // sqlx pings a connection on checkout (and on return): a round trip
        // per query, kept here because without it a connection that died
        // while idle (a database restart) fails the next query it is given.
        // The hot reads, where those round trips cost, run on `hot` instead,
        // which retries such a read once on a new connection.
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while the single writer commits.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let pg = match backend {
            Backend::Postgres => Some(
                sqlx::postgres::PgPoolOptions::new()
                    // Bulk loads: a few concurrent ingest writers per tenant.
                    .max_connections(max_connections.clamp(1, 8))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy(&url)?,
            ),
            Backend::Sqlite => None,
        };
        // As many hot-read connections as the main pool allows, opened on
        // demand (so at most `2 * max_connections + 8` in all).
        let hot = match backend {
            Backend::Postgres => Some(Arc::new(HotPool::new(
                url.parse::<sqlx::postgres::PgConnectOptions>()?,
                max_connections,
            ))),
            Backend::Sqlite => None,
        };
        // SQLite: one process, invalidated in process, live at once.
        // PostgreSQL: live only while `spawn_auth_invalidation` listens.
        let auth_cache = Arc::new(match backend {
            Backend::Sqlite => AuthCache::new(true, SQLITE_MAX_AGE),
            Backend::Postgres => AuthCache::new(false, POSTGRES_MAX_AGE),
        });
        Ok(Self {
            pool,
            pg,
            hot,
            backend,
            auth_cache,
        })
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Begins a transaction that may write. On SQLite it takes the write lock
    /// at `BEGIN` (`BEGIN IMMEDIATE`), waiting out the busy timeout for it: a
    /// deferred transaction that reads and then writes fails at once with
    /// "database is locked" when another connection wrote in between (WAL
    /// mode answers that upgrade with `SQLITE_BUSY[_SNAPSHOT]` without
    /// waiting). Every transaction of this crate begins here.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks the database answers (readiness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Sends `payload` on the PostgreSQL notification `channel` (every
    /// replica's [`Store::listen`] receives it). A no-op on SQLite, where one
    /// process owns the database.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pg)
                .await?;
        }
        Ok(())
    }

    /// A listener on the PostgreSQL notification `channel`; `None` on SQLite.
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Some(pg) = &self.pg else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pg).await?;
        listener.listen(channel).await?;
        Ok(Some(listener))
    }

    /// Keeps this replica's credential cache in step with every other
    /// replica's writes (PostgreSQL): listens on the `sr_auth` channel,
    /// drops what each notification names, and serves cached credentials
    /// only while listening. Until this runs, PostgreSQL lookups are not
    /// cached. Returns at once on SQLite (in-process invalidation).
    pub fn spawn_auth_invalidation(
        &self,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            if store.backend == Backend::Sqlite {
                return;
            }
            loop {
                match store.listen(AUTH_CHANNEL).await {
                    Ok(Some(listener)) => {
                        store.auth_cache.set_live(true);
                        let stopped = store.follow_auth_changes(listener, &mut stop).await;
                        store.auth_cache.set_live(false);
                        if stopped {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for credential changes failed");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Whether this replica serves credentials from its cache: on SQLite
    /// always, on PostgreSQL while its invalidation listener listens.
    pub fn credential_cache_live(&self) -> bool {
        self.auth_cache.is_live()
    }

    /// Applies notifications until `stop` (true) or a listener error (false).
    async fn follow_auth_changes(
        &self,
        mut listener: sqlx::postgres::PgListener,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            tokio::select! {
                _ = stop.changed() => return true,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        self.auth_cache.invalidate(&Invalidation::parse(notification.payload()));
                    }
                    // The connection was lost and re-established (listening
                    // again): what was sent in between is unknown.
                    Ok(None) => self.auth_cache.invalidate(&Invalidation::All),
                    Err(e) => {
                        tracing::warn!(error = %e, "the credential change listener failed; reconnecting");
                        return false;
                    }
                },
            }
        }
    }

    /// Announces a credential change inside the transaction that makes it
    /// (PostgreSQL delivers it on commit, to every replica); nothing on SQLite.
    pub(crate) async fn notify_auth_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        what: &Invalidation,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(AUTH_CHANNEL)
                .bind(what.payload())
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// Drops a credential from this replica's cache (after the write committed).
    pub(crate) fn forget_auth(&self, what: &Invalidation) {
        self.auth_cache.invalidate(what);
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
        if let Some(hot) = &self.hot {
            hot.close().await;
        }
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
