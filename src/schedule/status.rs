//! One scheduled occurrence's status machine: pure and clock-injected (times are unix ms).
//!
//! ```text
//! scheduled ──ready_at──▶ ready ──first person or agent in──▶ ongoing ──ended, or past end
//!     │                     │                                           and nobody in──▶ completed
//!     └──cancelled──────────┴──▶ cancelled          ready ──end + grace, nobody came──▶ missed
//! ```
//!
//! Every change goes through [`next`]; the caller applies it with a conditional update (the
//! row must still be in the `from` status), stores it with its time and cause, and emits it.
//! Feeding the same facts again gives the same answer, so a scheduler that ticks twice, or
//! two schedulers that tick at once, agree. A restart is a tick at a later `now`: a meeting
//! whose ready time passed while the server was down becomes ready at once, then missed if
//! its end (plus grace) has passed too, so nothing is left hanging.

use serde::{Deserialize, Serialize};

/// Where an occurrence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the calendar; nothing exists yet.
    Scheduled,
    /// Its room exists and can be joined.
    Ready,
    /// Someone (a person or the agent) is or was in it.
    Ongoing,
    /// Over.
    Completed,
    /// Called off before it ran.
    Cancelled,
    /// Nobody came.
    Missed,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Ready => "ready",
            Status::Ongoing => "ongoing",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Missed => "missed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "scheduled" => Status::Scheduled,
            "ready" => Status::Ready,
            "ongoing" => Status::Ongoing,
            "completed" => Status::Completed,
            "cancelled" => Status::Cancelled,
            "missed" => Status::Missed,
            _ => return None,
        })
    }

    /// No change leaves it.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled | Status::Missed)
    }
}

/// Why a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The lead time before the start was reached.
    LeadTime,
    /// Someone joined.
    Joined,
    /// The host or an operator ended the meeting.
    Ended,
    /// The scheduled end passed with nobody in the room.
    PastEnd,
    /// The end and the grace passed and nobody ever came.
    NobodyCame,
    /// The host cancelled the meeting or this occurrence.
    CancelledByHost,
}

impl Cause {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::LeadTime => "lead_time",
            Cause::Joined => "joined",
            Cause::Ended => "ended",
            Cause::PastEnd => "past_end",
            Cause::NobodyCame => "nobody_came",
            Cause::CancelledByHost => "cancelled_by_host",
        }
    }
}

/// An occurrence's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Start, unix ms.
    pub start: i64,
    /// End, unix ms.
    pub end: i64,
    /// How long before the start it becomes ready.
    pub lead_ms: i64,
    /// How long after the end a meeting nobody came to waits before it is missed.
    pub grace_ms: i64,
}

impl Timing {
    /// When it becomes ready.
    pub fn ready_at(&self) -> i64 {
        self.start - self.lead_ms
    }
}

/// What is true of the occurrence now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// People or agents in its room now.
    pub present: usize,
    /// Anyone was ever in it (this occurrence).
    pub anyone_came: bool,
    /// Its meeting was ended (by the host or the API).
    pub ended: bool,
    /// The meeting or this occurrence was cancelled.
    pub cancelled: bool,
}

/// The change due at `now`, if any, with its cause. Call again after applying it: a restart
/// may owe several (scheduled → ready → missed).
pub fn next(status: Status, t: &Timing, f: &Facts, now: i64) -> Option<(Status, Cause)> {
    use Status::*;
    match status {
        Scheduled | Ready if f.cancelled => Some((Cancelled, Cause::CancelledByHost)),
        Scheduled if now >= t.ready_at() => Some((Ready, Cause::LeadTime)),
        Ready if f.present > 0 || f.anyone_came => Some((Ongoing, Cause::Joined)),
        Ready if now >= t.end + t.grace_ms => Some((Missed, Cause::NobodyCame)),
        Ongoing if f.ended => Some((Completed, Cause::Ended)),
        Ongoing if now >= t.end && f.present == 0 => Some((Completed, Cause::PastEnd)),
        _ => None,
    }
}

/// Every change due at `now`, in order (what a tick applies).
pub fn due(mut status: Status, t: &Timing, f: &Facts, now: i64) -> Vec<(Status, Status, Cause)> {
    let mut out = Vec::new();
    while let Some((to, cause)) = next(status, t, f, now) {
        out.push((status, to, cause));
        status = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const MIN: i64 = 60_000;

    fn timing() -> Timing {
        // Starts at minute 100, ends at 130; ready 15 min before; missed 10 min after the end.
        Timing {
            start: 100 * MIN,
            end: 130 * MIN,
            lead_ms: 15 * MIN,
            grace_ms: 10 * MIN,
        }
    }

    #[test]
    fn becomes_ready_at_the_lead_time_and_not_a_millisecond_before() {
        let f = Facts::default();
        assert_eq!(next(Scheduled, &timing(), &f, 85 * MIN - 1), None);
        assert_eq!(
            next(Scheduled, &timing(), &f, 85 * MIN),
            Some((Ready, Cause::LeadTime))
        );
    }

    #[test]
    fn the_first_one_in_makes_it_ongoing_and_it_completes_when_ended_or_empty_after_the_end() {
        let t = timing();
        let in_room = Facts {
            present: 1,
            anyone_came: true,
            ..Facts::default()
        };
        assert_eq!(
            next(Ready, &t, &in_room, 95 * MIN),
            Some((Ongoing, Cause::Joined))
        );
        // Running over the end with people in: still on.
        assert_eq!(next(Ongoing, &t, &in_room, 140 * MIN), None);
        let left = Facts {
            present: 0,
            anyone_came: true,
            ..Facts::default()
        };
        // Empty before the end: they may come back.
        assert_eq!(next(Ongoing, &t, &left, 120 * MIN), None);
        assert_eq!(
            next(Ongoing, &t, &left, 130 * MIN),
            Some((Completed, Cause::PastEnd))
        );
        let ended = Facts {
            ended: true,
            present: 2,
            anyone_came: true,
            ..Facts::default()
        };
        assert_eq!(
            next(Ongoing, &t, &ended, 105 * MIN),
            Some((Completed, Cause::Ended))
        );
    }

    #[test]
    fn nobody_by_the_end_plus_grace_is_missed() {
        let t = timing();
        let f = Facts::default();
        assert_eq!(next(Ready, &t, &f, 140 * MIN - 1), None);
        assert_eq!(
            next(Ready, &t, &f, 140 * MIN),
            Some((Missed, Cause::NobodyCame))
        );
    }

    #[test]
    fn cancelling_stops_it_before_it_runs_but_not_once_it_runs() {
        let t = timing();
        let f = Facts {
            cancelled: true,
            ..Facts::default()
        };
        assert_eq!(
            next(Scheduled, &t, &f, 0),
            Some((Cancelled, Cause::CancelledByHost))
        );
        assert_eq!(
            next(Ready, &t, &f, 90 * MIN),
            Some((Cancelled, Cause::CancelledByHost))
        );
        let running = Facts {
            cancelled: true,
            present: 1,
            anyone_came: true,
            ..Facts::default()
        };
        assert_eq!(next(Ongoing, &t, &running, 110 * MIN), None);
    }

    #[test]
    fn a_restart_after_the_end_catches_up_in_order_and_final_states_stay() {
        let t = timing();
        assert_eq!(
            due(Scheduled, &t, &Facts::default(), 200 * MIN),
            vec![
                (Scheduled, Ready, Cause::LeadTime),
                (Ready, Missed, Cause::NobodyCame)
            ]
        );
        // A restart inside the window only makes it ready.
        assert_eq!(
            due(Scheduled, &t, &Facts::default(), 99 * MIN),
            vec![(Scheduled, Ready, Cause::LeadTime)]
        );
        for s in [Completed, Cancelled, Missed] {
            let any = Facts {
                present: 3,
                anyone_came: true,
                ended: true,
                cancelled: true,
            };
            assert_eq!(next(s, &t, &any, 1_000 * MIN), None, "{s:?}");
            assert!(s.is_final());
        }
        for s in [Scheduled, Ready, Ongoing, Completed, Cancelled, Missed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
