//! The router seam: how the rest of the app reaches rooms. Room lookup, joining, and delivering
//! signaling to a room's members go through [`RoomRouter`], never through `Arc<Room>`.
//!
//! The only implementation today is [`LocalRouter`]: every room lives in this process. A
//! multi-node router (rooms pinned to nodes in Redis, signaling relayed over a bus) wraps the
//! local one behind the same trait, as LiveKit wraps its local router; handlers, the meeting
//! service and timers do not change. See docs/architecture.md.

pub mod local;

pub use local::LocalRouter;

use crate::room::{JoinError, Open};
use conclave_signaling::{
    ClientMessage, IceServer, MeetingInfo, ParticipantId, Role, RoomName, ServerMessage,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Who wants to enter which room, as the admission policy decided it. Serializable: in a
/// cluster it travels to the room's node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinRequest {
    /// The room.
    pub room: RoomName,
    /// How to find or create it.
    pub open: Open,
    /// Identity from the token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Role in the room's meeting.
    pub role: Option<Role>,
    /// May publish tracks.
    pub can_publish: bool,
    /// May receive the others' tracks.
    pub can_subscribe: bool,
    /// The meeting, for the `joined` message.
    pub meeting: Option<MeetingInfo>,
    /// STUN/TURN servers for the `joined` message.
    pub ice_servers: Vec<IceServer>,
}

/// A member's signaling session wherever its room lives: push client messages in; server
/// messages arrive on the sender given to [`RoomRouter::join`]. Dropping `client` ends it.
#[derive(Debug)]
pub struct Session {
    /// The member's id.
    pub participant_id: ParticipantId,
    /// Client messages for the session.
    pub client: mpsc::Sender<ClientMessage>,
    /// Completes when the session has ended and cleaned up.
    pub done: JoinHandle<()>,
    /// The session runs on another node (relayed): that node records its meeting presence.
    pub remote: bool,
}

/// What the meeting service hears from the cluster: the presence of members whose session
/// runs here for a socket on another node (the room's node keeps each meeting's lifecycle),
/// and meeting status changes made on other nodes (for sockets waiting here).
#[async_trait::async_trait]
pub trait MeetingEvents: Send + Sync + 'static {
    /// A member of meeting `code` started a session here for a socket elsewhere.
    async fn connected(&self, code: &str, identity: &str, name: &str, role: Role);
    /// That member's session here ended.
    async fn disconnected(&self, code: &str, identity: &str);
    /// Another node changed meeting `code`'s status (`active`, `ended`).
    fn status_changed_elsewhere(&self, code: &str, status: &str);
}

/// Load of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Rooms open.
    pub rooms: usize,
    /// Members connected.
    pub participants: usize,
}

/// One node as the cluster sees it (the registration it refreshes in Redis).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its HTTP/WebSocket URL as others reach it, when advertised.
    pub url: Option<String>,
    /// Rooms open on it.
    pub rooms: usize,
    /// Members connected to its rooms.
    pub participants: usize,
    /// Its process's CPU use since its previous heartbeat, percent of one core.
    pub cpu_percent: f64,
    /// Takes no new rooms (rolling upgrade); its rooms run to their end.
    pub draining: bool,
    /// When it started, Unix ms.
    pub started_unix_ms: i64,
    /// When it last registered, Unix ms.
    pub heartbeat_unix_ms: i64,
    /// Conclave version.
    pub version: String,
}

/// The nodes this node knows of.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// Whether this node is part of a cluster (`--redis-url`).
    pub cluster: bool,
    /// This node's id.
    pub node_id: String,
    /// Every live node, this one included, by id.
    pub nodes: Vec<NodeInfo>,
}

/// Where rooms are found and how signaling reaches their members.
#[async_trait::async_trait]
pub trait RoomRouter: Send + Sync + 'static {
    /// Admits a member and starts its session where the room lives; its `joined` message is
    /// the first one sent on `signal`.
    async fn join(
        &self,
        request: JoinRequest,
        signal: mpsc::Sender<ServerMessage>,
    ) -> Result<Session, JoinError>;

    /// Creates a room that stays when empty (idempotent).
    async fn create_room(&self, room: &RoomName) -> Result<(), JoinError>;

    /// Whether the room is open.
    async fn room_exists(&self, room: &RoomName) -> bool;

    /// Members in the room now (0 if it is not open).
    async fn member_count(&self, room: &RoomName) -> usize;

    /// Sends `msg` to every member of the room (nothing if it is not open).
    async fn broadcast(&self, room: &RoomName, msg: ServerMessage);

    /// Sends `farewell` to every member, disconnects them and refuses later joins.
    async fn close_room(&self, room: &RoomName, farewell: ServerMessage);

    /// The participant id of an identity present in the room.
    async fn participant_of(&self, room: &RoomName, identity: &str) -> Option<ParticipantId>;

    /// Rooms and members here.
    async fn stats(&self) -> NodeStats;

    /// Refuses new joins and disconnects everyone.
    fn shutdown(&self);

    /// The live nodes (just this one without a cluster); an error when Redis cannot be read.
    async fn nodes(&self) -> Result<ClusterView, String>;

    /// Starts (or ends) draining: no new rooms are placed on this node; its rooms go on.
    fn set_draining(&self, draining: bool);

    /// Whether this node is draining.
    fn draining(&self) -> bool;

    /// Whether room-bound work for `room` (its agent) runs on this node: the room is here, or
    /// nowhere yet and placed here now. In a cluster the placement is atomic, so exactly one
    /// node answers yes; an error when the placement cannot be read.
    async fn hosts(&self, room: &RoomName) -> Result<bool, String>;

    /// Hands the router the meeting service's ears (a cluster reports presence and status
    /// changes to it; a single node has nothing to report).
    fn follow_meetings(&self, _events: std::sync::Weak<dyn MeetingEvents>) {}

    /// Tells the other nodes that meeting `code` is now `status`.
    async fn announce_meeting_status(&self, _code: &str, _status: &str) {}
}
