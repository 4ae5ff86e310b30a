//! Conclave's signaling protocol: typed, versioned JSON messages exchanged over a WebSocket,
//! and the per-connection session state machine that decides which messages are allowed when.
//!
//! This crate knows nothing about sockets, rooms or WebRTC stacks; the server and clients pump
//! frames through [`decode_client`] / [`encode`] and drive a [`session::Session`].
#![deny(missing_docs)]

pub mod error;
pub mod ids;
pub mod message;
pub mod session;

pub use error::{ErrorCode, ProtocolError};
pub use ids::{ParticipantId, Role, RoomName, TrackId};
pub use message::{
    ClientMessage, IceCandidate, IceServer, MeetingInfo, PROTOCOL_VERSION, ParticipantInfo,
    ServerMessage, TrackInfo, TrackKind, decode_client, decode_server, encode,
};
