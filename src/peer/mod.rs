//! The WebRTC edge: a browser's (or any WebRTC client's) session as a member of a room.
//!
//! One task per participant owns its PeerConnection, negotiation, the readers that feed its
//! published tracks into the room's producers, and its subscriber legs. It depends on the
//! room domain (`crate::room`); the room never sees a PeerConnection.

pub mod edge;
pub mod factory;
pub mod leg;
pub mod participant;
pub mod rtcp;

pub use factory::PeerFactory;
