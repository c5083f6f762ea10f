//! The scheduler loop: sleep until the earliest due slot (or until tasks
//! change), claim each due slot in the store, then run it.
//!
//! Exactly once per slot: the claim (run row inserted under UNIQUE
//! (task, slot), `next_slot` advanced, one transaction) happens before the
//! turn starts. A daemon that dies mid-run leaves the row `running`; the
//! next start marks it failed and never runs that slot again. Slots that
//! passed while the daemon was down collapse into one catch-up run at
//! start (`[tasks] missed = "run"`), or are skipped (`"skip"`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironclaw_store::TaskRecord;
use tokio::sync::Semaphore;

use super::schedule::Schedule;
use super::{unix_now, Missed, Tasks};
use crate::chat::Chat;

pub const INTERRUPTED: &str = "interrupted by a daemon restart";

/// Start the scheduler: settle what the last daemon left, then loop.
pub fn spawn(tasks: Arc<Tasks>, chat: Arc<Chat>) -> anyhow::Result<()> {
    let failed = tasks.store.fail_running_runs(INTERRUPTED)?;
    if failed > 0 {
        tracing::warn!(
            "{failed} task run(s) were interrupted by the last daemon stop; marked failed"
        );
    }
    if tasks.config.missed == Missed::Skip {
        let now = unix_now();
        for t in tasks.store.due_tasks(now)? {
            if let (Some(slot), Ok(s)) = (t.next_slot, schedule_of(&t)) {
                tasks
                    .store
                    .skip_slot(&t.id, slot, s.next_after(slot, now))?;
            }
        }
    }
    let permits = Arc::new(Semaphore::new(tasks.config.max_concurrent_runs.max(1)));
    tokio::spawn(async move {
        loop {
            let claimed = claim_due(&tasks, &chat, &permits);
            if let Err(e) = &claimed {
                tracing::error!("scheduled tasks: {e}");
            }
            let wait = match (claimed, tasks.store.earliest_slot()) {
                (Ok(()), Ok(Some(slot))) => until(slot),
                (Ok(()), Ok(None)) => Duration::from_secs(24 * 3600),
                // A database error: try again soon rather than spin on a
                // slot that stays due.
                _ => Duration::from_secs(5),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tasks.wake.notified() => {}
            }
        }
    });
    Ok(())
}

fn schedule_of(t: &TaskRecord) -> Result<Schedule, String> {
    Schedule::from_stored(&t.kind, &t.spec, t.tz.as_deref())
}

/// Time from now to the start of second `slot`.
fn until(slot: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(slot.max(0) as u64).saturating_sub(now)
}

/// Claim every due slot and start its run.
fn claim_due(
    tasks: &Arc<Tasks>,
    chat: &Arc<Chat>,
    permits: &Arc<Semaphore>,
) -> Result<(), ironclaw_store::StoreError> {
    let now = unix_now();
    for t in tasks.store.due_tasks(now)? {
        let Some(slot) = t.next_slot else { continue };
        let next = match schedule_of(&t) {
            Ok(s) => s.next_after(slot, now),
            Err(e) => {
                tracing::error!(task = %t.id, "unreadable schedule, task stopped: {e}");
                tasks.store.skip_slot(&t.id, slot, None)?;
                continue;
            }
        };
        let Some(run_id) = tasks.store.claim_run(&t.id, slot, next)? else {
            continue;
        };
        let stop = tokio_util::sync::CancellationToken::new();
        tasks
            .running
            .lock()
            .unwrap()
            .insert(run_id, (t.id.clone(), stop.clone()));
        let (tasks, chat, permits) = (tasks.clone(), chat.clone(), permits.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            tracing::info!(task = %t.id, owner = %t.owner, slot, "running scheduled task");
            let key = format!("task:{}:{run_id}", t.id);
            let (result, messages) = chat.task_turn(&t.owner, &t.prompt, &key, stop).await;
            tasks.running.lock().unwrap().remove(&run_id);
            let messages = serde_json::to_value(&messages).ok();
            let r = match &result {
                Ok(text) => Ok(text.as_str()),
                Err(e) => Err(e.as_str()),
            };
            // The result goes to the chat the task came from in the same
            // transaction as the run record: posted once, or not at all.
            let post = t
                .deliver_to
                .as_ref()
                .and_then(|to| post_parts(&tasks, &t.name, to, r));
            let parts: Vec<_> = post
                .iter()
                .flat_map(|(to, texts)| {
                    texts.iter().map(|text| ironclaw_store::NewPart {
                        chat: &to.chat,
                        thread: to.thread.as_deref(),
                        text,
                    })
                })
                .collect();
            let post = post
                .as_ref()
                .map(|(to, _)| (to.channel.as_str(), parts.as_slice()));
            match tasks.store.finish_run(run_id, r, messages.as_ref(), post) {
                Ok(false) if post.is_some() => tracing::warn!(
                    task = %t.id, "the task's channel is gone: its result is only in the run record"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(task = %t.id, "recording a run: {e}"),
            }
        });
    }
    Ok(())
}

/// The message a run posts to the chat its task came from, split at the
/// channel's limit; None when the channel is gone or of an unknown kind.
fn post_parts<'a>(
    tasks: &Tasks,
    name: &str,
    to: &'a ironclaw_store::TaskDelivery,
    result: Result<&str, &str>,
) -> Option<(&'a ironclaw_store::TaskDelivery, Vec<String>)> {
    let channel = tasks.store.channel(&to.channel).ok()?;
    let kind = ironclaw_channels::Kind::parse(&channel.kind)?;
    let text = match result {
        Ok(answer) if answer.trim().is_empty() => format!("Task {name}: (no answer)"),
        Ok(answer) => format!("Task {name}:\n{answer}"),
        Err(why) => format!("Task {name} failed: {why}"),
    };
    Some((to, ironclaw_channels::split(&text, kind.limit())))
}
