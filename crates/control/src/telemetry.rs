//! Ingested telemetry: events, metrics and logs of the tenant, by event time,
//! and the state of the tenant's ingestion pipeline.

use serde::Deserialize;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_domain::validate::FieldError;
use serviceradar_domain::{Action, Actor};
use serviceradar_ingest::PipelineStatus;
use serviceradar_store::{Page, StoredRecord, TimeRange};

use crate::{Control, ControlError, PageParams};

/// Time range of a telemetry list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct TelemetryQuery {
    /// Only records at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Only records before this time (Unix ms).
    pub to: Option<i64>,
}

impl Control {
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
        let (scoped, page, ()) = self.listing(actor, Action::ReadData, page, |errors| {
            for (field, value) in [("from", query.from), ("to", query.to)] {
                if value.is_some_and(|v| v < 0) {
                    errors
                        .0
                        .push(FieldError::new(field, "must be Unix milliseconds (>= 0)"));
                }
            }
            if let (Some(from), Some(to)) = (query.from, query.to)
                && from >= to
            {
                errors
                    .0
                    .push(FieldError::new("to", "must be later than from"));
            }
        })?;
        let range = TimeRange {
            from: query.from,
            to: query.to,
        };
        Ok(scoped.list_telemetry(kind, range, &page).await?)
    }
}
