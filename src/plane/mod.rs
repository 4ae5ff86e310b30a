//! The media plane that replaces the per-participant `webrtc` stack (docs/performance.md,
//! "Choosing the media plane"): the plane owns its UDP sockets and drives every client's
//! transport from one event loop per core, and forwarded packets are serialised and
//! SRTP-encrypted by the plane itself, never passed through a per-connection handler chain.
//!
//! Built bottom-up; the server runs participants on it by default since 2026-12-03
//! (`--media-plane webrtc` runs them on `src/peer/` instead):
//! * [`transport`]: one client's ICE-lite + DTLS + SRTP, sans-IO.
//! * [`engine`]: transports behind one socket: routing by address and ufrag, batched sends.
//! * [`feedback`]: receiver reports and REMB for publishers.
//! * [`history`]: a video stream's recent packets, for answering NACKs.
//! * [`sdp`]: reading offers and answers, writing the plane's descriptions.
//! * [`session`]: one client's negotiation: answers to its offers, the plane's offers.
//! * [`participant`]: a participant's task on the plane (negotiation, publishing, legs).
//! * [`worker`]: an engine on its own thread, commanded over a queue, forwarding each
//!   published stream to its legs inside the loop (keyframe gating and requests included).

pub mod engine;
pub mod feedback;
pub mod history;
pub mod participant;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod transport;
pub mod worker;

#[cfg(test)]
mod alloc_count;
#[cfg(test)]
mod tests;
