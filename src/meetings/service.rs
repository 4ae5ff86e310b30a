//! The meeting service: every meeting status change goes through here, where the pure
//! [`Lifecycle`] decides and this module carries the effects out (store, room messages).

use super::lifecycle::{Effect, EndReason, Lifecycle};
use super::model::{Meeting, MeetingCode, MeetingStatus, Role};
use crate::auth::{Claims, Grants, TokenAuthority, TokenRequest};
use crate::clock::now_ms;
use crate::routing::RoomRouter;
use crate::store::{NewMeeting, ParticipantRecord, Store, StoreError};
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use conclave_signaling::{MeetingInfo, RoomName};
use dashmap::DashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Join tokens live as long as a long meeting; host tokens a week (the creator's browser keeps it).
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const HOST_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const CODE_ATTEMPTS: usize = 8;

/// Who is calling the meetings API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Nobody authenticated (a browser on the home page).
    Anonymous,
    /// A server-to-server client holding the API key pair.
    Service {
        /// The API key name.
        key: String,
    },
    /// A holder of an access token.
    Token(Claims),
}

/// What can go wrong with a meeting request.
#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    /// No such code.
    #[error("no meeting with code {0}")]
    NotFound(String),
    /// The meeting has a password and none was given.
    #[error("this meeting needs a password")]
    PasswordRequired,
    /// Wrong password.
    #[error("wrong password")]
    WrongPassword,
    /// Ended meetings admit nobody.
    #[error("the meeting has ended")]
    Ended,
    /// A scheduled meeting whose room is not open yet.
    #[error("the meeting opens at {}", crate::clock::rfc3339(*opens_at))]
    NotOpenYet {
        /// When its room opens, unix ms.
        opens_at: i64,
    },
    /// Only the host (or an API client) may do this.
    #[error("only the meeting's host may do this")]
    NotHost,
    /// Needs credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The status machine forbids it.
    #[error("a {from} meeting cannot become {to}")]
    InvalidTransition {
        /// Current status.
        from: &'static str,
        /// Asked-for status.
        to: &'static str,
    },
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// Every password-hashing slot stayed busy; retry shortly.
    #[error("the server is busy checking passwords; retry shortly")]
    Busy,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a successful join hands back.
#[derive(Debug, Clone)]
pub struct JoinGrant {
    /// Access token for the meeting's room.
    pub token: String,
    /// Identity in the token.
    pub identity: String,
    /// Role.
    pub role: Role,
    /// The meeting.
    pub meeting: Meeting,
}

/// A meeting with people connected or a grace period running.
struct Live {
    code: MeetingCode,
    meeting_id: i64,
    lifecycle: Mutex<Lifecycle>,
    status: watch::Sender<MeetingStatus>,
}

/// The meetings service.
pub struct MeetingService {
    store: Store,
    tokens: TokenAuthority,
    router: Arc<dyn RoomRouter>,
    grace: Duration,
    live: DashMap<MeetingCode, Arc<Live>>,
    /// Password hashes computed at once; each takes 19 MiB (argon2id defaults: m = 19 MiB,
    /// t = 2, p = 1, ~50 ms on this machine kind).
    hashing: tokio::sync::Semaphore,
    /// How long before its start a scheduled meeting opens (the scheduler's lead time).
    schedule_lead: std::sync::atomic::AtomicI64,
}

/// How long a password check waits for a free hashing slot before answering `busy`.
const HASH_WAIT: Duration = Duration::from_secs(10);

fn hash_password(password: &str) -> Result<String, MeetingError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MeetingError::Invalid(format!("cannot hash password: {e}")))
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl MeetingService {
    /// A service over `store`, issuing tokens with `tokens`.
    pub fn new(
        store: Store,
        tokens: TokenAuthority,
        router: Arc<dyn RoomRouter>,
        grace: Duration,
        password_hashes: usize,
    ) -> Arc<Self> {
        Arc::new(MeetingService {
            store,
            tokens,
            router,
            grace,
            live: DashMap::new(),
            hashing: tokio::sync::Semaphore::new(password_hashes.max(1)),
            schedule_lead: std::sync::atomic::AtomicI64::new(15 * 60_000),
        })
    }

    /// Tells joiners of scheduled meetings when rooms open (`lead_ms` before the start).
    pub fn set_schedule_lead(&self, lead_ms: i64) {
        self.schedule_lead
            .store(lead_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The store (for other services sharing it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The router rooms are reached through.
    pub fn router(&self) -> &Arc<dyn RoomRouter> {
        &self.router
    }

    /// Creates a meeting with a fresh unique code, returning it and a host token.
    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        password: Option<&str>,
        host_name: Option<&str>,
    ) -> Result<(Meeting, String), MeetingError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(MeetingError::Invalid(
                "name must be 1-100 characters".into(),
            ));
        }
        let password_hash = match password {
            Some(p) if p.is_empty() || p.len() > 128 => {
                return Err(MeetingError::Invalid(
                    "password must be 1-128 characters".into(),
                ));
            }
            Some(p) => {
                let p = p.to_owned();
                Some(self.hashed(move || hash_password(&p)).await??)
            }
            None => None,
        };
        let (created_by, host_identity) = match caller {
            Caller::Service { key } => (key.clone(), format!("host-{}", crate::ids::random_id(10))),
            Caller::Token(c) => ("browser".to_owned(), c.sub.clone()),
            Caller::Anonymous => (
                "browser".to_owned(),
                format!("host-{}", crate::ids::random_id(10)),
            ),
        };
        let host_name = match host_name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => Some(crate::admission::display_name(n).map_err(MeetingError::Invalid)?),
            None => None,
        };
        for _ in 0..CODE_ATTEMPTS {
            let new = NewMeeting {
                code: MeetingCode::random(),
                name: name.to_owned(),
                password_hash: password_hash.clone(),
                host_identity: host_identity.clone(),
                host_name: host_name.clone(),
                created_by: created_by.clone(),
                created_at: now_ms(),
            };
            match self.store.insert_meeting(&new).await {
                Ok(m) => {
                    let token = self.token_for(
                        &m,
                        &host_identity,
                        host_name.as_deref(),
                        Role::Host,
                        HOST_TOKEN_TTL,
                    );
                    tracing::info!(meeting = %m.code, "meeting created");
                    return Ok((m, token));
                }
                Err(StoreError::Conflict) => continue, // code collision: draw again
                Err(e) => return Err(e.into()),
            }
        }
        Err(MeetingError::Invalid(
            "could not allocate a unique meeting code".into(),
        ))
    }

    /// Runs a password hash (or check) on a blocking thread, at most `password_hashes` at
    /// once; waits for a slot up to [`HASH_WAIT`].
    async fn hashed<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, MeetingError> {
        let _slot = tokio::time::timeout(HASH_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| MeetingError::Busy)?
            .map_err(|_| MeetingError::Busy)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| MeetingError::Busy)
    }

    fn token_for(
        &self,
        m: &Meeting,
        identity: &str,
        name: Option<&str>,
        role: Role,
        ttl: Duration,
    ) -> String {
        self.tokens.issue(
            &TokenRequest {
                room: m.code.to_string(),
                identity: identity.to_owned(),
                name: name.map(str::to_owned),
                grants: Grants {
                    // A host administers their meeting's room (start, end); it grants no
                    // other room, and ends with the meeting (the token names it).
                    room_admin: role == Role::Host,
                    ..Grants::default()
                },
                ttl,
                meeting: Some(m.code.to_string()),
                role: Some(role),
            },
            SystemTime::now(),
        )
    }

    /// A meeting by code (input is normalised).
    pub async fn get(&self, code: &str) -> Result<Meeting, MeetingError> {
        let parsed =
            MeetingCode::parse(code).ok_or_else(|| MeetingError::NotFound(code.to_owned()))?;
        self.store
            .meeting(&parsed)
            .await?
            .ok_or_else(|| MeetingError::NotFound(parsed.to_string()))
    }

    /// Checks the password and issues a join token; a caller holding a token of this meeting's
    /// host joins as host without a password.
    pub async fn join(
        &self,
        code: &str,
        caller: &Caller,
        name: &str,
        password: Option<&str>,
    ) -> Result<JoinGrant, MeetingError> {
        let m = self.get(code).await?;
        if m.status != MeetingStatus::Active
            && let Some(s) = self.store.schedule_by_code(m.code.as_str()).await?
        {
            // A scheduled meeting admits from its ready time on: say when that is.
            let now = now_ms();
            let next = self.store.occurrences_of(s.id, now, 1).await?;
            return Err(match next.first() {
                Some(o) if o.status == "ready" || o.status == "ongoing" => {
                    MeetingError::NotOpenYet {
                        // Being opened right now; a moment.
                        opens_at: now,
                    }
                }
                Some(o) => MeetingError::NotOpenYet {
                    opens_at: o.starts_at
                        - self
                            .schedule_lead
                            .load(std::sync::atomic::Ordering::Relaxed),
                },
                None => MeetingError::Ended,
            });
        }
        if m.status == MeetingStatus::Ended {
            return Err(MeetingError::Ended);
        }
        let name = crate::admission::display_name(name).map_err(MeetingError::Invalid)?;
        let name = name.as_str();
        let as_host = match caller {
            Caller::Token(c) => {
                c.meeting.as_deref() == Some(m.code.as_str()) && c.sub == m.host_identity
            }
            _ => false,
        };
        if !as_host && let Some(hash) = &m.password_hash {
            let Some(given) = password else {
                return Err(MeetingError::PasswordRequired);
            };
            let (hash, given) = (hash.clone(), given.to_owned());
            let ok = self.hashed(move || password_matches(&hash, &given)).await?;
            if !ok {
                return Err(MeetingError::WrongPassword);
            }
        }
        let (identity, role) = if as_host {
            (m.host_identity.clone(), Role::Host)
        } else {
            (
                format!("guest-{}", crate::ids::random_id(10)),
                Role::Participant,
            )
        };
        self.store
            .add_participant(m.id, &identity, name, role, now_ms())
            .await?;
        let token = self.token_for(&m, &identity, Some(name), role, JOIN_TOKEN_TTL);
        Ok(JoinGrant {
            token,
            identity,
            role,
            meeting: m,
        })
    }

    fn may_run(caller: &Caller, m: &Meeting) -> Result<(), MeetingError> {
        match caller {
            Caller::Service { .. } => Ok(()),
            Caller::Token(c)
                if c.meeting.as_deref() == Some(m.code.as_str()) && c.sub == m.host_identity =>
            {
                Ok(())
            }
            Caller::Token(_) => Err(MeetingError::NotHost),
            Caller::Anonymous => Err(MeetingError::Unauthorized("missing credentials".into())),
        }
    }

    /// Host (or API) starts the meeting.
    pub async fn start(&self, code: &str, caller: &Caller) -> Result<Meeting, MeetingError> {
        let m = self.get(code).await?;
        Self::may_run(caller, &m)?;
        if !m.status.can_become(MeetingStatus::Active) {
            return Err(MeetingError::InvalidTransition {
                from: m.status.as_str(),
                to: "active",
            });
        }
        let live = self.live(&m);
        let effects = live.lifecycle.lock().expect("lifecycle").start();
        self.apply(&live, effects).await?;
        self.get(code).await
    }

    /// Host (or API) ends the meeting: everyone is told and disconnected.
    pub async fn end(&self, code: &str, caller: &Caller) -> Result<Meeting, MeetingError> {
        let m = self.get(code).await?;
        Self::may_run(caller, &m)?;
        if m.status == MeetingStatus::Ended {
            return Err(MeetingError::InvalidTransition {
                from: "ended",
                to: "ended",
            });
        }
        let reason = if matches!(caller, Caller::Service { .. }) {
            EndReason::Api
        } else {
            EndReason::HostEnded
        };
        let live = self.live(&m);
        let effects = live.lifecycle.lock().expect("lifecycle").end(reason);
        self.apply(&live, effects).await?;
        self.get(code).await
    }

    /// Opens a scheduled meeting's occurrence: an ended meeting is waiting again (a series
    /// reuses its code) with a fresh lifecycle, and it starts without its host, so the lead
    /// and the agent can meet before (or without) the host, as a scheduled call expects.
    pub async fn open_scheduled(&self, code: &str) -> Result<Meeting, MeetingError> {
        let m = self.get(code).await?;
        if m.status == MeetingStatus::Ended && self.store.reopen_meeting(&m.code, now_ms()).await? {
            self.live.remove(&m.code);
            tracing::info!(code = %m.code, "meeting reopened for its next occurrence");
        }
        let m = self.get(code).await?;
        if m.status == MeetingStatus::Waiting {
            let live = self.live(&m);
            let effects = live.lifecycle.lock().expect("lifecycle").start();
            self.apply(&live, effects).await?;
        }
        self.get(code).await
    }

    /// Ends a scheduled meeting whose occurrence is over (nothing if already ended).
    pub async fn close_for_schedule(&self, code: &str) -> Result<(), MeetingError> {
        let m = self.get(code).await?;
        if m.status == MeetingStatus::Ended {
            return Ok(());
        }
        let live = self.live(&m);
        let effects = live
            .lifecycle
            .lock()
            .expect("lifecycle")
            .end(EndReason::Api);
        self.apply(&live, effects).await
    }

    /// Records that the token holder left (API leave; the WebSocket closing does the same).
    pub async fn leave(&self, code: &str, caller: &Caller) -> Result<(), MeetingError> {
        let m = self.get(code).await?;
        let Caller::Token(c) = caller else {
            return Err(MeetingError::Unauthorized(
                "a participant token is required".into(),
            ));
        };
        if c.meeting.as_deref() != Some(m.code.as_str()) {
            return Err(MeetingError::Unauthorized(
                "the token is for another meeting".into(),
            ));
        }
        self.store.participant_left(m.id, &c.sub, now_ms()).await?;
        Ok(())
    }

    /// Participant history.
    pub async fn participants(
        &self,
        code: &str,
        caller: &Caller,
    ) -> Result<Vec<ParticipantRecord>, MeetingError> {
        let m = self.get(code).await?;
        match caller {
            Caller::Service { .. } => {}
            Caller::Token(c) if c.meeting.as_deref() == Some(m.code.as_str()) => {}
            Caller::Token(_) => {
                return Err(MeetingError::Unauthorized(
                    "the token is for another meeting".into(),
                ));
            }
            Caller::Anonymous => {
                return Err(MeetingError::Unauthorized("missing credentials".into()));
            }
        }
        Ok(self.store.participants(m.id).await?)
    }

    /// The caller's meetings, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Meeting>, MeetingError> {
        let (host, creator) = match caller {
            Caller::Service { key } => (None, Some(key.as_str())),
            Caller::Token(c) => (Some(c.sub.as_str()), None),
            Caller::Anonymous => {
                return Err(MeetingError::Unauthorized("missing credentials".into()));
            }
        };
        Ok(self
            .store
            .meetings_for(host, creator, limit, offset)
            .await?)
    }

    /// Info for signaling messages.
    pub fn info(m: &Meeting, role: Option<Role>) -> MeetingInfo {
        MeetingInfo {
            code: m.code.to_string(),
            name: m.name.clone(),
            status: m.status.as_str().to_owned(),
            host_identity: m.host_identity.clone(),
            role,
        }
    }

    /// For the WebSocket join: the meeting and a watch on its status, or why not.
    pub async fn admit(
        &self,
        code: &str,
    ) -> Result<(Meeting, watch::Receiver<MeetingStatus>), MeetingError> {
        let m = self.get(code).await?;
        if m.status == MeetingStatus::Ended {
            return Err(MeetingError::Ended);
        }
        let live = self.live(&m);
        let rx = live.status.subscribe();
        Ok((m, rx))
    }

    /// A participant's media session began.
    pub async fn connected(
        &self,
        code: &str,
        identity: &str,
        name: &str,
        role: Role,
    ) -> Result<(), MeetingError> {
        let m = self.get(code).await?;
        let live = self.live(&m);
        let effects =
            live.lifecycle
                .lock()
                .expect("lifecycle")
                .joined(identity, name, role, now_ms());
        self.apply(&live, effects).await
    }

    /// A participant's media session ended.
    pub async fn disconnected(&self, code: &str, identity: &str) -> Result<(), MeetingError> {
        let Some(code) = MeetingCode::parse(code) else {
            return Ok(());
        };
        let Some(live) = self.live.get(&code).map(|l| l.clone()) else {
            return Ok(());
        };
        let effects = live
            .lifecycle
            .lock()
            .expect("lifecycle")
            .left(identity, now_ms());
        self.store
            .participant_left(live.meeting_id, identity, now_ms())
            .await?;
        self.apply(&live, effects).await
    }

    fn live(&self, m: &Meeting) -> Arc<Live> {
        if let Some(l) = self.live.get(&m.code) {
            return l.clone();
        }
        self.live
            .entry(m.code.clone())
            .or_insert_with(|| {
                Arc::new(Live {
                    code: m.code.clone(),
                    meeting_id: m.id,
                    lifecycle: Mutex::new(Lifecycle::new(
                        m.status,
                        &m.host_identity,
                        self.grace.as_millis() as i64,
                    )),
                    status: watch::channel(m.status).0,
                })
            })
            .clone()
    }

    /// Reconciles meetings a crash left `active`: their open stays are closed at start-up
    /// (the connections died with the process) and each waits for its host with a fresh
    /// grace period, ending if nobody comes back. Returns how many were recovered.
    pub async fn recover(&self) -> Result<usize, MeetingError> {
        let now = now_ms();
        let (mut n, mut after) = (0, 0);
        loop {
            let batch = self
                .store
                .meetings_in(MeetingStatus::Active, after, 500)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            for m in batch
                .into_iter()
                .filter(|m| !self.live.contains_key(&m.code))
            {
                self.store.close_stays(m.id, now).await?;
                let live = self.live(&m);
                live.lifecycle.lock().expect("lifecycle").recovered(now);
                tracing::warn!(meeting = %m.code, "meeting was active at a crash; waiting for its host");
                n += 1;
            }
        }
        Ok(n)
    }

    /// Spawns the grace-period timer of a live meeting. Called once per process start by the
    /// server, which owns the `Arc<MeetingService>`.
    pub fn run_timers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let svc = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = svc.upgrade() else { return };
                let lives: Vec<Arc<Live>> = s.live.iter().map(|l| l.clone()).collect();
                let now = now_ms();
                let mut next = now + 1000;
                for live in lives {
                    let (effects, deadline) = {
                        let mut lc = live.lifecycle.lock().expect("lifecycle");
                        let e = lc.tick(now);
                        (e, lc.deadline())
                    };
                    if let Err(e) = s.apply(&live, effects).await {
                        tracing::error!(meeting = %live.code, error = %e, "grace period effect failed");
                    }
                    if let Some(d) = deadline {
                        next = next.min(d.max(now + 10));
                    }
                }
                drop(s);
                tokio::time::sleep(Duration::from_millis((next - now).max(10) as u64)).await;
            }
        })
    }

    async fn apply(&self, live: &Live, effects: Vec<Effect>) -> Result<(), MeetingError> {
        let room = RoomName::validate(live.code.as_str()).expect("meeting codes are room names");
        for effect in effects {
            let at = now_ms();
            match effect {
                Effect::Started => {
                    self.store
                        .transition(
                            &live.code,
                            MeetingStatus::Waiting,
                            MeetingStatus::Active,
                            at,
                        )
                        .await?;
                    live.status.send_replace(MeetingStatus::Active);
                    self.router
                        .announce_meeting_status(live.code.as_str(), MeetingStatus::Active.as_str())
                        .await;
                    self.router
                        .broadcast(&room, crate::signal::meeting_started())
                        .await;
                    tracing::info!(meeting = %live.code, "meeting started");
                }
                Effect::Ended(reason) => {
                    for from in [MeetingStatus::Active, MeetingStatus::Waiting] {
                        if self
                            .store
                            .transition(&live.code, from, MeetingStatus::Ended, at)
                            .await?
                            .is_some()
                        {
                            break;
                        }
                    }
                    self.store.close_stays(live.meeting_id, at).await?;
                    live.status.send_replace(MeetingStatus::Ended);
                    self.router
                        .announce_meeting_status(live.code.as_str(), MeetingStatus::Ended.as_str())
                        .await;
                    let reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    self.router
                        .close_room(&room, crate::signal::meeting_ended(&reason))
                        .await;
                    self.live.remove(&live.code);
                    tracing::info!(meeting = %live.code, %reason, "meeting ended");
                }
                Effect::HostChanged { identity, name } => {
                    self.store.set_host(&live.code, &identity, &name).await?;
                    let participant_id = self.router.participant_of(&room, &identity).await;
                    self.router
                        .broadcast(
                            &room,
                            crate::signal::host_changed(&identity, participant_id),
                        )
                        .await;
                    tracing::info!(meeting = %live.code, host = %identity, "host changed");
                }
            }
        }
        Ok(())
    }
}

/// In a cluster: presence of members relayed to this node's rooms, and status changes made on
/// other nodes, which release (or end) the joins waiting here.
#[async_trait::async_trait]
impl crate::routing::MeetingEvents for MeetingService {
    async fn connected(&self, code: &str, identity: &str, name: &str, role: Role) {
        if let Err(e) = MeetingService::connected(self, code, identity, name, role).await {
            tracing::error!(meeting = code, error = %e, "relayed member's meeting presence not recorded");
        }
    }

    async fn disconnected(&self, code: &str, identity: &str) {
        if let Err(e) = MeetingService::disconnected(self, code, identity).await {
            tracing::error!(meeting = code, error = %e, "relayed member's departure not recorded");
        }
    }

    fn status_changed_elsewhere(&self, code: &str, status: &str) {
        let (Some(code), Some(status)) = (MeetingCode::parse(code), MeetingStatus::parse(status))
        else {
            return;
        };
        let Some(live) = self.live.get(&code).map(|l| l.clone()) else {
            return;
        };
        tracing::info!(meeting = %code, status = status.as_str(), "meeting status changed on another node");
        match status {
            MeetingStatus::Active => {
                // Started elsewhere (the room's node, or an API call to another node).
                let _ = live.lifecycle.lock().expect("lifecycle").start();
                live.status.send_replace(MeetingStatus::Active);
            }
            MeetingStatus::Ended => {
                live.status.send_replace(MeetingStatus::Ended);
                self.live.remove(&code);
            }
            MeetingStatus::Waiting => {}
        }
    }
}
