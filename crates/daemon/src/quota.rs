//! Per-user quotas (sandboxes, vCPUs, memory, disk, LLM spend per day) and
//! the per-token request rate.
//!
//! ```toml
//! [quotas]                 # every user's limits; absent = unlimited
//! max_sandboxes = 10
//! max_vcpus = 16
//! max_memory_mib = 16384
//! max_disk_mib = 102400
//! llm_usd_per_day = 5.0
//! requests_per_minute = 600
//!
//! [quotas.users.bob]       # overrides for one user (the rest from [quotas])
//! max_sandboxes = 3
//! ```
//!
//! The admin has no limits unless `[quotas.users.admin]` sets some.
//! Exceeding a limit answers 403 naming it; the request rate answers 429
//! with `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use ironclaw_store::SandboxRecord;
use serde::Deserialize;

use crate::error::ApiError;

/// One user's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Sandboxes the user may have (running or stopped, agent's included).
    pub max_sandboxes: Option<u64>,
    /// vCPUs across all of the user's sandboxes.
    pub max_vcpus: Option<u64>,
    /// Memory across all of the user's sandboxes, MiB.
    pub max_memory_mib: Option<u64>,
    /// Disk across all of the user's sandboxes, MiB.
    pub max_disk_mib: Option<u64>,
    /// LLM spend per UTC day, in USD (a turn starts only below it).
    pub llm_usd_per_day: Option<f64>,
    /// Requests per minute per token (bursts up to a minute's worth).
    pub requests_per_minute: Option<u32>,
}

impl Limits {
    /// These limits, with unset ones taken from `base`.
    fn or(&self, base: &Limits) -> Limits {
        Limits {
            max_sandboxes: self.max_sandboxes.or(base.max_sandboxes),
            max_vcpus: self.max_vcpus.or(base.max_vcpus),
            max_memory_mib: self.max_memory_mib.or(base.max_memory_mib),
            max_disk_mib: self.max_disk_mib.or(base.max_disk_mib),
            llm_usd_per_day: self.llm_usd_per_day.or(base.llm_usd_per_day),
            requests_per_minute: self.requests_per_minute.or(base.requests_per_minute),
        }
    }
}

/// The `[quotas]` table: defaults for every user plus per-user overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<u64>,
    pub max_memory_mib: Option<u64>,
    pub max_disk_mib: Option<u64>,
    pub llm_usd_per_day: Option<f64>,
    pub requests_per_minute: Option<u32>,
    /// `[quotas.users.NAME]`: overrides for one user.
    pub users: BTreeMap<String, Limits>,
}

impl Quotas {
    fn defaults(&self) -> Limits {
        Limits {
            max_sandboxes: self.max_sandboxes,
            max_vcpus: self.max_vcpus,
            max_memory_mib: self.max_memory_mib,
            max_disk_mib: self.max_disk_mib,
            llm_usd_per_day: self.llm_usd_per_day,
            requests_per_minute: self.requests_per_minute,
        }
    }

    /// The limits of `user`: their overrides over the defaults; for the
    /// admin only explicit overrides.
    pub fn for_user(&self, user: &str, admin: bool) -> Limits {
        match (self.users.get(user), admin) {
            (Some(o), false) => o.or(&self.defaults()),
            (Some(o), true) => o.clone(),
            (None, false) => self.defaults(),
            (None, true) => Limits::default(),
        }
    }
}

fn exceeded(what: &str, used: u64, max: u64, user: &str, asked: Option<u64>) -> ApiError {
    let more = asked
        .map(|a| format!(" (this sandbox needs {a} more)"))
        .unwrap_or_default();
    ApiError::Forbidden(format!(
        "quota exceeded: {what} {used} of {max} for user {user}{more}"
    ))
}

/// May `user`, who has `existing` sandboxes, create one more of this size?
pub fn check_sandbox(
    limits: &Limits,
    user: &str,
    existing: &[SandboxRecord],
    vcpus: u32,
    memory_mib: u64,
    disk_mib: u64,
) -> Result<(), ApiError> {
    let count = existing.len() as u64;
    if let Some(max) = limits.max_sandboxes {
        if count + 1 > max {
            return Err(exceeded("sandboxes", count, max, user, None));
        }
    }
    let sum = |f: fn(&SandboxRecord) -> u64| existing.iter().map(f).sum::<u64>();
    for (what, max, used, asked) in [
        (
            "vcpus",
            limits.max_vcpus,
            sum(|r| r.vcpus as u64),
            vcpus as u64,
        ),
        (
            "memory_mib",
            limits.max_memory_mib,
            sum(|r| r.memory_mib),
            memory_mib,
        ),
        (
            "disk_mib",
            limits.max_disk_mib,
            sum(|r| r.disk_mib),
            disk_mib,
        ),
    ] {
        if let Some(max) = max {
            if used + asked > max {
                return Err(exceeded(what, used, max, user, Some(asked)));
            }
        }
    }
    Ok(())
}

/// May `user`, who spent `spent_usd` today, start another LLM turn?
pub fn check_spend(limits: &Limits, user: &str, spent_usd: f64) -> Result<(), ApiError> {
    match limits.llm_usd_per_day {
        Some(max) if spent_usd >= max => Err(ApiError::Forbidden(format!(
            "quota exceeded: llm_usd_per_day ${spent_usd:.4} of ${max:.2} spent today (UTC) for user {user}"
        ))),
        _ => Ok(()),
    }
}

/// Start of the current UTC day in the store's timestamp format.
pub fn today_utc() -> String {
    let now = ironclaw_store::now();
    format!("{}T00:00:00Z", &now[..now.len().min(10)])
}

/// Token buckets, one per token: `rpm` requests a minute, refilled
/// continuously, bursts up to `rpm`.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// Take one request from `key`'s bucket; `Err(seconds)` to wait when empty.
    pub fn take(&self, key: &str, rpm: u32) -> Result<(), u64> {
        self.take_at(key, rpm, Instant::now())
    }

    fn take_at(&self, key: &str, rpm: u32, now: Instant) -> Result<(), u64> {
        let cap = rpm.max(1) as f64;
        let per_sec = cap / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            // Forget buckets that have been full for a while.
            buckets.retain(|_, b| now.duration_since(b.last).as_secs() < 120);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overrides_fall_back_to_defaults_and_the_admin_is_exempt() {
        let q: Quotas = toml::from_str(
            "max_sandboxes = 10\nmax_vcpus = 8\n[users.bob]\nmax_sandboxes = 3\n[users.admin]\nmax_vcpus = 64\n",
        )
        .unwrap();
        let bob = q.for_user("bob", false);
        assert_eq!((bob.max_sandboxes, bob.max_vcpus), (Some(3), Some(8)));
        let alice = q.for_user("alice", false);
        assert_eq!((alice.max_sandboxes, alice.max_vcpus), (Some(10), Some(8)));
        let admin = q.for_user("admin", true);
        assert_eq!((admin.max_sandboxes, admin.max_vcpus), (None, Some(64)));
        assert_eq!(Quotas::default().for_user("admin", true), Limits::default());
        assert!(toml::from_str::<Quotas>("max_sandbox = 1").is_err());
    }

    #[test]
    fn rate_limiter_refills_and_says_how_long_to_wait() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..60 {
            r.take_at("a", 60, t0).unwrap();
        }
        assert_eq!(r.take_at("a", 60, t0), Err(1));
        assert!(r.take_at("b", 60, t0).is_ok(), "buckets are per key");
        assert!(r.take_at("a", 60, t0 + Duration::from_millis(1100)).is_ok());
        for _ in 0..6 {
            let _ = r.take_at("c", 6, t0);
        }
        assert_eq!(r.take_at("c", 6, t0), Err(10));
    }
}
