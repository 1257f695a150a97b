//! Background tasks of a process: periodic loops and the stop.
//!
//! A process starts its tasks with one `watch::Receiver<bool>` that flips to
//! `true` when stopping starts. [`every`] runs a tick on an interval until
//! then; [`drain`] waits for the named tasks against one deadline and aborts
//! (and names in the log) whatever is still running.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A background task and the name the log gives it if it does not stop.
pub type NamedTask = (&'static str, JoinHandle<()>);

/// Resolves once `stop` flips to true (or its sender is gone): the
/// graceful-shutdown signal of servers.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs `tick` now and then every `interval` until `stop` flips.
pub async fn every<F, Fut>(interval: Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    // A tick that took longer than the interval delays the next one rather
    // than firing the missed ones back to back.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        tick().await;
    }
}

/// Waits for every task at once, at most `grace`; tasks still running then
/// are named in the log and aborted (their work must be safe to redo: jobs
/// by their lease, ingestion by the stream).
pub async fn drain(tasks: Vec<NamedTask>, grace: Duration) {
    let started = Instant::now();
    // They all run already: waiting for each in turn against one deadline
    // waits for all of them at once.
    let deadline = tokio::time::Instant::now() + grace;
    let mut running = Vec::new();
    for (name, mut task) in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            running.push((name, task));
        }
    }
    for (name, task) in &running {
        tracing::warn!(
            task = name,
            "did not stop within the shutdown grace period; aborted"
        );
        task.abort();
    }
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        aborted = running.len(),
        "stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn every_ticks_until_stopped_and_not_after() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let task = tokio::spawn(every(Duration::from_secs(1), stop_rx, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let _ = stop_tx.send(true);
        task.await.expect("the loop ends");
        // Now, after 1 s and after 2 s.
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_a_task_that_overstays_the_grace() {
        let quick = tokio::spawn(async {});
        let slow = tokio::spawn(tokio::time::sleep(Duration::from_secs(3_600)));
        let slow_abort = slow.abort_handle();
        drain(
            vec![("quick", quick), ("slow", slow)],
            Duration::from_secs(1),
        )
        .await;
        tokio::task::yield_now().await;
        assert!(slow_abort.is_finished(), "the overstaying task was aborted");
    }
}
