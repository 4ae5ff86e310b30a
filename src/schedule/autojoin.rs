//! The agent as the meeting bot: whether an occurrence gets one, when, what its status
//! means, and how failures are retried. Pure and clock-injected (unix ms).
//!
//! Bot statuses, as a meeting-bot user expects them:
//! `dispatched` (an attempt was claimed) → `joining` (the agent started) → `in_call` (it is a
//! member of the room) → `left`, or `failed` with a reason code at any step. A failed attempt
//! is retried after an exponential backoff with jitter, up to a limit; every attempt and
//! outcome goes to `auto_join_logs`.

use super::status::Status;
use crate::store::HostPreferences;

/// Why an agent did not make it (stored as `bot_reason`, shown in the API and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The agent service refused or failed to start it.
    AgentStartFailed,
    /// No Whisper model or voice: agents cannot run on this server.
    ModelMissing,
    /// Started, but not in the room within the join timeout.
    JoinTimeout,
}

impl FailReason {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            FailReason::AgentStartFailed => "agent_start_failed",
            FailReason::ModelMissing => "model_missing",
            FailReason::JoinTimeout => "join_timeout",
        }
    }

    /// Whether trying again can help.
    pub fn retryable(self) -> bool {
        !matches!(self, FailReason::ModelMissing)
    }
}

/// Why an occurrence gets no agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAgent {
    /// The meeting does not ask for one.
    NotRequested,
    /// The host turned auto-join off.
    HostOptedOut,
    /// The title has one of the host's excluded keywords.
    ExcludedKeyword(String),
    /// The host skipped this occurrence.
    Skipped,
}

/// Whether a meeting titled `title` with `auto_join` gets the agent under `prefs`.
pub fn wanted(
    auto_join: bool,
    skip: bool,
    title: &str,
    prefs: &HostPreferences,
) -> Result<(), NoAgent> {
    if !auto_join {
        return Err(NoAgent::NotRequested);
    }
    if !prefs.auto_join {
        return Err(NoAgent::HostOptedOut);
    }
    if skip {
        return Err(NoAgent::Skipped);
    }
    let lower = title.to_lowercase();
    if let Some(k) = prefs
        .excluded_keywords
        .iter()
        .find(|k| !k.trim().is_empty() && lower.contains(&k.trim().to_lowercase()))
    {
        return Err(NoAgent::ExcludedKeyword(k.clone()));
    }
    Ok(())
}

/// When the agent is due: `buffer_minutes` before the start (0-60).
pub fn dispatch_at(start: i64, buffer_minutes: i64) -> i64 {
    start - buffer_minutes.clamp(0, 60) * 60_000
}

/// Whether an attempt may be made now: the room is up (ready or ongoing), it is time, and the
/// meeting is not over.
pub fn due(status: Status, dispatch_at: i64, end: i64, now: i64) -> bool {
    matches!(status, Status::Ready | Status::Ongoing) && now >= dispatch_at && now < end
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry after this.
    pub base_ms: i64,
    /// Never longer than this.
    pub max_ms: i64,
    /// Attempts in all.
    pub max_attempts: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 5_000,
            max_ms: 120_000,
            max_attempts: 4,
        }
    }
}

impl Backoff {
    /// Delay before the attempt after `attempt` (1-based) failed: base × 2^(attempt-1), capped,
    /// then scaled by `jitter` in 0..1 into 50-100% of that ("equal jitter"), so many failed
    /// bots do not retry in lockstep.
    pub fn delay(&self, attempt: i64, jitter: f64) -> i64 {
        let exp = (attempt - 1).clamp(0, 20) as u32;
        let full = self.base_ms.saturating_mul(1i64 << exp).min(self.max_ms);
        let j = jitter.clamp(0.0, 1.0);
        full / 2 + ((full / 2) as f64 * j) as i64
    }

    /// When the next attempt may run, or `None` if that was the last or it cannot help.
    pub fn next_at(&self, attempt: i64, reason: FailReason, now: i64, jitter: f64) -> Option<i64> {
        (reason.retryable() && attempt < self.max_attempts)
            .then(|| now + self.delay(attempt, jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_decide_who_gets_an_agent() {
        let p = HostPreferences {
            excluded_keywords: vec!["Internal".into(), " ".into()],
            ..HostPreferences::default()
        };
        assert_eq!(wanted(true, false, "Acme discovery call", &p), Ok(()));
        assert_eq!(
            wanted(false, false, "Acme discovery call", &p),
            Err(NoAgent::NotRequested)
        );
        assert_eq!(
            wanted(true, false, "internal sync", &p),
            Err(NoAgent::ExcludedKeyword("Internal".into()))
        );
        assert_eq!(wanted(true, true, "Acme", &p), Err(NoAgent::Skipped));
        let off = HostPreferences {
            auto_join: false,
            ..HostPreferences::default()
        };
        assert_eq!(
            wanted(true, false, "Acme", &off),
            Err(NoAgent::HostOptedOut)
        );
    }

    #[test]
    fn the_agent_is_due_from_the_buffer_before_the_start_until_the_end() {
        let start = 1_000_000;
        let at = dispatch_at(start, 2);
        assert_eq!(at, start - 120_000);
        assert_eq!(
            dispatch_at(start, 500),
            start - 3_600_000,
            "capped at an hour"
        );
        assert!(!due(Status::Ready, at, start + 60_000, at - 1));
        assert!(due(Status::Ready, at, start + 60_000, at));
        assert!(due(Status::Ongoing, at, start + 60_000, start));
        assert!(
            !due(Status::Scheduled, at, start + 60_000, at),
            "no room yet"
        );
        assert!(
            !due(Status::Ready, at, start + 60_000, start + 60_000),
            "over"
        );
        assert!(!due(Status::Cancelled, at, start + 60_000, at));
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_limit() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 1.0), 5_000);
        assert_eq!(b.delay(1, 0.0), 2_500);
        assert_eq!(b.delay(2, 1.0), 10_000);
        assert_eq!(b.delay(3, 1.0), 20_000);
        assert_eq!(b.delay(10, 1.0), 120_000, "capped");
        assert_eq!(b.next_at(1, FailReason::JoinTimeout, 0, 1.0), Some(5_000));
        assert_eq!(
            b.next_at(4, FailReason::JoinTimeout, 0, 1.0),
            None,
            "last attempt"
        );
        assert_eq!(
            b.next_at(1, FailReason::ModelMissing, 0, 1.0),
            None,
            "cannot help"
        );
    }
}
