//! The delivery worker of one channel: takes due parts from the durable
//! queue oldest first (a chat's parts in order), records `sending` before
//! calling the service, and decides from the classified failure: sent;
//! again later (Retry-After, or backoff for transient failures); again as
//! plain text (formatting rejected); failed (permanent, or out of
//! attempts); or unknown (ambiguous on a channel without idempotent sends:
//! never sent twice).

use std::sync::Arc;
use std::time::Duration;

use ironclaw_channels::{Outbound, SendError};
use ironclaw_store::OutboundRecord;

use super::runtime::{now_ms, Runtime};

/// Attempts before a part that keeps failing transiently is given up.
pub const MAX_ATTEMPTS: i64 = 8;

/// Backoff after the `attempt`th transient failure.
fn backoff(attempt: i64) -> Duration {
    let secs = 1u64 << (attempt.clamp(1, 7) - 1);
    Duration::from_secs(secs.min(60))
}

pub async fn run(rt: Arc<Runtime>) {
    match rt.store.reclaim_sending(&rt.name, rt.channel.idempotent()) {
        Ok(n @ 1..) => tracing::warn!(
            channel = %rt.name,
            "{n} part(s) were being sent when the daemon stopped: {}",
            if rt.channel.idempotent() { "retried with their idempotency key" } else { "marked unknown, not resent" }
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(channel = %rt.name, "reclaiming parts: {e}"),
    }
    loop {
        if rt.cancel.is_cancelled() {
            return;
        }
        match rt.store.next_due_outbound(&rt.name, now_ms()) {
            Ok(Some(part)) => {
                deliver(&rt, part).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(channel = %rt.name, "reading the queue: {e}"),
        }
        // Sleep until the next due part, a new one, or cancel.
        let wait = match rt.store.next_outbound_at(&rt.name) {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(10, 1000) as u64),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = rt.queued.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = rt.cancel.cancelled() => return,
        }
    }
}

async fn deliver(rt: &Runtime, part: OutboundRecord) {
    let store = &rt.store;
    let attempt = match store.mark_sending(part.id) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(channel = %rt.name, "marking part {} sending: {e}", part.id);
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    let msg = Outbound {
        chat: part.chat.clone(),
        thread: part.thread.clone(),
        text: part.text.clone(),
        key: format!("ic{}-{}", rt.name, part.id),
        plain: part.plain,
    };
    let res = rt.channel.send(&msg).await;
    let now = now_ms();
    let mark = |state: &str,
                outcome: &str,
                detail: Option<&str>,
                next: Option<i64>,
                plain: Option<bool>,
                remote: Option<&str>| {
        if let Err(e) = store.mark_outbound(
            part.id, attempt, state, outcome, detail, remote, next, plain,
        ) {
            tracing::error!(channel = %rt.name, "recording part {}: {e}", part.id);
        }
    };
    match res {
        Ok(remote) => mark("sent", "sent", None, None, None, Some(&remote)),
        Err(SendError::Format(e)) if !part.plain => mark(
            "queued",
            "formatting rejected: retrying as plain text",
            Some(&e),
            Some(now),
            Some(true),
            None,
        ),
        Err(SendError::RetryAfter(d, e)) => mark(
            "queued",
            &format!("rate limited: retry after {} ms", d.as_millis()),
            Some(&e),
            Some(now + d.as_millis() as i64),
            None,
            None,
        ),
        Err(SendError::Ambiguous(e)) if !rt.channel.idempotent() => mark(
            "unknown",
            "ambiguous: may have been delivered; not resent",
            Some(&e),
            None,
            None,
            None,
        ),
        Err(SendError::Transient(e) | SendError::Ambiguous(e)) if attempt < MAX_ATTEMPTS => mark(
            "queued",
            "transient: retrying",
            Some(&e),
            Some(now + backoff(attempt).as_millis() as i64),
            None,
            None,
        ),
        Err(e) => {
            let state = if matches!(e, SendError::Transient(_)) {
                "failed: out of attempts"
            } else {
                "failed"
            };
            tracing::warn!(channel = %rt.name, "part {} not delivered: {e}", part.id);
            mark("failed", state, Some(&e.to_string()), None, None, None)
        }
    }
}
