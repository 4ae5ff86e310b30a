//! Conclave: a self-hosted WebRTC meeting server. This crate wires the edges (HTTP, WebSocket,
//! TURN) to the room domain and the SFU.
#![deny(missing_docs)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod http;
pub mod ids;
pub mod meetings;
pub mod metrics;
pub mod server;
pub mod sfu;
pub mod store;
pub mod telemetry;
pub mod transcription;
