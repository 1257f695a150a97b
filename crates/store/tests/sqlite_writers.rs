//! SQLite under concurrent writers. A transaction that reads and then writes
//! must not fail with "database is locked" when another connection commits
//! between its read and its write: in WAL mode SQLite answers that upgrade
//! with `SQLITE_BUSY_SNAPSHOT` at once, without waiting out the busy
//! timeout, so such a transaction has to take the write lock when it begins.
//! (Found as an agent's results upload refused with "internal error" while
//! the gateway's write-behind committed beside it.)

use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_store::{ChunkIn, ChunkOutcome, Store};

mod support;
use support::site_with_agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_never_fail_with_database_locked_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        8,
    )
    .await
    .expect("sqlite");
    store.migrate().await.expect("migrate");
    let tenant = store
        .create_tenant(
            &Slug::parse("acme").expect("slug"),
            &DisplayName::parse("Acme").expect("name"),
        )
        .await
        .expect("tenant");
    let scope = TenantScope::for_system_task(tenant.id);
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(site_with_agent(&store, scope, &format!("site-{i}")).await);
    }
    const CHUNKS: u64 = 40;
    let tasks: Vec<_> = agents
        .into_iter()
        .map(|(site, agent)| {
            let store = store.clone();
            tokio::spawn(async move {
                for index in 0..CHUNKS {
                    let outcome = store
                        .scoped(scope)
                        .store_upload_chunk(
                            site,
                            agent,
                            ChunkIn {
                                upload_id: "up-1",
                                content_type: "application/json",
                                index,
                                data: b"0123456789",
                                last: index + 1 == CHUNKS,
                            },
                            1 << 20,
                            4,
                        )
                        .await
                        .unwrap_or_else(|e| panic!("chunk {index}: {e}"));
                    assert!(
                        matches!(outcome, ChunkOutcome::Accepted { next_chunk, .. } if next_chunk == index + 1),
                        "chunk {index}: {outcome:?}"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("uploader");
    }
    store.close().await;
}
