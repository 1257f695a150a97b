//! The stop signal of a long-running process, shared by `serviceradar-core`
//! and `serviceradar-agent`: SIGINT or SIGTERM on Unix (what a terminal's
//! Ctrl-C and a service manager send), Ctrl-C elsewhere.

use std::future::Future;

/// Installs the handlers now and returns a future that resolves on the
/// first signal. Installing them up front keeps a signal that arrives while
/// the process is still starting (say, while the embedded hub starts): it
/// still leads to an orderly stop instead of killing the process half-way.
///
/// # Errors
/// When a handler cannot be installed.
pub fn signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::info!("shutdown signal received; draining");
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received; draining");
    })
}
