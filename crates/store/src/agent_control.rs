//! What the control stream needs kept: the commands issued to an edge agent
//! (status moved by compare-and-set, so two replicas never both deliver or
//! both give up on one), the checks configured for an agent, and the config
//! version the agent last acknowledged (migration 0017). Config pushes to
//! many agents read their configs in batches ([`Scoped::agent_configs`]) and
//! acknowledgements are written in batches
//! ([`crate::Store::record_config_acks`]),
//! for the gateway's fan-out of a change to every agent of a tenant.

use std::collections::HashMap;

use serviceradar_domain::agent_control::{CheckConfig, CheckKind, CommandKind, CommandStatus};
use serviceradar_domain::{EdgeSiteId, TenantId};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::{StoreError, on_unique};
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::{self, Cols};

/// Most checks configured per agent.
pub const MAX_CONFIGURED_CHECKS: i64 = 100;

/// A stored command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentCommand {
    /// Id.
    pub id: Uuid,
    /// Site of the agent.
    pub edge_site_id: EdgeSiteId,
    /// The agent.
    pub agent_id: Uuid,
    /// What to do.
    pub kind: CommandKind,
    /// Where it is.
    pub status: CommandStatus,
    /// Who issued it (user id).
    pub issued_by: String,
    /// Time to live (s).
    pub ttl_secs: i64,
    /// After this (Unix ms) it expires unless finished.
    pub expires_at: i64,
    /// The agent's last note (progress, or why it failed).
    pub message: Option<String>,
    /// The agent's result document (JSON text).
    pub result: Option<String>,
    /// Issued (Unix ms).
    pub created_at: i64,
    /// Last status change (Unix ms).
    pub updated_at: i64,
}

/// The columns [`decode_command`] reads, for every query of commands.
macro_rules! command_columns {
    () => {
        "c.id, c.edge_site_id, c.agent_id, c.kind, c.status, c.issued_by, c.ttl_secs, \
         c.expires_at, c.message, c.result, c.created_at, c.updated_at"
    };
}

const COMMAND_SELECT: &str = concat!("SELECT ", command_columns!(), " FROM agent_commands c");

/// Decodes a command as it stands now: one still open past its TTL reads
/// as `expired`. Nothing writes that down; no transition but to `expired`
/// can move it any more ([`Scoped::set_agent_command_status`]), so reads
/// never write and a late result cannot revive it.
fn decode_command(row: &AnyRow) -> Result<AgentCommand, StoreError> {
    let mut command = decode_command_row(row)?;
    if !command.status.is_final() && command.expires_at < now_ms() {
        command.status = CommandStatus::Expired;
    }
    Ok(command)
}

fn decode_command_row(row: &AnyRow) -> Result<AgentCommand, StoreError> {
    let r = Cols::of(row, "agent_commands");
    Ok(AgentCommand {
        id: r.id("id")?,
        edge_site_id: r.id("edge_site_id")?,
        agent_id: r.id("agent_id")?,
        kind: r.valid("kind", CommandKind::parse)?,
        status: r.valid("status", |s| {
            CommandStatus::parse(s).ok_or("unknown command status")
        })?,
        issued_by: r.get("issued_by")?,
        ttl_secs: r.get("ttl_secs")?,
        expires_at: r.get("expires_at")?,
        message: r.get("message")?,
        result: r.get("result")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn decode_check(row: &AnyRow) -> Result<CheckConfig, StoreError> {
    let r = Cols::of(row, "agent_check_configs");
    let int = |col: &str| -> Result<u32, StoreError> {
        let v: i64 = r.get(col)?;
        u32::try_from(v).map_err(|e| StoreError::corrupt("agent_check_configs", e))
    };
    Ok(CheckConfig {
        name: r.get("name")?,
        kind: r.valid("kind", CheckKind::parse)?,
        target: r.get("target")?,
        interval_secs: int("interval_secs")?,
        timeout_ms: int("timeout_ms")?,
    })
}

/// Agents per statement of [`Scoped::agent_configs`] (with the tenant,
/// well under SQLite's 999 bound parameters).
pub const AGENTS_PER_READ: usize = 500;

/// One agent's stored config, as [`Scoped::agent_configs`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfigRows {
    /// When its checks last changed (Unix ms; its creation when they never did).
    pub changed_at: i64,
    /// Its configured checks, by name.
    pub checks: Vec<CheckConfig>,
}

/// A config version an agent acknowledged, waiting in a gateway's
/// write-behind buffer ([`crate::Store::record_config_acks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAck {
    /// Tenant.
    pub tenant_id: TenantId,
    /// The agent.
    pub agent_id: Uuid,
    /// The version it runs (at most 64 characters).
    pub version: String,
    /// When the gateway received the acknowledgement (Unix ms).
    pub acked_at: i64,
}

/// Acknowledgements per statement of [`crate::Store::record_config_acks`] (4
/// parameters each, well under SQLite's 999).
const ACKS_PER_STATEMENT: usize = 200;

impl crate::db::Store {
    /// Stores many agents' config acknowledgements (of any tenants) with
    /// one statement per `ACKS_PER_STATEMENT` of them: the gateway's write-behind
    /// of `ConfigAck`. Each row is matched on its tenant as well as its
    /// agent; an agent deleted meanwhile is skipped; an acknowledgement
    /// never replaces a newer one (timestamps only move forward).
    pub async fn record_config_acks(&self, acks: &[ConfigAck]) -> Result<(), StoreError> {
        for chunk in acks.chunks(ACKS_PER_STATEMENT) {
            let rows = (0..chunk.len())
                .map(|r| {
                    let n = r * 4;
                    format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
                })
                .collect::<Vec<_>>()
                .join(", ");
            // Only placeholders are formatted in.
            let sql = format!(
                "INSERT INTO agent_config_acks (tenant_id, agent_id, version, acked_at) \
                 SELECT v.column1, v.column2, v.column3, v.column4 FROM (VALUES {rows}) AS v \
                 WHERE EXISTS (SELECT 1 FROM agents a \
                 WHERE a.tenant_id = v.column1 AND a.id = v.column2) \
                 ON CONFLICT (tenant_id, agent_id) DO UPDATE SET version = excluded.version, \
                 acked_at = excluded.acked_at \
                 WHERE agent_config_acks.acked_at <= excluded.acked_at"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ack in chunk {
                q = q
                    .bind(ack.tenant_id.to_string())
                    .bind(ack.agent_id.to_string())
                    .bind(ack.version.clone())
                    .bind(ack.acked_at);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }
}

/// Final statuses as SQL text (static, from the domain's list).
const OPEN_STATUSES: [CommandStatus; 3] = [
    CommandStatus::Pending,
    CommandStatus::Sent,
    CommandStatus::Acked,
];

impl Scoped<'_> {
    /// Stores a new, `pending` command for the site's agent.
    pub async fn insert_agent_command(
        &self,
        site: EdgeSiteId,
        agent: Uuid,
        kind: CommandKind,
        ttl_secs: u32,
        issued_by: &str,
    ) -> Result<AgentCommand, StoreError> {
        let id = Uuid::now_v7();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agent_commands (id, tenant_id, edge_site_id, agent_id, kind, status, \
             issued_by, ttl_secs, expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id.to_string())
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(agent.to_string())
        .bind(kind.as_str())
        .bind(CommandStatus::Pending.as_str())
        .bind(issued_by)
        .bind(i64::from(ttl_secs))
        .bind(now + i64::from(ttl_secs) * 1000)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        self.agent_command(id).await
    }

    /// One command of this tenant (`expired` once its time is up).
    pub async fn agent_command(&self, id: Uuid) -> Result<AgentCommand, StoreError> {
        ListQuery::new(COMMAND_SELECT, "c", self.tenant())
            .fetch_one(
                "c",
                "c.id",
                id.to_string(),
                &self.store.pool,
                decode_command,
            )
            .await
    }

    /// The site's command history, oldest first (keyset pages); commands
    /// whose time ran out read as `expired`.
    pub async fn list_agent_commands(
        &self,
        site: EdgeSiteId,
        page: &PageRequest,
    ) -> Result<Page<AgentCommand>, StoreError> {
        let mut q = ListQuery::new(COMMAND_SELECT, "c", self.tenant());
        q.eq("c.edge_site_id", Arg::Text(site.to_string()));
        q.page("c", page)
            .fetch(&self.store.pool, decode_command)
            .await
    }

    /// The site's newest `limit` commands (at most 200), newest first: the
    /// site page's history (the API pages through all of them oldest first).
    pub async fn recent_agent_commands(
        &self,
        site: EdgeSiteId,
        limit: u32,
    ) -> Result<Vec<AgentCommand>, StoreError> {
        // Newest first.
        const SQL: &str = concat!(
            "SELECT ",
            command_columns!(),
            " FROM agent_commands c WHERE c.tenant_id = $1 AND c.edge_site_id = $2 \
             ORDER BY c.created_at DESC, c.id DESC LIMIT $3"
        );
        let rows = sqlx::query(SQL)
            .bind(self.tenant())
            .bind(site.to_string())
            .bind(i64::from(limit.min(200)))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(decode_command).collect()
    }

    /// Moves a command to `next` if its status allows it
    /// ([`CommandStatus::allowed_from`]); `false` when it did not (another
    /// replica or update got there first, or it is final). `message` and
    /// `result` replace the stored ones when given. A command past its TTL
    /// only moves to `expired`.
    pub async fn set_agent_command_status(
        &self,
        id: Uuid,
        next: CommandStatus,
        message: Option<&str>,
        result: Option<&str>,
    ) -> Result<bool, StoreError> {
        // One compare-and-set over the allowed old statuses (at most three;
        // fewer are padded with the first, which changes nothing).
        let from = CommandStatus::allowed_from(next);
        let Some(first) = from.first() else {
            return Ok(false);
        };
        let old = |i: usize| from.get(i).unwrap_or(first).as_str();
        let done = sqlx::query(
            "UPDATE agent_commands SET status = $1, updated_at = $2, \
             message = COALESCE($3, message), result = COALESCE($4, result) \
             WHERE tenant_id = $5 AND id = $6 AND status IN ($7, $8, $9) \
             AND (expires_at >= $2 OR $1 = $10)",
        )
        .bind(next.as_str())
        .bind(now_ms())
        .bind(message)
        .bind(result)
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(old(0))
        .bind(old(1))
        .bind(old(2))
        .bind(CommandStatus::Expired.as_str())
        .execute(&self.store.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The agent's `pending` commands still within their time to live,
    /// oldest first (at most `limit`): what the gateway hands a listening
    /// agent at its next poll. Each is then moved to `sent` with
    /// [`Self::set_agent_command_status`], which only one poller wins.
    pub async fn pending_agent_commands(
        &self,
        agent: Uuid,
        limit: u32,
    ) -> Result<Vec<AgentCommand>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            command_columns!(),
            " FROM agent_commands c WHERE c.tenant_id = $1 AND c.agent_id = $2 \
             AND c.status = 'pending' AND c.expires_at >= $3 \
             ORDER BY c.created_at, c.id LIMIT $4"
        );
        let rows = sqlx::query(SQL)
            .bind(self.tenant())
            .bind(agent.to_string())
            .bind(now_ms())
            .bind(i64::from(limit))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(decode_command).collect()
    }

    /// Records a progress note on a command that is still open.
    pub async fn note_agent_command(&self, id: Uuid, message: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE agent_commands SET message = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status IN ($5, $6, $7) \
             AND expires_at >= $2",
        )
        .bind(message)
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(OPEN_STATUSES[0].as_str())
        .bind(OPEN_STATUSES[1].as_str())
        .bind(OPEN_STATUSES[2].as_str())
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// The checks configured for an agent, by name.
    pub async fn agent_check_configs(&self, agent: Uuid) -> Result<Vec<CheckConfig>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, target, interval_secs, timeout_ms FROM agent_check_configs \
             WHERE tenant_id = $1 AND agent_id = $2 ORDER BY name",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        row::all(&rows, decode_check)
    }

    /// What a config push needs of many agents at once: each agent's
    /// configured checks (by name, as [`Scoped::agent_check_configs`]) and
    /// when they last changed (as [`Scoped::agent_config_changed_at`]). Two
    /// statements per [`AGENTS_PER_READ`] agents instead of two per agent;
    /// an agent that is not this tenant's is missing from the map.
    pub async fn agent_configs(
        &self,
        agents: &[Uuid],
    ) -> Result<HashMap<Uuid, AgentConfigRows>, StoreError> {
        let mut found: HashMap<Uuid, AgentConfigRows> = HashMap::with_capacity(agents.len());
        for chunk in agents.chunks(AGENTS_PER_READ) {
            let marks = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            // Only placeholders are formatted in.
            let sql = format!(
                "SELECT id, COALESCE(config_changed_at, created_at) AS changed_at FROM agents \
                 WHERE tenant_id = $1 AND id IN ({marks})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.tenant());
            for agent in chunk {
                q = q.bind(agent.to_string());
            }
            for row in q.fetch_all(&self.store.pool).await? {
                let r = Cols::of(&row, "agents");
                found.insert(
                    r.id("id")?,
                    AgentConfigRows {
                        changed_at: r.get("changed_at")?,
                        checks: Vec::new(),
                    },
                );
            }
            let sql = format!(
                "SELECT agent_id, name, kind, target, interval_secs, timeout_ms \
                 FROM agent_check_configs WHERE tenant_id = $1 AND agent_id IN ({marks}) \
                 ORDER BY agent_id, name"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.tenant());
            for agent in chunk {
                q = q.bind(agent.to_string());
            }
            for row in q.fetch_all(&self.store.pool).await? {
                let agent: Uuid = Cols::of(&row, "agent_check_configs").id("agent_id")?;
                if let Some(rows) = found.get_mut(&agent) {
                    rows.checks.push(decode_check(&row)?);
                }
            }
        }
        Ok(found)
    }

    /// Adds a check (`Conflict` if the name is taken or the agent has
    /// [`MAX_CONFIGURED_CHECKS`]).
    pub async fn add_agent_check_config(
        &self,
        agent: Uuid,
        check: &CheckConfig,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agent_check_configs WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_CONFIGURED_CHECKS {
            return Err(StoreError::Conflict(format!(
                "an agent runs at most {MAX_CONFIGURED_CHECKS} configured checks"
            )));
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agent_check_configs (tenant_id, agent_id, name, kind, target, \
             interval_secs, timeout_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .bind(&check.name)
        .bind(check.kind.as_str())
        .bind(&check.target)
        .bind(i64::from(check.interval_secs))
        .bind(i64::from(check.timeout_ms))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(on_unique("a check with this name exists"))?;
        self.config_changed(&mut tx, agent, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stamps the agent's `config_changed_at` in the transaction that
    /// changes its checks.
    async fn config_changed(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        agent: Uuid,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET config_changed_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(now)
            .bind(self.tenant())
            .bind(agent.to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// When the agent's configured checks last changed (Unix ms; its
    /// creation when they never did).
    pub async fn agent_config_changed_at(&self, agent: Uuid) -> Result<i64, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT COALESCE(config_changed_at, created_at) FROM agents \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        at.ok_or(StoreError::NotFound)
    }

    /// Replaces the check named `check.name` (`NotFound` if there is none).
    pub async fn update_agent_check_config(
        &self,
        agent: Uuid,
        check: &CheckConfig,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE agent_check_configs SET kind = $1, target = $2, interval_secs = $3, \
             timeout_ms = $4, updated_at = $5 WHERE tenant_id = $6 AND agent_id = $7 AND name = $8",
        )
        .bind(check.kind.as_str())
        .bind(&check.target)
        .bind(i64::from(check.interval_secs))
        .bind(i64::from(check.timeout_ms))
        .bind(now)
        .bind(self.tenant())
        .bind(agent.to_string())
        .bind(&check.name)
        .execute(&mut *tx)
        .await?;
        row::affected(&done)?;
        self.config_changed(&mut tx, agent, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a check (`NotFound` if there is none).
    pub async fn delete_agent_check_config(
        &self,
        agent: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM agent_check_configs WHERE tenant_id = $1 AND agent_id = $2 AND name = $3",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        row::affected(&done)?;
        self.config_changed(&mut tx, agent, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a check set to many agents of the tenant at once, in one
    /// transaction: every unrevoked agent (`sites: None`), or those of the
    /// listed sites. Each check of `set` is added to each agent or replaces
    /// its check of the same name; each name in `remove` is removed where
    /// it exists; every selected agent's `config_changed_at` is stamped.
    /// `Conflict` (and nothing written) when an agent would run more than
    /// [`MAX_CONFIGURED_CHECKS`]. Returns the selected agents with their
    /// sites.
    pub async fn apply_agent_check_set(
        &self,
        sites: Option<&[EdgeSiteId]>,
        set: &[CheckConfig],
        remove: &[String],
    ) -> Result<Vec<(Uuid, EdgeSiteId)>, StoreError> {
        // `tenant_id = $1 AND revoked_at IS NULL [AND edge_site_id IN (...)]`
        // with the site placeholders numbered from `first`.
        let selection = |first: usize| {
            let mut sql = String::from("tenant_id = $1 AND revoked_at IS NULL");
            if let Some(sites) = sites {
                let marks: Vec<String> = (0..sites.len())
                    .map(|i| format!("${}", first + i))
                    .collect();
                sql.push_str(&format!(" AND edge_site_id IN ({})", marks.join(", ")));
            }
            sql
        };
        let bind_sites =
            |mut q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
                for site in sites.unwrap_or_default() {
                    q = q.bind(site.to_string());
                }
                q
            };
        if sites.is_some_and(<[EdgeSiteId]>::is_empty) {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let sql = format!(
            "SELECT id, edge_site_id FROM agents WHERE {} ORDER BY id",
            selection(2)
        );
        let rows = bind_sites(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.tenant()))
            .fetch_all(&mut *tx)
            .await?;
        let selected = row::all(&rows, |row| {
            let r = Cols::of(row, "agents");
            Ok((
                r.parse::<Uuid>("id")?,
                r.parse::<EdgeSiteId>("edge_site_id")?,
            ))
        })?;
        if let Some(sites) = sites {
            let found: std::collections::HashSet<EdgeSiteId> =
                selected.iter().map(|(_, site)| *site).collect();
            let missing: Vec<String> = sites
                .iter()
                .filter(|s| !found.contains(s))
                .take(5)
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::BadReference {
                    field: "site_ids",
                    message: format!(
                        "no site of this tenant with an unrevoked agent: {}",
                        missing.join(", ")
                    ),
                });
            }
        }
        if selected.is_empty() {
            return Ok(selected);
        }
        for check in set {
            let sql = format!(
                "INSERT INTO agent_check_configs (tenant_id, agent_id, name, kind, target, \
                 interval_secs, timeout_ms, created_at, updated_at) \
                 SELECT $1, id, $2, $3, $4, $5, $6, $7, $7 FROM agents WHERE {} \
                 ON CONFLICT (tenant_id, agent_id, name) DO UPDATE SET kind = excluded.kind, \
                 target = excluded.target, interval_secs = excluded.interval_secs, \
                 timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at",
                selection(8)
            );
            bind_sites(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(self.tenant())
                    .bind(check.name.clone())
                    .bind(check.kind.as_str())
                    .bind(check.target.clone())
                    .bind(i64::from(check.interval_secs))
                    .bind(i64::from(check.timeout_ms))
                    .bind(now),
            )
            .execute(&mut *tx)
            .await?;
        }
        for name in remove {
            let sql = format!(
                "DELETE FROM agent_check_configs WHERE tenant_id = $1 AND name = $2 \
                 AND agent_id IN (SELECT id FROM agents WHERE {})",
                selection(3)
            );
            bind_sites(
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(self.tenant())
                    .bind(name.clone()),
            )
            .execute(&mut *tx)
            .await?;
        }
        let over: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT agent_id FROM agent_check_configs WHERE tenant_id = $1 \
             GROUP BY agent_id HAVING COUNT(*) > $2) over_limit",
        )
        .bind(self.tenant())
        .bind(MAX_CONFIGURED_CHECKS)
        .fetch_one(&mut *tx)
        .await?;
        if over > 0 {
            return Err(StoreError::Conflict(format!(
                "{over} agent(s) would run more than {MAX_CONFIGURED_CHECKS} configured checks; \
                 nothing was changed"
            )));
        }
        let sql = format!(
            "UPDATE agents SET config_changed_at = $2 WHERE {}",
            selection(3)
        );
        bind_sites(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(self.tenant())
                .bind(now),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(selected)
    }

    /// Records the config version the agent acknowledged running.
    pub async fn ack_agent_config(&self, agent: Uuid, version: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_config_acks (tenant_id, agent_id, version, acked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, agent_id) \
             DO UPDATE SET version = excluded.version, acked_at = excluded.acked_at",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .bind(version)
        .bind(now_ms())
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// The config version the agent last acknowledged and when (Unix ms).
    pub async fn agent_config_ack(&self, agent: Uuid) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT version, acked_at FROM agent_config_acks WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        row.map(|row| {
            let r = Cols::of(&row, "agent_config_acks");
            Ok((r.get("version")?, r.get("acked_at")?))
        })
        .transpose()
    }
}
