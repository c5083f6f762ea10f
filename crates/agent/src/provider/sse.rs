//! Server-sent events, as the WHATWG spec parses them: `event:` and `data:`
//! fields, multi-line data joined with `\n`, comments (`:`), LF, CR or CRLF
//! line ends, and events split anywhere across network chunks.

use std::time::Duration;

use futures::{Stream, StreamExt};

use super::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; "message" when absent.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The stream's first bytes, for error messages about garbage.
    head: Vec<u8>,
}

const HEAD: usize = 300;

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A CR at the very end may be the first half of a CRLF:
                // wait for the next chunk to tell.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                if let Some(ev) = self.line(&line) {
                    out.push(ev);
                }
                i += if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            } else {
                i += 1;
            }
        }
        self.buf.drain(..start);
        out
    }

    /// End of stream: a last event not followed by a blank line still counts
    /// (servers that close right after `data: [DONE]` are common).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = std::mem::take(&mut self.buf);
        let mut last = None;
        if !rest.is_empty() {
            let line = String::from_utf8_lossy(&rest)
                .trim_end_matches('\r')
                .to_string();
            last = self.line(&line);
        }
        last.or_else(|| self.line(""))
    }

    /// The first bytes seen, for "this is not SSE" messages.
    pub fn head(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            let event = self.event.take().unwrap_or_else(|| "message".into());
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // id and retry matter for reconnecting EventSources, not here.
            _ => {}
        }
        None
    }
}

/// The events of an HTTP response body. Waits at most `idle` for each
/// chunk, so a provider that stalls mid-answer becomes an error instead of
/// a hung turn. A body that ends having produced no event at all is
/// reported with its first bytes, since that is what garbage looks like.
pub fn events(
    resp: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send + 'static {
    let body = resp.bytes_stream();
    futures::stream::unfold(
        (
            body.boxed(),
            SseParser::new(),
            std::collections::VecDeque::new(),
            false,
            0usize,
        ),
        move |(mut body, mut parser, mut queue, mut ended, mut seen)| async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    seen += 1;
                    return Some((Ok(ev), (body, parser, queue, ended, seen)));
                }
                if ended {
                    return None;
                }
                match tokio::time::timeout(idle, body.next()).await {
                    Err(_) => {
                        ended = true;
                        let e = ProviderError::Timeout {
                            timeout: idle,
                            attempts: 1,
                        };
                        return Some((Err(e), (body, parser, queue, ended, seen)));
                    }
                    Ok(Some(Ok(chunk))) => queue.extend(parser.push(&chunk)),
                    Ok(Some(Err(e))) => {
                        ended = true;
                        let e = ProviderError::Stream(e.to_string());
                        return Some((Err(e), (body, parser, queue, ended, seen)));
                    }
                    Ok(None) => {
                        ended = true;
                        queue.extend(parser.finish());
                        if queue.is_empty() && seen == 0 {
                            let e = ProviderError::Malformed(format!(
                                "no server-sent events in the response: {}",
                                super::excerpt(&parser.head())
                            ));
                            return Some((Err(e), (body, parser, queue, ended, seen)));
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let mut p = SseParser::new();
        let got = p.push(
            b": keep-alive\n\nevent: ping\ndata: {}\n\ndata: a\ndata:b\nid: 7\nretry: 10\n\ndata\n\n",
        );
        assert_eq!(
            got,
            vec![ev("ping", "{}"), ev("message", "a\nb"), ev("message", "")]
        );
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn handles_crlf_and_cr() {
        let mut p = SseParser::new();
        let got = p.push(b"event: x\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n");
        assert_eq!(
            got,
            vec![ev("x", "1"), ev("message", "2"), ev("message", "3")]
        );
    }

    #[test]
    fn events_split_at_every_byte() {
        let text =
            b"event: a\r\ndata: {\"x\": 1}\r\n\r\ndata: two\ndata: lines\n\n: c\n\ndata: last";
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in text.iter() {
            got.extend(p.push(&[*b]));
        }
        got.extend(p.finish());
        assert_eq!(
            got,
            vec![
                ev("a", "{\"x\": 1}"),
                ev("message", "two\nlines"),
                ev("message", "last")
            ]
        );
    }

    #[test]
    fn split_utf8_survives() {
        let text = "data: héllo ✓\n\n".as_bytes();
        let mut p = SseParser::new();
        let (a, b) = text.split_at(9); // inside the é
        assert!(p.push(a).is_empty());
        assert_eq!(p.push(b), vec![ev("message", "héllo ✓")]);
    }

    #[test]
    fn html_is_no_events() {
        let mut p = SseParser::new();
        assert!(p
            .push(b"<html><body>502 Bad Gateway</body></html>\n")
            .is_empty());
        assert_eq!(p.finish(), None);
        assert!(p.head().starts_with("<html>"));
    }
}
