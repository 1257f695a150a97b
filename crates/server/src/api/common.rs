//! Request plumbing shared by the route modules: JSON and query extractors
//! whose rejections use our error shape, page parameters, and path ids.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_store::{Cursor, PageRequest};
use utoipa::IntoParams;

use super::error::ApiError;

/// `axum::Json` with [`ApiError`] rejections (400 with a JSON body).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with [`ApiError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Page parameters every list accepts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// Validates into a store page request, collecting field errors.
    pub fn parse(&self, errors: &mut FieldErrors) -> PageRequest {
        let limit = match self.limit {
            None => PageRequest::DEFAULT_LIMIT,
            Some(n) if (1..=PageRequest::MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                errors
                    .0
                    .push(FieldError::new("limit", "must be between 1 and 200"));
                PageRequest::DEFAULT_LIMIT
            }
        };
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

/// Parses an id from a path segment. Malformed ids are `404`, like ids of
/// other tenants: the caller learns nothing either way.
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// Parses an optional enum-like filter value from the query string.
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
