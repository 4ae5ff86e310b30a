//! Defences against clients that ask too often: a per-address request rate on the endpoints
//! that create things or check passwords (governor's keyed GCRA limiter), and exponential
//! backoff on wrong meeting passwords, per client address and per meeting.

use super::error::AppError;
use axum::http::StatusCode;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed before an address must wait.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 5;
/// Wrong passwords allowed for one meeting (from anywhere) before it must wait: more than
/// for one address, so that one attacker cannot lock everyone out quickly.
pub const FREE_FAILURES_PER_MEETING: u32 = 20;
/// First wait after the free failures; it doubles with every further failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Failure records kept at most (the oldest expired ones go first).
const MAX_RECORDS: usize = 100_000;
/// A record with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3_600);

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Wrong-password records: pure, the time is passed in.
#[derive(Debug, Default)]
pub struct Backoff {
    records: HashMap<String, Record>,
}

impl Backoff {
    /// How long `key` must still wait at `now`, if at all.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = self.records.get(key)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a wrong password for `key`, whose first `free` failures cost nothing.
    pub fn failed(&mut self, key: &str, free: u32, now: Instant) {
        if self.records.len() >= MAX_RECORDS {
            self.records
                .retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
            if self.records.len() >= MAX_RECORDS {
                // Still full of live records: forget the oldest half.
                let mut lasts: Vec<Instant> = self.records.values().map(|r| r.last).collect();
                lasts.sort();
                let cut = lasts[lasts.len() / 2];
                self.records.retain(|_, r| r.last > cut);
            }
        }
        let r = self.records.entry(key.to_owned()).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(r.last) >= FORGET_AFTER {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = now;
        if r.failures > free {
            let doublings = (r.failures - free - 1).min(20);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
            r.blocked_until = Some(now + wait);
        }
    }

    /// A right password: `key` starts afresh.
    pub fn succeeded(&mut self, key: &str) {
        self.records.remove(key);
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The server's abuse guards.
pub struct Abuse {
    requests: DefaultKeyedRateLimiter<IpAddr>,
    passwords: Mutex<Backoff>,
}

impl std::fmt::Debug for Abuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abuse").finish_non_exhaustive()
    }
}

/// The address requests without one (in-process tests) are counted under.
const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Abuse {
    /// `per_minute` guarded requests per client address, with bursts of a third of it.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).expect("at least one");
        let burst = NonZeroU32::new((per_minute.get() / 3).max(1)).expect("at least one");
        Abuse {
            requests: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            passwords: Mutex::default(),
        }
    }

    /// One guarded request from `ip`, or a `429 rate_limited` saying when to retry.
    pub fn request(&self, ip: Option<IpAddr>) -> Result<(), AppError> {
        let ip = ip.unwrap_or(UNKNOWN);
        self.requests.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address; slow down",
            )
            .retry_after(wait)
        })?;
        // Keep the limiter's memory bounded by addresses seen recently.
        if self.requests.len() > MAX_RECORDS {
            self.requests.retain_recent();
        }
        Ok(())
    }

    /// Before checking a meeting's password: refused with `429 too_many_attempts` while
    /// the address or the meeting is serving a wait.
    pub fn before_password(&self, ip: Option<IpAddr>, meeting: &str) -> Result<(), AppError> {
        let now = Instant::now();
        let b = self.passwords.lock().expect("backoff");
        let wait = [address_key(ip), meeting_key(meeting)]
            .iter()
            .filter_map(|k| b.wait(k, now))
            .max();
        match wait {
            Some(wait) => Err(AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "too many wrong passwords; try again in {} s",
                    wait.as_secs_f64().ceil() as u64
                ),
            )
            .retry_after(wait)),
            None => Ok(()),
        }
    }

    /// After a password check.
    pub fn after_password(&self, ip: Option<IpAddr>, meeting: &str, right: bool) {
        let now = Instant::now();
        let mut b = self.passwords.lock().expect("backoff");
        if right {
            b.succeeded(&address_key(ip));
        } else {
            b.failed(&address_key(ip), FREE_FAILURES_PER_ADDRESS, now);
            b.failed(&meeting_key(meeting), FREE_FAILURES_PER_MEETING, now);
        }
    }
}

fn address_key(ip: Option<IpAddr>) -> String {
    format!("ip:{}", ip.unwrap_or(UNKNOWN))
}

fn meeting_key(code: &str) -> String {
    format!(
        "meeting:{}",
        code.to_ascii_uppercase().replace(['-', ' '], "")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_and_a_success_resets() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        for i in 0..5 {
            b.failed("ip:1", 5, t0);
            assert_eq!(b.wait("ip:1", t0), None, "failure {} is free", i + 1);
        }
        b.failed("ip:1", 5, t0);
        assert_eq!(b.wait("ip:1", t0), Some(Duration::from_secs(1)));
        b.failed("ip:1", 5, t0);
        assert_eq!(b.wait("ip:1", t0), Some(Duration::from_secs(2)));
        b.failed("ip:1", 5, t0);
        assert_eq!(b.wait("ip:1", t0), Some(Duration::from_secs(4)));
        assert_eq!(
            b.wait("ip:1", t0 + Duration::from_secs(4)),
            None,
            "the wait ends"
        );
        for _ in 0..30 {
            b.failed("ip:1", 5, t0);
        }
        assert_eq!(b.wait("ip:1", t0), Some(MAX_WAIT));
        assert_eq!(b.wait("ip:2", t0), None, "other keys are untouched");
        b.succeeded("ip:1");
        assert_eq!(b.wait("ip:1", t0), None);
        // A long quiet spell forgets the old failures.
        for _ in 0..6 {
            b.failed("ip:3", 5, t0);
        }
        let later = t0 + FORGET_AFTER;
        b.failed("ip:3", 5, later);
        assert_eq!(b.wait("ip:3", later), None);
    }

    #[test]
    fn a_4_digit_pin_takes_days_not_minutes() {
        // From one address, all 10,000 PINs: the waits add up past the 5-minute cap.
        let mut b = Backoff::default();
        let mut t = Instant::now();
        let mut waited = Duration::ZERO;
        for _ in 0..10_000 {
            if let Some(w) = b.wait("ip:x", t) {
                waited += w;
                t += w;
            }
            b.failed("ip:x", FREE_FAILURES_PER_ADDRESS, t);
        }
        assert!(waited > Duration::from_secs(30 * 24 * 3600), "{waited:?}");
    }
}
