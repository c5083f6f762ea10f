//! Markdown (as models write it) converted to each channel's format, and
//! to plain text for the retry after a service rejected the formatting.

/// A channel's message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Sent as written (Discord, the generic webhook).
    Markdown,
    /// Telegram's `parse_mode: HTML` subset.
    TelegramHtml,
    /// Slack's mrkdwn (`*bold*`, `_italic_`, `<url|text>`).
    SlackMrkdwn,
}

/// Render Markdown `text` for `format`.
pub fn render(text: &str, format: Format) -> String {
    match format {
        Format::Markdown => text.to_string(),
        Format::TelegramHtml => to_html(text),
        Format::SlackMrkdwn => to_mrkdwn(text),
    }
}

/// Markdown reduced to plain text: markers dropped, links as `text (url)`.
pub fn plain(text: &str) -> String {
    let mut out = String::new();
    for seg in segments(text) {
        match seg {
            Seg::Code(c) | Seg::Pre(c) => out.push_str(&c),
            Seg::Text(t) => inline(&t, &mut out, false),
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

enum Seg {
    Text(String),
    /// Inline `code`.
    Code(String),
    /// A fenced block (its body).
    Pre(String),
}

/// Split off code (fenced and inline), which is never formatted inside.
fn segments(text: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix("```") {
            // Skip the language tag line.
            let start = body.find('\n').map(|i| i + 1).unwrap_or(body.len());
            let inner = &body[start..];
            let (code, after) = match inner.find("```") {
                Some(e) => (&inner[..e], &inner[e + 3..]),
                None => (inner, ""),
            };
            segs.push(Seg::Pre(code.trim_end_matches('\n').to_string()));
            rest = after.strip_prefix('\n').unwrap_or(after);
            continue;
        }
        if let Some(body) = rest.strip_prefix('`') {
            if let Some(e) = body.find('`') {
                segs.push(Seg::Code(body[..e].to_string()));
                rest = &body[e + 1..];
                continue;
            }
        }
        // Plain text up to the next backtick.
        let next = rest[1..].find('`').map(|i| i + 1).unwrap_or(rest.len());
        segs.push(Seg::Text(rest[..next].to_string()));
        rest = &rest[next..];
    }
    segs
}

fn to_html(text: &str) -> String {
    let mut out = String::new();
    for seg in segments(text) {
        match seg {
            Seg::Pre(c) => out.push_str(&format!("<pre>{}</pre>", escape(&c))),
            Seg::Code(c) => out.push_str(&format!("<code>{}</code>", escape(&c))),
            Seg::Text(t) => inline(&t, &mut out, true),
        }
    }
    out
}

fn to_mrkdwn(text: &str) -> String {
    let mut out = String::new();
    for seg in segments(text) {
        match seg {
            Seg::Pre(c) => out.push_str(&format!("```\n{}\n```", escape(&c))),
            Seg::Code(c) => out.push_str(&format!("`{}`", escape(&c))),
            Seg::Text(t) => {
                let mut html = String::new();
                inline(&t, &mut html, true);
                // The HTML of `inline` mapped to mrkdwn (text is escaped, so
                // these tags are the only '<' left).
                let mut s = html
                    .replace("<b>", "*")
                    .replace("</b>", "*")
                    .replace("<i>", "_")
                    .replace("</i>", "_");
                while let Some(i) = s.find("<a href=\"") {
                    let rest = &s[i + 9..];
                    let Some(q) = rest.find("\">") else { break };
                    let url = rest[..q].replace("&quot;", "\"");
                    let after = &rest[q + 2..];
                    let Some(e) = after.find("</a>") else { break };
                    let label = after[..e].to_string();
                    let tail = after[e + 4..].to_string();
                    s = format!("{}<{url}|{label}>{tail}", &s[..i]);
                }
                out.push_str(&s);
            }
        }
    }
    out
}

/// Bold (`**x**`), italic (`*x*`, `_x_`) and links (`[t](u)`), as HTML or
/// as plain text.
fn inline(t: &str, out: &mut String, html: bool) {
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("**") {
            if let Some(e) = r.find("**").filter(|&e| e > 0) {
                wrap(out, html, "b", &r[..e]);
                rest = &r[e + 2..];
                continue;
            }
        }
        if c == '*' || c == '_' {
            let r = &rest[1..];
            let closes = r
                .find(c)
                .filter(|&e| e > 0 && !r[..e].contains('\n') && !r.starts_with(' '));
            if let Some(e) = closes {
                wrap(out, html, "i", &r[..e]);
                rest = &r[e + 1..];
                continue;
            }
        }
        if c == '[' {
            if let Some((label, url, after)) = link(rest) {
                if html {
                    out.push_str(&format!(
                        "<a href=\"{}\">{}</a>",
                        escape(url).replace('"', "&quot;"),
                        escape(label)
                    ));
                } else {
                    out.push_str(&format!("{label} ({url})"));
                }
                rest = after;
                continue;
            }
        }
        let s = &rest[..c.len_utf8()];
        out.push_str(&if html { escape(s) } else { s.to_string() });
        rest = &rest[c.len_utf8()..];
    }
}

fn wrap(out: &mut String, html: bool, tag: &str, inner: &str) {
    if html {
        out.push_str(&format!("<{tag}>{}</{tag}>", escape(inner)));
    } else {
        out.push_str(inner);
    }
}

/// `[label](url)` at the start of `s`: label, url, the rest.
fn link(s: &str) -> Option<(&str, &str, &str)> {
    let close = s.find("](")?;
    let label = &s[1..close];
    if label.contains('\n') {
        return None;
    }
    let r = &s[close + 2..];
    let end = r.find(')')?;
    let url = &r[..end];
    if url.contains(char::is_whitespace) {
        return None;
    }
    Some((label, url, &r[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html() {
        assert_eq!(
            render(
                "**Done**: see `a<b` and [docs](https://x.y/?a=1&b=2) _now_",
                Format::TelegramHtml
            ),
            "<b>Done</b>: see <code>a&lt;b</code> and <a href=\"https://x.y/?a=1&amp;b=2\">docs</a> <i>now</i>"
        );
        assert_eq!(
            render("```sh\necho 1 > f\n```\nok", Format::TelegramHtml),
            "<pre>echo 1 &gt; f</pre>ok"
        );
        // Unbalanced markers stay literal.
        assert_eq!(
            render("2 * 3 = 6 & x", Format::TelegramHtml),
            "2 * 3 = 6 &amp; x"
        );
    }

    #[test]
    fn slack_mrkdwn() {
        assert_eq!(
            render(
                "**Done** _now_: [docs](https://x.y) `a<b` & more",
                Format::SlackMrkdwn
            ),
            "*Done* _now_: <https://x.y|docs> `a&lt;b` &amp; more"
        );
    }

    #[test]
    fn plain_text() {
        assert_eq!(
            plain("**Done**: `x` [docs](https://x.y)"),
            "Done: x docs (https://x.y)"
        );
    }
}
