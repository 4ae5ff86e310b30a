//! The meeting lifecycle as a pure state machine: who is present, who hosts, and what happens
//! when the host leaves. Time is passed in (unix ms), so the grace period is tested without
//! waiting for it.
//!
//! Rules:
//! - The host joining a waiting meeting starts it (one click fewer; an explicit start through
//!   the API does the same).
//! - When the host leaves an active meeting, a grace period starts. If the host returns within
//!   it, nothing happens. When it expires, the person present longest becomes host; if nobody
//!   is present, the meeting ends.
//! - Ended is final: nothing changes it.

use super::model::{MeetingStatus, Role};
use serde::{Deserialize, Serialize};

/// Why a meeting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The host ended it.
    HostEnded,
    /// Everyone left and the host did not come back in time.
    Empty,
    /// An operator ended it through the API.
    Api,
}

/// What the caller must carry out after feeding an event in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Status became active.
    Started,
    /// Status became ended.
    Ended(EndReason),
    /// A new host.
    HostChanged {
        /// Their identity.
        identity: String,
        /// Their name.
        name: String,
    },
}

#[derive(Debug, Clone)]
struct Present {
    identity: String,
    name: String,
    since_ms: i64,
    /// Connections of this identity (a person may have two tabs open).
    connections: u32,
}

/// One meeting's live state.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    status: MeetingStatus,
    host: String,
    grace_ms: i64,
    present: Vec<Present>,
    host_gone_since: Option<i64>,
}

impl Lifecycle {
    /// A meeting in `status` hosted by `host`, with a grace period of `grace_ms`.
    pub fn new(status: MeetingStatus, host: &str, grace_ms: i64) -> Self {
        Lifecycle {
            status,
            host: host.to_owned(),
            grace_ms,
            present: vec![],
            host_gone_since: None,
        }
    }

    /// Current status.
    pub fn status(&self) -> MeetingStatus {
        self.status
    }

    /// Current host identity.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Distinct identities present.
    pub fn present_count(&self) -> usize {
        self.present.len()
    }

    /// When [`Lifecycle::tick`] must next be called, if ever.
    pub fn deadline(&self) -> Option<i64> {
        self.host_gone_since.map(|t| t + self.grace_ms)
    }

    /// Someone connected.
    pub fn joined(&mut self, identity: &str, name: &str, _role: Role, now: i64) -> Vec<Effect> {
        if self.status == MeetingStatus::Ended {
            return vec![];
        }
        match self.present.iter_mut().find(|p| p.identity == identity) {
            Some(p) => p.connections += 1,
            None => self.present.push(Present {
                identity: identity.to_owned(),
                name: name.to_owned(),
                since_ms: now,
                connections: 1,
            }),
        }
        let mut effects = vec![];
        if identity == self.host {
            self.host_gone_since = None;
            if self.status == MeetingStatus::Waiting {
                self.status = MeetingStatus::Active;
                effects.push(Effect::Started);
            }
        }
        effects
    }

    /// Someone disconnected.
    pub fn left(&mut self, identity: &str, now: i64) -> Vec<Effect> {
        if let Some(i) = self.present.iter().position(|p| p.identity == identity) {
            self.present[i].connections -= 1;
            if self.present[i].connections == 0 {
                self.present.remove(i);
                if identity == self.host && self.status == MeetingStatus::Active {
                    self.host_gone_since = Some(now);
                }
            }
        }
        vec![]
    }

    /// The server restarted after a crash with this meeting active: whoever was present is
    /// gone (their connections died with the process), so the host counts as gone since
    /// `now` and the grace period runs as if they had just left.
    pub fn recovered(&mut self, now: i64) {
        self.present.clear();
        if self.status == MeetingStatus::Active {
            self.host_gone_since = Some(now);
        }
    }

    /// Time passed; acts on an expired grace period.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        match self.deadline() {
            Some(deadline) if now >= deadline && self.status == MeetingStatus::Active => {
                self.host_gone_since = None;
                match self.present.iter().min_by_key(|p| p.since_ms) {
                    Some(next) => {
                        self.host = next.identity.clone();
                        vec![Effect::HostChanged {
                            identity: next.identity.clone(),
                            name: next.name.clone(),
                        }]
                    }
                    None => self.end(EndReason::Empty),
                }
            }
            _ => vec![],
        }
    }

    /// An explicit start.
    pub fn start(&mut self) -> Vec<Effect> {
        if self.status == MeetingStatus::Waiting {
            self.status = MeetingStatus::Active;
            if !self.present.iter().any(|p| p.identity == self.host) {
                // Started remotely with the host absent: give them the usual grace to arrive.
                self.host_gone_since = None;
            }
            return vec![Effect::Started];
        }
        vec![]
    }

    /// An explicit end.
    pub fn end(&mut self, reason: EndReason) -> Vec<Effect> {
        if self.status == MeetingStatus::Ended {
            return vec![];
        }
        self.status = MeetingStatus::Ended;
        self.host_gone_since = None;
        vec![Effect::Ended(reason)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 30_000;

    fn active_with_host() -> Lifecycle {
        let mut m = Lifecycle::new(MeetingStatus::Waiting, "host", GRACE);
        assert_eq!(
            m.joined("host", "Hana", Role::Host, 0),
            vec![Effect::Started]
        );
        m
    }

    #[test]
    fn guests_wait_until_the_host_arrives() {
        let mut m = Lifecycle::new(MeetingStatus::Waiting, "host", GRACE);
        assert!(m.joined("g1", "Gus", Role::Participant, 0).is_empty());
        assert_eq!(m.status(), MeetingStatus::Waiting);
        assert_eq!(
            m.joined("host", "Hana", Role::Host, 5_000),
            vec![Effect::Started]
        );
        assert_eq!(m.status(), MeetingStatus::Active);
    }

    #[test]
    fn host_returning_within_grace_changes_nothing() {
        let mut m = active_with_host();
        m.joined("g1", "Gus", Role::Participant, 1_000);
        m.left("host", 10_000);
        assert_eq!(m.deadline(), Some(40_000));
        assert!(m.tick(39_999).is_empty());
        m.joined("host", "Hana", Role::Host, 39_999);
        assert_eq!(m.deadline(), None);
        assert!(m.tick(100_000).is_empty());
        assert_eq!(m.host(), "host");
    }

    #[test]
    fn after_grace_the_longest_present_person_becomes_host() {
        let mut m = active_with_host();
        m.joined("late", "Lee", Role::Participant, 8_000);
        m.joined("early", "Eve", Role::Participant, 2_000);
        m.left("host", 10_000);
        assert_eq!(
            m.tick(40_000),
            vec![Effect::HostChanged {
                identity: "early".into(),
                name: "Eve".into()
            }]
        );
        assert_eq!(m.host(), "early");
        assert_eq!(m.status(), MeetingStatus::Active);
        // The new host leaving starts a new grace period.
        m.left("early", 50_000);
        assert_eq!(m.deadline(), Some(80_000));
        assert_eq!(
            m.tick(80_000),
            vec![Effect::HostChanged {
                identity: "late".into(),
                name: "Lee".into()
            }]
        );
    }

    #[test]
    fn nobody_left_after_grace_ends_the_meeting_and_ended_is_final() {
        let mut m = active_with_host();
        m.joined("g", "Gus", Role::Participant, 1_000);
        m.left("g", 2_000);
        m.left("host", 3_000);
        assert_eq!(m.tick(33_000), vec![Effect::Ended(EndReason::Empty)]);
        assert_eq!(m.status(), MeetingStatus::Ended);
        assert!(m.joined("host", "Hana", Role::Host, 34_000).is_empty());
        assert!(m.start().is_empty());
        assert!(m.end(EndReason::HostEnded).is_empty());
        assert_eq!(m.status(), MeetingStatus::Ended);
    }

    #[test]
    fn a_second_tab_of_the_host_keeps_them_present() {
        let mut m = active_with_host();
        m.joined("host", "Hana", Role::Host, 1_000);
        m.left("host", 2_000);
        assert_eq!(m.deadline(), None, "one tab still open");
        m.left("host", 3_000);
        assert_eq!(m.deadline(), Some(33_000));
    }

    #[test]
    fn after_a_crash_an_active_meeting_waits_for_its_host_then_ends_when_nobody_comes() {
        let mut m = Lifecycle::new(MeetingStatus::Active, "host", GRACE);
        m.recovered(100_000);
        assert_eq!(m.deadline(), Some(100_000 + GRACE));
        assert!(m.tick(100_000 + GRACE - 1).is_empty());
        assert_eq!(
            m.tick(100_000 + GRACE),
            vec![Effect::Ended(EndReason::Empty)]
        );
        // And when the host is back within the grace period, nothing happens.
        let mut m = Lifecycle::new(MeetingStatus::Active, "host", GRACE);
        m.recovered(0);
        m.joined("host", "Hana", Role::Host, 1_000);
        assert!(m.tick(GRACE * 2).is_empty());
        // A meeting still waiting for its host is left as it is.
        let mut m = Lifecycle::new(MeetingStatus::Waiting, "host", GRACE);
        m.recovered(0);
        assert_eq!(m.deadline(), None);
    }
}
