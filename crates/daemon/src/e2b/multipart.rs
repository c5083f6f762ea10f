//! A small `multipart/form-data` parser (RFC 7578) for envd's uploads: the
//! body is already bounded and in memory.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("no multipart boundary in the content type")]
    NoBoundary,
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: Option<String>,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut it = content_type.split(';');
    let base = it.next().unwrap_or("").trim();
    if !base.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NoBoundary);
    }
    for p in it {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let v = v.trim().trim_matches('"');
                if !v.is_empty() && v.len() <= 200 {
                    return Ok(v.to_string());
                }
            }
        }
    }
    Err(MultipartError::NoBoundary)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// A `name="value"` parameter of a Content-Disposition header.
fn param(header: &str, key: &str) -> Option<String> {
    for p in header.split(';').skip(1) {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
        }
    }
    None
}

/// Split a body into its parts.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos =
        find(body, delim, 0).ok_or(MultipartError::Malformed("no first boundary"))? + delim.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(MultipartError::Malformed("boundary not followed by CRLF"));
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos)
            .ok_or(MultipartError::Malformed("unterminated headers"))?;
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let data_start = head_end + 4;
        let mut next_delim = Vec::with_capacity(delim.len() + 2);
        next_delim.extend_from_slice(b"\r\n");
        next_delim.extend_from_slice(delim);
        let data_end = find(body, &next_delim, data_start)
            .ok_or(MultipartError::Malformed("part without a closing boundary"))?;
        let mut part = Part {
            name: None,
            filename: None,
            data: body[data_start..data_end].to_vec(),
        };
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    part.name = param(v, "name");
                    part.filename = param(v, "filename");
                }
            }
        }
        parts.push(part);
        pos = data_end + next_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_httpx_sends() {
        let b = "----abc";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\nworld\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\n\r\n--{b}--\r\n"
        );
        let parts = parse(body.as_bytes(), b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name.as_deref(), Some("file"));
        assert_eq!(parts[0].filename.as_deref(), Some("/tmp/a.txt"));
        assert_eq!(parts[0].data, b"hello\r\nworld");
        assert_eq!(parts[1].data, b"");
    }

    #[test]
    fn boundaries_and_malformed_bodies() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"x y\"").unwrap(),
            "x y"
        );
        assert_eq!(boundary("text/plain"), Err(MultipartError::NoBoundary));
        assert!(parse(b"garbage", "x").is_err());
        assert!(parse(b"--x\r\nContent-Disposition: form-data\r\n\r\nno end", "x").is_err());
    }
}
