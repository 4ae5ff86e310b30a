//! Conclave's embedded TURN relay (UDP) with short-lived shared-secret credentials.
//!
//! The relay is a thin layer over webrtc-rs's `turn` engine: this crate supplies the
//! credential scheme, socket setup and a peer restriction that keeps the relay pointed
//! at Conclave itself. See the README for the deployment rationale.

#![deny(missing_docs)]

mod auth;
mod config;
mod credentials;
mod error;
mod relay;
mod server;

pub use auth::{Clock, RestAuthHandler, SystemClock};
pub use config::TurnConfig;
pub use credentials::{TurnCredentials, check_username, credentials, password_for};
pub use error::TurnError;
pub use server::TurnServer;
