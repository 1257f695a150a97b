//! Gateway-initiated mode's bookkeeping (migration 0025) on both backends:
//! one replica polls an agent at a time (concurrent claims from two owners
//! never share an agent, a held lease is not claimed again, an expired one
//! is), outcomes are recorded only under the lease, failures become
//! `unreachable` once they lasted the timeout, success clears them,
//! revoked agents are not polled, and the endpoint stays in its tenant.

use serviceradar_domain::TenantScope;
use serviceradar_domain::agent_poll::{AgentEndpoint, PollInterval, Reachability};
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_store::{Backend, Store, now_ms};

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

mod support;
use support::site_with_agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_an_agent_at_a_time_and_outcomes_follow_the_lease() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let tenant = store
            .create_tenant(
                &Slug::parse("acme").expect("s"),
                &DisplayName::parse("A").expect("n"),
            )
            .await
            .expect("tenant");
        let other = store
            .create_tenant(
                &Slug::parse("other").expect("s"),
                &DisplayName::parse("B").expect("n"),
            )
            .await
            .expect("tenant");
        let scope = TenantScope::for_system_task(tenant.id);
        let scoped = store.scoped(scope);
        let endpoint = AgentEndpoint::parse("127.0.0.1:50061").expect("endpoint");
        let mut agents = Vec::new();
        for i in 0..8 {
            let (site, agent) = site_with_agent(&store, scope, &format!("s{i}")).await;
            let poll = scoped
                .set_agent_poll(site, &endpoint, PollInterval::DEFAULT)
                .await
                .expect("set");
            assert_eq!(poll.reachability, Reachability::Unknown);
            agents.push((site, agent));
        }
        // Another tenant neither sees nor removes it.
        let scoped_other = store.scoped(TenantScope::for_system_task(other.id));
        assert_eq!(
            scoped_other.agent_poll(agents[0].0).await.expect("read"),
            None
        );
        assert!(
            !scoped_other
                .remove_agent_poll(agents[0].0)
                .await
                .expect("rm")
        );
        assert!(
            scoped_other
                .set_agent_poll(agents[0].0, &endpoint, PollInterval::DEFAULT)
                .await
                .is_err(),
            "{backend:?}: another tenant's site"
        );

        // Two replicas claim at once: every agent once, never by both.
        let now = now_ms();
        let (a, b) = tokio::join!(
            store.claim_agent_polls("replica-a", now, now + 60_000, 100),
            store.claim_agent_polls("replica-b", now, now + 60_000, 100),
        );
        let (a, b) = (a.expect("claim a"), b.expect("claim b"));
        let mut claimed: Vec<_> = a.iter().chain(b.iter()).map(|p| p.agent_id).collect();
        claimed.sort();
        let mut expected: Vec<_> = agents.iter().map(|(_, agent)| *agent).collect();
        expected.sort();
        assert_eq!(
            claimed, expected,
            "{backend:?}: each agent claimed exactly once"
        );
        // Held leases are not claimed again, even when due.
        assert!(
            store
                .claim_agent_polls("replica-c", now + 1, now + 60_000, 100)
                .await
                .expect("claim")
                .is_empty()
        );
        let (owner, mine) = if a.is_empty() {
            ("replica-b", &b)
        } else {
            ("replica-a", &a)
        };
        let first = mine[0].agent_id;
        // Only the holder records an outcome.
        assert!(
            store
                .agent_poll_succeeded(first, "replica-x", now, now + 30_000)
                .await
                .expect("cas")
                .is_none(),
            "{backend:?}: a stranger's outcome is ignored"
        );

        // Failures: unreachable once they lasted the timeout (2 s here).
        let f1 = store
            .agent_poll_failed(first, owner, now, now, "connection refused", 2_000)
            .await
            .expect("fail")
            .expect("held");
        assert_eq!(
            (f1.before, f1.after, f1.failures),
            (Reachability::Unknown, Reachability::Unknown, 1)
        );
        let again = store
            .claim_agent_polls(owner, now + 2_500, now + 60_000, 100)
            .await
            .expect("claim");
        assert_eq!(
            again.iter().map(|p| p.agent_id).collect::<Vec<_>>(),
            [first],
            "{backend:?}: a released, due agent is claimed again"
        );
        let f2 = store
            .agent_poll_failed(first, owner, now + 2_500, now + 3_000, "timed out", 2_000)
            .await
            .expect("fail")
            .expect("held");
        assert_eq!(
            (f2.before, f2.after, f2.failures),
            (Reachability::Unknown, Reachability::Unreachable, 2)
        );
        let site_first = agents.iter().find(|(_, a)| *a == first).expect("site").0;
        let row = scoped
            .agent_poll(site_first)
            .await
            .expect("read")
            .expect("row");
        assert_eq!(row.last_error.as_deref(), Some("timed out"));
        assert_eq!(row.failing_since, Some(now));

        // Success clears them.
        store
            .claim_agent_polls(owner, now + 3_000, now + 60_000, 100)
            .await
            .expect("claim");
        let ok = store
            .agent_poll_succeeded(first, owner, now + 3_100, now + 33_100)
            .await
            .expect("ok")
            .expect("held");
        assert_eq!(
            (
                ok.reachability,
                ok.failures,
                ok.failing_since,
                ok.last_error
            ),
            (Reachability::Reachable, 0, None, None)
        );

        // An expired lease (a dead replica) is claimed by another.
        let expired = store
            .claim_agent_polls("replica-c", now + 61_000, now + 121_000, 100)
            .await
            .expect("claim");
        assert!(
            expired.len() >= 7,
            "{backend:?}: the dead replica's agents are taken over ({})",
            expired.len()
        );

        // A revoked agent is not polled; removing the endpoint ends polling.
        let (revoked_site, _) = agents[1];
        scoped.revoke_agent(revoked_site).await.expect("revoke");
        let later = store
            .claim_agent_polls("replica-d", now + 200_000, now + 260_000, 100)
            .await
            .expect("claim");
        assert!(!later.iter().any(|p| p.edge_site_id == revoked_site));
        assert!(scoped.remove_agent_poll(agents[2].0).await.expect("rm"));
        assert_eq!(scoped.agent_poll(agents[2].0).await.expect("read"), None);
    }
}

fn dns_check(name: &str) -> serviceradar_domain::agent_control::CheckConfig {
    serviceradar_domain::agent_control::CheckConfig {
        name: name.into(),
        kind: serviceradar_domain::agent_control::CheckKind::Dns,
        target: "example.com".into(),
        interval_secs: 30,
        timeout_ms: 1_000,
    }
}

fn names(checks: &[serviceradar_domain::agent_control::CheckConfig]) -> Vec<&str> {
    checks.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_set_applies_to_the_tenants_selected_agents_all_or_nothing() {
    for (store, _dir) in stores().await {
        let backend = store.backend();
        let mut tenants = Vec::new();
        for slug in ["acme", "other"] {
            let tenant = store
                .create_tenant(
                    &Slug::parse(slug).expect("s"),
                    &DisplayName::parse(slug).expect("n"),
                )
                .await
                .expect("tenant");
            tenants.push(TenantScope::for_system_task(tenant.id));
        }
        let (acme, other) = (tenants[0], tenants[1]);
        let one = site_with_agent(&store, acme, "one").await;
        let two = site_with_agent(&store, acme, "two").await;
        let gone = site_with_agent(&store, acme, "gone").await;
        let foreign = site_with_agent(&store, other, "foreign").await;
        let scoped = store.scoped(acme);
        scoped.revoke_agent(gone.0).await.expect("revoke");

        // Every unrevoked agent of the tenant, in one call.
        let changed = scoped
            .apply_agent_check_set(None, &[dns_check("a"), dns_check("b")], &[])
            .await
            .expect("apply");
        let mut agents: Vec<_> = changed.iter().map(|(a, _)| *a).collect();
        agents.sort();
        let mut want = vec![one.1, two.1];
        want.sort();
        assert_eq!(agents, want, "{backend:?}");
        for agent in [one.1, two.1] {
            let checks = scoped.agent_check_configs(agent).await.expect("checks");
            assert_eq!(names(&checks), ["a", "b"], "{backend:?}");
        }
        assert!(
            scoped
                .agent_check_configs(gone.1)
                .await
                .expect("c")
                .is_empty()
        );
        let theirs = store.scoped(other);
        assert!(
            theirs
                .agent_check_configs(foreign.1)
                .await
                .expect("c")
                .is_empty()
        );

        // Listed sites: replaced by name and removed on that agent only.
        let mut changed_b = dns_check("b");
        changed_b.target = "example.org".into();
        scoped
            .apply_agent_check_set(Some(&[one.0]), &[changed_b], &["a".to_owned()])
            .await
            .expect("apply");
        let first = scoped.agent_check_configs(one.1).await.expect("checks");
        assert_eq!(names(&first), ["b"]);
        assert_eq!(first[0].target, "example.org");
        assert_eq!(
            names(&scoped.agent_check_configs(two.1).await.expect("checks")),
            ["a", "b"]
        );

        // Another tenant's site (or a revoked agent's) is refused whole.
        for sites in [vec![one.0, foreign.0], vec![gone.0]] {
            let refused = scoped
                .apply_agent_check_set(Some(&sites), &[dns_check("c")], &[])
                .await;
            assert!(
                matches!(
                    refused,
                    Err(serviceradar_store::StoreError::BadReference {
                        field: "site_ids",
                        ..
                    })
                ),
                "{backend:?}: {refused:?}"
            );
        }
        // Over the per-agent cap: nothing written anywhere.
        let many: Vec<_> = (0..100).map(|i| dns_check(&format!("c{i}"))).collect();
        let refused = scoped.apply_agent_check_set(None, &many, &[]).await;
        assert!(
            matches!(refused, Err(serviceradar_store::StoreError::Conflict(_))),
            "{backend:?}: {refused:?}"
        );
        assert_eq!(
            names(&scoped.agent_check_configs(two.1).await.expect("checks")),
            ["a", "b"],
            "{backend:?}: rolled back"
        );
        assert!(
            scoped
                .agent_check_configs(gone.1)
                .await
                .expect("c")
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_replica_releases_its_leases_at_once() {
    for (store, _dir) in stores().await {
        let tenant = store
            .create_tenant(
                &Slug::parse("acme").expect("s"),
                &DisplayName::parse("A").expect("n"),
            )
            .await
            .expect("tenant");
        let scope = TenantScope::for_system_task(tenant.id);
        let (site, agent) = site_with_agent(&store, scope, "leased").await;
        let endpoint = AgentEndpoint::parse("127.0.0.1:50061").expect("endpoint");
        store
            .scoped(scope)
            .set_agent_poll(site, &endpoint, PollInterval::DEFAULT)
            .await
            .expect("set");
        let now = now_ms();
        let claimed = store
            .claim_agent_polls("gateway-a", now, now + 60_000, 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            store.agent_poll_lease(agent).await.expect("lease"),
            Some(("gateway-a".to_owned(), now + 60_000))
        );
        assert!(
            store
                .claim_agent_polls("gateway-b", now, now + 60_000, 10)
                .await
                .expect("claim")
                .is_empty(),
            "held"
        );
        assert_eq!(
            store
                .release_agent_polls("gateway-b")
                .await
                .expect("release"),
            0
        );
        assert_eq!(
            store
                .release_agent_polls("gateway-a")
                .await
                .expect("release"),
            1
        );
        assert_eq!(store.agent_poll_lease(agent).await.expect("lease"), None);
        let taken = store
            .claim_agent_polls("gateway-b", now, now + 60_000, 10)
            .await
            .expect("claim");
        assert_eq!(taken.len(), 1, "the other replica claims it at once");
    }
}
