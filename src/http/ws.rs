//! The signaling WebSocket: pumps typed messages between the socket and the member's
//! session, and turns bad input into protocol errors without dropping the connection. Who may
//! enter is decided in `crate::admission`; the session itself is started by the router.

use crate::admission::{self, Decision, JoinAsk, Presence};
use crate::meetings::model::MeetingStatus;
use crate::metrics::Metrics;
use crate::peer::participant::SIGNAL_QUEUE;
use crate::routing::Session;
use crate::signal;
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use conclave_signaling::session::{Action, Session as Protocol};
use conclave_signaling::{ClientMessage, ErrorCode, ServerMessage, decode_client, encode};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
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

/// Completes once the server is shutting down.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Counts an open WebSocket until dropped (shutdown waits for them to record departures).
struct Open(Arc<AppState>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .metrics
            .websockets
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn run(state: Arc<AppState>, socket: WebSocket) {
    state
        .metrics
        .websockets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = Open(state.clone());
    let mut stopping = state.stopping.subscribe();
    let join_deadline = tokio::time::Instant::now() + state.config.join_timeout;
    let (mut sink, mut stream) = socket.split();
    let (signal_tx, mut signal_rx) = mpsc::channel::<ServerMessage>(SIGNAL_QUEUE);
    // Pings keep a live client's connection busy reading (it answers with a pong); a dead one
    // stops answering and the listener's idle timeout closes it.
    let ping_every = state.config.idle_timeout / 3;
    // Set when a reply finds the outgoing queue full: the socket is then closed with a
    // reason after what was queued, never left silently short of replies.
    let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overflow_w = overflow.clone();
    let writer = tokio::spawn(async move {
        let mut close = None;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let msg = tokio::select! {
                msg = signal_rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
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
        if overflow_w.load(std::sync::atomic::Ordering::Relaxed) {
            close = Some(CloseFrame {
                code: close_code::POLICY,
                reason: "too many replies unread: the client does not keep up".into(),
            });
        }
        let frame = close.unwrap_or(CloseFrame {
            code: close_code::NORMAL,
            reason: "bye".into(),
        });
        let _ = sink.send(Message::Close(Some(frame))).await;
    });

    let mut conn = Connection {
        state: state.clone(),
        protocol: Protocol::new(),
        signal: signal_tx,
        session: None,
        waiting: None,
        presence: None,
        overflow,
    };
    loop {
        let frame = if let Some(p) = conn.session.as_mut() {
            tokio::select! {
                frame = stream.next() => frame,
                _ = &mut p.done => { conn.session = None; break; }
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
                () = stopped(&mut stopping) => {
                    conn.error(ErrorCode::ShuttingDown, "the server is shutting down");
                    break;
                }
            }
        } else {
            // Joined sessions are ended by the router's shutdown; sockets that never joined
            // (or wait for a meeting) are ended here.
            tokio::select! {
                frame = stream.next() => frame,
                () = stopped(&mut stopping) => {
                    conn.error(ErrorCode::ShuttingDown, "the server is shutting down");
                    break;
                }
                () = tokio::time::sleep_until(join_deadline) => {
                    Metrics::add(&state.metrics.join_timeouts, 1);
                    conn.error(
                        ErrorCode::JoinTimeout,
                        format!("no join within {} s", state.config.join_timeout.as_secs()),
                    );
                    break;
                }
            }
        };
        let Some(frame) = frame else { break };
        if conn.overflowed() {
            break;
        }
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
                // The socket is unusable after any read error; say which kind it was.
                let text = e.to_string();
                tracing::debug!(error = %text, "WebSocket read error");
                if text.contains("idle too long") {
                    // A dead peer: nobody is there to tell.
                    Metrics::add(&state.metrics.dead_peers, 1);
                } else if text.contains("Space limit") || text.contains("too long") {
                    conn.error(
                        ErrorCode::MessageTooLarge,
                        format!("connection closed: {text}"),
                    );
                } else {
                    conn.error(
                        ErrorCode::ProtocolError,
                        format!("connection closed: {text}"),
                    );
                }
                break;
            }
        }
    }
    let overflowed = conn.overflowed();
    conn.finish().await;
    if overflowed {
        // Keep reading (and discarding) while the queued replies and the close frame go out:
        // closing a socket with unread input makes the kernel reset it, and the client would
        // lose all of them, the reason included.
        let drain = async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = tokio::join!(writer, drain);
        })
        .await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
}

struct Connection {
    state: Arc<AppState>,
    protocol: Protocol,
    signal: mpsc::Sender<ServerMessage>,
    session: Option<Session>,
    /// A meeting join held until the host starts the meeting.
    waiting: Option<Waiting>,
    /// The meeting presence of this connection's member, recorded until it leaves.
    presence: Option<Presence>,
    overflow: Arc<std::sync::atomic::AtomicBool>,
}

struct Waiting {
    status: watch::Receiver<MeetingStatus>,
    ask: JoinAsk,
}

impl Connection {
    /// Queues a reply; a full queue marks the connection for closing with a reason.
    fn reply(&self, msg: ServerMessage) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.signal.try_send(msg)
            && !self
                .overflow
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            Metrics::add(&self.state.metrics.signaling_overflows, 1);
            tracing::warn!("signaling replies unread; closing the socket");
        }
    }

    fn overflowed(&self) -> bool {
        self.overflow.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        Metrics::add(&self.state.metrics.signaling_errors, 1);
        self.reply(signal::error(code, message));
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
        match self.protocol.on_message(msg) {
            Action::Reply(reply) => {
                self.reply(reply);
                true
            }
            Action::Refuse(code, message) => {
                self.error(code, message);
                true
            }
            Action::Leave => false,
            Action::Forward(msg) => match &self.session {
                // Awaiting here pushes back on a client that floods the session.
                Some(p) => p.client.send(msg).await.is_ok(),
                None => false,
            },
            Action::Join(ClientMessage::Join { room, name, token }) => {
                self.join(JoinAsk { room, name, token }).await
            }
            Action::Join(_) => {
                self.error(ErrorCode::Internal, "not a join");
                false
            }
        }
    }

    /// Asks admission, then the router; `false` ends the connection.
    async fn join(&mut self, ask: JoinAsk) -> bool {
        let decision = match admission::admit(&self.state, &ask).await {
            Ok(d) => d,
            Err(r) => return self.refused(r),
        };
        match decision {
            Decision::Wait { status, meeting } => {
                if self.waiting.is_none() {
                    self.reply(signal::waiting(meeting));
                }
                self.waiting = Some(Waiting { status, ask });
                true
            }
            Decision::Enter(ticket) => {
                match admission::enter(&self.state, ticket, self.signal.clone()).await {
                    Ok((session, presence)) => {
                        self.protocol.join_accepted();
                        self.waiting = None;
                        self.session = Some(session);
                        self.presence = presence;
                        true
                    }
                    Err(r) => self.refused(r),
                }
            }
        }
    }

    fn refused(&mut self, r: admission::Refusal) -> bool {
        Metrics::add(&self.state.metrics.joins_refused, 1);
        let was_waiting = self.waiting.take().is_some();
        self.protocol.join_refused();
        self.error(r.code, r.message);
        // A held join that fails when the meeting starts has nothing left to wait for.
        !was_waiting
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
                self.reply(signal::meeting_ended("host_ended"));
                false
            }
            MeetingStatus::Active => {
                let ask = w.ask.clone();
                self.join(ask).await
            }
        }
    }

    async fn finish(mut self) {
        self.protocol.close();
        if let Some(p) = self.session.take() {
            // Dropping the client sender ends the session; wait for it to clean up.
            drop(p.client);
            let _ = tokio::time::timeout(Duration::from_secs(5), p.done).await;
        }
        if let Some(presence) = self.presence.take() {
            presence.end(&self.state).await;
        }
    }
}
