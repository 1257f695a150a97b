//! Ingested telemetry: events, metrics and logs of the tenant, by event time,
//! the state of the tenant's ingestion pipeline, and the messages it
//! refused (dead letters).

use serde::Deserialize;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_domain::validate::FieldError;
use serviceradar_domain::{Action, Actor};
use serviceradar_ingest::{DeadLetter, DeadLetterReadError, PipelineStatus};
use serviceradar_store::{Page, StoredRecord, TelemetryFilter, TimeRange};

use crate::{Control, ControlError, PageParams};

/// Time range of a telemetry list, and which device's (or site's devices')
/// records.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct TelemetryQuery {
    /// Only records at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Only records before this time (Unix ms).
    pub to: Option<i64>,
    /// Only the records this device published (its metrics; its status, as
    /// events).
    pub device_id: Option<uuid::Uuid>,
    /// Only the records published by the devices of this edge site.
    pub site_id: Option<uuid::Uuid>,
}

/// Page of a dead-letter list: newest first, `before` a sequence from the
/// previous page's `next_cursor`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct DeadLetterQuery {
    /// Dead letters per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl TelemetryQuery {
    /// The range, checked once for every list that takes one: times are
    /// Unix milliseconds and `to` is later than `from`.
    pub(crate) fn range(
        &self,
        errors: &mut serviceradar_domain::validate::FieldErrors,
    ) -> TimeRange {
        for (field, value) in [("from", self.from), ("to", self.to)] {
            if value.is_some_and(|v| v < 0) {
                errors
                    .0
                    .push(FieldError::new(field, "must be Unix milliseconds (>= 0)"));
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            errors
                .0
                .push(FieldError::new("to", "must be later than from"));
        }
        TimeRange {
            from: self.from,
            to: self.to,
        }
    }
}

impl Control {
    /// A page of the tenant's dead letters (messages the pipeline refused,
    /// with why), newest first, and the next page's cursor. `Unavailable`
    /// when this process runs no pipeline for the tenant.
    pub async fn list_dead_letters(
        &self,
        actor: &Actor,
        query: &DeadLetterQuery,
    ) -> Result<(Vec<DeadLetter>, Option<String>), ControlError> {
        actor.authorize(Action::ReadData)?;
        let mut errors = serviceradar_domain::validate::FieldErrors::default();
        let limit = crate::params::parse_limit(query.limit, &mut errors);
        let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(seq) if seq > 0 => Some(seq),
                _ => {
                    errors.0.push(FieldError::new(
                        "cursor",
                        "is not a cursor returned by this API",
                    ));
                    None
                }
            },
        };
        if !errors.0.is_empty() {
            return Err(ControlError::Invalid(errors));
        }
        match self
            .settings()
            .dead_letters
            .list(actor.tenant_id, before, limit as usize)
            .await
        {
            Ok((items, next)) => Ok((items, next.map(|seq| seq.to_string()))),
            Err(DeadLetterReadError::NotRunning) => Err(ControlError::Unavailable(
                "ingestion is not running for this tenant on this server yet; try again shortly"
                    .into(),
            )),
            Err(e) => Err(ControlError::internal("dead_letters", e)),
        }
    }

    /// The caller's tenant's ingestion pipeline (state, since when, lag,
    /// last error), or `None` when this process runs no pipeline for it
    /// (ingestion disabled, or not started yet).
    pub fn ingest_status(&self, actor: &Actor) -> Result<Option<PipelineStatus>, ControlError> {
        actor.authorize(Action::ReadData)?;
        Ok(self.settings().ingest_status.tenant(actor.tenant_id))
    }

    /// A page of `kind` records in the time range.
    pub async fn list_telemetry(
        &self,
        actor: &Actor,
        kind: TelemetryKind,
        query: &TelemetryQuery,
        page: &PageParams,
    ) -> Result<Page<StoredRecord>, ControlError> {
        let (scoped, page, range) =
            self.listing(actor, Action::ReadData, page, |errors| query.range(errors))?;
        let filter = TelemetryFilter {
            range,
            device_id: query.device_id.map(|d| d.to_string()),
            device_site_id: query.site_id.map(|s| s.to_string()),
        };
        Ok(scoped.list_telemetry_filtered(kind, &filter, &page).await?)
    }
}
