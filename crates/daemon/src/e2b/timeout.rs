//! E2B sandbox timeouts: at its end time (kept in the store, so it holds
//! across daemon restarts) a sandbox is removed, or stopped when it was
//! created with `autoPause`.

use std::sync::Arc;
use std::time::Duration;

use super::control::{now_secs, NEVER};
use super::E2b;
use crate::manager::Manager;

/// How often end times are checked.
const TICK: Duration = Duration::from_millis(500);

/// End every sandbox whose time is up; returns how many.
pub async fn reap(manager: &Arc<Manager>, e2b: &E2b) -> usize {
    let due = match manager.store.e2b_due(now_secs()) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("e2b timeouts: {e}");
            return 0;
        }
    };
    let mut n = 0;
    for rec in due {
        e2b.forget_sandbox(&rec.sandbox_id);
        let r = if rec.on_timeout == "pause" {
            let r = manager.stop(&rec.sandbox_id).await.map(|_| ());
            let _ = manager.store.set_e2b_end(&rec.sandbox_id, NEVER);
            r
        } else {
            manager.remove(&rec.sandbox_id).await
        };
        match r {
            Ok(()) => {
                n += 1;
                tracing::info!(sandbox = %rec.e2b_id, action = %rec.on_timeout, "e2b sandbox timed out");
            }
            Err(e) => tracing::warn!(sandbox = %rec.e2b_id, "e2b timeout: {e}"),
        }
    }
    n
}

pub fn spawn(manager: Arc<Manager>, e2b: Arc<E2b>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            reap(&manager, &e2b).await;
        }
    });
}
