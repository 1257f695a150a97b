//! Telemetry that collectors publish and the control plane ingests: events,
//! metrics and log lines, and the pure decoding of one NATS message into one
//! of them.
//!
//! Subjects are `{kind}.{tenant_slug}.{source...}` with `kind` one of
//! `events`, `metrics`, `logs` (seed 003) when published at the hub, and
//! `edge.{tenant_slug}.{site_slug}.{kind}[.more]` when published at a site's
//! leaf (the leaf's buffer stream captures `edge.{tenant}.{site}.>`; the hub
//! sources it, subjects unchanged). The tenant of a record is the one
//! whose NATS account the message arrived in; the subject's tenant token must
//! agree with it, and nothing in the payload can change it. Payloads are JSON
//! objects:
//!
//! | kind | required | optional |
//! |---|---|---|
//! | `events` | `message` (string) | `severity` (string, default `info`), `ts` (ms) |
//! | `metrics` | `name` (string), `value` (number) | `labels` (object), `ts` (ms) |
//! | `logs` | `message` (string) | `level` (string, default `info`), `ts` (ms) |
//!
//! The whole payload is kept as `body`. Anything else is rejected with a
//! [`Rejection`] naming the reason, for the dead-letter subject.

use serde_json::{Map, Value};

/// First subject token of data buffered at an edge site's leaf.
pub const EDGE_PREFIX: &str = "edge";
/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Longest `severity`/`level` value.
const MAX_LEVEL: usize = 32;
/// Longest metric name.
const MAX_NAME: usize = 200;
/// Longest source (subject tokens after the tenant).
const MAX_SOURCE: usize = 200;

/// The three kinds of telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TelemetryKind {
    /// `events.{tenant}.>`.
    Event,
    /// `metrics.{tenant}.>`.
    Metric,
    /// `logs.{tenant}.>`.
    Log,
}

impl TelemetryKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Event, Self::Metric, Self::Log];

    /// The first subject token.
    pub fn subject_prefix(self) -> &'static str {
        match self {
            Self::Event => "events",
            Self::Metric => "metrics",
            Self::Log => "logs",
        }
    }

    /// `{prefix}.{tenant}.>`: the subjects of this kind for a tenant.
    pub fn subjects(self, tenant_slug: &str) -> String {
        format!("{}.{tenant_slug}.>", self.subject_prefix())
    }

    fn from_prefix(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.subject_prefix() == token)
    }
}

/// What every record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMeta {
    /// Position in the tenant's ingest stream (idempotency key).
    pub stream_seq: i64,
    /// The NATS subject it arrived on.
    pub subject: String,
    /// Subject tokens after the tenant (site, collector, ...).
    pub source: String,
    /// Event time (ms): the payload's `ts`, else when the stream stored it.
    pub time_ms: i64,
    /// The payload as received (a JSON object).
    pub body: String,
}

/// One decoded telemetry record.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryRecord {
    /// An event.
    Event {
        /// Common fields.
        meta: RecordMeta,
        /// Severity (`info` if absent).
        severity: String,
        /// Text.
        message: String,
    },
    /// A metric sample.
    Metric {
        /// Common fields.
        meta: RecordMeta,
        /// Metric name.
        name: String,
        /// Value.
        value: f64,
    },
    /// A log line.
    Log {
        /// Common fields.
        meta: RecordMeta,
        /// Level (`info` if absent).
        level: String,
        /// Text.
        message: String,
    },
}

impl TelemetryRecord {
    /// Its kind.
    pub fn kind(&self) -> TelemetryKind {
        match self {
            Self::Event { .. } => TelemetryKind::Event,
            Self::Metric { .. } => TelemetryKind::Metric,
            Self::Log { .. } => TelemetryKind::Log,
        }
    }

    /// Its common fields.
    pub fn meta(&self) -> &RecordMeta {
        match self {
            Self::Event { meta, .. } | Self::Metric { meta, .. } | Self::Log { meta, .. } => meta,
        }
    }
}

/// Why a message was not ingested (sent with it to the dead-letter subject).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    Oversized(usize),
    /// The subject is not `{events|metrics|logs}.{this tenant}.{source}`.
    #[error("subject {0:?} is not events|metrics|logs.<tenant>.<source> of this tenant")]
    WrongSubject(String),
    /// Not a JSON object.
    #[error("payload is not a JSON object: {0}")]
    InvalidJson(String),
    /// A field is missing or has the wrong type or length.
    #[error("field {field:?}: {problem}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// A message as it came off the ingest stream.
#[derive(Debug, Clone, Copy)]
pub struct IncomingMessage<'a> {
    /// Subject.
    pub subject: &'a str,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Stream sequence.
    pub stream_seq: i64,
    /// When the stream stored it (ms).
    pub stored_at_ms: i64,
}

/// Decodes `msg`, which arrived in the NATS account of the tenant with slug
/// `tenant_slug`, into a record, or says why not.
pub fn decode(tenant_slug: &str, msg: IncomingMessage<'_>) -> Result<TelemetryRecord, Rejection> {
    if msg.payload.len() > MAX_PAYLOAD {
        return Err(Rejection::Oversized(msg.payload.len()));
    }
    let wrong = || Rejection::WrongSubject(truncate(msg.subject, 256));
    let (kind, source) = parse_subject(tenant_slug, msg.subject).ok_or_else(wrong)?;
    if source.len() > MAX_SOURCE {
        return Err(wrong());
    }
    let object = match serde_json::from_slice::<Value>(msg.payload) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(Rejection::InvalidJson("not an object".into())),
        Err(e) => return Err(Rejection::InvalidJson(truncate(&e.to_string(), 200))),
    };
    let time_ms = match object.get("ts") {
        None | Some(Value::Null) => msg.stored_at_ms,
        Some(ts) => ts.as_i64().filter(|t| *t >= 0).ok_or(Rejection::BadField {
            field: "ts",
            problem: "must be a non-negative integer (Unix milliseconds)",
        })?,
    };
    let meta = RecordMeta {
        stream_seq: msg.stream_seq,
        subject: msg.subject.to_owned(),
        source: source.to_owned(),
        time_ms,
        body: String::from_utf8_lossy(msg.payload).into_owned(),
    };
    Ok(match kind {
        TelemetryKind::Event => TelemetryRecord::Event {
            severity: level_field(&object, "severity")?,
            message: text_field(&object, "message")?,
            meta,
        },
        TelemetryKind::Log => TelemetryRecord::Log {
            level: level_field(&object, "level")?,
            message: text_field(&object, "message")?,
            meta,
        },
        TelemetryKind::Metric => {
            let name = text_field(&object, "name")?;
            if name.len() > MAX_NAME {
                return Err(Rejection::BadField {
                    field: "name",
                    problem: "longer than 200 bytes",
                });
            }
            let value = object
                .get("value")
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .ok_or(Rejection::BadField {
                    field: "value",
                    problem: "must be a finite number",
                })?;
            if object.get("labels").is_some_and(|l| !l.is_object()) {
                return Err(Rejection::BadField {
                    field: "labels",
                    problem: "must be an object",
                });
            }
            TelemetryRecord::Metric { meta, name, value }
        }
    })
}

/// `{kind}.{tenant}.{source...}` (published at the hub), or
/// `edge.{tenant}.{site}.{kind}[.rest...]` (buffered at a site's leaf and
/// sourced into the hub); the source is then `{site}[.rest]`.
fn parse_subject(tenant_slug: &str, subject: &str) -> Option<(TelemetryKind, String)> {
    let mut tokens = subject.split('.');
    let first = tokens.next()?;
    if tokens.next()? != tenant_slug {
        return None;
    }
    let rest: Vec<&str> = tokens.collect();
    if rest.is_empty() || rest.iter().any(|t| t.is_empty()) {
        return None;
    }
    if first == EDGE_PREFIX {
        let (site, kind) = (rest.first()?, rest.get(1)?);
        let kind = TelemetryKind::from_prefix(kind)?;
        let mut source = (*site).to_owned();
        for token in &rest[2..] {
            source.push('.');
            source.push_str(token);
        }
        return Some((kind, source));
    }
    Some((TelemetryKind::from_prefix(first)?, rest.join(".")))
}

fn text_field(object: &Map<String, Value>, field: &'static str) -> Result<String, Rejection> {
    object
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(Rejection::BadField {
            field,
            problem: "must be a string",
        })
}

fn level_field(object: &Map<String, Value>, field: &'static str) -> Result<String, Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Ok("info".into()),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_LEVEL => Ok(s.clone()),
        Some(_) => Err(Rejection::BadField {
            field,
            problem: "must be a string of 1-32 bytes",
        }),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(subject: &'a str, payload: &'a [u8]) -> IncomingMessage<'a> {
        IncomingMessage {
            subject,
            payload,
            stream_seq: 7,
            stored_at_ms: 1_000,
        }
    }

    #[test]
    fn decodes_each_kind() {
        let event = decode(
            "acme",
            msg(
                "events.acme.nyc.trapd",
                br#"{"message":"link down","severity":"critical","ts":5}"#,
            ),
        )
        .unwrap();
        match &event {
            TelemetryRecord::Event {
                meta,
                severity,
                message,
            } => {
                assert_eq!(meta.source, "nyc.trapd");
                assert_eq!(meta.time_ms, 5);
                assert_eq!(meta.stream_seq, 7);
                assert_eq!(severity, "critical");
                assert_eq!(message, "link down");
            }
            other => panic!("{other:?}"),
        }
        let metric = decode(
            "acme",
            msg(
                "metrics.acme.nyc",
                br#"{"name":"if_in_octets","value":42.5,"labels":{"if":"eth0"}}"#,
            ),
        )
        .unwrap();
        assert_eq!(metric.kind(), TelemetryKind::Metric);
        assert_eq!(metric.meta().time_ms, 1_000, "stream time when no ts");
        let log = decode("acme", msg("logs.acme.syslog", br#"{"message":"hi"}"#)).unwrap();
        match log {
            TelemetryRecord::Log { level, .. } => assert_eq!(level, "info"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_tenant_comes_from_the_account_not_the_subject_or_payload() {
        // beta's subject arriving in acme's account is refused.
        assert!(matches!(
            decode("acme", msg("events.beta.nyc", br#"{"message":"x"}"#)),
            Err(Rejection::WrongSubject(_))
        ));
        // A tenant field in the payload is just data.
        let rec = decode(
            "acme",
            msg("events.acme.nyc", br#"{"message":"x","tenant":"beta"}"#),
        )
        .unwrap();
        assert!(rec.meta().body.contains("beta"));
    }

    #[test]
    fn decodes_edge_buffered_subjects() {
        let rec = decode(
            "acme",
            msg("edge.acme.nyc.logs.syslog", br#"{"message":"buffered"}"#),
        )
        .unwrap();
        assert_eq!(rec.kind(), TelemetryKind::Log);
        assert_eq!(rec.meta().source, "nyc.syslog");
        let rec = decode(
            "acme",
            msg("edge.acme.nyc.metrics", br#"{"name":"x","value":1}"#),
        )
        .unwrap();
        assert_eq!(rec.meta().source, "nyc");
        for subject in [
            "edge.acme.nyc",
            "edge.beta.nyc.logs",
            "edge.acme.nyc.traces.x",
            "edge.acme..logs",
        ] {
            assert!(
                matches!(
                    decode("acme", msg(subject, br#"{"message":"x"}"#)),
                    Err(Rejection::WrongSubject(_))
                ),
                "{subject}"
            );
        }
    }

    #[test]
    fn rejects_poison() {
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert!(matches!(
            decode("acme", msg("events.acme.x", &big)),
            Err(Rejection::Oversized(_))
        ));
        for subject in [
            "events.acme",
            "events.acme.",
            "traces.acme.x",
            "acme",
            "",
            "metrics.acmex.y",
        ] {
            assert!(
                matches!(
                    decode("acme", msg(subject, br#"{"message":"x"}"#)),
                    Err(Rejection::WrongSubject(_))
                ),
                "{subject}"
            );
        }
        for payload in [&b"not json"[..], b"[1,2]", b"\"text\"", b"{", b"\xff\xfe"] {
            assert!(
                matches!(
                    decode("acme", msg("logs.acme.x", payload)),
                    Err(Rejection::InvalidJson(_))
                ),
                "{payload:?}"
            );
        }
        for payload in [
            &br#"{"severity":"info"}"#[..],
            br#"{"message":5}"#,
            br#"{"message":"x","ts":"yesterday"}"#,
            br#"{"message":"x","ts":-1}"#,
            br#"{"message":"x","severity":""}"#,
        ] {
            assert!(
                matches!(
                    decode("acme", msg("events.acme.x", payload)),
                    Err(Rejection::BadField { .. })
                ),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        for payload in [
            &br#"{"name":"x"}"#[..],
            br#"{"name":"x","value":"1"}"#,
            br#"{"value":1}"#,
            br#"{"name":"x","value":1,"labels":[1]}"#,
        ] {
            assert!(
                decode("acme", msg("metrics.acme.x", payload)).is_err(),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn reasons_are_readable() {
        let e = decode("acme", msg("events.beta.x", b"{}")).unwrap_err();
        assert!(e.to_string().contains("events.beta.x"), "{e}");
    }
}
