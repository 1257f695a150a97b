//! File downloads: a tar.gz bundle as an attachment, never cached. Both front
//! ends (the JSON API and the web UI) answer bundle downloads with it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// `bytes` as the attachment `file_name` (`application/gzip`,
/// `Cache-Control: no-store`: bundles hold keys), with `extra` headers
/// (a value that is not a valid header value is left out).
pub fn gzip_download(
    file_name: &str,
    bytes: Vec<u8>,
    extra: &[(&'static str, String)],
) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}
