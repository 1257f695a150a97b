//! Request plumbing shared by every route: JSON and query extractors whose
//! rejections use our error shape, path ids, and the one list response shape.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serviceradar_store::Page;
use utoipa::ToSchema;

use crate::error::ApiError;

/// `axum::Json` with [`ApiError`] rejections (400 with a JSON body).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A `200` response of JSON already written (`body` must be valid JSON).
pub fn json_body(body: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `axum::extract::Query` with [`ApiError`] rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// One page of a list: every list response has this shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    /// A store page with each item converted for the response.
    pub fn from_page<S>(page: Page<S>, item: impl FnMut(S) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(item).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// Parses an id from a path segment. Malformed ids are `404`, like ids of
/// other tenants: the caller learns nothing either way.
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}
