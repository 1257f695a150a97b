//! Inputs every list shares: page size and cursor, and enum-like filters.

use serde::Deserialize;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_store::{Cursor, PageRequest};

/// Page parameters every list accepts.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct PageParams {
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// Validates into a store page request, collecting field errors.
    pub fn parse(&self, errors: &mut FieldErrors) -> PageRequest {
        let limit = parse_limit(self.limit, errors);
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let cursor = Cursor::decode(text);
                if cursor.is_none() {
                    errors.0.push(FieldError::new(
                        "cursor",
                        "is not a cursor returned by this API",
                    ));
                }
                cursor
            }
        };
        PageRequest { limit, after }
    }
}

/// A list's page size: 1–200, default 50 (the rule every list shares,
/// whatever its cursor is).
pub fn parse_limit(limit: Option<u32>, errors: &mut FieldErrors) -> u32 {
    match limit {
        None => PageRequest::DEFAULT_LIMIT,
        Some(n) if (1..=PageRequest::MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            errors
                .0
                .push(FieldError::new("limit", "must be between 1 and 200"));
            PageRequest::DEFAULT_LIMIT
        }
    }
}

/// Parses an optional enum-like filter value (empty means no filter).
pub fn parse_filter<T: std::str::FromStr<Err = String>>(
    field: &str,
    raw: Option<&str>,
    errors: &mut FieldErrors,
) -> Option<T> {
    let raw = raw.filter(|s| !s.is_empty())?;
    match raw.parse() {
        Ok(value) => Some(value),
        Err(message) => {
            errors.0.push(FieldError::new(field, message));
            None
        }
    }
}

/// Parses an optional id filter (empty means no filter).
pub fn parse_id_filter<T: std::str::FromStr>(
    field: &str,
    raw: Option<&str>,
    what: &str,
    errors: &mut FieldErrors,
) -> Option<T> {
    let raw = raw.filter(|s| !s.is_empty())?;
    match raw.parse() {
        Ok(value) => Some(value),
        Err(_) => {
            errors
                .0
                .push(FieldError::new(field, format!("must be {what}")));
            None
        }
    }
}
