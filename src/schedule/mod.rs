//! Meetings that run themselves: series in IANA time zones expanded into occurrences, one
//! status machine per occurrence, and a scheduler loop that applies what is due.
//!
//! ```text
//! every tick (default 15 s), at time T:
//!   expand active series over [T, T + horizon] ─▶ occurrences (unique per series + local start)
//!   open occurrences starting before T + lead ─▶ facts (room members, meeting ended, cancelled)
//!       ─▶ status::due ─▶ conditional update + history row each ─▶ effects (room, meeting, agent)
//!   ready/ongoing occurrences with an agent due ─▶ claim an attempt (conditional) ─▶ dispatch
//!       ─▶ joining ─▶ in_call (the agent is a member) ─▶ left | failed (reason, retry at)
//! ```
//!
//! Everything that changes state is a conditional update in the shared database, so two
//! server processes on one PostgreSQL can tick together and still make one room, one status
//! change and one agent per occurrence; a tick after a restart catches up on what it missed.

pub mod autojoin;
pub mod ical;
pub mod recurrence;
pub mod status;

use crate::agents::{AgentError, AgentService, LeaveRules};
use crate::meetings::service::MeetingService;
use crate::room::{Open, RoomManager};
use crate::store::{
    AutoJoinLog, HostPreferences, OccurrenceRecord, ScheduleRecord, Store, StoreError,
};
use autojoin::{Backoff, FailReason};
use conclave_signaling::{Role, RoomName};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between ticks; zero: no loop (tests tick by hand).
    pub tick: Duration,
    /// An occurrence is ready this long before its start.
    pub lead_ms: i64,
    /// A meeting nobody came to is missed this long after its end.
    pub grace_ms: i64,
    /// Occurrences are created this far ahead.
    pub horizon_ms: i64,
    /// A started agent must be in the room within this.
    pub join_timeout_ms: i64,
    /// Retries of failed dispatches.
    pub backoff: Backoff,
    /// This process, in history rows and logs.
    pub node: String,
    /// An agent that joined before anyone else waits this long after the start for people.
    pub nobody_came_ms: i64,
    /// The longest an agent stays (also bounded by the meeting's end plus this).
    pub max_overrun_ms: i64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(15),
            lead_ms: 15 * 60_000,
            grace_ms: 10 * 60_000,
            horizon_ms: 2 * 86_400_000,
            join_timeout_ms: 30_000,
            backoff: Backoff::default(),
            node: format!("node-{}", crate::ids::random_id(6)),
            nobody_came_ms: 10 * 60_000,
            max_overrun_ms: 30 * 60_000,
        }
    }
}

/// A change the dashboard and notifications hear about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleEvent {
    /// Series.
    pub schedule_id: i64,
    /// Occurrence.
    pub occurrence_id: i64,
    /// `status` (the occurrence) or `bot` (its agent).
    pub kind: &'static str,
    /// Before.
    pub from: String,
    /// After.
    pub to: String,
    /// Why (a cause, or a failure's reason code).
    pub cause: String,
    /// Unix ms.
    pub at: i64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Ticks that failed (logged).
    pub tick_errors: AtomicU64,
    /// Occurrences created.
    pub occurrences_created: AtomicU64,
    /// Status changes applied by this process.
    pub transitions: AtomicU64,
    /// Occurrences that became ready (each one a due meeting).
    pub ready: AtomicU64,
    /// Ready occurrences that wanted an agent.
    pub agent_wanted: AtomicU64,
    /// Dispatch attempts claimed.
    pub dispatches: AtomicU64,
    /// Attempts that ended failed.
    pub dispatch_failures: AtomicU64,
    /// Agents that reached the call.
    pub in_call: AtomicU64,
}

/// Applies what is due; see the module docs.
pub struct Scheduler {
    store: Store,
    meetings: Arc<MeetingService>,
    agents: Arc<AgentService>,
    rooms: Arc<RoomManager>,
    config: SchedulerConfig,
    events: broadcast::Sender<ScheduleEvent>,
    stats: SchedulerStats,
}

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Occurrences created.
    pub created: usize,
    /// Status changes applied.
    pub transitions: usize,
    /// Dispatch attempts made.
    pub dispatches: usize,
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

impl Scheduler {
    /// A scheduler over `store`, making rooms in `rooms` and sending agents from `agents`.
    pub fn new(
        store: Store,
        meetings: Arc<MeetingService>,
        agents: Arc<AgentService>,
        rooms: Arc<RoomManager>,
        config: SchedulerConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            meetings,
            agents,
            rooms,
            config,
            events: broadcast::channel(256).0,
            stats: SchedulerStats::default(),
        })
    }

    /// Settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ScheduleEvent> {
        self.events.subscribe()
    }

    /// Ticks every `config.tick` until `stop` is raised (nothing if the tick is zero).
    pub fn run(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.config.tick.is_zero() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(this.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                // A tick never outlives its purpose: bounded by the tick time (and a floor).
                let limit = this.config.tick.max(Duration::from_secs(10));
                match tokio::time::timeout(limit, this.tick(crate::clock::now_ms())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        this.stats.tick_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "scheduler tick failed; the next one retries");
                    }
                    Err(_) => {
                        this.stats.tick_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            limit_ms = limit.as_millis() as u64,
                            "scheduler tick timed out"
                        );
                    }
                }
            }
        }))
    }

    /// One pass at time `now` (unix ms): create, advance, dispatch. Idempotent.
    pub async fn tick(&self, now: i64) -> Result<TickReport, StoreError> {
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        let mut report = TickReport {
            created: self.expand(now).await?,
            ..TickReport::default()
        };
        let open = self
            .store
            .open_occurrences(now + self.config.lead_ms + 1, 1_000)
            .await?;
        let mut series: HashMap<i64, ScheduleRecord> = HashMap::new();
        let mut prefs: HashMap<String, HostPreferences> = HashMap::new();
        for occ in open {
            let s = match series.get(&occ.schedule_id) {
                Some(s) => s.clone(),
                None => match self.store.schedule(occ.schedule_id).await? {
                    Some(s) => {
                        series.insert(s.id, s.clone());
                        s
                    }
                    None => continue,
                },
            };
            report.transitions += self.advance(&s, &occ, now).await?;
            // Re-read: the status may have moved.
            let Some(occ) = self.store.occurrence(occ.id).await? else {
                continue;
            };
            let p = match prefs.get(&s.spec.host_identity) {
                Some(p) => p.clone(),
                None => {
                    let p = self.store.host_preferences(&s.spec.host_identity).await?;
                    prefs.insert(s.spec.host_identity.clone(), p.clone());
                    p
                }
            };
            report.dispatches += self.tend_agent(&s, &occ, &p, now).await?;
        }
        Ok(report)
    }

    /// Creates the occurrences of active series that start within the horizon.
    async fn expand(&self, now: i64) -> Result<usize, StoreError> {
        let mut created = 0;
        let mut after = 0;
        loop {
            let page = self
                .store
                .schedules(None, Some("active"), after, 200)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for s in &page {
                let Ok(series) = series_of(s) else {
                    tracing::warn!(schedule = s.id, "stored series no longer parses; skipped");
                    continue;
                };
                let from = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
                let to = chrono::DateTime::from_timestamp_millis(now + self.config.horizon_ms)
                    .unwrap_or_default();
                for o in series.occurrences(from, to, 200) {
                    let local = o.local_start.format(LOCAL_FORMAT).to_string();
                    if self
                        .store
                        .add_occurrence(
                            s.id,
                            &local,
                            o.start.timestamp_millis(),
                            o.end.timestamp_millis(),
                            now,
                        )
                        .await?
                    {
                        created += 1;
                        self.stats
                            .occurrences_created
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(created)
    }

    fn room_of(s: &ScheduleRecord) -> Option<RoomName> {
        RoomName::validate(&s.meeting_code)
    }

    /// Members of the series' room now, and whether an agent is among them.
    fn present(&self, s: &ScheduleRecord) -> (usize, bool) {
        let Some(room) = Self::room_of(s).and_then(|n| self.rooms.get(&n)) else {
            return (0, false);
        };
        room.with_members(|m| {
            let mut n = 0;
            let mut agent = false;
            for x in m {
                n += 1;
                agent |= x.role == Some(Role::Agent);
            }
            (n, agent)
        })
    }

    /// Applies every status change due for `occ`; returns how many this process applied.
    async fn advance(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        now: i64,
    ) -> Result<usize, StoreError> {
        let Some(mut current) = status::Status::parse(&occ.status) else {
            return Ok(0);
        };
        let (present, _) = self.present(s);
        if present > 0 && !occ.anyone_came {
            self.store.occurrence_visited(occ.id).await?;
        }
        let meeting = self.meeting_state(s).await?;
        let exdated = s.spec.exdates.contains(&occ.local_start);
        let facts = status::Facts {
            present,
            anyone_came: occ.anyone_came || present > 0,
            // Only an end after this occurrence opened counts (a series reuses its meeting).
            ended: meeting.is_some_and(|(ended, at)| ended && at >= occ.status_at),
            cancelled: s.status == "cancelled" || exdated,
        };
        let timing = status::Timing {
            start: occ.starts_at,
            end: occ.ends_at,
            lead_ms: self.config.lead_ms,
            grace_ms: self.config.grace_ms,
        };
        let mut applied = 0;
        while let Some((to, cause)) = status::next(current, &timing, &facts, now) {
            let won = self
                .store
                .transition_occurrence(
                    occ.id,
                    current.as_str(),
                    to.as_str(),
                    cause.as_str(),
                    now,
                    &self.config.node,
                )
                .await?;
            if !won {
                // Another process moved it first; the next tick sees where it is.
                break;
            }
            applied += 1;
            self.stats.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(schedule = s.id, occurrence = occ.id, code = %s.meeting_code, from = current.as_str(), to = to.as_str(), cause = cause.as_str(), "occurrence status");
            let _ = self.events.send(ScheduleEvent {
                schedule_id: s.id,
                occurrence_id: occ.id,
                kind: "status",
                from: current.as_str().to_owned(),
                to: to.as_str().to_owned(),
                cause: cause.as_str().to_owned(),
                at: now,
            });
            self.on_status(s, to).await;
            current = to;
        }
        Ok(applied)
    }

    /// (ended?, ended_at) of the series' meeting.
    async fn meeting_state(&self, s: &ScheduleRecord) -> Result<Option<(bool, i64)>, StoreError> {
        let Some(code) = crate::meetings::model::MeetingCode::parse(&s.meeting_code) else {
            return Ok(None);
        };
        Ok(self.store.meeting(&code).await?.map(|m| {
            (
                m.status == crate::meetings::model::MeetingStatus::Ended,
                m.ended_at.unwrap_or(0),
            )
        }))
    }

    /// Effects of entering `to`: the room opens at ready; it closes and the agent leaves when
    /// the occurrence is over.
    async fn on_status(&self, s: &ScheduleRecord, to: status::Status) {
        use status::Status::*;
        let Some(room) = Self::room_of(s) else { return };
        match to {
            Ready => {
                self.stats.ready.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.meetings.open_scheduled(&s.meeting_code).await {
                    tracing::warn!(code = %s.meeting_code, error = %e, "meeting not reopened for its occurrence");
                }
                // In a cluster the room opens on the node it is placed on (here, or there at its
                // first join or its agent's dispatch by that node).
                match self.meetings.router().hosts(&room).await {
                    Ok(true) => {
                        if let Err(e) = self
                            .rooms
                            .open(&room, &Open::Meeting(s.meeting_code.clone()))
                        {
                            tracing::warn!(code = %s.meeting_code, error = %e, "room not opened");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(code = %s.meeting_code, error = %e, "room not opened: its node is unknown");
                    }
                }
            }
            Completed | Missed | Cancelled => {
                let _ = self.agents.stop(&room);
                if let Err(e) = self.meetings.close_for_schedule(&s.meeting_code).await {
                    tracing::debug!(code = %s.meeting_code, error = %e, "meeting not closed");
                }
                self.rooms.remove_if_closed(&room);
            }
            _ => {}
        }
    }

    async fn log(
        &self,
        occ: &OccurrenceRecord,
        attempt: i64,
        outcome: &str,
        error: Option<String>,
        now: i64,
    ) {
        let l = AutoJoinLog {
            occurrence_id: occ.id,
            at: now,
            attempt,
            outcome: outcome.to_owned(),
            error,
            node: self.config.node.clone(),
        };
        if let Err(e) = self.store.log_auto_join(&l).await {
            tracing::warn!(occurrence = occ.id, error = %e, "auto-join log not written");
        }
    }

    fn bot_event(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        from: &str,
        to: &str,
        cause: &str,
        now: i64,
    ) {
        tracing::info!(schedule = s.id, occurrence = occ.id, code = %s.meeting_code, from, to, cause, "agent status");
        let _ = self.events.send(ScheduleEvent {
            schedule_id: s.id,
            occurrence_id: occ.id,
            kind: "bot",
            from: from.to_owned(),
            to: to.to_owned(),
            cause: cause.to_owned(),
            at: now,
        });
    }

    /// Moves the agent on: dispatch when due, follow it into the call, notice it leaving,
    /// fail and schedule a retry when it does not make it. Returns dispatches made.
    async fn tend_agent(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        prefs: &HostPreferences,
        now: i64,
    ) -> Result<usize, StoreError> {
        let Some(status) = status::Status::parse(&occ.status) else {
            return Ok(0);
        };
        let Some(room) = Self::room_of(s) else {
            return Ok(0);
        };
        let bot = occ.bot_status.as_deref();
        let wanted =
            autojoin::wanted(s.spec.auto_join, occ.skip_agent, &s.spec.title, prefs).is_ok();
        let at = autojoin::dispatch_at(occ.starts_at, prefs.join_buffer_minutes);
        let due = wanted && autojoin::due(status, at, occ.ends_at, now);
        if bot.is_some() || due {
            // The agent runs on the room's node, which alone tends it (in a cluster, every
            // node ticks over the same occurrences; the room's placement picks one).
            match self.meetings.router().hosts(&room).await {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    tracing::debug!(occurrence = occ.id, error = %e, "agent not tended: the room's node is unknown");
                    return Ok(0);
                }
            }
        }
        match bot {
            Some("joining") => {
                let (_, agent_in) = self.present(s);
                if agent_in {
                    if self
                        .store
                        .set_bot_status(occ.id, "joining", "in_call", None, None, now)
                        .await?
                    {
                        self.stats.in_call.fetch_add(1, Ordering::Relaxed);
                        self.log(occ, occ.bot_attempts, "in_call", None, now).await;
                        self.bot_event(s, occ, "joining", "in_call", "joined", now);
                    }
                } else if now >= occ.bot_status_at.unwrap_or(now) + self.config.join_timeout_ms {
                    let _ = self.agents.stop(&room);
                    self.fail(
                        s,
                        occ,
                        "joining",
                        FailReason::JoinTimeout,
                        "not in the room in time".into(),
                        now,
                    )
                    .await?;
                }
                return Ok(0);
            }
            Some("in_call") => {
                let running =
                    matches!(self.agents.status(&room).await, Ok(Some(a)) if a.status == "running");
                if !running
                    && self
                        .store
                        .set_bot_status(occ.id, "in_call", "left", None, None, now)
                        .await?
                {
                    self.log(occ, occ.bot_attempts, "left", None, now).await;
                    self.bot_event(s, occ, "in_call", "left", "left", now);
                }
                return Ok(0);
            }
            Some("dispatched") => {
                // A process that claimed an attempt and died before starting the agent: the
                // claim times out like a join.
                if now >= occ.bot_status_at.unwrap_or(now) + self.config.join_timeout_ms {
                    self.fail(
                        s,
                        occ,
                        "dispatched",
                        FailReason::AgentStartFailed,
                        "the dispatching process went away".into(),
                        now,
                    )
                    .await?;
                }
                return Ok(0);
            }
            _ => {}
        }
        if !due {
            return Ok(0);
        }
        if !self
            .store
            .claim_dispatch(occ.id, now, self.config.backoff.max_attempts)
            .await?
        {
            return Ok(0);
        }
        if occ.bot_status.is_none() {
            self.stats.agent_wanted.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.dispatches.fetch_add(1, Ordering::Relaxed);
        let attempt = occ.bot_attempts + 1;
        self.log(occ, attempt, "dispatched", None, now).await;
        self.bot_event(s, occ, bot.unwrap_or("none"), "dispatched", "due", now);
        let claimed = OccurrenceRecord {
            bot_attempts: attempt,
            ..occ.clone()
        };
        match self.dispatch(s, &claimed, &room, prefs).await {
            Ok(()) => {
                if self
                    .store
                    .set_bot_status(occ.id, "dispatched", "joining", None, None, now)
                    .await?
                {
                    self.log(&claimed, attempt, "joining", None, now).await;
                    self.bot_event(s, occ, "dispatched", "joining", "started", now);
                }
            }
            Err((reason, detail)) => {
                self.fail(s, &claimed, "dispatched", reason, detail, now)
                    .await?;
            }
        }
        Ok(1)
    }

    async fn fail(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        from: &str,
        reason: FailReason,
        detail: String,
        now: i64,
    ) -> Result<(), StoreError> {
        let next = self
            .config
            .backoff
            .next_at(occ.bot_attempts.max(1), reason, now, jitter());
        if self
            .store
            .set_bot_status(occ.id, from, "failed", Some(reason.code()), next, now)
            .await?
        {
            self.stats.dispatch_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(schedule = s.id, occurrence = occ.id, reason = reason.code(), %detail, retry_at = ?next, "agent auto-join failed");
            self.log(
                occ,
                occ.bot_attempts,
                "failed",
                Some(format!("{}: {detail}", reason.code())),
                now,
            )
            .await;
            self.bot_event(s, occ, from, "failed", reason.code(), now);
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        room: &RoomName,
        prefs: &HostPreferences,
    ) -> Result<(), (FailReason, String)> {
        let day_ms = occ.starts_at;
        let meeting_day = conclave_media::lead::Date::from_days(day_ms.div_euclid(86_400_000));
        // Leaves: nobody by start + the wait; everyone gone for a minute; the end plus the
        // overrun at most.
        let now = crate::clock::now_ms();
        let nobody = (occ.starts_at + self.config.nobody_came_ms - now).max(60_000) as u64;
        let max = (occ.ends_at + self.config.max_overrun_ms - now).max(60_000) as u64;
        let d = crate::agents::prepare(
            &self.store,
            "Assistant".to_owned(),
            s.spec.question_set_id.or(prefs.question_set_id),
            s.spec.lead_id,
            None,
            None,
            meeting_day,
            LeaveRules {
                nobody_came_ms: nobody,
                everyone_left_ms: 60_000,
                max_duration_ms: Some(max),
            },
        )
        .await
        .map_err(|e| (FailReason::AgentStartFailed, e.to_string()))?;
        match self
            .agents
            .dispatch(room, &Open::Meeting(s.meeting_code.clone()), d)
            .await
        {
            Ok(_) => Ok(()),
            // Someone sent one by hand: that is the meeting's agent.
            Err(AgentError::AlreadyRunning(_)) => Ok(()),
            Err(e @ AgentError::Unavailable(_)) => Err((FailReason::ModelMissing, e.to_string())),
            Err(e) => Err((FailReason::AgentStartFailed, e.to_string())),
        }
    }
}

/// Overrides from the API. Each returns `Ok(Err(why))` when it cannot apply.
impl Scheduler {
    /// Cancels every occurrence of a (now cancelled) series that has not run.
    pub async fn cancel_open(&self, schedule_id: i64, now: i64) -> Result<(), StoreError> {
        let Some(s) = self.store.schedule(schedule_id).await? else {
            return Ok(());
        };
        for occ in self.store.occurrences_of(schedule_id, now, 10_000).await? {
            self.advance(&s, &occ, now).await?;
        }
        Ok(())
    }

    /// Cancels one occurrence (it becomes an exception of its series).
    pub async fn cancel_occurrence(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        now: i64,
    ) -> Result<Result<(), String>, StoreError> {
        if !matches!(occ.status.as_str(), "scheduled" | "ready") {
            return Ok(Err(format!("the occurrence is {}", occ.status)));
        }
        let mut spec = s.spec.clone();
        if !spec.exdates.contains(&occ.local_start) {
            spec.exdates.push(occ.local_start.clone());
        }
        let Some(updated) = self
            .store
            .update_schedule(s.id, s.version, &spec, now)
            .await?
        else {
            return Ok(Err("the meeting changed meanwhile; try again".into()));
        };
        self.advance(&updated, occ, now).await?;
        Ok(Ok(()))
    }

    /// Skips (or un-skips) the agent for one occurrence; a running one leaves.
    pub async fn skip_agent(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        skip: bool,
        now: i64,
    ) -> Result<Result<(), String>, StoreError> {
        self.store.set_skip_agent(occ.id, skip).await?;
        if skip {
            self.take_agent_out(s, occ, "skipped", now).await?;
        }
        Ok(Ok(()))
    }

    /// Takes the agent out of one occurrence; it is not sent again to it.
    pub async fn stop_agent(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        now: i64,
    ) -> Result<Result<(), String>, StoreError> {
        self.store.set_skip_agent(occ.id, true).await?;
        self.take_agent_out(s, occ, "stopped_by_host", now).await?;
        Ok(Ok(()))
    }

    async fn take_agent_out(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        why: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        if let Some(room) = Self::room_of(s) {
            let _ = self.agents.stop(&room);
        }
        if let Some(from) = occ.bot_status.as_deref()
            && matches!(from, "dispatched" | "joining" | "in_call")
            && self
                .store
                .set_bot_status(occ.id, from, "left", Some(why), None, now)
                .await?
        {
            self.log(occ, occ.bot_attempts, "left", Some(why.to_owned()), now)
                .await;
            self.bot_event(s, occ, from, "left", why, now);
        }
        Ok(())
    }

    /// Sends the agent now (the room must be ready or ongoing), whatever the buffer says.
    pub async fn dispatch_now(
        &self,
        s: &ScheduleRecord,
        occ: &OccurrenceRecord,
        now: i64,
    ) -> Result<Result<(), String>, StoreError> {
        if !matches!(occ.status.as_str(), "ready" | "ongoing") {
            return Ok(Err(format!(
                "the room is not open: the occurrence is {}",
                occ.status
            )));
        }
        if matches!(
            occ.bot_status.as_deref(),
            Some("dispatched" | "joining" | "in_call")
        ) {
            return Ok(Err("the agent is already on its way or in the call".into()));
        }
        self.store.set_skip_agent(occ.id, false).await?;
        // A fresh start: the override is a new series of attempts.
        self.store.reset_bot(occ.id).await?;
        let Some(fresh) = self.store.occurrence(occ.id).await? else {
            return Ok(Err("the occurrence is gone".into()));
        };
        let prefs = HostPreferences {
            auto_join: true,
            excluded_keywords: Vec::new(),
            join_buffer_minutes: 60,
            ..self.store.host_preferences(&s.spec.host_identity).await?
        };
        let forced = ScheduleRecord {
            spec: crate::store::ScheduleSpec {
                auto_join: true,
                ..s.spec.clone()
            },
            ..s.clone()
        };
        let forced_occ = OccurrenceRecord {
            starts_at: now.min(fresh.starts_at),
            ..fresh
        };
        if self.tend_agent(&forced, &forced_occ, &prefs, now).await? == 0 {
            return Ok(Err(
                "the agent could not be sent (see the auto-join log)".into()
            ));
        }
        Ok(Ok(()))
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, how local times are stored.
pub const LOCAL_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// The series a stored record describes.
pub fn series_of(s: &ScheduleRecord) -> Result<recurrence::Series, recurrence::RecurrenceError> {
    let bad = |what: &str| recurrence::RecurrenceError::Rule(format!("stored {what} unreadable"));
    let start = chrono::NaiveDateTime::parse_from_str(&s.spec.start_local, LOCAL_FORMAT)
        .map_err(|_| bad("start"))?;
    let exdates = s
        .spec
        .exdates
        .iter()
        .map(|e| chrono::NaiveDateTime::parse_from_str(e, LOCAL_FORMAT).map_err(|_| bad("exdate")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(recurrence::Series {
        start,
        duration: chrono::Duration::milliseconds(s.spec.duration_ms),
        tz: recurrence::zone(&s.spec.time_zone)?,
        rule: s
            .spec
            .rrule
            .as_deref()
            .map(recurrence::Rule::parse)
            .transpose()?,
        exdates,
    })
}
