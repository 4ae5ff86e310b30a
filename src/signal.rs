//! Every signaling message the server sends is built here, so its wire shape is decided in
//! one place (the protocol crate defines the types; this module fills them).

use crate::room::MemberInfo;
use conclave_media::frames::Transcript;
use conclave_signaling::{
    ErrorCode, IceCandidate, IceServer, MeetingInfo, ParticipantId, ParticipantInfo, RoomName,
    ServerMessage, TrackId, TrackInfo,
};

/// How a member appears in participant lists.
pub fn participant(m: &MemberInfo, tracks: Vec<TrackInfo>) -> ParticipantInfo {
    ParticipantInfo {
        id: m.id.clone(),
        identity: m.identity.clone(),
        name: m.name.clone(),
        role: m.role,
        tracks,
    }
}

/// The first message of a session: the member's id and who else is here.
pub fn joined(
    room: &RoomName,
    id: &ParticipantId,
    participants: Vec<ParticipantInfo>,
    ice_servers: Vec<IceServer>,
    meeting: Option<MeetingInfo>,
) -> ServerMessage {
    ServerMessage::Joined {
        room: room.clone(),
        participant_id: id.clone(),
        participants,
        ice_servers,
        meeting,
    }
}

/// A meeting join held until the host starts it.
pub fn waiting(meeting: MeetingInfo) -> ServerMessage {
    ServerMessage::Waiting { meeting }
}

/// Someone entered.
pub fn participant_joined(m: &MemberInfo) -> ServerMessage {
    ServerMessage::ParticipantJoined {
        participant: participant(m, vec![]),
    }
}

/// Someone left.
pub fn participant_left(id: &ParticipantId) -> ServerMessage {
    ServerMessage::ParticipantLeft {
        participant_id: id.clone(),
    }
}

/// A new track.
pub fn track_published(publisher: &ParticipantId, track: TrackInfo) -> ServerMessage {
    ServerMessage::TrackPublished {
        participant_id: publisher.clone(),
        track,
    }
}

/// A track ended.
pub fn track_unpublished(publisher: &ParticipantId, track: &TrackId) -> ServerMessage {
    ServerMessage::TrackUnpublished {
        participant_id: publisher.clone(),
        track_id: track.clone(),
    }
}

/// A track's mute state changed.
pub fn track_muted(publisher: &ParticipantId, track: &TrackId, muted: bool) -> ServerMessage {
    ServerMessage::TrackMuted {
        participant_id: publisher.clone(),
        track_id: track.clone(),
        muted,
    }
}

/// Voice activity changed.
pub fn speaking(speaker: &ParticipantId, speaking: bool) -> ServerMessage {
    ServerMessage::Speaking {
        participant_id: speaker.clone(),
        speaking,
    }
}

/// A live caption; an empty final clears the speaker's interim line.
pub fn caption(t: &Transcript, name: String, is_final: bool) -> ServerMessage {
    ServerMessage::Caption {
        participant_id: ParticipantId(t.speaker.clone()),
        name,
        text: t.text.trim().to_owned(),
        is_final,
        start_ms: t.start_ms,
        end_ms: t.end_ms,
    }
}

/// The server's SDP offer.
pub fn offer(sdp: String) -> ServerMessage {
    ServerMessage::Offer { sdp }
}

/// The server's SDP answer.
pub fn answer(sdp: String) -> ServerMessage {
    ServerMessage::Answer { sdp }
}

/// A trickled server ICE candidate.
pub fn candidate(candidate: IceCandidate) -> ServerMessage {
    ServerMessage::Candidate { candidate }
}

/// A refusal or failure; fatal codes end the connection after it.
pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
    }
}

/// The host started the meeting.
pub fn meeting_started() -> ServerMessage {
    ServerMessage::MeetingStarted
}

/// The meeting is over (`host_ended`, `empty`, `api`).
pub fn meeting_ended(reason: &str) -> ServerMessage {
    ServerMessage::MeetingEnded {
        reason: reason.to_owned(),
    }
}

/// The meeting has a new host.
pub fn host_changed(identity: &str, participant_id: Option<ParticipantId>) -> ServerMessage {
    ServerMessage::HostChanged {
        identity: identity.to_owned(),
        participant_id,
    }
}
