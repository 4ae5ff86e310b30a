//! Conclave's embedded TURN relay (UDP) with short-lived shared-secret credentials.
//!
//! The server is Conclave's own (RFC 8656 over UDP, using the `stun` and `turn` crates only
//! to encode and decode messages), so it can enforce what an SFU's relay needs: relays reach
//! only Conclave's media ports, allocations have quotas per credential and per address,
//! lifetimes are capped, nonces are stateless, and every table is bounded. See the README.

#![deny(missing_docs)]

mod allocation;
mod auth;
mod config;
mod credentials;
mod error;
mod nonce;
mod server;
mod wire;

pub use auth::{Clock, RestAuthHandler, SystemClock};
pub use config::{TurnConfig, TurnLimits};
pub use credentials::{TurnCredentials, check_username, credentials, password_for};
pub use error::TurnError;
pub use server::{TurnServer, TurnStats};
