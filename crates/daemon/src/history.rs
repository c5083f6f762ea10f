//! Session histories as the model sees them, kept decoded between turns so
//! a turn does not re-read and re-parse its whole session from the store.
//! An entry is used only while the store's stamp of the session (its last
//! message id, how many messages are not summarised) still matches, so a
//! write made anywhere else (a seeded history, a deleted session, a crash
//! between a turn's two commits) is never hidden.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use ironclaw_agent::{Block, Message};
use ironclaw_store::{HistoryStamp, Store};

use crate::error::ApiError;

/// Sessions kept, and their text in all; the least recently used goes first.
const MAX_SESSIONS: usize = 256;
const MAX_BYTES: usize = 64 << 20;
/// A history larger than this is read from the store each turn.
const MAX_SESSION_BYTES: usize = 8 << 20;

/// A history: the store ids of its messages, and the messages.
pub type History = (Vec<i64>, Vec<Message>);

#[derive(Default)]
pub struct Histories {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    stamp: HistoryStamp,
    history: History,
    bytes: usize,
    used: Instant,
}

impl Histories {
    /// The session's history: summarised messages are left out (their
    /// summary stands in for them).
    pub fn load(&self, store: &Store, session_id: &str) -> Result<History, ApiError> {
        let stamp = store.history_stamp(session_id)?;
        if let Some(e) = self.lock().get_mut(session_id) {
            if e.stamp == stamp {
                e.used = Instant::now();
                return Ok(e.history.clone());
            }
        }
        read(store, session_id)
    }

    /// Keep `history` as the session's, if it is what the store holds now.
    pub fn keep(&self, store: &Store, session_id: &str, history: History) {
        let Ok(stamp) = store.history_stamp(session_id) else {
            return;
        };
        let matches = stamp.live == history.0.len() as u64
            && stamp.last_id == history.0.last().copied().unwrap_or(0);
        let bytes = text_bytes(&history.1);
        let mut entries = self.lock();
        entries.remove(session_id);
        if !matches || bytes > MAX_SESSION_BYTES {
            return;
        }
        let mut total: usize = entries.values().map(|e| e.bytes).sum::<usize>() + bytes;
        while !entries.is_empty() && (entries.len() >= MAX_SESSIONS || total > MAX_BYTES) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, e)| (k.clone(), e.bytes));
            if let Some((k, b)) = oldest {
                entries.remove(&k);
                total -= b;
            }
        }
        entries.insert(
            session_id.to_string(),
            Entry {
                stamp,
                history,
                bytes,
                used: Instant::now(),
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(store: &Store, session_id: &str) -> Result<History, ApiError> {
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for m in store.messages(session_id)? {
        if m.summarized_by.is_some() {
            continue;
        }
        let msg: Message =
            serde_json::from_value(serde_json::json!({"role": m.role, "content": m.content}))
                .map_err(|e| {
                    ApiError::Internal(format!("stored message {} is unreadable: {e}", m.id))
                })?;
        ids.push(m.id);
        msgs.push(msg);
    }
    Ok((ids, msgs))
}

/// About how much memory a history's text takes.
fn text_bytes(msgs: &[Message]) -> usize {
    msgs.iter()
        .flat_map(|m| &m.content)
        .map(|b| match b {
            Block::Text { text } => text.len(),
            // Its input is a JSON tree; measuring it would cost a serialisation.
            Block::ToolUse { name, .. } => name.len() + 256,
            Block::ToolResult { content, .. } => content.len(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(m: &Message) -> (String, serde_json::Value) {
        let mut v = serde_json::to_value(m).unwrap();
        (v["role"].as_str().unwrap().to_string(), v["content"].take())
    }

    #[test]
    fn a_kept_history_is_used_only_while_the_store_agrees() {
        let store = Store::open_in_memory().unwrap();
        store.add_user("u", false).unwrap();
        store.create_session("s", "u", "default").unwrap();
        let first = Message::user("first");
        let ids = store.append_messages("s", &[row(&first)]).unwrap();
        let h = Histories::default();
        let (got_ids, got) = h.load(&store, "s").unwrap();
        assert_eq!((got_ids.clone(), got.len()), (ids.clone(), 1));

        // Kept as the store holds it: used as it is.
        let mut kept = (got_ids, got);
        kept.1[0] = Message::user("kept copy");
        h.keep(&store, "s", kept);
        assert_eq!(h.load(&store, "s").unwrap().1[0].text(), "kept copy");

        // Another writer adds a message: the store's version wins.
        store
            .append_messages("s", &[row(&Message::user("second"))])
            .unwrap();
        let (ids2, msgs) = h.load(&store, "s").unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
            ["first", "second"]
        );

        // A compaction summarises the first: it drops out.
        store
            .record_summary("s", row(&Message::user("summary")), &ids2[..1])
            .unwrap();
        let (_, msgs) = h.load(&store, "s").unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
            ["second", "summary"]
        );

        // A history that is not what the store holds is not kept.
        h.keep(&store, "s", (vec![1], vec![Message::user("stale")]));
        assert_ne!(h.load(&store, "s").unwrap().1[0].text(), "stale");
    }
}
