//! Telemetry that collectors publish and the control plane ingests: events,
//! metrics and log lines, and the pure decoding of one NATS message into one
//! of them.
//!
//! Subjects are `{kind}.{tenant_slug}.{source...}` with `kind` one of
//! `events`, `metrics`, `logs` (seed 003) when published at the hub, and
//! `edge.{tenant_slug}.{site_slug}.{kind}[.more]` when published at a site's
//! leaf (the leaf's buffer stream captures `edge.{tenant}.{site}.>`; the hub
//! sources it, subjects unchanged). A device's data is buffered the same
//! way: the site's leaf maps a device's `device.{id}.metrics[.more]` and
//! `device.{id}.status` to `edge.{tenant_slug}.{site_slug}.device.{id}.…`;
//! its metrics are metrics, its status an event (the payload an event
//! object, or plain text: the status), both with the device id, which comes
//! from the subject (the leaf lets a device publish under its own id only)
//! and never from the payload. The tenant of a record is the one
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

use std::borrow::Cow;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
///
/// The text fields borrow from the message they were decoded from where they
/// can (the ingest pipeline writes them straight into the database's bulk-load
/// buffer without copying them first); [`TelemetryRecord::into_owned`] detaches
/// a record from its message.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMeta<'a> {
    /// Position in the tenant's ingest stream (idempotency key).
    pub stream_seq: i64,
    /// The NATS subject it arrived on.
    pub subject: Cow<'a, str>,
    /// Subject tokens after the tenant (site, collector, ...).
    pub source: Cow<'a, str>,
    /// Event time (ms): the payload's `ts`, else when the stream stored it.
    pub time_ms: i64,
    /// The payload as received (a JSON object; a device status may be text).
    pub body: Cow<'a, str>,
    /// The device that published it (from the subject), if a device did.
    pub device_id: Option<uuid::Uuid>,
}

impl RecordMeta<'_> {
    /// The site of a record buffered at an edge site (its source's first
    /// token), `None` for data published at the hub.
    pub fn edge_site(&self) -> Option<&str> {
        let (first, _) = self.subject.split_once('.')?;
        (first == EDGE_PREFIX)
            .then(|| self.source.split('.').next())
            .flatten()
    }

    fn into_owned(self) -> RecordMeta<'static> {
        RecordMeta {
            device_id: self.device_id,
            stream_seq: self.stream_seq,
            subject: Cow::Owned(self.subject.into_owned()),
            source: Cow::Owned(self.source.into_owned()),
            time_ms: self.time_ms,
            body: Cow::Owned(self.body.into_owned()),
        }
    }
}

/// One decoded telemetry record.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryRecord<'a> {
    /// An event.
    Event {
        /// Common fields.
        meta: RecordMeta<'a>,
        /// Severity (`info` if absent).
        severity: Cow<'a, str>,
        /// Text.
        message: Cow<'a, str>,
    },
    /// A metric sample.
    Metric {
        /// Common fields.
        meta: RecordMeta<'a>,
        /// Metric name.
        name: Cow<'a, str>,
        /// Value.
        value: f64,
    },
    /// A log line.
    Log {
        /// Common fields.
        meta: RecordMeta<'a>,
        /// Level (`info` if absent).
        level: Cow<'a, str>,
        /// Text.
        message: Cow<'a, str>,
    },
}

impl TelemetryRecord<'_> {
    /// Its kind.
    pub fn kind(&self) -> TelemetryKind {
        match self {
            Self::Event { .. } => TelemetryKind::Event,
            Self::Metric { .. } => TelemetryKind::Metric,
            Self::Log { .. } => TelemetryKind::Log,
        }
    }

    /// Its common fields.
    pub fn meta(&self) -> &RecordMeta<'_> {
        match self {
            Self::Event { meta, .. } | Self::Metric { meta, .. } | Self::Log { meta, .. } => meta,
        }
    }

    /// The same record, owning its text (no longer borrowing the message).
    pub fn into_owned(self) -> TelemetryRecord<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Self::Event {
                meta,
                severity,
                message,
            } => TelemetryRecord::Event {
                meta: meta.into_owned(),
                severity: own(severity),
                message: own(message),
            },
            Self::Metric { meta, name, value } => TelemetryRecord::Metric {
                meta: meta.into_owned(),
                name: own(name),
                value,
            },
            Self::Log {
                meta,
                level,
                message,
            } => TelemetryRecord::Log {
                meta: meta.into_owned(),
                level: own(level),
                message: own(message),
            },
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
/// `tenant_slug`, into a record, or says why not. The record borrows its text
/// from `msg` (the payload is parsed once, in place; only JSON strings with
/// escapes and edge-site sources are copied).
pub fn decode<'a>(
    tenant_slug: &str,
    msg: IncomingMessage<'a>,
) -> Result<TelemetryRecord<'a>, Rejection> {
    if msg.payload.len() > MAX_PAYLOAD {
        return Err(Rejection::Oversized(msg.payload.len()));
    }
    let wrong = || Rejection::WrongSubject(truncate(msg.subject, 256));
    let Parsed {
        kind,
        source,
        device,
    } = parse_subject(tenant_slug, msg.subject).ok_or_else(wrong)?;
    if source.len() > MAX_SOURCE {
        return Err(wrong());
    }
    let body = std::str::from_utf8(msg.payload).map_err(|e| {
        Rejection::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let device_id = match device {
        Some(DeviceSubject::Status(id)) if !body.trim_start().starts_with('{') => {
            // A plain-text status (`online`): the message itself.
            if body.trim().is_empty() {
                return Err(Rejection::BadField {
                    field: "status",
                    problem: "is empty",
                });
            }
            return Ok(TelemetryRecord::Event {
                severity: Cow::Borrowed("info"),
                message: storable(Cow::Borrowed(body.trim()), "status")?,
                meta: RecordMeta {
                    stream_seq: msg.stream_seq,
                    subject: Cow::Borrowed(msg.subject),
                    source,
                    time_ms: msg.stored_at_ms,
                    body: Cow::Borrowed(body),
                    device_id: Some(id),
                },
            });
        }
        Some(DeviceSubject::Status(id) | DeviceSubject::Metrics(id)) => Some(id),
        None => None,
    };
    let fields = match serde_json::from_str::<Payload<'a>>(body) {
        Ok(Payload(Some(fields))) => fields,
        Ok(Payload(None)) => return Err(Rejection::InvalidJson("not an object".into())),
        Err(e) => return Err(Rejection::InvalidJson(truncate(&e.to_string(), 200))),
    };
    let time_ms = match fields.ts {
        None | Some(Field::Null) => msg.stored_at_ms,
        Some(ts) => ts.as_i64().filter(|t| *t >= 0).ok_or(Rejection::BadField {
            field: "ts",
            problem: "must be a non-negative integer (Unix milliseconds)",
        })?,
    };
    let meta = RecordMeta {
        stream_seq: msg.stream_seq,
        subject: Cow::Borrowed(msg.subject),
        source,
        time_ms,
        body: Cow::Borrowed(body),
        device_id,
    };
    Ok(match kind {
        TelemetryKind::Event => TelemetryRecord::Event {
            severity: level_field(fields.severity, "severity")?,
            message: text_field(fields.message, "message")?,
            meta,
        },
        TelemetryKind::Log => TelemetryRecord::Log {
            level: level_field(fields.level, "level")?,
            message: text_field(fields.message, "message")?,
            meta,
        },
        TelemetryKind::Metric => {
            let name = text_field(fields.name, "name")?;
            if name.len() > MAX_NAME {
                return Err(Rejection::BadField {
                    field: "name",
                    problem: "longer than 200 bytes",
                });
            }
            let value = fields
                .value
                .and_then(|v| v.as_f64())
                .filter(|v| v.is_finite())
                .ok_or(Rejection::BadField {
                    field: "value",
                    problem: "must be a finite number",
                })?;
            if fields.labels.is_some_and(|l| !matches!(l, Field::Object)) {
                return Err(Rejection::BadField {
                    field: "labels",
                    problem: "must be an object",
                });
            }
            TelemetryRecord::Metric { meta, name, value }
        }
    })
}

/// What a subject says: the kind, the source, and the device it came from.
struct Parsed<'a> {
    kind: TelemetryKind,
    source: Cow<'a, str>,
    device: Option<DeviceSubject>,
}

/// A device's subject at its site: its metrics or its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceSubject {
    Metrics(uuid::Uuid),
    Status(uuid::Uuid),
}

/// The token after the site in a device's subjects.
const DEVICE_TOKEN: &str = "device";

/// `{kind}.{tenant}.{source...}` (published at the hub), or
/// `edge.{tenant}.{site}.{kind}[.rest...]` (buffered at a site's leaf and
/// sourced into the hub); the source is then `{site}[.rest]`. A hub source is
/// a slice of the subject; an edge source with more tokens is built. A
/// device's `edge.{tenant}.{site}.device.{id}.metrics[.rest]` is a metric and
/// `edge.{tenant}.{site}.device.{id}.status` an event, both of source
/// `{site}.device.{id}[.rest]` (a slice of the subject).
fn parse_subject<'a>(tenant_slug: &str, subject: &'a str) -> Option<Parsed<'a>> {
    let (first, after_first) = subject.split_once('.')?;
    let (tenant, rest) = after_first.split_once('.')?;
    // A subject is stored too: it obeys the same no-NUL rule as the text
    // fields (see `storable`).
    if tenant != tenant_slug || rest.split('.').any(str::is_empty) || rest.contains('\0') {
        return None;
    }
    if first == EDGE_PREFIX {
        let (site, after_site) = rest.split_once('.')?;
        let (kind, more) = match after_site.split_once('.') {
            Some((kind, more)) => (kind, Some(more)),
            None => (after_site, None),
        };
        if kind == DEVICE_TOKEN {
            let mut tokens = more?.splitn(3, '.');
            let token = tokens.next()?;
            let id = uuid::Uuid::parse_str(token).ok()?;
            // The id exactly as the leaf lets a device spell it.
            if token != id.to_string() {
                return None;
            }
            let (kind, device, tail) = match (tokens.next()?, tokens.next()) {
                ("metrics", tail) => (TelemetryKind::Metric, DeviceSubject::Metrics(id), tail),
                ("status", None) => (TelemetryKind::Event, DeviceSubject::Status(id), None),
                _ => return None,
            };
            let source = match tail {
                None => format!("{site}.{DEVICE_TOKEN}.{id}"),
                Some(tail) => format!("{site}.{DEVICE_TOKEN}.{id}.{tail}"),
            };
            return Some(Parsed {
                kind,
                source: Cow::Owned(source),
                device: Some(device),
            });
        }
        let kind = TelemetryKind::from_prefix(kind)?;
        let source = match more {
            None => Cow::Borrowed(site),
            Some(more) => Cow::Owned(format!("{site}.{more}")),
        };
        return Some(Parsed {
            kind,
            source,
            device: None,
        });
    }
    Some(Parsed {
        kind: TelemetryKind::from_prefix(first)?,
        source: Cow::Borrowed(rest),
        device: None,
    })
}

fn text_field<'a>(field: Option<Field<'a>>, name: &'static str) -> Result<Cow<'a, str>, Rejection> {
    match field {
        Some(Field::Str(s)) => storable(s, name),
        _ => Err(Rejection::BadField {
            field: name,
            problem: "must be a string",
        }),
    }
}

/// The one rule for text that reaches a database column: no NUL character.
/// JSON allows `\u0000` inside a string, but neither PostgreSQL's `text` nor
/// its `COPY` format can hold U+0000, so such a record would fail its whole
/// batch; it is refused here instead and dead-lettered with this reason.
/// (A raw NUL byte is not valid JSON and never gets this far; a stored body
/// keeps the escape as six characters, which any column holds.)
fn storable<'a>(text: Cow<'a, str>, name: &'static str) -> Result<Cow<'a, str>, Rejection> {
    if text.contains('\0') {
        return Err(Rejection::BadField {
            field: name,
            problem: NUL_PROBLEM,
        });
    }
    Ok(text)
}

/// Why a text field with U+0000 is refused.
const NUL_PROBLEM: &str = "contains a NUL character (U+0000), which cannot be stored";

fn level_field<'a>(
    field: Option<Field<'a>>,
    name: &'static str,
) -> Result<Cow<'a, str>, Rejection> {
    match field {
        None | Some(Field::Null) => Ok(Cow::Borrowed("info")),
        Some(Field::Str(s)) if !s.is_empty() && s.len() <= MAX_LEVEL => storable(s, name),
        Some(_) => Err(Rejection::BadField {
            field: name,
            problem: "must be a string of 1-32 bytes",
        }),
    }
}

/// The members of a payload object that decoding looks at; every other
/// member is skipped without being built. A member given twice counts with
/// its last value (as `serde_json::Value` would keep it).
#[derive(Default)]
struct Fields<'a> {
    message: Option<Field<'a>>,
    severity: Option<Field<'a>>,
    level: Option<Field<'a>>,
    name: Option<Field<'a>>,
    value: Option<Field<'a>>,
    labels: Option<Field<'a>>,
    ts: Option<Field<'a>>,
}

/// A payload: `Some` when it is a JSON object, `None` for any other JSON value.
struct Payload<'a>(Option<Fields<'a>>);

/// One member's value, reduced to what decoding needs to know about it.
enum Field<'a> {
    Null,
    Str(Cow<'a, str>),
    /// A number: as an `i64` when it is an integer in range, and as an `f64`.
    Number {
        int: Option<i64>,
        float: f64,
    },
    Object,
    /// A boolean or an array.
    Other,
}

impl Field<'_> {
    fn as_i64(&self) -> Option<i64> {
        match self {
            Field::Number { int, .. } => *int,
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Field::Number { float, .. } => Some(*float),
            _ => None,
        }
    }
}

/// The member names decoding looks at.
enum Key {
    Message,
    Severity,
    Level,
    Name,
    Value,
    Labels,
    Ts,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "message" => Key::Message,
                    "severity" => Key::Severity,
                    "level" => Key::Level,
                    "name" => Key::Name,
                    "value" => Key::Value,
                    "labels" => Key::Labels,
                    "ts" => Key::Ts,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Number {
                    int: Some(v),
                    float: v as f64,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Number {
                    int: i64::try_from(v).ok(),
                    float: v as f64,
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Field::Number {
                    int: None,
                    float: v,
                })
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Object)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Payload<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Message => &mut fields.message,
                        Key::Severity => &mut fields.severity,
                        Key::Level => &mut fields.level,
                        Key::Name => &mut fields.name,
                        Key::Value => &mut fields.value,
                        Key::Labels => &mut fields.labels,
                        Key::Ts => &mut fields.ts,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Field<'de>>()?);
                }
                Ok(Payload(Some(fields)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Payload(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Payload(None))
            }
        }
        deserializer.deserialize_any(PayloadVisitor)
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
    fn device_data_carries_the_device_of_its_subject_never_of_its_payload() {
        let id = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let subject = format!("edge.acme.plant.device.{id}.metrics.cpu");
        let payload = format!(r#"{{"name":"cpu","value":3,"device_id":"{other}"}}"#);
        let metric = decode("acme", msg(&subject, payload.as_bytes())).unwrap();
        assert_eq!(metric.kind(), TelemetryKind::Metric);
        assert_eq!(metric.meta().device_id, Some(id));
        assert_eq!(metric.meta().source, format!("plant.device.{id}.cpu"));
        assert_eq!(metric.meta().edge_site(), Some("plant"));
        let bare = format!("edge.acme.plant.device.{id}.metrics");
        let metric = decode("acme", msg(&bare, br#"{"name":"x","value":1}"#)).unwrap();
        assert_eq!(metric.meta().source, format!("plant.device.{id}"));

        // Status: plain text (the seed's `online`) or an event object.
        let status = format!("edge.acme.plant.device.{id}.status");
        match decode("acme", msg(&status, b"online\n")).unwrap() {
            TelemetryRecord::Event {
                meta,
                severity,
                message,
            } => {
                assert_eq!(message, "online");
                assert_eq!(severity, "info");
                assert_eq!(meta.device_id, Some(id));
                assert_eq!(meta.time_ms, 1_000);
            }
            other => panic!("{other:?}"),
        }
        let event = decode(
            "acme",
            msg(
                &status,
                br#"{"message":"battery low","severity":"warning","ts":9}"#,
            ),
        )
        .unwrap();
        assert_eq!(event.kind(), TelemetryKind::Event);
        assert_eq!(event.meta().device_id, Some(id));
        assert!(decode("acme", msg(&status, b"  ")).is_err());

        // Not a device's subject: refused.
        for subject in [
            format!("edge.acme.plant.device.{id}.cmd"),
            format!("edge.acme.plant.device.{id}.status.more"),
            format!("edge.acme.plant.device.{}.metrics.cpu", id.simple()),
            format!(
                "edge.acme.plant.device.{}.metrics.cpu",
                id.to_string().to_uppercase()
            ),
            "edge.acme.plant.device.not-a-uuid.metrics.cpu".to_owned(),
            format!("edge.acme.plant.device.{id}"),
            format!("edge.other.plant.device.{id}.metrics.cpu"),
        ] {
            assert!(
                matches!(
                    decode("acme", msg(&subject, br#"{"name":"x","value":1}"#)),
                    Err(Rejection::WrongSubject(_))
                ),
                "{subject}"
            );
        }
        // Collector data has no device.
        let collected = decode(
            "acme",
            msg("edge.acme.plant.metrics.x", br#"{"name":"x","value":1}"#),
        )
        .unwrap();
        assert_eq!(collected.meta().device_id, None);
        assert_eq!(collected.meta().edge_site(), Some("plant"));
        let hub = decode(
            "acme",
            msg("metrics.acme.plant", br#"{"name":"x","value":1}"#),
        )
        .unwrap();
        assert_eq!(hub.meta().edge_site(), None);
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

    /// Issue 11, finding 9: one event with `\u0000` in its message stopped
    /// its tenant's ingestion for good (PostgreSQL refused the row, the
    /// batch was retried forever). Such a record is refused at decode, with
    /// a reason, and dead-lettered like any other poison.
    #[test]
    fn a_nul_character_is_refused_at_decode_not_by_the_database() {
        for (subject, payload, field) in [
            (
                "events.acme.nyc",
                &br#"{"message":"a\u0000b"}"#[..],
                "message",
            ),
            ("logs.acme.nyc", br#"{"message":"\u0000"}"#, "message"),
            (
                "events.acme.nyc",
                br#"{"message":"x","severity":"w\u0000"}"#,
                "severity",
            ),
            (
                "logs.acme.nyc",
                br#"{"message":"x","level":"\u0000"}"#,
                "level",
            ),
            (
                "metrics.acme.nyc",
                br#"{"name":"if\u0000","value":1}"#,
                "name",
            ),
        ] {
            match decode("acme", msg(subject, payload)) {
                Err(Rejection::BadField { field: f, problem }) => {
                    assert_eq!(f, field, "{payload:?}");
                    assert!(problem.contains("NUL"), "{problem}");
                }
                other => panic!("{payload:?} decoded as {other:?}"),
            }
        }
        // A subject with a NUL is not one of the tenant's subjects.
        assert!(matches!(
            decode("acme", msg("events.acme.ny\0c", br#"{"message":"x"}"#)),
            Err(Rejection::WrongSubject(_))
        ));
        // Elsewhere in the body the escape is just text, stored as sent.
        let rec = decode(
            "acme",
            msg("events.acme.nyc", br#"{"message":"x","extra":"\u0000"}"#),
        )
        .unwrap();
        assert!(rec.meta().body.contains("\\u0000"));
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
    fn borrows_from_the_message_and_copies_only_escaped_text() {
        let payload = br#"{"message":"plain","severity":"tab\there","ts":5}"#;
        let rec = decode("acme", msg("events.acme.nyc.trapd", payload)).unwrap();
        let TelemetryRecord::Event {
            meta,
            severity,
            message,
        } = &rec
        else {
            panic!("{rec:?}");
        };
        assert!(matches!(message, Cow::Borrowed("plain")));
        assert!(matches!(severity, Cow::Owned(s) if s == "tab\there"));
        assert!(matches!(meta.source, Cow::Borrowed("nyc.trapd")));
        assert!(matches!(meta.body, Cow::Borrowed(_)));
        assert_eq!(meta.body.as_bytes(), payload);
        let owned: TelemetryRecord<'static> = rec.clone().into_owned();
        assert_eq!(owned, rec);
    }

    #[test]
    fn payload_members_decode_like_a_json_value() {
        // Unknown members of any shape are skipped; the last of a repeated member counts.
        let rec = decode(
            "acme",
            msg(
                "logs.acme.x",
                br#"{"a":[1,{"b":null}],"message":"first","n":{"x":[true]},"message":"last","ts":null}"#,
            ),
        )
        .unwrap();
        match &rec {
            TelemetryRecord::Log { message, meta, .. } => {
                assert_eq!(message, "last");
                assert_eq!(meta.time_ms, 1_000);
            }
            other => panic!("{other:?}"),
        }
        // Integer-valued metrics, big integers and floats as values.
        for (payload, value) in [
            (&br#"{"name":"n","value":3}"#[..], 3.0),
            (br#"{"name":"n","value":-3}"#, -3.0),
            (
                br#"{"name":"n","value":18446744073709551615}"#,
                u64::MAX as f64,
            ),
            (br#"{"name":"n","value":1.5e3,"labels":{}}"#, 1500.0),
        ] {
            match decode("acme", msg("metrics.acme.x", payload)).unwrap() {
                TelemetryRecord::Metric { value: v, .. } => assert_eq!(v, value),
                other => panic!("{other:?}"),
            }
        }
        // ts must be an integer in i64 range.
        for payload in [
            &br#"{"message":"x","ts":1.5}"#[..],
            br#"{"message":"x","ts":18446744073709551615}"#,
            br#"{"message":"x","ts":true}"#,
        ] {
            assert!(matches!(
                decode("acme", msg("logs.acme.x", payload)),
                Err(Rejection::BadField { field: "ts", .. })
            ));
        }
        assert!(matches!(
            decode(
                "acme",
                msg("metrics.acme.x", br#"{"name":"n","value":1,"labels":null}"#)
            ),
            Err(Rejection::BadField {
                field: "labels",
                ..
            })
        ));
        for payload in [&b"null"[..], b"5", b"true", b"[]", b"  {} x", b"{\"a\":}"] {
            assert!(
                matches!(
                    decode("acme", msg("logs.acme.x", payload)),
                    Err(Rejection::InvalidJson(_))
                ),
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

    proptest::proptest! {
        /// Any subject and any bytes: decoding answers, never panics.
        #[test]
        fn decoding_never_panics(subject in ".{0,80}", payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode("acme", msg(&subject, &payload));
        }

        /// Any JSON text, including escapes of control characters and
        /// U+0000 in any member: a decoded record's text fields never hold
        /// a NUL (the store's `COPY` encoder relies on it).
        #[test]
        fn decoded_text_never_holds_nul(
            message in r#"(\\u0000|\\n|\\t|\\\\|[^"\\]){0,40}"#,
            level in r"(\\u0000|[a-z]){1,8}",
            kind in 0usize..3,
        ) {
            let (subject, payload) = match kind {
                0 => ("events.acme.nyc", format!(r#"{{"message":"{message}","severity":"{level}"}}"#)),
                1 => ("logs.acme.nyc", format!(r#"{{"message":"{message}","level":"{level}"}}"#)),
                _ => ("metrics.acme.nyc", format!(r#"{{"name":"{message}","value":1}}"#)),
            };
            if let Ok(record) = decode("acme", msg(subject, payload.as_bytes())) {
                let texts: Vec<&str> = match &record {
                    TelemetryRecord::Event { severity, message, meta } => vec![severity, message, &meta.subject, &meta.source],
                    TelemetryRecord::Log { level, message, meta } => vec![level, message, &meta.subject, &meta.source],
                    TelemetryRecord::Metric { name, meta, .. } => vec![name, &meta.subject, &meta.source],
                };
                for text in texts {
                    proptest::prop_assert!(!text.contains('\0'), "{:?}", text);
                }
            }
        }

        /// A well-formed event round-trips: what decodes is what was sent.
        #[test]
        fn well_formed_events_round_trip(
            message in r"\PC{0,60}",
            severity in "[a-z]{1,32}",
            ts in 0i64..4_102_444_800_000,
            source in r"[a-z0-9_-]{1,12}(\.[a-z0-9_-]{1,12}){0,3}",
        ) {
            let payload = serde_json::json!({"message": message, "severity": severity, "ts": ts}).to_string();
            let subject = format!("events.acme.{source}");
            let record = decode("acme", msg(&subject, payload.as_bytes()));
            if message.contains('\0') {
                proptest::prop_assert!(record.is_err());
            } else {
                match record {
                    Ok(TelemetryRecord::Event { severity: s, message: m, meta }) => {
                        proptest::prop_assert_eq!(m, message);
                        proptest::prop_assert_eq!(s, severity);
                        proptest::prop_assert_eq!(meta.time_ms, ts);
                        proptest::prop_assert_eq!(meta.source, source);
                    }
                    other => proptest::prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
