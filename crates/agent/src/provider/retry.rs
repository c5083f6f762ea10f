//! Retries with exponential backoff and jitter.
//!
//! A request is retried only until its stream has yielded a first event:
//! after that the user may have seen text, and replaying would duplicate
//! it. Peeking the first event (rather than stopping at the response
//! headers) also covers providers that answer 200 and then report
//! overload or stall inside the stream.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;

use super::{EventStream, ProviderError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    #[serde(with = "secs")]
    pub base_delay: Duration,
    #[serde(with = "secs")]
    pub max_delay: Duration,
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// From sending the request to the response's headers.
    #[serde(with = "secs")]
    pub response_timeout: Duration,
    /// Longest silence between two chunks of a stream. This, not a limit on
    /// the time to the first token, is what catches a dead stream: a
    /// reasoning model may think for minutes, sending keep-alives.
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Durations in config files are seconds (fractions allowed).
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        if !(0.0..=86_400.0).contains(&s) {
            return Err(serde::de::Error::custom(format!(
                "{s} is not a duration in seconds between 0 and 86400"
            )));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

impl RetryPolicy {
    /// Delay before attempt `n + 1` (n >= 1): base * 2^(n-1), capped, with
    /// "equal jitter" (half fixed, half random) so clients that failed
    /// together do not retry together.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Run `attempt` until it yields a first event, retrying what is worth
/// retrying. The final error carries the number of attempts made.
pub async fn stream_with_retry<F, Fut>(
    policy: &RetryPolicy,
    mut attempt: F,
) -> Result<EventStream, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<EventStream, ProviderError>>,
{
    let max = policy.max_attempts.max(1);
    let mut n = 0;
    loop {
        n += 1;
        let started = match tokio::time::timeout(policy.response_timeout, attempt()).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Timeout {
                timeout: policy.response_timeout,
                attempts: n,
            }),
        };
        // The first event is awaited without a deadline of its own: the
        // stream's idle timeout bounds each wait for bytes.
        let err = match started {
            Ok(mut s) => match s.next().await {
                Some(Ok(ev)) => {
                    return Ok(futures::stream::once(async { Ok(ev) }).chain(s).boxed())
                }
                Some(Err(e)) => e,
                None => ProviderError::Malformed("the response ended before any event".into()),
            },
            Err(e) => e,
        };
        if !err.is_retryable() || n >= max {
            return Err(err.with_attempts(n));
        }
        let wait = match &err {
            // The provider knows best when it will take us back; still cap
            // it so a bogus header cannot park a turn for hours.
            ProviderError::Status {
                retry_after: Some(d),
                ..
            } => (*d).min(policy.max_delay),
            _ => policy.backoff(n),
        };
        tracing::warn!(attempt = n, ?wait, "LLM request failed, retrying: {err}");
        tokio::time::sleep(wait).await;
    }
}

/// Parse a Retry-After header: delay-seconds (HTTP dates are rare from LLM
/// APIs and fall back to our own backoff).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        for _ in 0..20 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn parses_retry_after() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
