//! The room domain: rooms, their members, the tracks members publish (producers), the sinks
//! that consume them, and the events that tell followers what happened.
//!
//! Nothing here knows about WebRTC, sockets or HTTP. The WebRTC edge (`crate::peer`) is one
//! kind of member; transcription (`crate::transcription`) is a follower of room events and a
//! sink on audio producers; routers (`crate::routing`) put rooms behind one interface.

pub mod events;
pub mod fanout;
pub mod keyframe;
pub mod manager;
pub mod member;
pub mod producer;
#[allow(clippy::module_inception)]
pub mod room;

pub use events::{RoomEvent, RoomSnapshot};
pub use fanout::{SinkHandle, SinkOptions};
pub use manager::{Open, RoomManager};
pub use member::{MemberEvent, MemberHandle, MemberInfo, MemberLink};
pub use producer::{Producer, ProducerSpec};
pub use room::{JoinError, PublishError, Room};
