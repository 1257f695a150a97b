//! Property tests of what the store writes (issue 11: property fuzzing):
//! the PostgreSQL `COPY` encoder round-trips any text a record can hold —
//! tabs, newlines, carriage returns, backslashes, quotes, any Unicode
//! scalar but U+0000 (which decoding refuses) — and any finite metric value,
//! through a real PostgreSQL, and SQLite's `INSERT` path does the same.
//!
//! Case counts are bounded for CI (`PROPTEST_CASES` raises them).

use std::borrow::Cow;

use proptest::prelude::*;
use serviceradar_domain::TenantScope;
use serviceradar_domain::telemetry::{RecordMeta, TelemetryKind, TelemetryRecord};
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_store::{PageRequest, Store, TimeRange};

/// One generated record: kind, texts, value, event time.
#[derive(Debug, Clone)]
struct Generated {
    kind: TelemetryKind,
    subject_tail: String,
    label: String,
    text: String,
    value: f64,
    body: String,
    time_ms: i64,
}

/// Text any column may hold: every Unicode scalar value but U+0000, with
/// the characters `COPY` escapes made likely.
fn column_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => "[\t\n\r\\\\\"'|,;]",
            5 => r"\PC",
            2 => "[\u{1}-\u{1f}\u{7f}]",
            1 => "[\u{80}-\u{10ffff}]",
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![
            Just(TelemetryKind::Event),
            Just(TelemetryKind::Metric),
            Just(TelemetryKind::Log)
        ],
        "[a-z0-9_-]{1,10}",
        column_text(32),
        column_text(80),
        prop_oneof![
            proptest::num::f64::NORMAL,
            proptest::num::f64::SUBNORMAL,
            proptest::num::f64::ZERO
        ],
        column_text(120),
        0i64..4_102_444_800_000,
    )
        .prop_map(
            |(kind, subject_tail, label, text, value, body, time_ms)| Generated {
                kind,
                subject_tail,
                label,
                text,
                value,
                body,
                time_ms,
            },
        )
}

fn record(g: &Generated, tenant: &str, seq: i64) -> TelemetryRecord<'static> {
    let meta = RecordMeta {
        stream_seq: seq,
        subject: Cow::Owned(format!(
            "{}.{tenant}.{}",
            g.kind.subject_prefix(),
            g.subject_tail
        )),
        source: Cow::Owned(g.subject_tail.clone()),
        time_ms: g.time_ms,
        body: Cow::Owned(g.body.clone()),
        device_id: device_of(seq),
    };
    match g.kind {
        TelemetryKind::Event => TelemetryRecord::Event {
            meta,
            severity: Cow::Owned(g.label.clone()),
            message: Cow::Owned(g.text.clone()),
        },
        TelemetryKind::Log => TelemetryRecord::Log {
            meta,
            level: Cow::Owned(g.label.clone()),
            message: Cow::Owned(g.text.clone()),
        },
        TelemetryKind::Metric => TelemetryRecord::Metric {
            meta,
            name: Cow::Owned(g.label.clone()),
            value: g.value,
        },
    }
}

/// Every other record is a device's (NULL and ids both round-trip).
fn device_of(seq: i64) -> Option<uuid::Uuid> {
    (seq % 2 == 0)
        .then(|| uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + seq as u128))
}

/// Writes `batch` for a fresh tenant, reads every row back and compares.
async fn round_trip(store: &Store, case: u64, batch: &[Generated]) -> Result<(), TestCaseError> {
    let slug = format!("t{case}");
    let tenant = store
        .create_tenant(
            &Slug::parse(&slug).unwrap(),
            &DisplayName::parse(&slug).unwrap(),
        )
        .await
        .unwrap();
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let records: Vec<_> = batch
        .iter()
        .enumerate()
        .map(|(i, g)| record(g, &slug, i as i64 + 1))
        .collect();
    let written = scoped.insert_telemetry(&records).await;
    prop_assert!(written.is_ok(), "{:?}", written);
    prop_assert_eq!(written.unwrap(), batch.len() as u64);
    for kind in TelemetryKind::ALL {
        let page = scoped
            .list_telemetry(
                kind,
                TimeRange::default(),
                &PageRequest {
                    limit: PageRequest::MAX_LIMIT,
                    after: None,
                },
            )
            .await
            .unwrap();
        for row in page.items {
            let g = &batch[(row.stream_seq - 1) as usize];
            prop_assert_eq!(g.kind, kind);
            prop_assert_eq!(&row.body, &g.body);
            prop_assert_eq!(&row.label, &g.label);
            prop_assert_eq!(row.time_ms, g.time_ms);
            prop_assert_eq!(&row.source, &g.subject_tail);
            prop_assert_eq!(
                row.device_id,
                device_of(row.stream_seq).map(|d| d.to_string())
            );
            match kind {
                // Zero may come back with either sign; anything else bit for bit.
                TelemetryKind::Metric if g.value == 0.0 => prop_assert_eq!(row.value, 0.0),
                TelemetryKind::Metric => prop_assert_eq!(row.value.to_bits(), g.value.to_bits()),
                _ => prop_assert_eq!(&row.message, &g.text),
            }
        }
    }
    Ok(())
}

fn check_backend(runtime: &tokio::runtime::Runtime, store: Store) {
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
        ..ProptestConfig::default()
    };
    let rows = std::sync::atomic::AtomicU64::new(0);
    proptest!(config, |(batch in proptest::collection::vec(generated(), 1..40))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rows.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(round_trip(&store, n, &batch))?;
    });
    serviceradar_testkit::report(&format!(
        "property: {:?} round-trips generated text and values: {} batches, {} rows, 0 mismatches",
        store.backend(),
        case.into_inner(),
        rows.into_inner()
    ));
}

#[test]
fn the_copy_encoder_round_trips_any_storable_text_through_postgres() {
    let url = serviceradar_testkit::postgres().create_database();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(async {
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    check_backend(&runtime, store);
}

#[test]
fn sqlite_round_trips_any_storable_text() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(async {
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    check_backend(&runtime, store);
}
