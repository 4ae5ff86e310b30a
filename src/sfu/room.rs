//! Rooms: who is in them, what they publish, and telling everyone when that changes.
//!
//! A room's state sits behind its own mutex, held only for bookkeeping (never across an
//! await, never per packet). Messages to participants are queued with `try_send`, so a
//! participant that stops reading cannot stall the room: it is disconnected instead.

use super::participant::{Command, ParticipantHandle};
use super::producer::Producer;
use crate::metrics::Metrics;
use conclave_media::frames::Frame;
use conclave_signaling::{
    ErrorCode, IceServer, MeetingInfo, ParticipantId, ParticipantInfo, RoomName, ServerMessage,
    TrackId,
};
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// Why a participant could not enter a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Rooms must be created first and this one was not.
    #[error("room {0} does not exist")]
    RoomNotFound(RoomName),
    /// The room closed while joining (it emptied); the caller may retry.
    #[error("room {0} closed")]
    RoomClosed(RoomName),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl JoinError {
    /// The signaling error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::RoomNotFound(_) | JoinError::RoomClosed(_) => ErrorCode::RoomNotFound,
            JoinError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

struct Member {
    handle: ParticipantHandle,
    producers: Vec<Arc<Producer>>,
}

#[derive(Default)]
struct RoomState {
    // BTreeMap so participant lists come out in a stable order.
    members: BTreeMap<ParticipantId, Member>,
    closed: bool,
}

/// One room.
pub struct Room {
    /// Its name.
    pub name: RoomName,
    /// Created through the API: stays when empty.
    pub persistent: bool,
    state: Mutex<RoomState>,
    metrics: Arc<Metrics>,
    /// The room's audio-pipeline frames; captions, the transcript store and (later) agents
    /// each subscribe.
    frames: broadcast::Sender<Frame>,
    opened_unix_ms: i64,
    /// The same moment on the monotonic clock, which pipeline times count from.
    opened: std::time::Instant,
    meeting: OnceLock<String>,
}

impl Room {
    fn new(name: RoomName, persistent: bool, metrics: Arc<Metrics>) -> Self {
        Room {
            name,
            persistent,
            state: Mutex::new(RoomState::default()),
            metrics,
            frames: broadcast::channel(crate::transcription::ROOM_FRAME_BUFFER).0,
            opened_unix_ms: crate::clock::now_ms(),
            opened: std::time::Instant::now(),
            meeting: OnceLock::new(),
        }
    }

    /// Sender of the room's pipeline frames (pipelines publish, consumers subscribe).
    pub fn frames(&self) -> broadcast::Sender<Frame> {
        self.frames.clone()
    }

    /// When the room opened, unix ms; pipeline times count from here.
    pub fn opened_unix_ms(&self) -> i64 {
        self.opened_unix_ms
    }

    /// When the room opened, on the monotonic clock.
    pub fn opened(&self) -> std::time::Instant {
        self.opened
    }

    /// The meeting this room belongs to.
    pub fn meeting_code(&self) -> Option<String> {
        self.meeting.get().cloned()
    }

    /// (identity, name) of a connected participant.
    pub fn member(&self, id: &ParticipantId) -> Option<(String, String)> {
        self.lock()
            .members
            .get(id)
            .map(|m| (m.handle.identity.clone(), m.handle.name.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state.lock().expect("room lock poisoned")
    }

    /// Number of participants.
    pub fn participant_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Admits a participant: queues its `joined` message (always its first), tells the others,
    /// and subscribes it to every track already published.
    pub fn join(
        &self,
        handle: ParticipantHandle,
        ice_servers: Vec<IceServer>,
        meeting: Option<MeetingInfo>,
    ) -> Result<(), JoinError> {
        let mut st = self.lock();
        if st.closed {
            return Err(JoinError::RoomClosed(self.name.clone()));
        }
        let others: Vec<ParticipantInfo> = st.members.values().map(member_info).collect();
        handle.send(ServerMessage::Joined {
            room: self.name.clone(),
            participant_id: handle.id.clone(),
            participants: others,
            ice_servers,
            meeting,
        });
        let info = ParticipantInfo {
            id: handle.id.clone(),
            identity: handle.identity.clone(),
            name: handle.name.clone(),
            tracks: vec![],
        };
        for m in st.members.values() {
            m.handle.send(ServerMessage::ParticipantJoined {
                participant: info.clone(),
            });
            if handle.can_subscribe {
                for p in &m.producers {
                    handle.command(Command::Subscribe(p.clone()));
                }
            }
        }
        st.members.insert(
            handle.id.clone(),
            Member {
                handle,
                producers: vec![],
            },
        );
        self.metrics.participants.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Adds a participant's new track and subscribes everyone else to it.
    pub fn publish(&self, producer: Arc<Producer>) {
        let mut st = self.lock();
        let Some(member) = st.members.get_mut(&producer.publisher) else {
            return;
        };
        member.producers.push(producer.clone());
        self.metrics.tracks.fetch_add(1, Ordering::Relaxed);
        let msg = ServerMessage::TrackPublished {
            participant_id: producer.publisher.clone(),
            track: producer.info(),
        };
        for (id, m) in st.members.iter() {
            m.handle.send(msg.clone());
            if *id != producer.publisher && m.handle.can_subscribe {
                m.handle.command(Command::Subscribe(producer.clone()));
            }
        }
    }

    /// Removes a track (it ended, or its publisher left).
    pub fn unpublish(&self, publisher: &ParticipantId, track: &TrackId) {
        let mut st = self.lock();
        let Some(member) = st.members.get_mut(publisher) else {
            return;
        };
        let before = member.producers.len();
        member.producers.retain(|p| &p.id != track);
        if member.producers.len() == before {
            return;
        }
        self.metrics.tracks.fetch_sub(1, Ordering::Relaxed);
        Self::announce_unpublished(&st, publisher, track);
    }

    fn announce_unpublished(st: &RoomState, publisher: &ParticipantId, track: &TrackId) {
        let msg = ServerMessage::TrackUnpublished {
            participant_id: publisher.clone(),
            track_id: track.clone(),
        };
        for (id, m) in st.members.iter() {
            m.handle.send(msg.clone());
            if id != publisher {
                m.handle.command(Command::Unsubscribe(track.clone()));
            }
        }
    }

    /// Records a mute change and tells everyone; `false` if the track is not the sender's.
    pub fn set_muted(&self, publisher: &ParticipantId, track: &TrackId, muted: bool) -> bool {
        let st = self.lock();
        let Some(p) = st
            .members
            .get(publisher)
            .and_then(|m| m.producers.iter().find(|p| &p.id == track))
        else {
            return false;
        };
        p.set_muted(muted);
        let msg = ServerMessage::TrackMuted {
            participant_id: publisher.clone(),
            track_id: track.clone(),
            muted,
        };
        for m in st.members.values() {
            m.handle.send(msg.clone());
        }
        true
    }

    /// Removes a participant and its tracks. Returns whether the room is now empty (and, if
    /// not persistent, closed).
    pub fn leave(&self, id: &ParticipantId) -> bool {
        let mut st = self.lock();
        let Some(member) = st.members.remove(id) else {
            return st.members.is_empty();
        };
        self.metrics.participants.fetch_sub(1, Ordering::Relaxed);
        for p in &member.producers {
            self.metrics.tracks.fetch_sub(1, Ordering::Relaxed);
            Self::announce_unpublished(&st, id, &p.id);
        }
        for m in st.members.values() {
            m.handle.send(ServerMessage::ParticipantLeft {
                participant_id: id.clone(),
            });
        }
        let empty = st.members.is_empty();
        if empty && !self.persistent {
            st.closed = true;
        }
        empty
    }

    /// Sends `msg` to everyone in the room.
    pub fn broadcast(&self, msg: ServerMessage) {
        for m in self.lock().members.values() {
            m.handle.send(msg.clone());
        }
    }

    /// Sends `msg` to everyone, then disconnects them, and refuses later joins.
    pub fn close_with(&self, msg: ServerMessage) {
        let mut st = self.lock();
        st.closed = true;
        for m in st.members.values() {
            m.handle.command(Command::Farewell(msg.clone()));
        }
    }

    /// The participant id of a connected identity, if any.
    pub fn participant_of(&self, identity: &str) -> Option<ParticipantId> {
        self.lock()
            .members
            .values()
            .find(|m| m.handle.identity == identity)
            .map(|m| m.handle.id.clone())
    }

    /// Asks every participant to disconnect with `code`.
    pub fn close_all(&self, code: ErrorCode, message: &str) {
        let st = self.lock();
        for m in st.members.values() {
            m.handle.command(Command::Close {
                code: Some(code),
                message: message.to_owned(),
            });
        }
    }
}

fn member_info(m: &Member) -> ParticipantInfo {
    ParticipantInfo {
        id: m.handle.id.clone(),
        identity: m.handle.identity.clone(),
        name: m.handle.name.clone(),
        tracks: m.producers.iter().map(|p| p.info()).collect(),
    }
}

/// All rooms of this node. Multi-node routing will wrap this behind the same methods.
pub struct RoomManager {
    rooms: DashMap<RoomName, Arc<Room>>,
    auto_create: bool,
    metrics: Arc<Metrics>,
    shutting_down: std::sync::atomic::AtomicBool,
    transcription: Option<Arc<crate::transcription::Transcription>>,
}

impl RoomManager {
    /// A manager that creates rooms on first join when `auto_create`.
    pub fn new(
        auto_create: bool,
        metrics: Arc<Metrics>,
        transcription: Option<Arc<crate::transcription::Transcription>>,
    ) -> Self {
        RoomManager {
            rooms: DashMap::new(),
            auto_create,
            metrics,
            shutting_down: Default::default(),
            transcription,
        }
    }

    /// Server-wide transcription, when a model is loaded.
    pub fn transcription(&self) -> Option<&Arc<crate::transcription::Transcription>> {
        self.transcription.as_ref()
    }

    /// The room to join, creating it if allowed.
    pub fn room_for_join(&self, name: &RoomName) -> Result<Arc<Room>, JoinError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(JoinError::ShuttingDown);
        }
        if let Some(r) = self.rooms.get(name) {
            return Ok(r.clone());
        }
        if !self.auto_create {
            return Err(JoinError::RoomNotFound(name.clone()));
        }
        Ok(self.insert(name, false))
    }

    /// The room of a meeting: created on demand whatever `auto_create` says, because the
    /// meeting itself was created through the API.
    pub fn room_for_meeting(&self, name: &RoomName) -> Result<Arc<Room>, JoinError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(JoinError::ShuttingDown);
        }
        let room = self.insert(name, false);
        let _ = room.meeting.set(name.to_string());
        Ok(room)
    }

    /// Creates a room that stays when empty (API-created); returns it if it already exists.
    pub fn create(&self, name: &RoomName) -> Arc<Room> {
        self.insert(name, true)
    }

    fn insert(&self, name: &RoomName, persistent: bool) -> Arc<Room> {
        self.rooms
            .entry(name.clone())
            .or_insert_with(|| {
                self.metrics.rooms.fetch_add(1, Ordering::Relaxed);
                tracing::info!(room = %name, persistent, "room created");
                let room = Arc::new(Room::new(name.clone(), persistent, self.metrics.clone()));
                if let Some(t) = &self.transcription {
                    t.start_room(&room);
                }
                room
            })
            .clone()
    }

    /// Drops a room that closed (it emptied, or its meeting ended) once nobody is left in it.
    pub fn remove_if_closed(&self, name: &RoomName) {
        let removed = self.rooms.remove_if(name, |_, r| {
            let st = r.lock();
            st.closed && st.members.is_empty()
        });
        if removed.is_some() {
            self.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(room = %name, "room closed");
        }
    }

    /// Looks a room up.
    pub fn get(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.clone())
    }

    /// (rooms, participants) on this node.
    pub fn counts(&self) -> (usize, usize) {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.clone()).collect();
        let participants = rooms.iter().map(|r| r.participant_count()).sum();
        (rooms.len(), participants)
    }

    /// Refuses new joins and disconnects everyone.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.clone()).collect();
        for r in rooms {
            r.close_all(ErrorCode::ShuttingDown, "the server is shutting down");
        }
    }
}
