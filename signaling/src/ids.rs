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
    /// The name of a room, as it appears in `/room/<name>` and in access tokens.
    RoomName
);
string_id!(
    /// A participant's id, unique within the server for the life of the connection.
    ParticipantId
);
string_id!(
    /// A published track's id; also the `msid` track id the subscribers see.
    TrackId
);

impl RoomName {
    /// Checks that a room name is usable in a URL path: 1 to 64 characters from
    /// `[A-Za-z0-9_-.]`.
    pub fn validate(name: &str) -> Option<RoomName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        ok.then(|| RoomName(name.to_owned()))
    }
}
