//! Room events: what happened in a room, for anyone who wants to follow it (transcription,
//! agents, later recording and the cluster bus). They are a feed, published under the room's
//! lock so their order is the room's order; a subscriber that falls more than
//! [`ROOM_EVENT_BUFFER`] behind misses some and is told so by the channel.

use super::member::MemberInfo;
use super::producer::Producer;
use conclave_signaling::{ParticipantId, TrackId};
use std::sync::Arc;

/// Events buffered per room for slow subscribers.
pub const ROOM_EVENT_BUFFER: usize = 256;

/// Something that happened in a room.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A member entered.
    MemberJoined(MemberInfo),
    /// A member left (its tracks were unpublished just before).
    MemberLeft(ParticipantId),
    /// A member published a track.
    TrackPublished(Arc<Producer>),
    /// A track ended.
    TrackUnpublished {
        /// Its publisher.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// A publisher muted or unmuted a track.
    TrackMuted {
        /// Its publisher.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
        /// The new state.
        muted: bool,
    },
    /// The room closed: nobody may join any more and it is leaving the node.
    Closed,
}

/// A room's state at the moment a subscriber started following it.
#[derive(Debug, Clone, Default)]
pub struct RoomSnapshot {
    /// Members present.
    pub members: Vec<MemberInfo>,
    /// Tracks published.
    pub producers: Vec<Arc<Producer>>,
    /// Whether the room had already closed.
    pub closed: bool,
}
