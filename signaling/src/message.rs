//! The messages of protocol version 1.
//!
//! Every frame is one JSON object with a `type` tag and a protocol version `v`
//! (`{"v":1,"type":"join",...}`). Clients may omit `v`; it then means version 1. The server
//! always sends it.

use crate::error::ProtocolError;
use crate::ids::{ParticipantId, RoomName, TrackId};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Audio (Opus).
    Audio,
    /// Video (VP8, H264).
    Video,
}

/// A published track as other participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Track id; equals the `msid` track id in the subscriber's SDP.
    pub id: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec MIME type, e.g. `audio/opus`.
    pub codec: String,
    /// Whether the publisher muted it.
    pub muted: bool,
}

/// A participant as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Participant id; equals the `msid` stream id of its tracks in subscribers' SDP.
    pub id: ParticipantId,
    /// The identity from the access token.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// `host`, `participant` or `agent`; absent in rooms without a meeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
    /// Tracks this participant publishes.
    pub tracks: Vec<TrackInfo>,
}

/// An ICE server the client should use (STUN or TURN), in `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:host:port?transport=udp` and the like.
    pub urls: Vec<String>,
    /// TURN username (time-limited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password for `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A trickled ICE candidate, in `RTCIceCandidateInit` shape (camelCase as browsers send it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line; empty means end of candidates.
    pub candidate: String,
    /// Media stream identification tag.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(default)]
    pub sdp_m_line_index: Option<u16>,
    /// ICE username fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A meeting as its participants see it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingInfo {
    /// Shareable code, `XXX-XXX-XXX`; also the room name.
    pub code: String,
    /// Name.
    pub name: String,
    /// `waiting`, `active` or `ended`.
    pub status: String,
    /// Current host's identity.
    pub host_identity: String,
    /// The receiver's role: `host`, `participant` or `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// Enter a room. Must be the first message (after optional pings).
    Join {
        /// Room to join; must match the token's room claim.
        room: RoomName,
        /// Display name; falls back to the token's name, then identity.
        #[serde(default)]
        name: Option<String>,
        /// Access token (JWT, HS256).
        token: String,
    },
    /// An SDP offer from the client (publishing, or its initial negotiation).
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// The client's answer to a server offer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Mute or unmute one of the client's own published tracks.
    Mute {
        /// The track, as announced in `track_published`.
        track_id: TrackId,
        /// New state.
        muted: bool,
    },
    /// Leave the room; the server then closes the connection.
    Leave,
    /// Keep-alive; answered with `pong` carrying the same `id`.
    Ping {
        /// Opaque value echoed back.
        #[serde(default)]
        id: Option<u64>,
    },
}

impl ClientMessage {
    /// The message's `type` tag, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::Leave => "leave",
            ClientMessage::Ping { .. } => "ping",
        }
    }
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "candidate",
    "mute",
    "leave",
    "ping",
];

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// The room joined.
        room: RoomName,
        /// The joining participant's own id.
        participant_id: ParticipantId,
        /// Everyone else already in the room, with their tracks.
        participants: Vec<ParticipantInfo>,
        /// STUN/TURN servers to configure the peer connection with.
        ice_servers: Vec<IceServer>,
        /// The meeting this room belongs to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meeting: Option<MeetingInfo>,
    },
    /// The meeting has not started; the server holds the join until the host starts it and
    /// then sends `joined`.
    Waiting {
        /// The meeting.
        meeting: MeetingInfo,
    },
    /// The host started the meeting.
    MeetingStarted,
    /// The meeting is over; the server closes the connection after this.
    MeetingEnded {
        /// `host_ended`, `empty` or `api`.
        reason: String,
    },
    /// The meeting has a new host.
    HostChanged {
        /// The new host's identity.
        identity: String,
        /// Their participant id, when they are connected.
        #[serde(default)]
        participant_id: Option<ParticipantId>,
    },
    /// An SDP offer from the server (renegotiation when tracks come and go).
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// The server's answer to a client offer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled server ICE candidate.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// Someone entered the room.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left the room.
    ParticipantLeft {
        /// Who.
        participant_id: ParticipantId,
    },
    /// A participant started publishing a track; an offer containing it follows.
    TrackPublished {
        /// Publisher.
        participant_id: ParticipantId,
        /// The track.
        track: TrackInfo,
    },
    /// A track ended; a renegotiating offer follows.
    TrackUnpublished {
        /// Publisher.
        participant_id: ParticipantId,
        /// The track.
        track_id: TrackId,
    },
    /// A track was muted or unmuted by its publisher.
    TrackMuted {
        /// Publisher.
        participant_id: ParticipantId,
        /// The track.
        track_id: TrackId,
        /// New state.
        muted: bool,
    },
    /// Voice activity of a participant changed (from the room's audio pipeline).
    Speaking {
        /// Who.
        participant_id: ParticipantId,
        /// Whether they are speaking now.
        speaking: bool,
    },
    /// A live caption: interim while someone speaks, final at the end of an utterance.
    Caption {
        /// Speaker.
        participant_id: ParticipantId,
        /// Speaker's display name.
        name: String,
        /// The words.
        text: String,
        /// `false` for an interim caption that a later one replaces.
        #[serde(rename = "final")]
        is_final: bool,
        /// Start of the speech, ms since the room opened.
        start_ms: u64,
        /// End of the speech, ms since the room opened.
        end_ms: u64,
    },
    /// The AI agent's lead score, sent to hosts only after each answer and when the agent
    /// stops.
    LeadScore {
        /// `running`, `finished`, `stopped` or `failed`.
        status: String,
        /// The question being asked, 1-based.
        #[serde(default)]
        question_index: Option<usize>,
        /// Number of questions.
        questions_total: usize,
        /// The score as `GET /api/rooms/{room}/agent` shows it.
        score: serde_json::Value,
    },
    /// Reply to `ping`.
    Pong {
        /// The ping's `id`.
        #[serde(default)]
        id: Option<u64>,
    },
    /// The last message was refused, or the session is ending.
    Error {
        /// Stable code.
        code: crate::ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// Decodes one client text frame, telling malformed JSON, unknown types, unsupported versions
/// and invalid fields apart so each gets its own error code.
pub fn decode_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    decode_tagged(text, CLIENT_TYPES)
}

/// Decodes one server text frame (for clients and tests).
pub fn decode_server(text: &str) -> Result<ServerMessage, ProtocolError> {
    decode_tagged(text, &[])
}

fn decode_tagged<T: serde::de::DeserializeOwned>(
    text: &str,
    known: &[&str],
) -> Result<T, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ProtocolError::Malformed("expected a JSON object".into()))?;
    if let Some(v) = obj.get("v") {
        match v.as_u64() {
            Some(PROTOCOL_VERSION) => {}
            Some(other) => return Err(ProtocolError::UnsupportedVersion(other)),
            None => {
                return Err(ProtocolError::Invalid {
                    kind: "envelope".into(),
                    detail: "`v` must be a positive integer".into(),
                });
            }
        }
    }
    let kind = match obj.get("type").and_then(|t| t.as_str()) {
        Some(k) => k.to_owned(),
        None => return Err(ProtocolError::UnknownType(String::new())),
    };
    if !known.is_empty() && !known.contains(&kind.as_str()) {
        return Err(ProtocolError::UnknownType(kind));
    }
    serde_json::from_value(value).map_err(|e| {
        let detail = e.to_string();
        if detail.starts_with("unknown variant") {
            ProtocolError::UnknownType(kind)
        } else {
            ProtocolError::Invalid { kind, detail }
        }
    })
}

/// Encodes a message as a text frame, adding the protocol version.
pub fn encode<T: Serialize>(msg: &T) -> String {
    let mut value = serde_json::to_value(msg).expect("protocol messages always serialize");
    if let Some(obj) = value.as_object_mut() {
        obj.insert("v".into(), PROTOCOL_VERSION.into());
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn join_round_trips_with_version() {
        let msg = ClientMessage::Join {
            room: RoomName::validate("demo").unwrap(),
            name: Some("Ada".into()),
            token: "t".into(),
        };
        let text = encode(&msg);
        assert!(text.contains("\"v\":1"), "{text}");
        assert!(text.contains("\"type\":\"join\""), "{text}");
        assert_eq!(decode_client(&text).unwrap(), msg);
    }

    #[test]
    fn version_may_be_omitted_by_clients() {
        let msg = decode_client(r#"{"type":"ping","id":7}"#).unwrap();
        assert_eq!(msg, ClientMessage::Ping { id: Some(7) });
    }

    #[test]
    fn each_kind_of_bad_frame_gets_its_own_code() {
        let cases = [
            ("{not json", ErrorCode::MalformedMessage),
            ("[1,2]", ErrorCode::MalformedMessage),
            (r#"{"type":"dance"}"#, ErrorCode::UnknownMessageType),
            (r#"{"room":"x"}"#, ErrorCode::UnknownMessageType),
            (r#"{"v":2,"type":"ping"}"#, ErrorCode::UnsupportedVersion),
            (r#"{"v":"one","type":"ping"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"join","room":"r"}"#, ErrorCode::InvalidMessage),
            (r#"{"type":"offer","sdp":5}"#, ErrorCode::InvalidMessage),
        ];
        for (text, code) in cases {
            let err = decode_client(text).unwrap_err();
            assert_eq!(err.code(), code, "{text}: {err}");
        }
    }

    #[test]
    fn candidates_use_browser_field_names() {
        let text = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        match decode_client(text).unwrap() {
            ClientMessage::Candidate { candidate } => {
                assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
                assert_eq!(candidate.sdp_m_line_index, Some(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_errors_carry_snake_case_codes() {
        let text = encode(&ServerMessage::Error {
            code: ErrorCode::TokenExpired,
            message: "expired".into(),
        });
        assert!(text.contains("\"code\":\"token_expired\""), "{text}");
        assert!(matches!(
            decode_server(&text).unwrap(),
            ServerMessage::Error {
                code: ErrorCode::TokenExpired,
                ..
            }
        ));
    }
}
