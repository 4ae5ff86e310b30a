//! Meetings: shareable codes, passwords, hosts, the lifecycle (waiting → active → ended), and
//! their wiring to rooms.

pub mod lifecycle;
pub mod model;
pub mod service;

pub use service::{Caller, MeetingError, MeetingService};
