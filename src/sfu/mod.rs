//! The selective forwarding unit: rooms, participants, producers and the forwarding path.

pub mod forward;
pub mod keyframe;
pub mod participant;
pub mod peer;
pub mod producer;
pub mod room;
