//! The HTTP client channels share, and how its failures classify.

use std::time::Duration;

use crate::SendError;

/// A client with a connect timeout and an overall one (long polls pass
/// their own, longer, per request).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// A send that failed below HTTP: before the request went out it is
/// certainly not delivered; after, nobody knows.
pub fn classify(e: &reqwest::Error) -> SendError {
    if e.is_connect() || e.is_builder() {
        SendError::Transient(e.to_string())
    } else {
        SendError::Ambiguous(e.to_string())
    }
}

/// `Retry-After` in seconds (the only form these services send).
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

/// HMAC-SHA256 of `data` under `key`, lowercase hex.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex(ring::hmac::sign(&k, data).as_ref())
}

/// Constant-time check of a hex HMAC-SHA256.
pub fn hmac_verify(key: &[u8], data: &[u8], hex_sig: &str) -> bool {
    let Some(sig) = unhex(hex_sig) else {
        return false;
    };
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, data, &sig).is_ok()
}

/// Equal, in time independent of where `a` and `b` differ (a shared
/// secret compared with what a request carries).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A backoff that doubles from `base` up to `max`, reset on success.
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            next: base,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.base;
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}
