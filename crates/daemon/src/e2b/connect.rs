//! The Connect protocol (connectrpc.com/docs/protocol) with JSON encoding,
//! as envd speaks it: unary calls (plain JSON bodies, errors as a JSON body
//! with an HTTP status) and streams (each message in an envelope: one flags
//! byte, a 4-byte big-endian length, the JSON; the last envelope has flag
//! 0x02 and carries the end-of-stream message with the error, if any).

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

/// Largest message accepted in a request.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Envelope flag of the end-of-stream message.
pub const END_STREAM: u8 = 0x02;
/// Envelope flag of a compressed message (never used here).
pub const COMPRESSED: u8 = 0x01;

/// Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }
}

/// A unary error: its status and the JSON error body.
impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (
            self.code.http_status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.json().to_string(),
        )
            .into_response()
    }
}

/// Map a guest agent error to its Connect code.
impl From<ironclaw_sandbox::AgentError> for ConnectError {
    fn from(e: ironclaw_sandbox::AgentError) -> Self {
        use ironclaw_sandbox::types::ErrorKind as K;
        use ironclaw_sandbox::AgentError as A;
        let code = match &e {
            A::Guest { kind, .. } => match kind {
                K::NotFound => Code::NotFound,
                K::AlreadyExists => Code::AlreadyExists,
                K::PermissionDenied => Code::PermissionDenied,
                K::InvalidInput | K::NotADirectory | K::IsADirectory => Code::InvalidArgument,
                K::DirectoryNotEmpty | K::Busy => Code::FailedPrecondition,
                K::ResourceExhausted => Code::ResourceExhausted,
                K::Unsupported => Code::Unimplemented,
                K::Other => Code::Internal,
            },
            A::TooLarge(_) => Code::InvalidArgument,
            A::Connect(_) | A::Closed | A::Timeout(_) | A::Handshake(_) => Code::Unavailable,
            A::Protocol(_) => Code::Internal,
        };
        ConnectError::new(code, e.to_string())
    }
}

/// One envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(flags);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.into()
}

/// The end-of-stream envelope, with the error if the call failed.
pub fn end_stream(err: Option<&ConnectError>) -> Bytes {
    let body = match err {
        Some(e) => serde_json::json!({"error": e.json()}),
        None => serde_json::json!({}),
    };
    envelope(END_STREAM, body.to_string().as_bytes())
}

/// Splits a byte stream into envelopes.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole envelope (flags, payload), if one is buffered.
    pub fn next_envelope(&mut self) -> Result<Option<(u8, Vec<u8>)>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("message of {len} bytes exceeds the limit of {MAX_MESSAGE}"),
            ));
        }
        if flags & COMPRESSED != 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "compressed messages are not supported",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((flags, payload)))
    }

    /// Bytes left over that do not form a whole envelope.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Is this a streaming call (`application/connect+json`)?
pub fn is_streaming(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/connect+"))
}

/// Refuse any encoding but JSON.
pub fn check_codec(headers: &HeaderMap) -> Result<(), ConnectError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/json" | "application/connect+json" => Ok(()),
        other => Err(ConnectError::new(
            Code::Unimplemented,
            format!("content type {other:?}: only the JSON codec is served"),
        )),
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ConnectError> {
    let payload: &[u8] = if payload.is_empty() { b"{}" } else { payload };
    serde_json::from_slice(payload).map_err(|e| ConnectError::invalid(format!("bad request: {e}")))
}

/// The one request message of a unary or server-streaming call.
pub async fn read_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ConnectError> {
    check_codec(headers)?;
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE + 5)
        .await
        .map_err(|e| ConnectError::invalid(format!("reading the request: {e}")))?;
    if !is_streaming(headers) {
        return parse(&bytes);
    }
    let mut d = Decoder::default();
    d.push(&bytes);
    match d.next_envelope()? {
        Some((_, payload)) if d.pending() == 0 => parse(&payload),
        Some(_) => Err(ConnectError::invalid("more than one request message")),
        None => Err(ConnectError::invalid("truncated request envelope")),
    }
}

/// The messages of a client-streaming call, as they arrive.
pub fn request_stream<T: DeserializeOwned + Send + 'static>(
    body: Body,
) -> impl Stream<Item = Result<T, ConnectError>> + Send {
    let data = body.into_data_stream();
    futures::stream::unfold(
        (data, Decoder::default(), false),
        |(mut data, mut d, mut ended)| async move {
            loop {
                if ended {
                    return None;
                }
                match d.next_envelope() {
                    Err(e) => {
                        ended = true;
                        return Some((Err(e), (data, d, ended)));
                    }
                    Ok(Some((flags, _))) if flags & END_STREAM != 0 => return None,
                    Ok(Some((_, payload))) => return Some((parse(&payload), (data, d, ended))),
                    Ok(None) => {}
                }
                match data.next().await {
                    Some(Ok(chunk)) => d.push(&chunk),
                    Some(Err(e)) => {
                        ended = true;
                        let e = ConnectError::new(Code::Canceled, format!("request body: {e}"));
                        return Some((Err(e), (data, d, ended)));
                    }
                    None if d.pending() == 0 => return None,
                    None => {
                        ended = true;
                        let e = ConnectError::invalid("truncated request envelope");
                        return Some((Err(e), (data, d, ended)));
                    }
                }
            }
        },
    )
}

/// A unary answer.
pub fn unary(msg: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        msg.to_string(),
    )
        .into_response()
}

/// A streaming answer: each message in an envelope, then the end of
/// stream (with the error that ended it, if one did).
pub fn streaming<S>(messages: S) -> Response
where
    S: Stream<Item = Result<serde_json::Value, ConnectError>> + Send + 'static,
{
    let body = futures::stream::unfold(
        (Box::pin(messages), false),
        |(mut messages, done)| async move {
            if done {
                return None;
            }
            let out = match messages.next().await {
                Some(Ok(m)) => (envelope(0, m.to_string().as_bytes()), false),
                Some(Err(e)) => (end_stream(Some(&e)), true),
                None => (end_stream(None), true),
            };
            Some((Ok::<_, std::convert::Infallible>(out.0), (messages, out.1)))
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/connect+json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// An error answer to a call of either kind: a streaming call gets it
/// in the end-of-stream message (HTTP 200), a unary one as a status.
pub fn error(streaming_call: bool, e: ConnectError) -> Response {
    if streaming_call {
        streaming(futures::stream::once(async move { Err(e) }))
    } else {
        e.into_response()
    }
}

/// Bytes as protobuf JSON writes them (standard base64, padded).
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Bytes from protobuf JSON: standard or URL-safe base64, padded or not.
pub fn unb64(s: &str) -> Result<Vec<u8>, ConnectError> {
    use base64::Engine;
    let t = s.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| ConnectError::invalid("bytes field is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_split_at_any_boundary() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&envelope(0, b"{\"a\":1}"));
        wire.extend_from_slice(&envelope(0, b""));
        wire.extend_from_slice(&end_stream(None));
        for cut in 0..wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.push(&wire[..cut]);
            while let Some(m) = d.next_envelope().unwrap() {
                got.push(m);
            }
            d.push(&wire[cut..]);
            while let Some(m) = d.next_envelope().unwrap() {
                got.push(m);
            }
            assert_eq!(
                got,
                vec![
                    (0, b"{\"a\":1}".to_vec()),
                    (0, vec![]),
                    (END_STREAM, b"{}".to_vec())
                ]
            );
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_envelope().unwrap_err().code, Code::ResourceExhausted);
        let mut d = Decoder::default();
        d.push(&envelope(COMPRESSED, b"x"));
        assert_eq!(d.next_envelope().unwrap_err().code, Code::Unimplemented);
    }

    #[test]
    fn end_of_stream_carries_the_error() {
        let e = ConnectError::new(Code::NotFound, "no such process");
        let env = end_stream(Some(&e));
        assert_eq!(env[0], END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&env[5..]).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no such process");
        assert_eq!(
            u32::from_be_bytes([env[1], env[2], env[3], env[4]]) as usize,
            env.len() - 5
        );
    }

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(unb64(&b64(b"hi\xff")).unwrap(), b"hi\xff");
        assert_eq!(unb64("aGk_").unwrap(), unb64("aGk/").unwrap());
        assert!(unb64("!!").is_err());
    }

    #[tokio::test]
    async fn requests_unary_and_enveloped() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct R {
            path: String,
        }
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let r: R = read_request(&h, Body::from("{\"path\":\"/x\"}"))
            .await
            .unwrap();
        assert_eq!(r.path, "/x");
        h.insert(
            header::CONTENT_TYPE,
            "application/connect+json".parse().unwrap(),
        );
        let r: R = read_request(&h, Body::from(envelope(0, b"{\"path\":\"/y\"}")))
            .await
            .unwrap();
        assert_eq!(r.path, "/y");
        let e = read_request::<R>(&h, Body::from(vec![0u8, 0, 0]))
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        h.insert(header::CONTENT_TYPE, "application/proto".parse().unwrap());
        let e = read_request::<R>(&h, Body::from("")).await.unwrap_err();
        assert_eq!(e.code, Code::Unimplemented);
    }

    #[tokio::test]
    async fn client_streams_end_at_the_end_of_stream_envelope() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&envelope(0, b"{\"n\":1}"));
        wire.extend_from_slice(&envelope(0, b"{\"n\":2}"));
        wire.extend_from_slice(&envelope(END_STREAM, b"{}"));
        let got: Vec<serde_json::Value> = request_stream(Body::from(wire))
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert_eq!(
            got,
            vec![serde_json::json!({"n":1}), serde_json::json!({"n":2})]
        );
    }
}
