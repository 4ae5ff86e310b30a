//! Error codes sent to clients, and the errors of decoding a frame.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code carried by [`crate::ServerMessage::Error`].
///
/// Codes are part of the protocol: clients switch on them, so they are never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame was not valid JSON (or not a text frame).
    MalformedMessage,
    /// The JSON had an unknown `type`.
    UnknownMessageType,
    /// The message's `v` is a protocol version this server does not speak.
    UnsupportedVersion,
    /// A known message type with missing or ill-typed fields.
    InvalidMessage,
    /// The frame exceeded the server's configured size limit.
    MessageTooLarge,
    /// The access token is missing, forged, malformed or for another room.
    InvalidToken,
    /// The access token has expired.
    TokenExpired,
    /// The token does not grant what was asked (e.g. publishing).
    PermissionDenied,
    /// The room does not exist and rooms must be created before joining.
    RoomNotFound,
    /// The room is full.
    RoomFull,
    /// `join` was sent on a connection that already joined.
    AlreadyJoined,
    /// A message other than `join`/`ping` was sent before joining.
    NotJoined,
    /// The SDP could not be parsed or applied.
    InvalidSdp,
    /// The client's offer collided with an offer the server has in flight; answer the server's
    /// offer, then offer again.
    NegotiationCollision,
    /// An ICE candidate could not be parsed or applied.
    InvalidCandidate,
    /// The named track does not exist or is not the sender's.
    UnknownTrack,
    /// The meeting has ended; nobody may join it.
    MeetingEnded,
    /// The server is shutting down.
    ShuttingDown,
    /// The room's node cannot be reached now (a cluster whose Redis is down, or whose node
    /// hosting the room stopped); the room may come back on another node: join again.
    Unavailable,
    /// No `join` came within the server's deadline after the socket opened.
    JoinTimeout,
    /// The WebSocket itself broke its protocol (bad framing, bad UTF-8, a bad close); the
    /// socket closes after this.
    ProtocolError,
    /// Something went wrong on the server; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(self, ErrorCode::ShuttingDown | ErrorCode::JoinTimeout)
    }
}

/// Why a client frame could not be turned into a [`crate::ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON at all.
    #[error("message is not valid JSON: {0}")]
    Malformed(String),
    /// JSON without a string `type` field, or with one we do not know.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A `v` other than [`crate::PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}; this server speaks version {v}", v = crate::PROTOCOL_VERSION)]
    UnsupportedVersion(u64),
    /// The type is known but the fields are wrong.
    #[error("invalid {kind} message: {detail}")]
    Invalid {
        /// The message type.
        kind: String,
        /// What serde said.
        detail: String,
    },
}

impl ProtocolError {
    /// The code reported to the client for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed(_) => ErrorCode::MalformedMessage,
            ProtocolError::UnknownType(_) => ErrorCode::UnknownMessageType,
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::Invalid { .. } => ErrorCode::InvalidMessage,
        }
    }
}
