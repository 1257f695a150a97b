//! Devices registered at edge sites (issue 16, migration 0016): name and
//! NATS limits per device, its status, and the serial and expiry of the last
//! certificate issued for it.

use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_domain::state::{DeviceEvent, DeviceStatus};
use serviceradar_domain::validate::Slug;
use serviceradar_domain::{DeviceId, EdgeSiteId, TenantId};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::{StoreError, on_unique};
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::Cols;

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Id (its certificate's SPIFFE id and common name carry it).
    pub id: DeviceId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// The site whose leaf it connects to.
    pub edge_site_id: EdgeSiteId,
    /// The site's slug (goes into the certificate's common name).
    pub site_slug: Slug,
    /// Name, unique in the site.
    pub name: DeviceName,
    /// `active` or `revoked`.
    pub status: DeviceStatus,
    /// What its NATS user may use.
    pub limits: DeviceLimits,
    /// Serial (hex) of the last certificate issued for it.
    pub cert_serial: Option<String>,
    /// Expiry (Unix ms) of the last certificate issued for it.
    pub cert_not_after: Option<i64>,
    /// Registration (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// When it was revoked (Unix ms).
    pub revoked_at: Option<i64>,
}

const SELECT: &str = "SELECT d.id, d.tenant_id, d.edge_site_id, s.slug AS site_slug, d.name, \
                      d.status, d.max_payload, d.max_subscriptions, d.data_rate, d.cert_serial, \
                      d.cert_not_after, d.created_at, d.updated_at, d.revoked_at \
                      FROM devices d \
                      JOIN edge_sites s ON s.id = d.edge_site_id AND s.tenant_id = d.tenant_id";

fn decode(row: &AnyRow) -> Result<Device, StoreError> {
    let r = Cols::of(row, "devices");
    Ok(Device {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        site_slug: r.valid("site_slug", Slug::parse)?,
        name: r.valid("name", DeviceName::parse)?,
        status: r.parse("status")?,
        limits: DeviceLimits {
            max_payload: r.get("max_payload")?,
            max_subscriptions: r.get("max_subscriptions")?,
            data_rate: r.get("data_rate")?,
        },
        cert_serial: r.get("cert_serial")?,
        cert_not_after: r.get("cert_not_after")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        revoked_at: r.get("revoked_at")?,
    })
}

impl Scoped<'_> {
    /// Registers a device at `site`, which must exist in this tenant
    /// ([`StoreError::NotFound`] otherwise); a name taken in the site is a
    /// [`StoreError::Conflict`].
    pub async fn create_device(
        &self,
        site: EdgeSiteId,
        name: &DeviceName,
        limits: DeviceLimits,
    ) -> Result<Device, StoreError> {
        self.site(site).await?;
        let id = DeviceId::new();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, edge_site_id, name, status, max_payload, \
             max_subscriptions, data_rate, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(id.to_string())
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(name.as_str())
        .bind(DeviceStatus::Active.as_str())
        .bind(limits.max_payload)
        .bind(limits.max_subscriptions)
        .bind(limits.data_rate)
        .bind(now)
        .execute(&self.store.pool)
        .await
        .map_err(on_unique(
            "a device with this name is already registered at this site",
        ))?;
        self.device(id).await
    }

    /// One device of this tenant.
    pub async fn device(&self, id: DeviceId) -> Result<Device, StoreError> {
        ListQuery::new(SELECT, "d", self.tenant())
            .fetch_one("d", "d.id", id.to_string(), &self.store.pool, decode)
            .await
    }

    /// A page of the devices of `site` (which must exist in this tenant).
    pub async fn list_devices(
        &self,
        site: EdgeSiteId,
        status: Option<DeviceStatus>,
        page: &PageRequest,
    ) -> Result<Page<Device>, StoreError> {
        self.site(site).await?;
        let mut q = ListQuery::new(SELECT, "d", self.tenant());
        q.eq("d.edge_site_id", Arg::Text(site.to_string()));
        if let Some(status) = status {
            q.eq("d.status", Arg::Text(status.as_str().into()));
        }
        q.page("d", page).fetch(&self.store.pool, decode).await
    }

    /// Every device of this tenant, of every site and status, oldest first:
    /// what the device registry's copy on the hub is synced from (background
    /// work; fine for thousands of devices per tenant).
    pub async fn all_devices(&self) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT} WHERE d.tenant_id = $1 ORDER BY d.created_at, d.id"
        )))
        .bind(self.tenant())
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// The site slug of every device of this tenant (revoked ones too: data
    /// a device buffered before its revocation is still its data), for
    /// ingestion to check that a device's data came from its own site.
    pub async fn device_site_slugs(
        &self,
    ) -> Result<std::collections::HashMap<uuid::Uuid, String>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, s.slug FROM devices d JOIN edge_sites s ON s.id = d.edge_site_id \
             WHERE d.tenant_id = $1",
        )
        .bind(self.tenant())
        .fetch_all(&self.store.pool)
        .await?;
        let mut sites = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let r = crate::row::Cols::of(row, "devices");
            let id: String = r.get("id")?;
            if let Ok(id) = uuid::Uuid::parse_str(&id) {
                sites.insert(id, r.get("slug")?);
            }
        }
        Ok(sites)
    }

    /// Revokes a device (compare-and-set on its status).
    pub async fn revoke_device(&self, id: DeviceId) -> Result<Device, StoreError> {
        let current = self.device(id).await?;
        let next = current.status.apply(DeviceEvent::Revoke)?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE devices SET status = $1, revoked_at = $2, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = $5",
        )
        .bind(next.as_str())
        .bind(now)
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(current.status.as_str())
        .execute(&self.store.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::InvalidState(
                "the device changed concurrently; retry".into(),
            ));
        }
        self.device(id).await
    }

    /// Records the certificate just issued for an *active* device; a device
    /// revoked meanwhile is [`StoreError::InvalidState`] (the caller must not
    /// hand the certificate out).
    pub async fn record_device_certificate(
        &self,
        id: DeviceId,
        serial_hex: &str,
        not_after_ms: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET cert_serial = $1, cert_not_after = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5 AND status = $6",
        )
        .bind(serial_hex)
        .bind(not_after_ms)
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(DeviceStatus::Active.as_str())
        .execute(&self.store.pool)
        .await?;
        if done.rows_affected() == 0 {
            // Not found in the tenant, or revoked.
            self.device(id).await?;
            return Err(StoreError::InvalidState("the device is revoked".into()));
        }
        Ok(())
    }
}
