//! Who may enter which room, and as what: token checks, meeting admission (waiting room,
//! ended meetings), role decisions and the display name. The WebSocket handler asks here and
//! only pumps messages; the router then starts the session.

use crate::auth::TokenError;
use crate::meetings::MeetingError;
use crate::meetings::model::MeetingStatus;
use crate::room::Open;
use crate::routing::{JoinRequest, Session};
use crate::state::AppState;
use conclave_signaling::{ErrorCode, MeetingInfo, Role, RoomName};
use std::time::SystemTime;
use tokio::sync::watch;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Characters that show nothing but are not whitespace (zero-width and joiners, bidi
/// controls, fillers): a name made only of these looks empty, and bidi controls in a name
/// reorder what others see.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' | '\u{FFA0}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E007F}')
}

/// A display name as people will see it: trimmed, 1-64 characters, no control or bidi
/// characters, and at least one visible character. The error says the rule.
pub fn display_name(input: &str) -> Result<String, String> {
    const RULE: &str = "a name must be 1-64 characters with at least one visible character, and no control characters";
    let name = input.trim();
    let bad = name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'));
    let count = name.chars().count();
    if bad || count == 0 || count > MAX_NAME_CHARS || name.chars().all(is_invisible) {
        return Err(RULE.to_owned());
    }
    Ok(name.to_owned())
}

/// A join refused, with the signaling error to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error code.
    pub code: ErrorCode,
    /// Human explanation.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// What a client asked for in its `join`.
#[derive(Debug, Clone)]
pub struct JoinAsk {
    /// The room.
    pub room: RoomName,
    /// The name it wants shown, if any.
    pub name: Option<String>,
    /// Its access token.
    pub token: String,
}

/// The outcome of admission.
#[derive(Debug)]
pub enum Decision {
    /// May enter now.
    Enter(Ticket),
    /// A meeting that has not started: wait for its status to change, then ask again.
    Wait {
        /// The meeting's status.
        status: watch::Receiver<MeetingStatus>,
        /// The meeting, for the `waiting` message.
        meeting: MeetingInfo,
    },
}

/// Admission granted: what to ask the router for, and the meeting presence to record.
#[derive(Debug)]
pub struct Ticket {
    /// The router's join request.
    pub request: JoinRequest,
    presence: Option<(String, Role)>,
}

/// A member's presence in a meeting, recorded until [`Presence::end`].
#[derive(Debug)]
pub struct Presence {
    code: String,
    identity: String,
}

impl Presence {
    /// Records that the member left.
    pub async fn end(self, state: &AppState) {
        if let Err(e) = state
            .meetings
            .disconnected(&self.code, &self.identity)
            .await
        {
            tracing::error!(error = %e, "meeting departure not recorded");
        }
    }
}

/// Decides whether `ask` may enter, and as what.
pub async fn admit(state: &AppState, ask: &JoinAsk) -> Result<Decision, Refusal> {
    let claims = state
        .tokens
        .verify(&ask.token, Some(ask.room.as_str()), SystemTime::now())
        .map_err(|e| match e {
            TokenError::Expired => Refusal::new(ErrorCode::TokenExpired, e.to_string()),
            other => Refusal::new(ErrorCode::InvalidToken, other.to_string()),
        })?;
    let reserved = crate::meetings::model::MeetingCode::reserved_by(ask.room.as_str());
    if let Some(code) = &reserved
        && claims.meeting.as_deref() != Some(code.as_str())
    {
        return Err(Refusal::new(
            ErrorCode::PermissionDenied,
            format!("room {code} belongs to a meeting: join it through the meeting"),
        ));
    }
    // In a meeting, the name is the one given (and checked) at the meeting's join; a client
    // cannot rename itself over the socket.
    let asked = ask.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let display = if claims.meeting.is_some() {
        None
    } else {
        asked
    }
    .map(str::to_owned)
    .or(claims.name.clone())
    .unwrap_or_else(|| claims.sub.clone());
    let display: String = display.chars().take(MAX_NAME_CHARS).collect();
    let mut request = JoinRequest {
        room: ask.room.clone(),
        open: Open::Join,
        identity: claims.sub.clone(),
        name: display,
        // Outside meetings, whoever may administer the room is its host (and sees what only
        // hosts see, such as the agent's lead score).
        role: if claims.role == Some(Role::Agent) {
            // A token issued for an agent (an external agent process): not transcribed.
            Some(Role::Agent)
        } else {
            claims.grants.room_admin.then_some(Role::Host)
        },
        can_publish: claims.grants.can_publish,
        can_subscribe: claims.grants.can_subscribe,
        meeting: None,
        ice_servers: state.ice_servers_for(&claims.sub),
    };
    let Some(code) = &claims.meeting else {
        return Ok(Decision::Enter(Ticket {
            request,
            presence: None,
        }));
    };
    let (m, status) = state.meetings.admit(code).await.map_err(|e| match e {
        MeetingError::Ended => Refusal::new(ErrorCode::MeetingEnded, e.to_string()),
        MeetingError::NotFound(_) => Refusal::new(ErrorCode::RoomNotFound, e.to_string()),
        other => Refusal::new(ErrorCode::Internal, other.to_string()),
    })?;
    let role = claims.role.unwrap_or(Role::Participant);
    let mut info = crate::meetings::MeetingService::info(&m, Some(role));
    if m.status == MeetingStatus::Waiting {
        if role != Role::Host {
            return Ok(Decision::Wait {
                status,
                meeting: info,
            });
        }
        // The host's join starts the meeting (see meetings::lifecycle).
        info.status = MeetingStatus::Active.as_str().to_owned();
    }
    request.open = Open::Meeting(code.clone());
    request.role = Some(role);
    request.meeting = Some(info);
    Ok(Decision::Enter(Ticket {
        request,
        presence: Some((code.clone(), role)),
    }))
}

/// Starts the admitted member's session through the router and records its meeting presence.
pub async fn enter(
    state: &AppState,
    ticket: Ticket,
    signal: tokio::sync::mpsc::Sender<conclave_signaling::ServerMessage>,
) -> Result<(Session, Option<Presence>), Refusal> {
    let identity = ticket.request.identity.clone();
    let name = ticket.request.name.clone();
    let session = state
        .router
        .join(ticket.request, signal)
        .await
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    // A relayed session's presence is recorded by the room's node, which keeps the meeting.
    let presence = match ticket.presence.filter(|_| !session.remote) {
        Some((code, role)) => {
            if let Err(e) = state
                .meetings
                .connected(&code, &identity, &name, role)
                .await
            {
                tracing::error!(error = %e, "meeting presence not recorded");
            }
            Some(Presence { code, identity })
        }
        None => None,
    };
    Ok((session, presence))
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn names_need_a_visible_character_and_no_controls() {
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(display_name("José 山田").unwrap(), "José 山田");
        for bad in [
            "",
            "   ",
            "\0\0\0",
            "\u{200B}\u{200B}",
            "\u{200D}\u{FEFF}",
            "Ada\u{0007}",
            "\u{202E}nimda",
            "line\nbreak",
        ] {
            assert!(display_name(bad).is_err(), "{bad:?}");
        }
        assert!(display_name(&"x".repeat(64)).is_ok());
        assert!(display_name(&"x".repeat(65)).is_err());
    }
}
