//! Results the agent uploads by itself with `PushResults`: the detailed
//! output of a `run_checks` command and the whole bundle of a
//! `collect_diagnostics` command, kept by the platform per site and listed
//! through `GET /api/v1/edge-sites/{id}/agent/results`.
//!
//! A command's result (at most 1 MiB, inline in the command's history)
//! names its upload (`upload_id`); the upload itself may be larger (up to
//! the gateway's 16 MiB) and is cut into chunks of at most 256 KiB.
//! Uploads wait in a small bounded queue and go out from the agent's loop
//! after its status push; an interrupted upload is sent again with the same
//! id, and the gateway skips the chunks it already stored (so each chunk is
//! stored once). An upload the gateway refuses for what it is (too large,
//! malformed) is dropped with a warning instead of being retried forever.

use std::collections::VecDeque;

use serviceradar_proto::v1::{IdentityClaim, ResultsChunk};
use serviceradar_proto::{MAX_CHUNK_BYTES, MAX_UPLOAD_BYTES};

/// Uploads kept waiting at most; the oldest is dropped beyond it.
pub const MAX_QUEUED: usize = 8;

/// Content type of a diagnostics bundle.
pub const DIAGNOSTICS: &str = "application/vnd.serviceradar.diagnostics+json";
/// Content type of a `run_checks` command's results.
pub const CHECK_RESULTS: &str = "application/vnd.serviceradar.check-results+json";

/// One upload waiting to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The upload's id (`[A-Za-z0-9_-]`, at most 64): resumes it.
    pub id: String,
    /// Declared content type.
    pub content_type: String,
    /// The content.
    pub data: Vec<u8>,
}

impl Upload {
    /// The upload of a command's output: id `{prefix}-{command id}`.
    pub fn for_command(prefix: &str, command_id: &str, content_type: &str, data: Vec<u8>) -> Self {
        let id: String = format!("{prefix}-{command_id}")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        Self {
            id,
            content_type: content_type.to_owned(),
            data,
        }
    }

    /// Whether the gateway would take it at all.
    pub fn fits(&self) -> bool {
        u64::try_from(self.data.len()).is_ok_and(|n| n <= MAX_UPLOAD_BYTES)
    }

    /// Its chunks (an empty upload is one empty last chunk).
    pub fn chunks(&self, claim: &IdentityClaim) -> Vec<ResultsChunk> {
        let pieces: Vec<&[u8]> = if self.data.is_empty() {
            vec![&[]]
        } else {
            self.data.chunks(MAX_CHUNK_BYTES).collect()
        };
        let last = pieces.len() - 1;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, data)| ResultsChunk {
                claim: Some(claim.clone()),
                upload_id: self.id.clone(),
                chunk_index: i as u64,
                data: data.to_vec(),
                last: i == last,
                content_type: self.content_type.clone(),
            })
            .collect()
    }
}

/// The queue of uploads waiting to go out.
#[derive(Debug, Default)]
pub struct Uploads {
    queue: VecDeque<Upload>,
}

impl Uploads {
    /// Queues `upload` (dropping the oldest beyond [`MAX_QUEUED`]); `false`
    /// when it is too large to be accepted and was not queued.
    pub fn push(&mut self, upload: Upload) -> bool {
        if !upload.fits() {
            tracing::warn!(upload_id = %upload.id, bytes = upload.data.len(),
                "upload larger than the gateway accepts; not sent");
            return false;
        }
        if self.queue.len() >= MAX_QUEUED
            && let Some(dropped) = self.queue.pop_front()
        {
            tracing::warn!(upload_id = %dropped.id, "upload queue full; oldest upload dropped");
        }
        self.queue.push_back(upload);
        true
    }

    /// The next upload to send.
    pub fn front(&self) -> Option<&Upload> {
        self.queue.front()
    }

    /// The front upload is done (stored, or refused for good).
    pub fn pop(&mut self) -> Option<Upload> {
        self.queue.pop_front()
    }

    /// Uploads waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Whether the gateway's refusal is about the upload itself (retrying the
/// same upload cannot succeed).
pub fn refused_for_good(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_cut_into_chunks_the_gateway_accepts() {
        let upload = Upload::for_command(
            "diagnostics",
            "0190-ab",
            DIAGNOSTICS,
            vec![7; MAX_CHUNK_BYTES * 2 + 1],
        );
        let chunks = upload.chunks(&IdentityClaim::default());
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.data.len() <= MAX_CHUNK_BYTES));
        assert_eq!(
            chunks.iter().map(|c| c.last).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(
            chunks.iter().map(|c| c.chunk_index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(chunks[0].upload_id, "diagnostics-0190-ab");
        let empty = Upload::for_command("x", "y", CHECK_RESULTS, Vec::new());
        assert_eq!(empty.chunks(&IdentityClaim::default()).len(), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_refuses_what_the_gateway_would() {
        let mut q = Uploads::default();
        for i in 0..MAX_QUEUED + 2 {
            assert!(q.push(Upload::for_command(
                "u",
                &i.to_string(),
                CHECK_RESULTS,
                vec![1]
            )));
        }
        assert_eq!(q.len(), MAX_QUEUED);
        assert_eq!(q.front().map(|u| u.id.as_str()), Some("u-2"));
        let huge = usize::try_from(MAX_UPLOAD_BYTES).unwrap_or(usize::MAX) + 1;
        assert!(!q.push(Upload::for_command("big", "1", DIAGNOSTICS, vec![0; huge])));
    }
}
