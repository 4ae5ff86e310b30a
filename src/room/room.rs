//! One room: who is in it, what they publish, and telling everyone when that changes.
//!
//! A room's state sits behind its own mutex, held only for bookkeeping (never across an
//! await, never per packet). Members are told with `try_send` into their bounded queues, so
//! one that stops reading cannot stall the room: it is disconnected instead.

use super::events::{ROOM_EVENT_BUFFER, RoomEvent, RoomSnapshot};
use super::member::{MemberEvent, MemberHandle, MemberInfo, MemberLink, member_channel};
use super::producer::{Producer, ProducerCounts, ProducerSpec, RetiredCounts};
use crate::metrics::Metrics;
use crate::signal;
use conclave_media::frames::Frame;
use conclave_signaling::{
    ErrorCode, ParticipantId, ParticipantInfo, RoomName, ServerMessage, TrackId,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::broadcast;

/// Frames buffered per room for slow frame consumers before they start missing some.
pub const ROOM_FRAME_BUFFER: usize = 256;

/// Why a member could not enter a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Rooms must be created first and this one was not.
    #[error("room {0} does not exist")]
    RoomNotFound(RoomName),
    /// The room closed while joining (it emptied); the caller may retry.
    #[error("room {0} closed")]
    RoomClosed(RoomName),
    /// The room has as many members as it may.
    #[error("room {0} is full ({1} participants)")]
    RoomFull(RoomName, usize),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The media side could not take the member.
    #[error("{0}")]
    Media(String),
    /// The room's node cannot be reached, or this node takes no new rooms (cluster routing).
    #[error("{0}")]
    Unavailable(String),
    /// Refused by the room's node on another machine, as it said.
    #[error("{1}")]
    Remote(ErrorCode, String),
}

impl JoinError {
    /// The signaling error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::RoomNotFound(_) | JoinError::RoomClosed(_) => ErrorCode::RoomNotFound,
            JoinError::RoomFull(..) => ErrorCode::RoomFull,
            JoinError::ShuttingDown => ErrorCode::ShuttingDown,
            JoinError::Media(_) => ErrorCode::Internal,
            JoinError::Unavailable(_) => ErrorCode::Unavailable,
            JoinError::Remote(code, _) => *code,
        }
    }
}

/// Why a track could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The publisher is not (or no longer) in the room.
    #[error("participant {0} is not in the room")]
    NotAMember(ParticipantId),
}

struct Entry {
    handle: MemberHandle,
    producers: Vec<Arc<Producer>>,
}

struct RoomState {
    // BTreeMap so participant lists come out in a stable order.
    members: BTreeMap<ParticipantId, Entry>,
    closed: bool,
    /// When the last member left (or the room opened empty).
    empty_since: Option<Instant>,
}

/// One room.
pub struct Room {
    /// Its name.
    pub name: RoomName,
    /// Created through the API: stays when empty.
    pub persistent: bool,
    max_members: usize,
    state: Mutex<RoomState>,
    events: broadcast::Sender<RoomEvent>,
    /// The room's audio-pipeline frames: pipelines publish, captions, storage and agents
    /// subscribe. The room lets go of it when it is retired, so the channel closes once the
    /// last pipeline has flushed.
    frames: Mutex<Option<broadcast::Sender<Frame>>>,
    opened_unix_ms: i64,
    /// The same moment on the monotonic clock, which pipeline and producer times count from.
    opened: Instant,
    meeting: OnceLock<String>,
    metrics: Arc<Metrics>,
    retired: Arc<RetiredCounts>,
    /// Raised while an agent listens: the audio pipelines then judge each pause with the
    /// end-of-turn model.
    turn_verdicts: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("name", &self.name).finish()
    }
}

fn entry_info(e: &Entry) -> ParticipantInfo {
    signal::participant(
        &e.handle.info,
        e.producers.iter().map(|p| p.info()).collect(),
    )
}

impl Room {
    pub(super) fn new(
        name: RoomName,
        persistent: bool,
        max_members: usize,
        metrics: Arc<Metrics>,
        retired: Arc<RetiredCounts>,
    ) -> Self {
        Room {
            name,
            persistent,
            max_members: max_members.max(1),
            state: Mutex::new(RoomState {
                members: BTreeMap::new(),
                closed: false,
                empty_since: Some(Instant::now()),
            }),
            events: broadcast::channel(ROOM_EVENT_BUFFER).0,
            frames: Mutex::new(Some(broadcast::channel(ROOM_FRAME_BUFFER).0)),
            opened_unix_ms: crate::clock::now_ms(),
            opened: Instant::now(),
            meeting: OnceLock::new(),
            metrics,
            retired,
            turn_verdicts: Arc::default(),
        }
    }

    /// The flag that asks this room's pipelines for end-of-turn verdicts.
    pub fn turn_verdicts(&self) -> &Arc<std::sync::atomic::AtomicBool> {
        &self.turn_verdicts
    }

    /// Runs `f` over the members present now, under the room's lock (keep it short).
    pub fn with_members<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &MemberInfo>) -> R) -> R {
        let st = self.lock();
        let mut it = st.members.values().map(|e| &e.handle.info);
        f(&mut it)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state.lock().expect("room lock poisoned")
    }

    fn emit(&self, event: RoomEvent) {
        // Nobody following is fine: events are a feed.
        let _ = self.events.send(event);
    }

    /// Sender of the room's pipeline frames; `None` once the room is retired.
    pub fn frames(&self) -> Option<broadcast::Sender<Frame>> {
        self.frames.lock().expect("room frames").clone()
    }

    /// Follows the room: its state now and every event after it, with nothing in between.
    pub fn subscribe(&self) -> (RoomSnapshot, broadcast::Receiver<RoomEvent>) {
        let st = self.lock();
        let rx = self.events.subscribe();
        let snapshot = RoomSnapshot {
            members: st.members.values().map(|e| e.handle.info.clone()).collect(),
            producers: st
                .members
                .values()
                .flat_map(|e| e.producers.iter().cloned())
                .collect(),
            closed: st.closed,
        };
        (snapshot, rx)
    }

    /// When the room opened, unix ms; pipeline times count from here.
    pub fn opened_unix_ms(&self) -> i64 {
        self.opened_unix_ms
    }

    /// When the room opened, on the monotonic clock.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    pub(super) fn set_meeting(&self, code: &str) {
        let _ = self.meeting.set(code.to_owned());
    }

    /// The meeting this room belongs to.
    pub fn meeting_code(&self) -> Option<String> {
        self.meeting.get().cloned()
    }

    /// A present member.
    pub fn member(&self, id: &ParticipantId) -> Option<MemberInfo> {
        self.lock().members.get(id).map(|e| e.handle.info.clone())
    }

    /// Number of members.
    pub fn participant_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Admits a member: tells the others, queues a subscription to every track already
    /// published (if it subscribes), and returns its link and who else is here (for its
    /// `joined` message, which the caller sends before reading the link).
    pub fn join(&self, info: MemberInfo) -> Result<(MemberLink, Vec<ParticipantInfo>), JoinError> {
        let mut st = self.lock();
        if st.closed {
            return Err(JoinError::RoomClosed(self.name.clone()));
        }
        if st.members.len() >= self.max_members {
            return Err(JoinError::RoomFull(self.name.clone(), self.max_members));
        }
        let others: Vec<ParticipantInfo> = st.members.values().map(entry_info).collect();
        let (handle, link) = member_channel(info.clone());
        let joined = signal::participant_joined(&info);
        for e in st.members.values() {
            e.handle.signal(joined.clone());
            if info.can_subscribe {
                for p in &e.producers {
                    handle.deliver(MemberEvent::Subscribe(p.clone()));
                }
            }
        }
        st.members.insert(
            info.id.clone(),
            Entry {
                handle,
                producers: vec![],
            },
        );
        st.empty_since = None;
        self.metrics.participants.fetch_add(1, Ordering::Relaxed);
        self.emit(RoomEvent::MemberJoined(info));
        Ok((link, others))
    }

    /// Publishes a member's new track: tells everyone and subscribes the others. The caller
    /// feeds the returned producer.
    pub fn publish(&self, spec: ProducerSpec) -> Result<Arc<Producer>, PublishError> {
        self.publish_from(spec, None)
    }

    /// [`Room::publish`] for a stream the media plane forwards from `plane`.
    pub fn publish_from(
        &self,
        spec: ProducerSpec,
        plane: Option<crate::room::producer::PlaneSource>,
    ) -> Result<Arc<Producer>, PublishError> {
        let mut st = self.lock();
        let publisher = spec.publisher.clone();
        let Some(entry) = st.members.get_mut(&publisher) else {
            return Err(PublishError::NotAMember(publisher));
        };
        let mut producer = Producer::new(spec, self.opened, self.retired.clone());
        producer.plane = plane;
        let producer = Arc::new(producer);
        entry.producers.push(producer.clone());
        self.metrics.tracks.fetch_add(1, Ordering::Relaxed);
        let msg = signal::track_published(&publisher, producer.info());
        for (id, e) in st.members.iter() {
            e.handle.signal(msg.clone());
            if *id != publisher && e.handle.info.can_subscribe {
                e.handle.deliver(MemberEvent::Subscribe(producer.clone()));
            }
        }
        self.emit(RoomEvent::TrackPublished(producer.clone()));
        Ok(producer)
    }

    /// Removes a track (it ended, or its publisher left).
    pub fn unpublish(&self, publisher: &ParticipantId, track: &TrackId) {
        let mut st = self.lock();
        let Some(entry) = st.members.get_mut(publisher) else {
            return;
        };
        let Some(i) = entry.producers.iter().position(|p| &p.id == track) else {
            return;
        };
        entry.producers.remove(i).retire();
        self.announce_unpublished(&st, publisher, track);
    }

    fn announce_unpublished(&self, st: &RoomState, publisher: &ParticipantId, track: &TrackId) {
        self.metrics.tracks.fetch_sub(1, Ordering::Relaxed);
        let msg = signal::track_unpublished(publisher, track);
        for (id, e) in st.members.iter() {
            e.handle.signal(msg.clone());
            if id != publisher {
                e.handle.deliver(MemberEvent::Unsubscribe(track.clone()));
            }
        }
        self.emit(RoomEvent::TrackUnpublished {
            publisher: publisher.clone(),
            track: track.clone(),
        });
    }

    /// Records a mute change and tells everyone; `false` if the track is not the sender's.
    pub fn set_muted(&self, publisher: &ParticipantId, track: &TrackId, muted: bool) -> bool {
        let st = self.lock();
        let Some(p) = st
            .members
            .get(publisher)
            .and_then(|e| e.producers.iter().find(|p| &p.id == track))
        else {
            return false;
        };
        p.set_muted(muted);
        let msg = signal::track_muted(publisher, track, muted);
        for e in st.members.values() {
            e.handle.signal(msg.clone());
        }
        self.emit(RoomEvent::TrackMuted {
            publisher: publisher.clone(),
            track: track.clone(),
            muted,
        });
        true
    }

    /// Removes a member and its tracks. Returns whether the room is now empty (and, if not
    /// persistent, closed).
    pub fn leave(&self, id: &ParticipantId) -> bool {
        let mut st = self.lock();
        let Some(entry) = st.members.remove(id) else {
            return st.members.is_empty();
        };
        self.metrics.participants.fetch_sub(1, Ordering::Relaxed);
        for p in &entry.producers {
            p.retire();
            self.announce_unpublished(&st, id, &p.id);
        }
        let left = signal::participant_left(id);
        for e in st.members.values() {
            e.handle.signal(left.clone());
        }
        self.emit(RoomEvent::MemberLeft(id.clone()));
        let empty = st.members.is_empty();
        if empty {
            st.empty_since = Some(Instant::now());
            if !self.persistent {
                st.closed = true;
            }
        }
        empty
    }

    /// Sends `msg` to every member.
    pub fn broadcast(&self, msg: ServerMessage) {
        for e in self.lock().members.values() {
            e.handle.signal(msg.clone());
        }
    }

    /// Sends `msg` to the members with `role` only (the agent's score goes to hosts).
    pub fn signal_role(&self, role: conclave_signaling::Role, msg: ServerMessage) {
        for e in self.lock().members.values() {
            if e.handle.info.role == Some(role) {
                e.handle.signal(msg.clone());
            }
        }
    }

    /// Sends `msg` to everyone, then disconnects them, and refuses later joins.
    pub fn close_with(&self, msg: ServerMessage) {
        let mut st = self.lock();
        st.closed = true;
        for e in st.members.values() {
            e.handle.deliver(MemberEvent::Farewell(msg.clone()));
        }
    }

    /// Asks every member to leave with `code`.
    pub fn close_all(&self, code: ErrorCode, message: &str) {
        let st = self.lock();
        for e in st.members.values() {
            e.handle.deliver(MemberEvent::Close {
                code: Some(code),
                message: message.to_owned(),
            });
        }
    }

    /// The participant id of a present identity, if any.
    pub fn participant_of(&self, identity: &str) -> Option<ParticipantId> {
        self.lock()
            .members
            .values()
            .find(|e| e.handle.info.identity == identity)
            .map(|e| e.handle.info.id.clone())
    }

    /// Closes the room for good if it is closed and empty; tells followers. Returns whether
    /// it did.
    pub(super) fn retire_if_closed(&self) -> bool {
        let st = self.lock();
        if !(st.closed && st.members.is_empty()) {
            return false;
        }
        self.frames.lock().expect("room frames").take();
        self.emit(RoomEvent::Closed);
        true
    }

    /// A persistent room empty since before `cutoff` closes (so it can be retired).
    pub(super) fn close_if_empty_since(&self, cutoff: Instant) -> bool {
        let mut st = self.lock();
        match st.empty_since {
            Some(t) if t <= cutoff && st.members.is_empty() => {
                st.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Marks the room closed and tells followers (server shutdown).
    pub(super) fn retire(&self) {
        self.lock().closed = true;
        self.frames.lock().expect("room frames").take();
        self.emit(RoomEvent::Closed);
    }

    /// Packet counts of the tracks published now.
    pub fn counts(&self) -> ProducerCounts {
        let producers: Vec<Arc<Producer>> = self
            .lock()
            .members
            .values()
            .flat_map(|e| e.producers.iter().cloned())
            .collect();
        let mut total = ProducerCounts::default();
        for p in producers {
            total += p.counts();
        }
        total
    }
}
