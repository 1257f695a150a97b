//! Results uploaded by agents with `PushResults` (migration 0024), kept per
//! tenant and site so people can list and read them.
//!
//! An upload is resumable by `(agent, upload_id, chunk_index)`. Its
//! progress lives here, not in a gateway's memory, so an upload resumed
//! after a gateway restart, or on another replica, continues where it
//! stopped, and each chunk is stored once: the upload's `next_chunk` moves
//! with a compare-and-set in the transaction that stores the chunk.

use serviceradar_domain::EdgeSiteId;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::Cols;
use crate::telemetry::TimeRange;

/// An upload as listed (without its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpload {
    /// Row id.
    pub id: Uuid,
    /// Site of the agent.
    pub edge_site_id: EdgeSiteId,
    /// The agent.
    pub agent_id: Uuid,
    /// The agent's id for the upload.
    pub upload_id: String,
    /// As the agent declared it.
    pub content_type: String,
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// When its last chunk arrived (Unix ms); `None` while incomplete.
    pub completed_at: Option<i64>,
    /// First chunk (Unix ms).
    pub created_at: i64,
    /// Last chunk (Unix ms).
    pub updated_at: i64,
}

/// One chunk offered for storage.
#[derive(Debug, Clone, Copy)]
pub struct ChunkIn<'a> {
    /// The agent's id for the upload (validated by the caller).
    pub upload_id: &'a str,
    /// Declared content type (clipped by the caller).
    pub content_type: &'a str,
    /// 0-based.
    pub index: u64,
    /// Content.
    pub data: &'a [u8],
    /// Whether it is the last one.
    pub last: bool,
}

/// What storing a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored, or already stored before (a resumed upload re-sent it).
    Accepted {
        /// The next chunk the upload expects.
        next_chunk: u64,
        /// Bytes stored so far.
        bytes: u64,
        /// The upload is complete.
        complete: bool,
    },
    /// The chunk skips ahead of the next expected one.
    Gap {
        /// The chunk expected.
        expected: u64,
    },
    /// The upload would exceed the size limit; it was dropped.
    TooLarge,
    /// The agent has too many unfinished uploads.
    TooManyOpen,
}

/// An unfinished upload untouched for this long no longer counts as open
/// (it stays resumable until retention removes it).
const OPEN_FOR_MS: i64 = 600_000;

const UPLOAD_SELECT: &str = "SELECT u.id, u.edge_site_id, u.agent_id, u.upload_id, u.content_type, \
     u.next_chunk, u.bytes, u.completed_at, u.created_at, u.updated_at FROM agent_uploads u";

fn decode_upload(row: &AnyRow) -> Result<StoredUpload, StoreError> {
    let r = Cols::of(row, "agent_uploads");
    let count = |col: &str| -> Result<u64, StoreError> {
        let v: i64 = r.get(col)?;
        u64::try_from(v).map_err(|e| StoreError::corrupt("agent_uploads", e))
    };
    Ok(StoredUpload {
        id: r.id("id")?,
        edge_site_id: r.id("edge_site_id")?,
        agent_id: r.id("agent_id")?,
        upload_id: r.get("upload_id")?,
        content_type: r.get("content_type")?,
        chunks: count("next_chunk")?,
        bytes: count("bytes")?,
        completed_at: r.get("completed_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Scoped<'_> {
    /// Stores one chunk of an agent's upload (see the module doc): at most
    /// `max_bytes` per upload and `max_open` unfinished uploads per agent.
    pub async fn store_upload_chunk(
        &self,
        site: EdgeSiteId,
        agent: Uuid,
        chunk: ChunkIn<'_>,
        max_bytes: u64,
        max_open: i64,
    ) -> Result<ChunkOutcome, StoreError> {
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let existing = sqlx::query(
            "SELECT id, next_chunk, bytes, completed_at FROM agent_uploads \
             WHERE tenant_id = $1 AND agent_id = $2 AND upload_id = $3",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .bind(chunk.upload_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (id, next, bytes, completed) = match existing {
            Some(row) => {
                let r = Cols::of(&row, "agent_uploads");
                let id: Uuid = r.id("id")?;
                let next: i64 = r.get("next_chunk")?;
                let bytes: i64 = r.get("bytes")?;
                let completed: Option<i64> = r.get("completed_at")?;
                (
                    id,
                    u64::try_from(next).unwrap_or(0),
                    u64::try_from(bytes).unwrap_or(0),
                    completed.is_some(),
                )
            }
            None => {
                if chunk.index > 0 {
                    return Ok(ChunkOutcome::Gap { expected: 0 });
                }
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM agent_uploads WHERE tenant_id = $1 AND agent_id = $2 \
                     AND completed_at IS NULL AND updated_at > $3",
                )
                .bind(self.tenant())
                .bind(agent.to_string())
                .bind(now - OPEN_FOR_MS)
                .fetch_one(&mut *tx)
                .await?;
                if open >= max_open {
                    return Ok(ChunkOutcome::TooManyOpen);
                }
                let id = Uuid::now_v7();
                let inserted = sqlx::query(
                    "INSERT INTO agent_uploads (id, tenant_id, edge_site_id, agent_id, upload_id, \
                     content_type, next_chunk, bytes, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $7) \
                     ON CONFLICT (tenant_id, agent_id, upload_id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(self.tenant())
                .bind(site.to_string())
                .bind(agent.to_string())
                .bind(chunk.upload_id)
                .bind(chunk.content_type)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    // Another replica started it at the same instant: the
                    // agent resends and finds it.
                    return Ok(ChunkOutcome::Gap { expected: 0 });
                }
                (id, 0, 0, false)
            }
        };
        if chunk.index < next || completed {
            // Already stored: acknowledged, not stored again.
            return Ok(ChunkOutcome::Accepted {
                next_chunk: next,
                bytes,
                complete: completed,
            });
        }
        if chunk.index > next {
            return Ok(ChunkOutcome::Gap { expected: next });
        }
        let total = bytes + chunk.data.len() as u64;
        if total > max_bytes {
            sqlx::query("DELETE FROM agent_uploads WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(ChunkOutcome::TooLarge);
        }
        let moved = sqlx::query(
            "UPDATE agent_uploads SET next_chunk = $1, bytes = $2, updated_at = $3, \
             completed_at = $4 WHERE tenant_id = $5 AND id = $6 AND next_chunk = $7",
        )
        .bind(int(next + 1))
        .bind(int(total))
        .bind(now)
        .bind(chunk.last.then_some(now))
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(int(next))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            // A concurrent copy of this chunk won; report where it stands.
            return Ok(ChunkOutcome::Gap { expected: next + 1 });
        }
        sqlx::query(
            "INSERT INTO agent_upload_chunks (upload_id, chunk_index, data) VALUES ($1, $2, $3)",
        )
        .bind(id.to_string())
        .bind(int(chunk.index))
        .bind(chunk.data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChunkOutcome::Accepted {
            next_chunk: next + 1,
            bytes: total,
            complete: chunk.last,
        })
    }

    /// A site's uploads, newest last, created within `range`.
    pub async fn agent_uploads(
        &self,
        site: EdgeSiteId,
        range: TimeRange,
        page: &PageRequest,
    ) -> Result<Page<StoredUpload>, StoreError> {
        let mut q = ListQuery::new(UPLOAD_SELECT, "u", self.tenant());
        q.eq("u.edge_site_id", Arg::Text(site.to_string()));
        if let Some(from) = range.from {
            q.cmp("u.created_at", ">=", Arg::Int(from));
        }
        if let Some(to) = range.to {
            q.cmp("u.created_at", "<", Arg::Int(to));
        }
        q.page("u", page)
            .fetch(&self.store.pool, decode_upload)
            .await
    }

    /// One upload of the site with its content (chunks in order).
    pub async fn agent_upload(
        &self,
        site: EdgeSiteId,
        id: Uuid,
    ) -> Result<(StoredUpload, Vec<u8>), StoreError> {
        let upload = ListQuery::new(UPLOAD_SELECT, "u", self.tenant())
            .fetch_one("u", "u.id", id.to_string(), &self.store.pool, decode_upload)
            .await?;
        if upload.edge_site_id != site {
            return Err(StoreError::NotFound);
        }
        let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM agent_upload_chunks WHERE upload_id = $1 ORDER BY chunk_index",
        )
        .bind(id.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        Ok((upload, chunks.concat()))
    }
}
