//! What a participant's task needs of its client's signaling, whichever media stack it runs
//! on (`crate::peer::participant` or `crate::plane::participant`): the bounded queue to the
//! client, refusals counted, and the room's signaling-only member events.

use crate::metrics::Metrics;
use crate::room::{MemberEvent, Room};
use crate::signal;
use conclave_signaling::{ClientMessage, ErrorCode, ParticipantId, ServerMessage};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Whether a participant's task goes on.
pub enum Flow {
    /// It does.
    Continue,
    /// It ends (the client left, was sent away, or is too slow to signal).
    Stop,
}

/// The client's end of a participant's task.
pub struct ClientEdge {
    signal: mpsc::Sender<ServerMessage>,
    metrics: Arc<Metrics>,
}

impl ClientEdge {
    /// An edge writing to `signal`, counting refusals in `metrics`.
    pub fn new(signal: mpsc::Sender<ServerMessage>, metrics: Arc<Metrics>) -> Self {
        ClientEdge { signal, metrics }
    }

    /// Queues a message for the client; a client too slow to take it is disconnected.
    pub fn send(&self, msg: ServerMessage) -> Flow {
        match self.signal.try_send(msg) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("signaling queue full; disconnecting");
                Flow::Stop
            }
            _ => Flow::Continue,
        }
    }

    /// Refuses a client message with `code`: counted, logged at debug, told to the client.
    pub fn refuse(&self, code: ErrorCode, message: impl Into<String>) {
        Metrics::add(&self.metrics.signaling_errors, 1);
        let message = message.into();
        tracing::debug!(?code, %message, "refused client message");
        let _ = self.send(signal::error(code, message));
    }

    /// Handles the member events that only concern signaling (a message, a farewell, being
    /// closed); the media ones (subscribe, unsubscribe) are handed back.
    pub fn member_event(&self, ev: MemberEvent) -> Result<Flow, MemberEvent> {
        match ev {
            MemberEvent::Signal(msg) => Ok(self.send(msg)),
            MemberEvent::Farewell(msg) => {
                let _ = self.send(msg);
                Ok(Flow::Stop)
            }
            MemberEvent::Close { code, message } => {
                if let Some(code) = code {
                    let _ = self.send(signal::error(code, message));
                }
                Ok(Flow::Stop)
            }
            other => Err(other),
        }
    }

    /// Handles the client messages that are not about media (mute, leave, and whatever is
    /// not valid once joined) for participant `me` of `room`.
    pub fn client_message(&self, room: &Room, me: &ParticipantId, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Mute { track_id, muted } => {
                if !room.set_muted(me, &track_id, muted) {
                    self.refuse(
                        ErrorCode::UnknownTrack,
                        format!("you publish no track {track_id}"),
                    );
                }
            }
            ClientMessage::Leave => return Flow::Stop,
            other => self.refuse(
                ErrorCode::InvalidMessage,
                format!("`{}` is not valid at this point", other.kind()),
            ),
        }
        Flow::Continue
    }
}
