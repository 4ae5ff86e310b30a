//! Members: whoever is in a room. A member is an id, its info and a channel of
//! [`MemberEvent`]s; the room knows nothing else about it. A browser's WebRTC session is one
//! kind of member, an agent running in the server another.

use super::producer::Producer;
use conclave_signaling::{ErrorCode, ParticipantId, Role, ServerMessage, TrackId};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// Events queued for one member before it is considered stuck and disconnected.
pub const MEMBER_QUEUE: usize = 512;

/// Who a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Id, unique on this server for the life of the membership.
    pub id: ParticipantId,
    /// Identity from the access token (stable per user).
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Its role in the room's meeting, if the room has one.
    pub role: Option<Role>,
    /// Whether it receives the others' tracks.
    pub can_subscribe: bool,
}

/// What the room tells a member.
#[derive(Debug)]
#[non_exhaustive]
pub enum MemberEvent {
    /// A signaling message for the member's client.
    Signal(ServerMessage),
    /// Start receiving this producer.
    Subscribe(Arc<Producer>),
    /// Stop receiving this track.
    Unsubscribe(TrackId),
    /// Send this last message, then leave.
    Farewell(ServerMessage),
    /// Leave, telling the client why if `code` is set.
    Close {
        /// Error code sent before closing.
        code: Option<ErrorCode>,
        /// Human explanation.
        message: String,
    },
}

/// The room's end of a member.
#[derive(Debug, Clone)]
pub struct MemberHandle {
    /// Who it is.
    pub info: MemberInfo,
    tx: mpsc::Sender<MemberEvent>,
    kicked: Arc<Notify>,
}

/// The member's end: its events, and a signal that the room gave up on it.
#[derive(Debug)]
pub struct MemberLink {
    /// Events in the order the room produced them.
    pub events: mpsc::Receiver<MemberEvent>,
    /// Fires when the room disconnected the member because it fell behind.
    pub kicked: Kicked,
}

/// See [`MemberLink::kicked`].
#[derive(Debug)]
pub struct Kicked(Arc<Notify>);

impl Kicked {
    /// Completes when the room gave up on the member.
    pub async fn wait(&self) {
        self.0.notified().await
    }
}

/// A connected pair of ends for a new member.
pub fn member_channel(info: MemberInfo) -> (MemberHandle, MemberLink) {
    let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
    let kicked = Arc::new(Notify::new());
    (
        MemberHandle {
            info,
            tx,
            kicked: kicked.clone(),
        },
        MemberLink {
            events: rx,
            kicked: Kicked(kicked),
        },
    )
}

impl MemberHandle {
    /// Queues an event without waiting; a member too slow to take it is disconnected.
    pub fn deliver(&self, event: MemberEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(event) {
            tracing::warn!(participant = %self.info.id, "member queue full; disconnecting");
            self.kicked.notify_one();
        }
    }

    /// Queues a signaling message for the member's client.
    pub fn signal(&self, msg: ServerMessage) {
        self.deliver(MemberEvent::Signal(msg));
    }
}
