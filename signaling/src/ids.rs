//! Typed identifiers, so a room name is never passed where a participant id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A participant's id, unique within the server for the life of the connection.
    ParticipantId
);
string_id!(
    /// A published track's id; also the `msid` track id the subscribers see.
    TrackId
);

/// The name of a room, as it appears in `/room/<name>` and in access tokens: 1 to 64
/// characters from `[A-Za-z0-9_-.]`. The only ways to make one are [`RoomName::validate`] and
/// deserialising (which validates), so every `RoomName` in the program is a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

impl RoomName {
    /// What a valid room name looks like, for error messages.
    pub const RULE: &'static str = "room name must be 1-64 characters of [A-Za-z0-9_.-]";

    /// The name if `name` is usable in a URL path.
    pub fn validate(name: &str) -> Option<RoomName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        ok.then(|| RoomName(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoomName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RoomName::validate(&s).ok_or_else(|| RoomName::RULE.to_owned())
    }
}

impl From<RoomName> for String {
    fn from(r: RoomName) -> String {
        r.0
    }
}

/// What a member is in a room or meeting. Compared as this enum, never as a string; the
/// strings (`host`, `participant`, `agent`) are its wire and storage form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the meeting.
    Host,
    /// A person.
    Participant,
    /// An AI agent.
    Agent,
}

impl Role {
    /// Wire and storage form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Participant => "participant",
            Role::Agent => "agent",
        }
    }

    /// Parses the wire and storage form.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "host" => Some(Role::Host),
            "participant" => Some(Role::Participant),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_validated_when_deserialised() {
        let ok: RoomName = serde_json::from_str("\"demo-1.a_b\"").unwrap();
        assert_eq!(ok.as_str(), "demo-1.a_b");
        for bad in [
            "\"\"",
            "\"a b\"",
            "\"../x\"",
            &format!("\"{}\"", "a".repeat(65)),
        ] {
            assert!(serde_json::from_str::<RoomName>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_round_trip_their_wire_form() {
        for r in [Role::Host, Role::Participant, Role::Agent] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!(Role::parse("Host"), None);
    }
}
