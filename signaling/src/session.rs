//! The per-connection session state machine.
//!
//! It decides, for each decoded client message, whether the server should act on it, answer it
//! directly, or refuse it, from nothing but the session's state. The WebSocket handler owns one
//! and reports back what the room said about a join.

use crate::error::ErrorCode;
use crate::message::{ClientMessage, ServerMessage};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected, no `join` yet.
    AwaitingJoin,
    /// A `join` was handed to the room; its verdict is pending.
    Joining,
    /// In a room.
    Joined,
    /// Left, refused or shut down; nothing more is accepted.
    Closed,
}

/// What the connection handler should do with a client message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the room to admit this participant (the message is a `join`).
    Join(ClientMessage),
    /// Pass the message to the participant's room session.
    Forward(ClientMessage),
    /// Send this reply without involving the room.
    Reply(ServerMessage),
    /// Leave the room and close the connection.
    Leave,
    /// Refuse the message with this error; the session stays as it was.
    Refuse(ErrorCode, String),
}

/// A connection's session.
#[derive(Debug)]
pub struct Session {
    state: SessionState,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A fresh session awaiting `join`.
    pub fn new() -> Self {
        Self {
            state: SessionState::AwaitingJoin,
        }
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Decides what to do with one client message.
    pub fn on_message(&mut self, msg: ClientMessage) -> Action {
        use SessionState::*;
        match (self.state, msg) {
            (Closed, _) => Action::Refuse(ErrorCode::NotJoined, "the session has ended".into()),
            (_, ClientMessage::Ping { id }) => Action::Reply(ServerMessage::Pong { id }),
            (AwaitingJoin, msg @ ClientMessage::Join { .. }) => {
                self.state = Joining;
                Action::Join(msg)
            }
            (Joining | Joined, ClientMessage::Join { .. }) => Action::Refuse(
                ErrorCode::AlreadyJoined,
                "this connection already joined a room; open a new connection to join another"
                    .into(),
            ),
            (AwaitingJoin | Joining, ClientMessage::Leave) => {
                self.state = Closed;
                Action::Leave
            }
            (AwaitingJoin | Joining, other) => Action::Refuse(
                ErrorCode::NotJoined,
                format!("`{}` is only allowed after a successful join", other.kind()),
            ),
            (Joined, ClientMessage::Leave) => {
                self.state = Closed;
                Action::Leave
            }
            (Joined, other) => Action::Forward(other),
        }
    }

    /// The room admitted the participant.
    pub fn join_accepted(&mut self) {
        if self.state == SessionState::Joining {
            self.state = SessionState::Joined;
        }
    }

    /// The room refused the join; the client may try again on this connection.
    pub fn join_refused(&mut self) {
        if self.state == SessionState::Joining {
            self.state = SessionState::AwaitingJoin;
        }
    }

    /// The connection is over (socket closed, kicked, shutdown).
    pub fn close(&mut self) {
        self.state = SessionState::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join() -> ClientMessage {
        ClientMessage::Join {
            room: crate::RoomName::validate("r").unwrap(),
            name: None,
            token: "t".into(),
        }
    }

    #[test]
    fn messages_before_join_are_refused_but_ping_works() {
        let mut s = Session::new();
        let offer = ClientMessage::Offer { sdp: "v=0".into() };
        assert!(matches!(
            s.on_message(offer),
            Action::Refuse(ErrorCode::NotJoined, _)
        ));
        assert_eq!(
            s.on_message(ClientMessage::Ping { id: Some(1) }),
            Action::Reply(ServerMessage::Pong { id: Some(1) })
        );
        assert_eq!(s.state(), SessionState::AwaitingJoin);
    }

    #[test]
    fn joining_twice_is_refused_and_does_not_disturb_the_session() {
        let mut s = Session::new();
        assert!(matches!(s.on_message(join()), Action::Join(_)));
        assert!(matches!(
            s.on_message(join()),
            Action::Refuse(ErrorCode::AlreadyJoined, _)
        ));
        s.join_accepted();
        assert!(matches!(
            s.on_message(join()),
            Action::Refuse(ErrorCode::AlreadyJoined, _)
        ));
        assert_eq!(s.state(), SessionState::Joined);
        let answer = ClientMessage::Answer { sdp: "v=0".into() };
        assert!(matches!(s.on_message(answer), Action::Forward(_)));
    }

    #[test]
    fn a_refused_join_can_be_retried() {
        let mut s = Session::new();
        s.on_message(join());
        s.join_refused();
        assert!(matches!(s.on_message(join()), Action::Join(_)));
    }

    #[test]
    fn leave_closes_the_session() {
        let mut s = Session::new();
        s.on_message(join());
        s.join_accepted();
        assert_eq!(s.on_message(ClientMessage::Leave), Action::Leave);
        assert_eq!(s.state(), SessionState::Closed);
        assert!(matches!(
            s.on_message(ClientMessage::Ping { id: None }),
            Action::Refuse(..)
        ));
    }
}
