//! The write-behind both of the replica's buffers share: agent status
//! ([`crate::status`]) and config acknowledgements ([`crate::acks`]).
//!
//! It exists so that the two keep one flusher: a task that writes the
//! buffer every interval (one flush at a time, also when the buffer's
//! owner flushes itself), reacts to events from elsewhere where the buffer
//! wants them, and ends when the buffer is closed or its last handle is
//! dropped. What is buffered and how it is written is each buffer's own
//! ([`Buffer`]).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

/// What a write-behind buffer holds and how it is written.
pub(crate) trait Buffer: Send + Sync + 'static {
    /// Events from elsewhere the buffer reacts to
    /// ([`std::convert::Infallible`]: none).
    type Event: Clone + Send + 'static;

    /// Writes what is buffered; how many entries it held (0 when the write
    /// failed and they were put back, which the buffer logs).
    fn flush(&self) -> impl Future<Output = usize> + Send;

    /// Handles an event, or the news that some were missed (`Lagged`);
    /// `false` ends the flusher.
    fn on_event(&self, _event: Result<Self::Event, broadcast::error::RecvError>) -> bool {
        true
    }
}

/// A buffer with its flusher. Dereferences to the buffer.
pub(crate) struct WriteBehind<B> {
    buffer: B,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
}

impl<B: Buffer> WriteBehind<B> {
    /// `buffer`, flushed every `every` on a task of the current runtime
    /// (which also hands it `events`) until [`WriteBehind::close`] or the
    /// last handle is dropped.
    pub(crate) fn start(
        buffer: B,
        every: Duration,
        events: Option<broadcast::Receiver<B::Event>>,
    ) -> Arc<Self> {
        let behind = Arc::new(Self {
            buffer,
            flushing: tokio::sync::Mutex::new(()),
            stop: watch::channel(false).0,
        });
        tokio::spawn(flusher(
            Arc::downgrade(&behind),
            behind.stop.subscribe(),
            events,
            every,
        ));
        behind
    }

    /// Writes what is buffered now (after a flush under way); how many
    /// entries it held.
    pub(crate) async fn flush(&self) -> usize {
        let _one = self.flushing.lock().await;
        self.buffer.flush().await
    }

    /// Stops the flusher and writes what is buffered; how many entries it
    /// held.
    pub(crate) async fn close(&self) -> usize {
        self.stop.send_replace(true);
        self.flush().await
    }
}

impl<B> std::ops::Deref for WriteBehind<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.buffer
    }
}

async fn flusher<B: Buffer>(
    behind: Weak<WriteBehind<B>>,
    mut stop: watch::Receiver<bool>,
    mut events: Option<broadcast::Receiver<B::Event>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(behind) = behind.upgrade() else { return };
                behind.flush().await;
            }
            event = next_event(&mut events) => {
                let Some(behind) = behind.upgrade() else { return };
                if !behind.buffer.on_event(event) {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The next event, or never without a receiver.
async fn next_event<E: Clone>(
    events: &mut Option<broadcast::Receiver<E>>,
) -> Result<E, broadcast::error::RecvError> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
