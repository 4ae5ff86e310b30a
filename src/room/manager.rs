//! The rooms of this node. Routers (local today, Redis-backed later) sit in front of it; in
//! this process it is the one place rooms are opened and retired.

use super::producer::{ProducerCounts, RetiredCounts};
use super::room::{JoinError, Room};
use crate::metrics::Metrics;
use conclave_signaling::{ErrorCode, RoomName};
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How a room is looked up for a join.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Open {
    /// An ordinary room: created on first join if the server auto-creates rooms.
    Join,
    /// The room of a meeting (created through the API), so created on demand whatever
    /// auto-creation says.
    Meeting(String),
    /// Created through the API: stays when empty.
    Persistent,
}

/// All rooms of this node.
pub struct RoomManager {
    rooms: DashMap<RoomName, Arc<Room>>,
    auto_create: bool,
    max_members: usize,
    metrics: Arc<Metrics>,
    retired: Arc<RetiredCounts>,
    shutting_down: AtomicBool,
    /// Followers told about every room that opens (transcription, later agents).
    openers: Mutex<Vec<mpsc::UnboundedSender<Arc<Room>>>>,
}

impl RoomManager {
    /// A manager that creates rooms on first join when `auto_create`, with at most
    /// `max_members` members per room.
    pub fn new(auto_create: bool, max_members: usize, metrics: Arc<Metrics>) -> Self {
        RoomManager {
            rooms: DashMap::new(),
            auto_create,
            max_members,
            metrics,
            retired: Arc::default(),
            shutting_down: Default::default(),
            openers: Mutex::default(),
        }
    }

    /// Every room that opens from now on (and those open now), as it opens. The channel holds
    /// one entry per room opening; it ends when the manager is dropped.
    pub fn watch_openings(&self) -> mpsc::UnboundedReceiver<Arc<Room>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut openers = self.openers.lock().expect("openers");
        for r in self.rooms.iter() {
            let _ = tx.send(r.clone());
        }
        openers.push(tx);
        rx
    }

    /// The room to enter.
    pub fn open(&self, name: &RoomName, how: &Open) -> Result<Arc<Room>, JoinError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(JoinError::ShuttingDown);
        }
        match how {
            Open::Join => {
                if let Some(r) = self.rooms.get(name) {
                    return Ok(r.clone());
                }
                if !self.auto_create {
                    return Err(JoinError::RoomNotFound(name.clone()));
                }
                Ok(self.insert(name, false, None))
            }
            Open::Meeting(code) => Ok(self.insert(name, false, Some(code))),
            Open::Persistent => Ok(self.insert(name, true, None)),
        }
    }

    fn insert(&self, name: &RoomName, persistent: bool, meeting: Option<&str>) -> Arc<Room> {
        let mut opened = None;
        let room = self
            .rooms
            .entry(name.clone())
            .or_insert_with(|| {
                self.metrics.rooms.fetch_add(1, Ordering::Relaxed);
                tracing::info!(room = %name, persistent, "room opened");
                let room = Arc::new(Room::new(
                    name.clone(),
                    persistent,
                    self.max_members,
                    self.metrics.clone(),
                    self.retired.clone(),
                ));
                if let Some(code) = meeting {
                    room.set_meeting(code);
                }
                opened = Some(room.clone());
                room
            })
            .clone();
        if let Some(room) = opened {
            self.openers
                .lock()
                .expect("openers")
                .retain(|tx| tx.send(room.clone()).is_ok());
        }
        room
    }

    /// Retires a room that closed (it emptied, or its meeting ended) once nobody is left.
    pub fn remove_if_closed(&self, name: &RoomName) {
        let removed = self.rooms.remove_if(name, |_, r| r.retire_if_closed());
        if removed.is_some() {
            self.metrics.rooms.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(room = %name, "room closed");
        }
    }

    /// Retires API-created rooms that have been empty for `ttl`; returns how many.
    pub fn expire_empty(&self, ttl: std::time::Duration) -> usize {
        let Some(cutoff) = std::time::Instant::now().checked_sub(ttl) else {
            return 0;
        };
        let mut expired = 0;
        for r in self.all() {
            if r.persistent && r.close_if_empty_since(cutoff) {
                self.remove_if_closed(&r.name);
                expired += 1;
                tracing::info!(room = %r.name, "empty room expired");
            }
        }
        expired
    }

    /// Looks a room up.
    pub fn get(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.clone())
    }

    /// Names of the rooms open here.
    pub fn names(&self) -> Vec<RoomName> {
        self.rooms.iter().map(|r| r.key().clone()).collect()
    }

    fn all(&self) -> Vec<Arc<Room>> {
        self.rooms.iter().map(|r| r.clone()).collect()
    }

    /// (rooms, participants) on this node.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.all();
        let participants = rooms.iter().map(|r| r.participant_count()).sum();
        (rooms.len(), participants)
    }

    /// Packet counts of every track this node ever forwarded.
    pub fn packet_counts(&self) -> ProducerCounts {
        let mut total = self.retired.get();
        for r in self.all() {
            total += r.counts();
        }
        total
    }

    /// Refuses new joins and disconnects everyone.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        for r in self.all() {
            r.close_all(ErrorCode::ShuttingDown, "the server is shutting down");
        }
    }

    /// After shutdown: tells followers of the rooms still here that they are gone.
    pub fn retire_all(&self) {
        for r in self.all() {
            r.retire();
        }
    }
}
