//! Splitting a reply at a channel's limit (in characters, as the services
//! count them), preferring paragraph, then line, then word boundaries, and
//! keeping fenced code blocks intact across parts (a part that cuts one
//! closes it, the next reopens it).

/// `text` in parts of at most `limit` characters (`limit` >= 16).
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(16);
    let mut parts = Vec::new();
    let mut rest: &str = text.trim_end();
    // A part cut inside a ``` fence: the fence's opening line, to reopen.
    let mut reopen: Option<String> = None;
    while !rest.is_empty() {
        let prefix = reopen.take().map(|f| format!("{f}\n")).unwrap_or_default();
        // Room for the reopened fence and a closing "\n```".
        let room = limit.saturating_sub(prefix.chars().count() + 4).max(8);
        let (head, tail) = if rest.chars().count() + prefix.chars().count() <= limit {
            (rest, "")
        } else {
            cut(rest, room)
        };
        let mut part = format!("{prefix}{head}");
        if let Some(fence) = open_fence(&part) {
            if !tail.is_empty() {
                part.push_str("\n```");
                reopen = Some(fence);
            }
        }
        let part = part.trim_end().to_string();
        if !part.trim().is_empty() {
            parts.push(part);
        }
        rest = tail.trim_start_matches('\n');
    }
    if parts.is_empty() {
        parts.push(String::new());
    }
    parts
}

/// The first `room` characters of `s`, cut at the best boundary, and the rest.
fn cut(s: &str, room: usize) -> (&str, &str) {
    let end = s
        .char_indices()
        .nth(room)
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let window = &s[..end];
    // A boundary in the second half of the window, best kind first.
    let half = window.len() / 2;
    for sep in ["\n\n", "\n", " "] {
        if let Some(i) = window.rfind(sep) {
            if i >= half {
                return (&s[..i], &s[i + sep.len()..]);
            }
        }
    }
    (window, &s[end..])
}

/// When `s` ends inside a fenced code block, that block's opening line.
fn open_fence(s: &str) -> Option<String> {
    let mut open: Option<String> = None;
    for line in s.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            open = match open {
                Some(_) => None,
                None => Some(t.to_string()),
            };
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 4096), vec!["hello"]);
    }

    #[test]
    fn parts_fit_and_keep_every_word() {
        let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        for limit in [2000, 4096] {
            let parts = split(&text, limit);
            assert!(parts.len() > 1);
            assert!(parts.iter().all(|p| p.chars().count() <= limit));
            let joined: Vec<String> = parts
                .iter()
                .flat_map(|p| p.split_whitespace().map(String::from))
                .collect();
            assert_eq!(joined, words);
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = "ä".repeat(5000);
        let parts = split(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn fenced_code_is_closed_and_reopened() {
        let code: Vec<String> = (0..400).map(|i| format!("line {i}")).collect();
        let text = format!("intro\n```rust\n{}\n```\nend", code.join("\n"));
        let parts = split(&text, 2000);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.chars().count() <= 2000, "{}", p.len());
            assert_eq!(p.matches("```").count() % 2, 0, "balanced fences: {p}");
        }
        assert!(parts[1].starts_with("```rust\n"));
    }
}
