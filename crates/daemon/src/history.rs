//! Session histories as the model sees them, kept decoded between turns so
//! a turn does not re-read and re-parse its whole session from the store.
//! An entry is used only while the store has no message newer than the
//! entry's last one, so a write made anywhere else (a seeded history, a
//! compaction, a crash between a turn's two commits) is never hidden.
//! A turn takes its session's entry out and puts the grown history back:
//! one turn runs in a session at a time, and nothing is copied.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use ironclaw_agent::{Block, Message};
use ironclaw_store::Store;

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
    /// The newest message id in `history`.
    last_id: i64,
    history: History,
    bytes: usize,
    used: Instant,
}

impl Histories {
    /// The session's history: summarised messages are left out (their
    /// summary stands in for them). Taken out of the cache: give it back
    /// with [`Histories::keep`] once the turn has stored what it added.
    pub fn load(&self, store: &Store, session_id: &str) -> Result<History, ApiError> {
        let cached = self.lock().remove(session_id);
        if let Some(e) = cached {
            if store.messages_after(session_id, e.last_id)? == 0 {
                return Ok(e.history);
            }
        }
        read(store, session_id)
    }

    /// Keep `history` as the session's, if it is what the store holds now:
    /// it was loaded when the store's newest message was `loaded_last`, and
    /// every message stored since is one of its own.
    pub fn keep(&self, store: &Store, session_id: &str, loaded_last: i64, history: History) {
        let own = history.0.iter().filter(|&&id| id > loaded_last).count() as u64;
        let Ok(newer) = store.messages_after(session_id, loaded_last) else {
            return;
        };
        let bytes = text_bytes(&history.1);
        if newer != own || bytes > MAX_SESSION_BYTES {
            return;
        }
        let last_id = Self::last_id(&history);
        let mut entries = self.lock();
        entries.remove(session_id);
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
                last_id,
                history,
                bytes,
                used: Instant::now(),
            },
        );
    }

    /// The newest message id of a loaded history (0 for an empty one).
    pub fn last_id(history: &History) -> i64 {
        history.0.iter().copied().max().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(store: &Store, session_id: &str) -> Result<History, ApiError> {
    let rows = store.messages(session_id)?;
    // A summary is stored after the turn that made it, but it stands where
    // the first message it covers stood (a compacted history is summary
    // first, then the turns kept): its place is that message's, through
    // any earlier summary it covers in turn. Rows come in id order and a
    // summary is always newer than what it covers, so one pass settles it.
    let mut place: HashMap<i64, i64> = HashMap::new();
    for m in &rows {
        let p = *place.entry(m.id).or_insert(m.id);
        if let Some(s) = m.summarized_by {
            let sp = place.entry(s).or_insert(s);
            *sp = (*sp).min(p);
        }
    }
    let mut live = Vec::new();
    for m in rows {
        if m.summarized_by.is_some() {
            continue;
        }
        let msg: Message =
            serde_json::from_value(serde_json::json!({"role": m.role, "content": m.content}))
                .map_err(|e| {
                    ApiError::Internal(format!("stored message {} is unreadable: {e}", m.id))
                })?;
        live.push((place[&m.id], m.id, msg));
    }
    live.sort_by_key(|(p, _, _)| *p);
    Ok(live.into_iter().map(|(_, id, m)| (id, m)).unzip())
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
        h.keep(&store, "s", 0, kept);
        assert_eq!(h.load(&store, "s").unwrap().1[0].text(), "kept copy");
        // Taken out by the load; not given back: read from the store.
        assert_eq!(h.load(&store, "s").unwrap().1[0].text(), "first");

        // Another writer adds a message: the store's version wins.
        store
            .append_messages("s", &[row(&Message::user("second"))])
            .unwrap();
        let (ids2, msgs) = h.load(&store, "s").unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
            ["first", "second"]
        );

        // A kept history while another writer added a message since it
        // was loaded: not kept.
        let loaded_last = Histories::last_id(&(ids2.clone(), vec![]));
        let third = store
            .append_messages("s", &[row(&Message::user("third"))])
            .unwrap();
        let mine = store
            .append_messages("s", &[row(&Message::user("mine"))])
            .unwrap();
        let mut stale = (ids2.clone(), msgs.clone());
        stale.0.extend(&mine);
        stale.1.push(Message::user("mine"));
        h.keep(&store, "s", loaded_last, stale);
        assert_eq!(h.load(&store, "s").unwrap().1.len(), 4);
        // Kept when every newer message is its own.
        let (mut all_ids, mut all) = h.load(&store, "s").unwrap();
        let last = Histories::last_id(&(all_ids.clone(), vec![]));
        let fifth = store
            .append_messages("s", &[row(&Message::user("fifth"))])
            .unwrap();
        all_ids.extend(&fifth);
        all.push(Message::user("fifth (kept copy)"));
        h.keep(&store, "s", last, (all_ids, all));
        assert_eq!(
            h.load(&store, "s").unwrap().1[4].text(),
            "fifth (kept copy)"
        );

        // A compaction summarises the first two: they drop out, and the
        // summary stands where they stood; a second compaction covering
        // that summary and the next message stands there too.
        let (ids5, _) = h.load(&store, "s").unwrap();
        store
            .record_summary("s", row(&Message::user("summary")), &ids5[..2])
            .unwrap();
        let (ids6, msgs) = h.load(&store, "s").unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
            ["summary", "third", "mine", "fifth"]
        );
        assert_eq!(&ids6[1..], &[third[0], mine[0], fifth[0]]);
        store
            .record_summary("s", row(&Message::user("summary 2")), &ids6[..2])
            .unwrap();
        let (_, msgs) = h.load(&store, "s").unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.text()).collect::<Vec<_>>(),
            ["summary 2", "mine", "fifth"]
        );
    }
}
