//! Per-stream flow control, like HTTP/2 or SSH channel windows.
//!
//! Each stream has a credit window in each direction, [`WINDOW`] bytes at
//! the start. A sender spends credit for every frame that queues up for
//! the receiving side's consumer (the frame's body length; see
//! `HostMsg::costs_credit` and `GuestMsg::costs_credit`) and stops (it
//! stops reading the stream's source: a pipe, a PTY, a file) while the
//! window is used up. The receiver grants credit back with a `Credit`
//! message as its consumer takes the data, not as it arrives, so a
//! consumer that stops reading stops its stream and nothing else: the
//! connection's reader never waits for a stream, and what a stream buffers
//! is bounded by its window.
//!
//! A message bigger than the window is sent once the whole window is free
//! (it spends the whole window), so the receiver holds at most
//! `WINDOW + MAX_FRAME` bytes for a stream; a peer that sends more breaks
//! the protocol and the stream is ended with an error.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::MAX_FRAME;

/// Initial credit of every stream, in each direction.
pub const WINDOW: usize = 256 * 1024;

/// Credit is granted back in batches of at least this much (half the
/// window, as HTTP/2 implementations do), so a stream of chunks does not
/// answer each with a `Credit`.
const GRANT_AT: usize = WINDOW / 2;

/// Upper bound of the credit a sender accumulates, whatever the peer
/// grants (keeps a misbehaving peer from overflowing the count).
const MAX_CREDIT: usize = 64 * WINDOW;

/// The peer gave up on the stream or the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream closed")]
pub struct StreamClosed;

/// Sending side: the credit this end may still spend on a stream.
#[derive(Debug)]
pub struct SendWindow {
    credit: Semaphore,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            credit: Semaphore::new(WINDOW),
        }
    }
}

impl SendWindow {
    /// Wait until the peer has room for a frame of `cost` body bytes and
    /// spend the credit; fails once the window is closed.
    pub async fn spend(&self, cost: usize) -> Result<(), StreamClosed> {
        let n = cost.clamp(1, WINDOW) as u32;
        self.credit
            .acquire_many(n)
            .await
            .map_err(|_| StreamClosed)?
            .forget();
        Ok(())
    }

    /// The peer granted `n` more bytes.
    pub fn grant(&self, n: u32) {
        let room = MAX_CREDIT.saturating_sub(self.credit.available_permits());
        self.credit.add_permits((n as usize).min(room));
    }

    /// The stream ended: every waiting and future [`SendWindow::spend`] fails.
    pub fn close(&self) {
        self.credit.close();
    }

    pub fn is_closed(&self) -> bool {
        self.credit.is_closed()
    }

    /// Credit left (for tests and diagnostics).
    pub fn available(&self) -> usize {
        self.credit.available_permits()
    }
}

/// The peer sent more than its window allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer sent {0} bytes beyond the stream's flow-control window")]
pub struct Overrun(pub usize);

/// Receiving side: what the peer sent on a stream and what the consumer
/// took, so credit goes back as data is consumed. Lock-free: the
/// connection's reader and the stream's consumer run on different threads.
#[derive(Debug, Default)]
pub struct RecvWindow {
    /// Received and not yet granted back.
    outstanding: AtomicUsize,
    /// Taken by the consumer and not yet granted back.
    consumed: AtomicUsize,
}

impl RecvWindow {
    /// A frame of `cost` body bytes arrived for the consumer.
    pub fn received(&self, cost: usize) -> Result<(), Overrun> {
        let outstanding = self.outstanding.fetch_add(cost, Ordering::AcqRel) + cost;
        let limit = WINDOW + MAX_FRAME;
        if outstanding > limit {
            return Err(Overrun(outstanding - limit));
        }
        Ok(())
    }

    /// The consumer took a frame of `cost` body bytes; returns the credit
    /// to grant back now, if enough has gathered. One consumer per stream.
    pub fn consumed(&self, cost: usize) -> Option<u32> {
        let consumed = self.consumed.fetch_add(cost, Ordering::AcqRel) + cost;
        if consumed < GRANT_AT {
            return None;
        }
        let grant = consumed.min(u32::MAX as usize);
        self.consumed.fetch_sub(grant, Ordering::AcqRel);
        // Granted before it is subtracted here, so a racing `received`
        // can only see too much outstanding, never too little.
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_sub(grant))
            });
        Some(grant as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn spending_waits_for_credit_and_close_ends_the_wait() {
        let w = std::sync::Arc::new(SendWindow::default());
        w.spend(WINDOW - 10).await.unwrap();
        w.spend(5).await.unwrap();
        // 5 left: a frame of any size still goes (it spends what is left
        // only once the whole cost is available).
        let w2 = w.clone();
        let blocked = tokio::spawn(async move { w2.spend(100).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished());
        w.grant(95);
        assert_eq!(blocked.await.unwrap(), Ok(()));
        let w2 = w.clone();
        let blocked = tokio::spawn(async move { w2.spend(1).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.close();
        assert_eq!(blocked.await.unwrap(), Err(StreamClosed));
    }

    #[tokio::test]
    async fn a_frame_bigger_than_the_window_spends_all_of_it() {
        let w = SendWindow::default();
        w.spend(MAX_FRAME).await.unwrap();
        assert_eq!(w.available(), 0);
        w.grant(u32::MAX);
        assert_eq!(w.available(), MAX_CREDIT);
    }

    #[test]
    fn credit_goes_back_as_the_consumer_takes_data() {
        let r = RecvWindow::default();
        for _ in 0..4 {
            r.received(CHUNK_ISH).unwrap();
        }
        assert_eq!(r.consumed(CHUNK_ISH / 2), None);
        assert_eq!(r.consumed(CHUNK_ISH), None);
        assert_eq!(r.consumed(CHUNK_ISH), Some((CHUNK_ISH * 5 / 2) as u32));
        // A peer that ignores the window is caught.
        let r = RecvWindow::default();
        r.received(WINDOW + MAX_FRAME).unwrap();
        assert_eq!(r.received(1), Err(Overrun(1)));
    }

    const CHUNK_ISH: usize = 60_000;
}
