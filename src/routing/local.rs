//! The single-node router: rooms live in this process's [`RoomManager`], members are
//! WebRTC sessions started here.

use super::{ClusterView, JoinRequest, NodeInfo, NodeStats, RoomRouter, Session};
use crate::metrics::Metrics;
use crate::peer::PeerFactory;
use crate::peer::participant::{self, ParticipantSpec};
use crate::room::{JoinError, Open, RoomManager};
use conclave_signaling::{ParticipantId, RoomName, ServerMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Rooms of this node.
pub struct LocalRouter {
    rooms: Arc<RoomManager>,
    peers: PeerFactory,
    /// The media plane, when participants run on it (`--media-plane worker`).
    plane: Option<Arc<crate::plane::participant::Plane>>,
    metrics: Arc<Metrics>,
    node_id: String,
    started_unix_ms: i64,
    draining: AtomicBool,
}

impl LocalRouter {
    /// A router over `rooms`, starting WebRTC sessions with `peers`.
    pub fn new(rooms: Arc<RoomManager>, peers: PeerFactory, metrics: Arc<Metrics>) -> Self {
        LocalRouter {
            rooms,
            peers,
            plane: None,
            metrics,
            node_id: format!("ND_{}", crate::ids::random_id(8)),
            started_unix_ms: crate::clock::now_ms(),
            draining: AtomicBool::new(false),
        }
    }

    /// Runs participants' media on `plane` instead of a PeerConnection each.
    pub fn with_plane(mut self, plane: Arc<crate::plane::participant::Plane>) -> Self {
        self.plane = Some(plane);
        self
    }

    /// The media plane, if participants run on it.
    pub fn plane(&self) -> Option<&Arc<crate::plane::participant::Plane>> {
        self.plane.as_ref()
    }

    /// Names this node `id` (a cluster's node id).
    pub fn with_node_id(mut self, id: String) -> Self {
        self.node_id = id;
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's registration as of now (CPU use is the cluster's to measure).
    pub fn node_info(&self, url: Option<String>, cpu_percent: f64) -> NodeInfo {
        let (rooms, participants) = self.rooms.counts();
        NodeInfo {
            id: self.node_id.clone(),
            url,
            rooms,
            participants,
            cpu_percent,
            draining: self.draining.load(Ordering::Relaxed),
            started_unix_ms: self.started_unix_ms,
            heartbeat_unix_ms: crate::clock::now_ms(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The rooms themselves, for in-process followers (transcription, metrics).
    pub fn rooms(&self) -> &Arc<RoomManager> {
        &self.rooms
    }
}

#[async_trait::async_trait]
impl RoomRouter for LocalRouter {
    async fn join(
        &self,
        req: JoinRequest,
        signal: mpsc::Sender<ServerMessage>,
    ) -> Result<Session, JoinError> {
        if self.draining.load(Ordering::Relaxed) && self.rooms.get(&req.room).is_none() {
            return Err(JoinError::Unavailable(format!(
                "this node is draining and opens no new rooms (room {})",
                req.room
            )));
        }
        // A room can close between lookup and join when its last member leaves; retry once.
        for attempt in 0..2 {
            let room = self.rooms.open(&req.room, &req.open)?;
            let spec = ParticipantSpec {
                id: ParticipantId(format!("PA_{}", crate::ids::random_id(12))),
                identity: req.identity.clone(),
                name: req.name.clone(),
                role: req.role,
                can_publish: req.can_publish,
                can_subscribe: req.can_subscribe,
                meeting: req.meeting.clone(),
                ice_servers: req.ice_servers.clone(),
            };
            let started = match &self.plane {
                Some(plane) => {
                    crate::plane::participant::start(
                        spec,
                        room,
                        self.rooms.clone(),
                        plane.clone(),
                        signal.clone(),
                        self.metrics.clone(),
                    )
                    .await
                }
                None => {
                    participant::start(
                        spec,
                        room,
                        self.rooms.clone(),
                        &self.peers,
                        signal.clone(),
                        self.metrics.clone(),
                    )
                    .await
                }
            };
            match started {
                Err(JoinError::RoomClosed(_)) if attempt == 0 => {
                    self.rooms.remove_if_closed(&req.room);
                }
                Err(e) => return Err(e),
                Ok(p) => {
                    return Ok(Session {
                        participant_id: p.id,
                        client: p.client_tx,
                        done: p.task,
                        remote: false,
                    });
                }
            }
        }
        Err(JoinError::RoomClosed(req.room))
    }

    async fn create_room(&self, room: &RoomName) -> Result<(), JoinError> {
        self.rooms.open(room, &Open::Persistent).map(|_| ())
    }

    async fn room_exists(&self, room: &RoomName) -> bool {
        self.rooms.get(room).is_some()
    }

    async fn member_count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, |r| r.participant_count())
    }

    async fn broadcast(&self, room: &RoomName, msg: ServerMessage) {
        if let Some(r) = self.rooms.get(room) {
            r.broadcast(msg);
        }
    }

    async fn close_room(&self, room: &RoomName, farewell: ServerMessage) {
        if let Some(r) = self.rooms.get(room) {
            r.close_with(farewell);
        }
    }

    async fn participant_of(&self, room: &RoomName, identity: &str) -> Option<ParticipantId> {
        self.rooms.get(room)?.participant_of(identity)
    }

    async fn stats(&self) -> NodeStats {
        let (rooms, participants) = self.rooms.counts();
        NodeStats {
            rooms,
            participants,
        }
    }

    fn shutdown(&self) {
        self.rooms.shutdown();
    }

    async fn nodes(&self) -> Result<ClusterView, String> {
        Ok(ClusterView {
            cluster: false,
            node_id: self.node_id.clone(),
            nodes: vec![self.node_info(None, 0.0)],
        })
    }

    fn set_draining(&self, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) != draining {
            tracing::info!(draining, "drain mode changed");
        }
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    async fn hosts(&self, _room: &RoomName) -> Result<bool, String> {
        Ok(true)
    }
}
