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
//! window + `MAX_FRAME` bytes for a stream; a peer that sends more breaks
//! the protocol and the stream is ended with an error.
//!
//! The window grows for a bulk stream whose consumer keeps up: when the
//! consumer finds nothing queued (it waits for the sender: the pipeline
//! ran dry) after taking a whole window's worth since the window last
//! changed, its receiver doubles the window, up to [`MAX_WINDOW`], by
//! granting the extra credit. A consumer that stops reading never grows
//! its window, so a stream stalled from the start holds at most [`WINDOW`]
//! (plus a frame) and any stalled stream at most [`MAX_WINDOW`], while a
//! busy one gets a pipeline deep enough to hide the credit round trip.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::MAX_FRAME;

/// Initial credit of every stream, in each direction.
pub const WINDOW: usize = 256 * 1024;

/// Largest window a receiver grows a stream's to.
pub const MAX_WINDOW: usize = 2 * 1024 * 1024;

/// Upper bound of the credit a sender accumulates, whatever the peer
/// grants (keeps a misbehaving peer from overflowing the count).
const MAX_CREDIT: usize = 4 * MAX_WINDOW;

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
#[derive(Debug)]
pub struct RecvWindow {
    /// Received and not yet granted back.
    outstanding: AtomicUsize,
    /// Taken by the consumer and not yet granted back.
    consumed: AtomicUsize,
    /// The window granted to the peer so far (only grows).
    window: AtomicUsize,
    /// Taken by the consumer since the window last grew.
    since_growth: AtomicUsize,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow {
            outstanding: AtomicUsize::new(0),
            consumed: AtomicUsize::new(0),
            window: AtomicUsize::new(WINDOW),
            since_growth: AtomicUsize::new(0),
        }
    }
}

impl RecvWindow {
    /// A frame of `cost` body bytes arrived for the consumer.
    pub fn received(&self, cost: usize) -> Result<(), Overrun> {
        let outstanding = self.outstanding.fetch_add(cost, Ordering::AcqRel) + cost;
        let limit = self.window.load(Ordering::Acquire) + MAX_FRAME;
        if outstanding > limit {
            return Err(Overrun(outstanding - limit));
        }
        Ok(())
    }

    /// The consumer took a frame of `cost` body bytes; `starved` says it
    /// had to wait for it (nothing was queued). Returns the credit to grant
    /// back now, if enough has gathered (half the window, as HTTP/2
    /// implementations do) or the window grew. One consumer per stream.
    pub fn consumed(&self, cost: usize, starved: bool) -> Option<u32> {
        let mut extra = 0;
        let since = self.since_growth.fetch_add(cost, Ordering::AcqRel) + cost;
        let w = self.window.load(Ordering::Acquire);
        if starved && since >= w {
            self.since_growth.store(0, Ordering::Release);
            if w < MAX_WINDOW {
                // Grown before the credit for it goes out, so `received`
                // never sees the peer use credit it was not yet allowed.
                let grown = (w * 2).min(MAX_WINDOW);
                self.window.store(grown, Ordering::Release);
                extra = grown - w;
            }
        }
        let consumed = self.consumed.fetch_add(cost, Ordering::AcqRel) + cost;
        if consumed < self.window.load(Ordering::Acquire) / 2 && extra == 0 {
            return None;
        }
        let back = consumed.min(u32::MAX as usize - extra);
        self.consumed.fetch_sub(back, Ordering::AcqRel);
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_sub(back))
            });
        Some((back + extra) as u32)
    }

    /// The window granted to the peer so far.
    pub fn window(&self) -> usize {
        self.window.load(Ordering::Acquire)
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
        assert_eq!(r.consumed(CHUNK_ISH / 2, false), None);
        assert_eq!(r.consumed(CHUNK_ISH, false), None);
        assert_eq!(
            r.consumed(CHUNK_ISH, false),
            Some((CHUNK_ISH * 5 / 2) as u32)
        );
        // A consumer that waits for data after a window's worth grows the
        // window: the extra credit goes out at once.
        let rest = WINDOW - CHUNK_ISH * 5 / 2 - 1;
        assert_eq!(r.consumed(rest, true), None);
        assert_eq!(r.window(), WINDOW);
        assert_eq!(r.consumed(10, true), Some((rest + 10 + WINDOW) as u32));
        assert_eq!(r.window(), 2 * WINDOW);
        // Waiting early in a stream does not grow it.
        assert_eq!(r.consumed(1, true), None);
        assert_eq!(r.window(), 2 * WINDOW);
        for _ in 0..10 {
            r.consumed(MAX_WINDOW, true);
        }
        assert_eq!(r.window(), MAX_WINDOW);
        // A stalled consumer's window stays where it is.
        let r = RecvWindow::default();
        for _ in 0..3 {
            r.received(CHUNK_ISH).unwrap();
        }
        assert_eq!(r.window(), WINDOW);
        // A peer that ignores the window is caught.
        let r = RecvWindow::default();
        r.received(WINDOW + MAX_FRAME).unwrap();
        assert_eq!(r.received(1), Err(Overrun(1)));
    }

    const CHUNK_ISH: usize = 60_000;
}
