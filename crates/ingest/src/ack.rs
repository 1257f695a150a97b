//! The acknowledger: which acknowledgement may be sent when batches commit
//! out of order ([`AckWatermark`]), and sending it.
//!
//! It exists because the consumer acknowledges with `AckAll`: acknowledging
//! a batch that committed ahead of an earlier one still in flight would
//! acknowledge that earlier batch too, which a crash could then lose.

use async_nats::jetstream;

use crate::error::IngestError;

/// Records that batch `number` (whose last message is `last`) committed and
/// acknowledges up to the contiguous commit watermark.
pub(crate) async fn acknowledge_batch(
    watermark: &mut AckWatermark<jetstream::Message>,
    number: u64,
    last: jetstream::Message,
) -> Result<(), IngestError> {
    if let Some(last) = watermark.commit(number, last) {
        last.ack().await.map_err(IngestError::Ack)?;
    }
    Ok(())
}

/// Which acknowledgement may be sent, given batches (numbered in fetch order)
/// that commit in any order.
///
/// The consumer acknowledges with `AckAll`: acknowledging a message
/// acknowledges every earlier one. With several writers, batch 7 can commit
/// before batch 6; acknowledging it then would acknowledge batch 6 too, which
/// a crash could still lose. So the pipeline acknowledges only the last
/// message of the highest batch that has committed together with every batch
/// before it, and holds the others until the gap closes.
#[derive(Debug)]
pub(crate) struct AckWatermark<T> {
    /// The lowest batch number not yet committed.
    next: u64,
    /// Committed batches above `next`, with their acknowledgement handles.
    ahead: std::collections::BTreeMap<u64, T>,
}

impl<T> Default for AckWatermark<T> {
    fn default() -> Self {
        Self {
            next: 0,
            ahead: std::collections::BTreeMap::new(),
        }
    }
}

impl<T> AckWatermark<T> {
    /// Records that batch `number` committed, with `ack` the handle of its
    /// last message. Returns the handle to acknowledge when the contiguous
    /// prefix of committed batches grew (the highest batch's), else `None`.
    pub(crate) fn commit(&mut self, number: u64, ack: T) -> Option<T> {
        if number < self.next {
            // Already covered (cannot happen with unique numbers).
            return None;
        }
        self.ahead.insert(number, ack);
        let mut highest = None;
        while let Some(ack) = self.ahead.remove(&self.next) {
            highest = Some(ack);
            self.next += 1;
        }
        highest
    }

    /// Committed batches held back by an earlier one still in flight.
    pub(crate) fn waiting(&self) -> usize {
        self.ahead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledges_only_a_contiguous_prefix_of_committed_batches() {
        let mut w = AckWatermark::default();
        // Batch 1 commits before batch 0: nothing may be acknowledged yet.
        assert_eq!(w.commit(1, "b1"), None);
        assert_eq!(w.waiting(), 1);
        // Batch 0 closes the gap: acknowledge through batch 1 (its last message).
        assert_eq!(w.commit(0, "b0"), Some("b1"));
        assert_eq!(w.waiting(), 0);
        // In order: each commit acknowledges itself.
        assert_eq!(w.commit(2, "b2"), Some("b2"));
        // 5 and 4 wait for 3; 3 releases all of them.
        assert_eq!(w.commit(5, "b5"), None);
        assert_eq!(w.commit(4, "b4"), None);
        assert_eq!(w.waiting(), 2);
        assert_eq!(w.commit(3, "b3"), Some("b5"));
        assert_eq!(w.waiting(), 0);
        // A number below the watermark changes nothing.
        assert_eq!(w.commit(1, "again"), None);
        assert_eq!(w.commit(6, "b6"), Some("b6"));
    }

    #[test]
    fn a_batch_that_never_commits_holds_every_later_acknowledgement() {
        let mut w = AckWatermark::default();
        assert_eq!(w.commit(0, 0), Some(0));
        // Batch 1 failed (its writer returned an error): 2..=50 commit but
        // none of them may be acknowledged.
        for n in 2..=50 {
            assert_eq!(w.commit(n, n), None);
        }
        assert_eq!(w.waiting(), 49);
    }
}
