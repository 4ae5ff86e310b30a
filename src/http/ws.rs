//! The signaling WebSocket: pumps typed messages between the socket and the participant's
//! task, and turns bad input into protocol errors without dropping the connection.

use crate::auth::TokenError;
use crate::meetings::model::{MeetingStatus, Role};
use crate::meetings::{MeetingError, MeetingService};
use crate::metrics::Metrics;
use crate::server::AppState;
use crate::sfu::participant::{self, Command, ParticipantSession, ParticipantSpec, SIGNAL_QUEUE};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use conclave_signaling::session::{Action, Session};
use conclave_signaling::{
    ClientMessage, ErrorCode, MeetingInfo, ParticipantId, RoomName, ServerMessage, decode_client,
    encode,
};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Frames this many times over the configured message limit are cut off by the WebSocket
/// layer itself (the connection then closes with 1009); smaller oversize messages are read
/// and refused with `message_too_large`, keeping the session.
const HARD_LIMIT_FACTOR: usize = 4;

/// `GET /ws`.
pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let hard = state.config.max_message_bytes * HARD_LIMIT_FACTOR;
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| run(state, socket))
}

async fn run(state: Arc<AppState>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (signal_tx, mut signal_rx) = mpsc::channel::<ServerMessage>(SIGNAL_QUEUE);
    let writer = tokio::spawn(async move {
        let mut close = None;
        while let Some(msg) = signal_rx.recv().await {
            if let ServerMessage::Error { code, message } = &msg
                && code.is_fatal()
            {
                close = Some(CloseFrame {
                    code: close_code::AWAY,
                    reason: message.clone().into(),
                });
            }
            if sink.send(Message::Text(encode(&msg).into())).await.is_err() {
                return;
            }
        }
        let frame = close.unwrap_or(CloseFrame {
            code: close_code::NORMAL,
            reason: "bye".into(),
        });
        let _ = sink.send(Message::Close(Some(frame))).await;
    });

    let mut conn = Connection {
        state: state.clone(),
        session: Session::new(),
        signal: signal_tx,
        participant: None,
        waiting: None,
        meeting: None,
    };
    loop {
        let frame = if let Some(p) = conn.participant.as_mut() {
            tokio::select! {
                frame = stream.next() => frame,
                _ = &mut p.task => { conn.participant = None; break; }
            }
        } else if let Some(w) = conn.waiting.as_mut() {
            tokio::select! {
                frame = stream.next() => frame,
                changed = w.status.changed() => {
                    if changed.is_err() || !conn.on_meeting_status().await {
                        break;
                    }
                    continue;
                }
            }
        } else {
            stream.next().await
        };
        let Some(frame) = frame else { break };
        match frame {
            Ok(Message::Text(text)) => {
                if !conn.on_text(text.as_str()).await {
                    break;
                }
            }
            Ok(Message::Binary(_)) => conn.error(
                ErrorCode::MalformedMessage,
                "binary frames are not supported; send JSON text frames",
            ),
            Ok(Message::Close(_)) => break,
            Ok(_) => {} // ping/pong are answered by the WebSocket layer
            Err(e) => {
                // Mostly frames over the hard size limit; the socket is unusable after this.
                tracing::debug!(error = %e, "WebSocket read error");
                conn.error(
                    ErrorCode::MessageTooLarge,
                    format!("connection closed: {e}"),
                );
                break;
            }
        }
    }
    conn.finish().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

struct Connection {
    state: Arc<AppState>,
    session: Session,
    signal: mpsc::Sender<ServerMessage>,
    participant: Option<ParticipantSession>,
    /// A meeting join held until the host starts the meeting.
    waiting: Option<Waiting>,
    /// (code, identity) of the meeting this connection is in, for the lifecycle.
    meeting: Option<(String, String)>,
}

struct Waiting {
    status: watch::Receiver<MeetingStatus>,
    join: ClientMessage,
}

enum Joined {
    Now(ParticipantSession, Option<(String, String)>),
    Later(Waiting, MeetingInfo),
}

impl Connection {
    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        Metrics::add(&self.state.metrics.signaling_errors, 1);
        let _ = self.signal.try_send(ServerMessage::Error {
            code,
            message: message.into(),
        });
    }

    /// Handles one text frame; `false` ends the connection.
    async fn on_text(&mut self, text: &str) -> bool {
        let limit = self.state.config.max_message_bytes;
        if text.len() > limit {
            self.error(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the {limit}-byte limit",
                    text.len()
                ),
            );
            return true;
        }
        let msg = match decode_client(text) {
            Ok(m) => m,
            Err(e) => {
                self.error(e.code(), e.to_string());
                return true;
            }
        };
        match self.session.on_message(msg) {
            Action::Reply(reply) => {
                let _ = self.signal.try_send(reply);
                true
            }
            Action::Refuse(code, message) => {
                self.error(code, message);
                true
            }
            Action::Leave => false,
            Action::Forward(msg) => match &self.participant {
                // Awaiting here pushes back on a client that floods the session.
                Some(p) => p.client_tx.send(msg).await.is_ok(),
                None => false,
            },
            Action::Join(msg) => {
                match self.join(msg).await {
                    Ok(Joined::Now(p, meeting)) => self.entered(p, meeting),
                    Ok(Joined::Later(w, meeting)) => {
                        let _ = self.signal.try_send(ServerMessage::Waiting { meeting });
                        self.waiting = Some(w);
                    }
                    Err((code, message)) => {
                        Metrics::add(&self.state.metrics.joins_refused, 1);
                        self.session.join_refused();
                        self.error(code, message);
                    }
                }
                true
            }
        }
    }

    /// The room admitted this connection's participant.
    fn entered(&mut self, p: ParticipantSession, meeting: Option<(String, String)>) {
        self.session.join_accepted();
        self.participant = Some(p);
        self.meeting = meeting;
    }

    /// The held meeting's status changed; `false` ends the connection.
    async fn on_meeting_status(&mut self) -> bool {
        let Some(w) = self.waiting.as_mut() else {
            return true;
        };
        let status = *w.status.borrow_and_update();
        match status {
            MeetingStatus::Waiting => true,
            MeetingStatus::Ended => {
                let _ = self.signal.try_send(ServerMessage::MeetingEnded {
                    reason: "host_ended".into(),
                });
                false
            }
            MeetingStatus::Active => {
                let w = self.waiting.take().expect("waiting");
                match self.join(w.join).await {
                    Ok(Joined::Now(p, meeting)) => {
                        self.entered(p, meeting);
                        true
                    }
                    Ok(Joined::Later(w, _)) => {
                        self.waiting = Some(w);
                        true
                    }
                    Err((code, message)) => {
                        self.error(code, message);
                        false
                    }
                }
            }
        }
    }

    async fn join(&self, msg: ClientMessage) -> Result<Joined, (ErrorCode, String)> {
        let original = msg.clone();
        let ClientMessage::Join { room, name, token } = msg else {
            return Err((ErrorCode::Internal, "not a join".into()));
        };
        let room = RoomName::validate(room.as_str()).ok_or((
            ErrorCode::InvalidMessage,
            "room name must be 1-64 characters of [A-Za-z0-9_.-]".to_owned(),
        ))?;
        let claims = self
            .state
            .tokens
            .verify(&token, Some(room.as_str()), SystemTime::now())
            .map_err(|e| match e {
                TokenError::Expired => (ErrorCode::TokenExpired, e.to_string()),
                other => (ErrorCode::InvalidToken, other.to_string()),
            })?;
        let display = name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .or(claims.name.clone())
            .unwrap_or_else(|| claims.sub.clone());
        let display: String = display.chars().take(64).collect();
        let mut meeting_info = None;
        if let Some(code) = &claims.meeting {
            let (m, status) = self.state.meetings.admit(code).await.map_err(|e| match e {
                MeetingError::Ended => (ErrorCode::MeetingEnded, e.to_string()),
                MeetingError::NotFound(_) => (ErrorCode::RoomNotFound, e.to_string()),
                other => (ErrorCode::Internal, other.to_string()),
            })?;
            let role = claims.role.clone().unwrap_or_else(|| "participant".into());
            let mut info = MeetingService::info(&m, Some(&role));
            if m.status == MeetingStatus::Waiting && role == "host" {
                // This very join starts it (see meetings::lifecycle).
                info.status = MeetingStatus::Active.as_str().to_owned();
            }
            if m.status == MeetingStatus::Waiting && role != "host" {
                return Ok(Joined::Later(
                    Waiting {
                        status,
                        join: original,
                    },
                    info,
                ));
            }
            meeting_info = Some(info);
        }
        // A room can close between lookup and join when its last member leaves; retry once.
        for attempt in 0..2 {
            let room_ref = if meeting_info.is_some() {
                self.state.rooms.room_for_meeting(&room)
            } else {
                self.state.rooms.room_for_join(&room)
            }
            .map_err(|e| (e.code(), e.to_string()))?;
            let spec = ParticipantSpec {
                id: ParticipantId(format!("PA_{}", crate::ids::random_id(12))),
                identity: claims.sub.clone(),
                name: display.clone(),
                can_publish: claims.grants.can_publish,
                can_subscribe: claims.grants.can_subscribe,
                meeting: meeting_info.clone(),
            };
            match participant::start(
                spec,
                room_ref,
                self.state.rooms.clone(),
                &self.state.peers,
                self.state.ice_servers_for(&claims.sub),
                self.signal.clone(),
                self.state.metrics.clone(),
            )
            .await
            {
                // RoomClosed: the room emptied and closed between lookup and join.
                Err((ErrorCode::RoomNotFound, _)) if attempt == 0 => {
                    self.state.rooms.remove_if_closed(&room);
                    continue;
                }
                Err(e) => return Err(e),
                Ok(p) => {
                    let meeting = match (&claims.meeting, &meeting_info) {
                        (Some(code), Some(info)) => {
                            let role = info
                                .role
                                .as_deref()
                                .and_then(Role::parse)
                                .unwrap_or(Role::Participant);
                            if let Err(e) = self
                                .state
                                .meetings
                                .connected(code, &claims.sub, &display, role)
                                .await
                            {
                                tracing::error!(error = %e, "meeting presence not recorded");
                            }
                            Some((code.clone(), claims.sub.clone()))
                        }
                        _ => None,
                    };
                    return Ok(Joined::Now(p, meeting));
                }
            }
        }
        Err((ErrorCode::RoomNotFound, format!("room {room} is closing")))
    }

    async fn finish(mut self) {
        self.session.close();
        if let Some(p) = self.participant.take() {
            p.handle.command(Command::Close {
                code: None,
                message: "connection closed".into(),
            });
            drop(p.client_tx);
            let _ = tokio::time::timeout(Duration::from_secs(5), p.task).await;
        }
        if let Some((code, identity)) = self.meeting.take()
            && let Err(e) = self.state.meetings.disconnected(&code, &identity).await
        {
            tracing::error!(error = %e, "meeting departure not recorded");
        }
    }
}
