//! Conclave: a self-hosted WebRTC meeting server. This crate wires the edges (HTTP, WebSocket,
//! TURN) to the room domain, the WebRTC members and live transcription.
//!
//! Layers, each depending only on those below it:
//! edges (`http`) → `admission`, `routing` → `room` (domain) ← `peer` (WebRTC members),
//! `transcription` (a room follower) → `store`.
#![deny(missing_docs)]

pub mod admission;
pub mod agents;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod http;
pub mod ids;
pub mod meetings;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod plane;
pub mod room;
pub mod routing;
pub mod schedule;
pub mod server;
pub mod signal;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod transcription;
