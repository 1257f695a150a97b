//! The `collect_diagnostics` command: what an operator needs to see from a
//! box without logging in — the local leaf's `/varz`, `/leafz` and `/jsz`
//! (from the leaf monitoring port the agent's `nats_leaf` check already
//! uses), the tail of the agent's own log, and the agent's clock (a skewed
//! clock breaks certificates and JWTs).

use serde_json::{Value, json};
use serviceradar_proto::v1::CheckSpec;

use crate::checks::Checker;
use crate::logtail::LogTail;

/// Largest leaf document kept (bytes of JSON); bigger ones are replaced by
/// a note so the whole result stays under the gateway's 1 MiB.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Longest wait for one leaf document.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Collects the bundle. `checks` are the agent's current checks (the first
/// `nats_leaf` one names the leaf's monitoring URL).
pub async fn collect(checker: &Checker, checks: &[CheckSpec], config_version: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let rfc3339 = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let monitoring = checks
        .iter()
        .find(|c| c.kind == "nats_leaf")
        .map(|c| c.target.clone());
    let leaf = match &monitoring {
        None => {
            json!({ "error": "no nats_leaf check configured: the leaf's monitoring port is unknown" })
        }
        Some(base) => {
            let mut leaf = serde_json::Map::new();
            leaf.insert("monitoring_url".into(), json!(base));
            for (key, path) in [("varz", "/varz"), ("leafz", "/leafz"), ("jsz", "/jsz")] {
                let fetched =
                    tokio::time::timeout(FETCH_TIMEOUT, checker.get_json(base, path)).await;
                let doc = match fetched {
                    Ok(Ok(v)) if v.to_string().len() <= MAX_DOCUMENT => v,
                    Ok(Ok(_)) => {
                        json!({ "error": format!("larger than {MAX_DOCUMENT} bytes; omitted") })
                    }
                    Ok(Err(e)) => json!({ "error": e }),
                    Err(_) => {
                        json!({ "error": format!("{path}: no answer within {FETCH_TIMEOUT:?}") })
                    }
                };
                leaf.insert(key.into(), doc);
            }
            Value::Object(leaf)
        }
    };
    json!({
        "clock": {
            "unix_ms": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            "utc": rfc3339,
        },
        "agent_version": env!("CARGO_PKG_VERSION"),
        "config_version": config_version,
        "leaf": leaf,
        "log_tail": LogTail::global().snapshot(),
    })
}
