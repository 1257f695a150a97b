//! Agents, site/leaf health, sweeps and alerts on both backends: the sweeper's
//! conditional update moves each site once even with concurrent sweepers, the
//! alert rule picks only long-lasting conditions, one unresolved alert per
//! (site, kind), recovery resolves, and everything stays in its tenant.

use serviceradar_domain::state::{AlertEvent, AlertStatus, LeafStatus, SiteStatus};
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_domain::{EdgeSiteId, TenantScope};
use serviceradar_store::health::{ALERT_LEAF_DISCONNECTED, ALERT_SITE_OFFLINE, AgentCert};
use serviceradar_store::{Backend, PageRequest, Store, StoreError, now_ms};

mod support;

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        8,
    )
    .await
    .expect("sqlite");
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("pg database");
    let pg = Store::connect(&url, 12).await.expect("postgres");
    assert_eq!(pg.backend(), Backend::Postgres);
    let out = vec![(sqlite, Some(dir)), (pg, None)];
    for (s, _) in &out {
        s.migrate().await.expect("migrate");
    }
    out
}

/// Tenants `acme` and `other`.
async fn two_tenants(
    store: &Store,
) -> (
    serviceradar_domain::resources::Tenant,
    serviceradar_domain::resources::Tenant,
) {
    let tenant = |slug: &'static str, name: &'static str| async move {
        store
            .create_tenant(
                &Slug::parse(slug).expect("s"),
                &DisplayName::parse(name).expect("n"),
            )
            .await
            .expect("tenant")
    };
    (tenant("acme", "A").await, tenant("other", "B").await)
}

async fn site(store: &Store, scope: TenantScope, slug: &str) -> EdgeSiteId {
    let scoped = store.scoped(scope);
    let (site, leaf) = support::new_site(&scoped, slug).await;
    support::provision_leaf(&scoped, leaf.id, now_ms() + 1_000_000).await;
    site.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_sweeps_and_alerts_on_both_backends() {
    for (store, _dir) in stores().await {
        let (a, b) = two_tenants(&store).await;
        let (sa, sb) = (
            TenantScope::for_system_task(a.id),
            TenantScope::for_system_task(b.id),
        );
        let site_a = site(&store, sa, "nyc").await;
        let site_b = site(&store, sb, "sfo").await;
        let agent = uuid::Uuid::now_v7();
        let scoped = store.scoped(sa);
        let cert = AgentCert {
            agent_id: agent,
            cert_pem: "cert".into(),
            key_sealed: vec![7; 8],
            cert_serial: "01".into(),
            cert_expires_at: now_ms() + 1_000,
        };
        scoped.store_agent_cert(site_a, &cert).await.expect("agent");
        // Renewal keeps the row (and id), replaces the certificate.
        let renewed = scoped
            .store_agent_cert(
                site_a,
                &AgentCert {
                    cert_serial: "02".into(),
                    ..cert.clone()
                },
            )
            .await
            .expect("renew");
        assert_eq!((renewed.id, renewed.cert_serial.as_str()), (agent, "02"));
        // Another tenant cannot see or write it.
        assert!(matches!(
            store.scoped(sb).agent(agent).await,
            Err(StoreError::NotFound)
        ));
        assert!(
            store
                .scoped(sb)
                .agent_for_site(site_a)
                .await
                .expect("q")
                .is_none()
        );

        // Contact: pending -> active once; then only the timestamp moves.
        let change = scoped.agent_seen(agent, site_a).await.expect("seen");
        assert_eq!(
            change.map(|c| (c.from, c.to)),
            Some((SiteStatus::Pending, SiteStatus::Active))
        );
        assert!(
            scoped
                .agent_seen(agent, site_a)
                .await
                .expect("seen")
                .is_none()
        );
        // Another tenant's scope cannot move tenant A's site.
        assert!(store.scoped(sb).agent_seen(agent, site_a).await.is_err());

        // Leaf: provisioned -> connected -> disconnected.
        assert!(
            scoped
                .set_leaf_link(site_a, false)
                .await
                .expect("noop")
                .is_none()
        );
        assert_eq!(
            scoped
                .set_leaf_link(site_a, true)
                .await
                .expect("up")
                .map(|c| c.to),
            Some(LeafStatus::Connected)
        );
        assert_eq!(
            scoped
                .set_leaf_link(site_a, false)
                .await
                .expect("down")
                .map(|c| c.to),
            Some(LeafStatus::Disconnected)
        );

        // Sweep: a cutoff in the past moves nothing; a cutoff in the future
        // moves site A exactly once across two concurrent sweepers.
        assert!(
            store
                .sweep_offline_sites(now_ms() - 60_000)
                .await
                .expect("sweep")
                .is_empty()
        );
        let cutoff = now_ms() + 1;
        let (x, y) = tokio::join!(
            store.sweep_offline_sites(cutoff),
            store.sweep_offline_sites(cutoff)
        );
        let moved: Vec<_> = x.expect("x").into_iter().chain(y.expect("y")).collect();
        assert_eq!(
            moved,
            vec![(a.id, site_a)],
            "pending site B never goes offline"
        );
        assert_eq!(
            scoped.site(site_a).await.expect("site").status,
            SiteStatus::Offline
        );

        // Alert rule: both conditions are due with cutoffs in the future.
        let future = now_ms() + 1;
        assert!(
            store
                .due_alerts(now_ms() - 60_000, now_ms() - 60_000)
                .await
                .expect("due")
                .is_empty()
        );
        let due = store.due_alerts(future, future).await.expect("due");
        let kinds: Vec<_> = due.iter().map(|d| (d.edge_site_id, d.kind)).collect();
        assert!(
            kinds.contains(&(site_a, ALERT_SITE_OFFLINE))
                && kinds.contains(&(site_a, ALERT_LEAF_DISCONNECTED))
        );
        assert!(!kinds.iter().any(|(s, _)| *s == site_b));
        let (r1, r2) = tokio::join!(
            scoped.raise_alert(site_a, ALERT_SITE_OFFLINE, "x"),
            scoped.raise_alert(site_a, ALERT_SITE_OFFLINE, "x")
        );
        let raised: Vec<_> = [r1.expect("r1"), r2.expect("r2")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(raised.len(), 1, "one unresolved alert per site and kind");
        assert!(
            store
                .due_alerts(future, future)
                .await
                .expect("due")
                .iter()
                .all(|d| d.kind != ALERT_SITE_OFFLINE)
        );
        let alert = raised[0].clone();
        assert!(matches!(
            store.scoped(sb).alert(alert.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .scoped(sb)
                .transition_alert(alert.id, AlertEvent::Acknowledge, None)
                .await,
            Err(StoreError::NotFound)
        ));
        let acked = scoped
            .transition_alert(alert.id, AlertEvent::Acknowledge, Some("u1"))
            .await
            .expect("ack");
        assert_eq!(acked.status, AlertStatus::Acknowledged);

        // Recovery resolves it (once).
        let resolved = scoped
            .resolve_alerts(site_a, ALERT_SITE_OFFLINE)
            .await
            .expect("resolve");
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert!(
            scoped
                .resolve_alerts(site_a, ALERT_SITE_OFFLINE)
                .await
                .expect("again")
                .is_empty()
        );
        let page = scoped
            .list_alerts(Some(AlertStatus::Resolved), &PageRequest::first())
            .await
            .expect("list");
        assert_eq!(page.items.len(), 1);
        assert!(
            store
                .scoped(sb)
                .list_alerts(None, &PageRequest::first())
                .await
                .expect("list")
                .items
                .is_empty()
        );

        // Revocation is sticky across renewal.
        let revoked = scoped.revoke_agent(site_a).await.expect("revoke");
        assert!(revoked.revoked_at.is_some());
        let renewed = scoped.store_agent_cert(site_a, &cert).await.expect("renew");
        assert_eq!(renewed.revoked_at, revoked.revoked_at);
        store.close().await;
    }
}

/// The agent card's check results: the newest result per check name wins
/// (a buffered older result pushed later does not move it back), an agent
/// keeps at most `MAX_CHECKS_PER_AGENT` names, and another tenant sees none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_latest_check_results_are_kept_per_name_on_both_backends() {
    use serviceradar_store::{AgentCheck, MAX_CHECKS_PER_AGENT};
    for (store, _dir) in stores().await {
        let (a, b) = two_tenants(&store).await;
        let sa = TenantScope::for_system_task(a.id);
        let site_a = site(&store, sa, "nyc").await;
        let agent = uuid::Uuid::now_v7();
        let scoped = store.scoped(sa);
        scoped
            .store_agent_cert(
                site_a,
                &AgentCert {
                    agent_id: agent,
                    cert_pem: "cert".into(),
                    key_sealed: vec![7; 8],
                    cert_serial: "01".into(),
                    cert_expires_at: now_ms() + 1_000,
                },
            )
            .await
            .expect("agent");
        let check = |name: &str, status: &str, at: i64| AgentCheck {
            name: name.into(),
            kind: "tcp".into(),
            target: "127.0.0.1:22".into(),
            status: status.into(),
            message: format!("{status} at {at}"),
            response_time_us: 10,
            observed_at: at,
        };
        scoped
            .record_agent_checks(
                agent,
                &[
                    check("ssh", "ok", 10),
                    check("ssh", "fail", 20),
                    check("dns", "ok", 5),
                ],
            )
            .await
            .expect("record");
        // An older result pushed later (from the agent's buffer) loses.
        scoped
            .record_agent_checks(agent, &[check("ssh", "ok", 15)])
            .await
            .expect("record");
        let checks = scoped.agent_checks(agent).await.expect("checks");
        assert_eq!(
            checks
                .iter()
                .map(|c| (c.name.as_str(), c.status.as_str(), c.observed_at))
                .collect::<Vec<_>>(),
            vec![("dns", "ok", 5), ("ssh", "fail", 20)]
        );
        // Bounded: more names than the cap keep the first ones only.
        let many: Vec<_> = (0..MAX_CHECKS_PER_AGENT + 20)
            .map(|i| check(&format!("c{i:03}"), "ok", 30))
            .collect();
        scoped
            .record_agent_checks(agent, &many)
            .await
            .expect("many");
        assert_eq!(
            scoped.agent_checks(agent).await.expect("checks").len(),
            MAX_CHECKS_PER_AGENT
        );
        // Still updated in place once full.
        scoped
            .record_agent_checks(agent, &[check("ssh", "ok", 40)])
            .await
            .expect("record");
        assert!(
            scoped
                .agent_checks(agent)
                .await
                .expect("checks")
                .iter()
                .any(|c| c.name == "ssh" && c.observed_at == 40)
        );
        assert!(
            store
                .scoped(TenantScope::for_system_task(b.id))
                .agent_checks(agent)
                .await
                .expect("checks")
                .is_empty(),
            "another tenant sees none"
        );
        store.close().await;
    }
}

/// Agent commands (migration 0017) on both backends: status changes are
/// compare-and-set (a command claimed `sent` cannot also become `offline`,
/// a final one never moves), another tenant sees nothing, a command past
/// its TTL reads `expired`, configured checks refuse duplicates, the
/// acknowledged config version is kept, and retention removes old commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_commands_and_checks_on_both_backends() {
    use serviceradar_domain::agent_control::{CheckConfig, CheckKind, CommandKind, CommandStatus};
    for (store, _dir) in stores().await {
        let (a, b) = two_tenants(&store).await;
        let (sa, sb) = (
            TenantScope::for_system_task(a.id),
            TenantScope::for_system_task(b.id),
        );
        let site_a = site(&store, sa, "nyc").await;
        let agent = uuid::Uuid::now_v7();
        let scoped = store.scoped(sa);
        scoped
            .store_agent_cert(
                site_a,
                &AgentCert {
                    agent_id: agent,
                    cert_pem: "cert".into(),
                    key_sealed: vec![7; 8],
                    cert_serial: "01".into(),
                    cert_expires_at: now_ms() + 1_000,
                },
            )
            .await
            .expect("agent");
        let c = scoped
            .insert_agent_command(site_a, agent, CommandKind::RunChecks, 60, "user")
            .await
            .expect("insert");
        assert_eq!(c.status, CommandStatus::Pending);
        // Claimed by a replica: the issuer's "offline" loses.
        assert!(
            scoped
                .set_agent_command_status(c.id, CommandStatus::Sent, None, None)
                .await
                .unwrap()
        );
        assert!(
            !scoped
                .set_agent_command_status(c.id, CommandStatus::Offline, None, None)
                .await
                .unwrap()
        );
        assert!(
            scoped
                .set_agent_command_status(c.id, CommandStatus::Acked, None, None)
                .await
                .unwrap()
        );
        assert!(
            scoped
                .set_agent_command_status(
                    c.id,
                    CommandStatus::Succeeded,
                    Some("done"),
                    Some("{\"n\":1}")
                )
                .await
                .unwrap()
        );
        assert!(
            !scoped
                .set_agent_command_status(c.id, CommandStatus::Failed, None, None)
                .await
                .unwrap()
        );
        let done = scoped.agent_command(c.id).await.unwrap();
        assert_eq!(
            (done.status, done.result.as_deref()),
            (CommandStatus::Succeeded, Some("{\"n\":1}"))
        );
        // Another tenant: not found, cannot move it.
        let other = store.scoped(sb);
        assert!(matches!(
            other.agent_command(c.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(
            !other
                .set_agent_command_status(c.id, CommandStatus::Failed, None, None)
                .await
                .unwrap()
        );
        assert!(
            other
                .list_agent_commands(site_a, &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        // Past its TTL: expired when read.
        let late = scoped
            .insert_agent_command(site_a, agent, CommandKind::CollectDiagnostics, 1, "user")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let page = scoped
            .list_agent_commands(site_a, &PageRequest::first())
            .await
            .unwrap();
        let statuses: Vec<_> = page.items.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [CommandStatus::Succeeded, CommandStatus::Expired]);
        assert_eq!(page.items[1].id, late.id);
        // A late result cannot revive it, and reading it wrote nothing
        // (the row's stored status is still open until a transition).
        assert!(
            !scoped
                .set_agent_command_status(late.id, CommandStatus::Succeeded, Some("late"), None)
                .await
                .unwrap(),
            "a result after the TTL was accepted"
        );
        let read = scoped.agent_command(late.id).await.unwrap();
        assert_eq!((read.status, read.message), (CommandStatus::Expired, None));
        assert!(
            scoped
                .set_agent_command_status(late.id, CommandStatus::Expired, None, None)
                .await
                .unwrap(),
            "expiring it is still allowed"
        );
        // Checks: unique names, NotFound on a missing one, other tenants see none.
        let check = CheckConfig {
            name: "db".into(),
            kind: CheckKind::Tcp,
            target: "10.0.0.5:5432".into(),
            interval_secs: 30,
            timeout_ms: 1_000,
        };
        scoped.add_agent_check_config(agent, &check).await.unwrap();
        assert!(matches!(
            scoped.add_agent_check_config(agent, &check).await,
            Err(StoreError::Conflict(_))
        ));
        let missing = CheckConfig {
            name: "nope".into(),
            ..check.clone()
        };
        assert!(matches!(
            scoped.update_agent_check_config(agent, &missing).await,
            Err(StoreError::NotFound)
        ));
        assert!(other.agent_check_configs(agent).await.unwrap().is_empty());
        assert!(matches!(
            other.delete_agent_check_config(agent, "db").await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(scoped.agent_check_configs(agent).await.unwrap(), [check]);
        // The acknowledged version: the latest wins.
        scoped.ack_agent_config(agent, "v1").await.unwrap();
        scoped.ack_agent_config(agent, "v2").await.unwrap();
        assert_eq!(
            scoped
                .agent_config_ack(agent)
                .await
                .unwrap()
                .map(|(v, _)| v)
                .as_deref(),
            Some("v2")
        );
        assert!(other.agent_config_ack(agent).await.unwrap().is_none());
        // Retention: kept like the gateway audit (90 days).
        let policy = serviceradar_store::RetentionPolicy::default();
        let day = 86_400_000;
        assert_eq!(
            store
                .sweep_retention(&policy, now_ms() + 89 * day)
                .await
                .unwrap()
                .agent_commands,
            0
        );
        assert_eq!(
            store
                .sweep_retention(&policy, now_ms() + 91 * day)
                .await
                .unwrap()
                .agent_commands,
            2
        );
    }
}

/// The gateway's batched config reads and written-behind config
/// acknowledgements (issue 18) on both backends: many agents' configs read
/// at once are each agent's own (over several statements' worth of ids,
/// another tenant's agent and unknown ids left out); acknowledgements of
/// several tenants land in one call, one of an unknown agent or under the
/// wrong tenant is skipped without failing the rest, and an older one
/// never replaces a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_configs_read_and_acks_written_in_batches_on_both_backends() {
    use serviceradar_domain::agent_control::{CheckConfig, CheckKind};
    use serviceradar_store::ConfigAck;
    for (store, _dir) in stores().await {
        let (a, b) = two_tenants(&store).await;
        let (sa, sb) = (
            TenantScope::for_system_task(a.id),
            TenantScope::for_system_task(b.id),
        );
        let mut agents = Vec::new();
        for (scope, slug) in [(sa, "nyc"), (sa, "sfo"), (sa, "lon"), (sb, "ber")] {
            let site = site(&store, scope, slug).await;
            let agent = uuid::Uuid::now_v7();
            store
                .scoped(scope)
                .store_agent_cert(
                    site,
                    &AgentCert {
                        agent_id: agent,
                        cert_pem: "cert".into(),
                        key_sealed: vec![7; 8],
                        cert_serial: "01".into(),
                        cert_expires_at: now_ms() + 1_000,
                    },
                )
                .await
                .expect("agent");
            agents.push(agent);
        }
        let (scoped, other) = (store.scoped(sa), store.scoped(sb));
        let check = |name: &str| CheckConfig {
            name: name.into(),
            kind: CheckKind::Tcp,
            target: "10.0.0.5:5432".into(),
            interval_secs: 30,
            timeout_ms: 1_000,
        };
        for name in ["web", "db"] {
            scoped
                .add_agent_check_config(agents[0], &check(name))
                .await
                .unwrap();
        }
        scoped
            .add_agent_check_config(agents[2], &check("dns"))
            .await
            .unwrap();
        other
            .add_agent_check_config(agents[3], &check("theirs"))
            .await
            .unwrap();

        let mut wanted: Vec<uuid::Uuid> = (0..1_200).map(|_| uuid::Uuid::now_v7()).collect();
        wanted.insert(3, agents[0]);
        wanted.insert(700, agents[1]);
        wanted.push(agents[2]);
        wanted.push(agents[3]);
        let read = scoped.agent_configs(&wanted).await.unwrap();
        assert_eq!(read.len(), 3, "this tenant's three agents, nothing else");
        for agent in &agents[..3] {
            assert_eq!(
                read[agent].checks,
                scoped.agent_check_configs(*agent).await.unwrap(),
                "the same checks in the same order as one agent's read"
            );
            assert_eq!(
                read[agent].changed_at,
                scoped.agent_config_changed_at(*agent).await.unwrap()
            );
        }
        assert_eq!(
            read[&agents[0]]
                .checks
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["db", "web"]
        );
        assert!(!read.contains_key(&agents[3]), "another tenant's agent");

        // Acknowledgements of both tenants and strays, over two statements.
        let ack = |tenant: &serviceradar_domain::resources::Tenant,
                   agent: uuid::Uuid,
                   version: &str,
                   at: i64| ConfigAck {
            tenant_id: tenant.id,
            agent_id: agent,
            version: version.into(),
            acked_at: at,
        };
        let mut acks: Vec<ConfigAck> = (0..240)
            .map(|_| ack(&a, uuid::Uuid::now_v7(), "stray", 1_000))
            .collect();
        acks.push(ack(&a, agents[0], "v1", 1_000));
        acks.push(ack(&b, agents[3], "theirs-v1", 1_000));
        acks.push(ack(&b, agents[1], "wrong tenant", 1_000));
        store.record_config_acks(&acks).await.unwrap();
        assert_eq!(
            scoped.agent_config_ack(agents[0]).await.unwrap(),
            Some(("v1".into(), 1_000))
        );
        assert_eq!(
            other.agent_config_ack(agents[3]).await.unwrap(),
            Some(("theirs-v1".into(), 1_000))
        );
        assert_eq!(scoped.agent_config_ack(agents[1]).await.unwrap(), None);
        // Older: ignored; newer: kept.
        store
            .record_config_acks(&[ack(&a, agents[0], "older", 500)])
            .await
            .unwrap();
        assert_eq!(
            scoped.agent_config_ack(agents[0]).await.unwrap(),
            Some(("v1".into(), 1_000))
        );
        store
            .record_config_acks(&[ack(&a, agents[0], "v2", 2_000)])
            .await
            .unwrap();
        assert_eq!(
            scoped.agent_config_ack(agents[0]).await.unwrap(),
            Some(("v2".into(), 2_000))
        );
        store.record_config_acks(&[]).await.unwrap();
    }
}
