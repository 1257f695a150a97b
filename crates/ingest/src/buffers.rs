//! Store and forward: each site's `EDGE_BUFFER` stream on its leaf (created
//! through the hub in the site's JetStream domain) and the tenant's `INGEST`
//! stream sourcing every site's buffer, reconciled with the database.
//!
//! It exists so that a site keeps its data while its link is down and the
//! hub catches up when it returns, including restarting sources that
//! nats-server left stuck in its retry backoff after a hub restart.

use std::collections::HashMap;

use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_store::Store;

use crate::consumer::STREAM;
use crate::error::IngestError;
use crate::hub::{js_request, stream_info};

/// A source silent this long (ns) while its leaf answers is restarted.
const STALLED_SOURCE_NS: i64 = 5_000_000_000;

/// Store and forward: every provisioned site of the tenant gets its
/// `EDGE_BUFFER` stream on its leaf (created through the hub in the site's
/// JetStream domain when the leaf is connected and the stream is missing),
/// and the tenant's `INGEST` stream sources every site's buffer. While a
/// site's link is down its leaf keeps the data; when the link returns the
/// source catches up from where it stopped.
pub async fn sync_site_buffers(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    restarted: &mut HashMap<String, std::time::Instant>,
) -> Result<(), IngestError> {
    use serviceradar_natsconf::{BufferStreamInput, buffer_stream_config, buffer_stream_source};
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let mut sites = Vec::new();
    let mut page = serviceradar_store::PageRequest {
        limit: serviceradar_store::PageRequest::MAX_LIMIT,
        after: None,
    };
    loop {
        let got = scoped
            .list_sites(&serviceradar_store::SiteFilter::default(), &page)
            .await
            .map_err(|e| IngestError::Store("listing the tenant's sites", e))?;
        for site in got.items {
            // A 3-node leaf cluster keeps its buffer in 3 replicas.
            let replicas = match scoped.leaf_for_site(site.id).await {
                Ok(leaf) if leaf.cluster.is_some() => 3,
                _ => 1,
            };
            sites.push((site.slug.to_string(), replicas));
        }
        match got
            .next_cursor
            .and_then(|c| serviceradar_store::Cursor::decode(&c))
        {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let tenant_slug = tenant.slug.as_str();
    let mut sources = Vec::with_capacity(sites.len());
    let mut reachable = Vec::new();
    for (site, replicas) in &sites {
        let config_failed = |source| IngestError::BufferConfig {
            site: site.clone(),
            source,
        };
        let source = buffer_stream_source(tenant_slug, site).map_err(config_failed)?;
        let api = source["external"]["api"]
            .as_str()
            .ok_or_else(|| IngestError::BufferSourceWithoutApi { site: site.clone() })?
            .to_owned();
        let buffer = buffer_stream_config(
            &BufferStreamInput::new(tenant_slug, site).with_replicas(*replicas),
        )
        .map_err(config_failed)?;
        match js_request(
            client,
            &format!("{api}.STREAM.INFO.EDGE_BUFFER"),
            &serde_json::json!({}),
        )
        .await
        {
            Ok(info) if info.get("error").is_none() => reachable.push(api.clone()),
            Ok(_) => {
                let created =
                    js_request(client, &format!("{api}.STREAM.CREATE.EDGE_BUFFER"), &buffer)
                        .await?;
                if let Some(error) = created.get("error") {
                    tracing::warn!(site = %site, %error, "the leaf refused its buffer stream");
                } else {
                    tracing::info!(site = %site, "created the site's buffer stream on its leaf");
                }
            }
            // The leaf is not connected: its buffer is created when it is.
            Err(e) => tracing::debug!(site = %site, error = %e, "site leaf unreachable"),
        }
        sources.push(source);
    }
    let info = stream_info(client, STREAM).await?;
    let Some(mut config) = ingest_stream_config(&info)? else {
        tracing::debug!("no INGEST stream yet: its set-up creates it, the next sweep sources it");
        return Ok(());
    };
    // A source is its API prefix and delivery prefix: a source from before
    // sites had their own delivery prefix is replaced (the leaf's link may
    // publish only to its site's prefix).
    let names = |v: &serde_json::Value| {
        let mut apis: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        let external = &s["external"];
                        let api = external["api"].as_str()?;
                        let deliver = external["deliver"].as_str().unwrap_or_default();
                        Some(format!("{api} {deliver}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        apis.sort();
        apis
    };
    let wanted = serde_json::Value::Array(sources);
    if names(&config["sources"]) != names(&wanted) {
        config["sources"] = wanted;
        update_ingest_stream(client, &config, "updating the INGEST stream's sources").await?;
        tracing::info!(
            sites = sites.len(),
            "INGEST now sources every site's buffer"
        );
        return Ok(());
    }
    // A source whose leaf answers but that has been silent for long is stuck in
    // nats-server's retry backoff (after a hub restart the first attempts fail
    // before the leaf reconnects, and the next one can be a minute away).
    // Removing and re-adding it restarts it at once; the hub resumes it after
    // the last message it already holds from that source, so nothing repeats.
    let stalled: Vec<String> = stalled_sources(&info, STALLED_SOURCE_NS)
        .filter(|api| reachable.contains(api))
        // Give a restarted source time to start before judging it again.
        .filter(|api| {
            restarted
                .get(api)
                .is_none_or(|at| at.elapsed().as_nanos() > STALLED_SOURCE_NS as u128)
        })
        .collect();
    if !stalled.is_empty() {
        let all = config["sources"].clone();
        config["sources"] = serde_json::Value::Array(
            all.as_array()
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["external"]["api"]
                        .as_str()
                        .is_none_or(|api| !stalled.iter().any(|x| x == api))
                })
                .cloned()
                .collect(),
        );
        js_request(client, &format!("$JS.API.STREAM.UPDATE.{STREAM}"), &config).await?;
        config["sources"] = all;
        update_ingest_stream(client, &config, "restarting stalled sources").await?;
        for api in &stalled {
            restarted.insert(api.clone(), std::time::Instant::now());
        }
        tracing::info!(sources = ?stalled, "restarted stalled site sources");
    }
    Ok(())
}

/// JetStream's error code for a stream that does not exist.
const STREAM_NOT_FOUND: u64 = 10059;

/// The config in a `STREAM.INFO` reply for the tenant's `INGEST` stream:
/// `None` while the stream does not exist yet (platform mode's chores can
/// sweep a tenant before its set-up created the stream; the next sweep
/// finds it), and the hub's own error for any other refusal, so the log
/// says why.
fn ingest_stream_config(
    info: &serde_json::Value,
) -> Result<Option<serde_json::Value>, IngestError> {
    if let Some(config) = info.get("config") {
        return Ok(Some(config.clone()));
    }
    match info.get("error") {
        Some(error) if error["err_code"].as_u64() == Some(STREAM_NOT_FOUND) => Ok(None),
        Some(error) => Err(IngestError::Refused {
            action: "reading the INGEST stream's info",
            error: error.to_string(),
        }),
        None => Err(IngestError::StreamInfoWithoutConfig),
    }
}

/// Updates the tenant's `INGEST` stream to `config`; a refusal is an error
/// (`action` names the update).
async fn update_ingest_stream(
    client: &async_nats::Client,
    config: &serde_json::Value,
    action: &'static str,
) -> Result<(), IngestError> {
    let updated = js_request(client, &format!("$JS.API.STREAM.UPDATE.{STREAM}"), config).await?;
    match updated.get("error") {
        Some(error) => Err(IngestError::Refused {
            action,
            error: error.to_string(),
        }),
        None => Ok(()),
    }
}

/// The API prefixes (`external.api`) of the sources in a stream's `info`
/// that failed or have been silent for more than `limit_ns` nanoseconds
/// (`active` is -1 when never active since the hub (re)started). A source
/// gets a heartbeat every second, so a silent one is stuck in nats-server's
/// retry backoff.
pub(crate) fn stalled_sources(
    info: &serde_json::Value,
    limit_ns: i64,
) -> impl Iterator<Item = String> + '_ {
    info["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |s| {
            s["active"]
                .as_i64()
                .is_some_and(|ns| !(0..=limit_ns).contains(&ns))
                || s.get("error").is_some_and(|e| !e.is_null())
        })
        .filter_map(|s| s["external"]["api"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ingest_stream_is_skipped_not_reported_as_a_config_less_reply() {
        let missing = serde_json::json!({
            "type": "io.nats.jetstream.api.v1.stream_info_response",
            "error": {"code": 404, "err_code": 10059, "description": "stream not found"}
        });
        assert!(matches!(ingest_stream_config(&missing), Ok(None)));
    }

    #[test]
    fn other_refusals_carry_the_hubs_own_error() {
        let busy = serde_json::json!({
            "error": {"code": 503, "err_code": 10039, "description": "jetstream not enabled for account"}
        });
        let e = ingest_stream_config(&busy).expect_err("a refusal");
        assert!(
            e.to_string().contains("jetstream not enabled for account"),
            "{e}"
        );
    }

    #[test]
    fn a_stream_info_gives_its_config() {
        let info = serde_json::json!({"config": {"name": "INGEST", "sources": []}});
        let config = ingest_stream_config(&info).expect("ok").expect("a config");
        assert_eq!(config["name"], "INGEST");
        let neither = serde_json::json!({"state": {}});
        assert!(matches!(
            ingest_stream_config(&neither),
            Err(IngestError::StreamInfoWithoutConfig)
        ));
    }
}
