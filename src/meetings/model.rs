//! The meeting vocabulary: codes, statuses, roles.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Characters of meeting codes: uppercase letters and digits without look-alikes (0/O, 1/I).
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A shareable meeting code, `XXX-XXX-XXX`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MeetingCode(String);

impl MeetingCode {
    /// A random code (32^9 ≈ 3.5e13 possibilities; collisions are retried by the caller).
    pub fn random() -> MeetingCode {
        let mut rng = rand::rng();
        let mut s = String::with_capacity(11);
        for i in 0..9 {
            if i > 0 && i % 3 == 0 {
                s.push('-');
            }
            s.push(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char);
        }
        MeetingCode(s)
    }

    /// Parses user input: case-insensitive, dashes and spaces optional.
    pub fn parse(input: &str) -> Option<MeetingCode> {
        let chars: Vec<u8> = input
            .bytes()
            .filter(|b| *b != b'-' && *b != b' ')
            .map(|b| b.to_ascii_uppercase())
            .collect();
        if chars.len() != 9 || !chars.iter().all(|c| CODE_ALPHABET.contains(c)) {
            return None;
        }
        let s = format!(
            "{}-{}-{}",
            std::str::from_utf8(&chars[0..3]).ok()?,
            std::str::from_utf8(&chars[3..6]).ok()?,
            std::str::from_utf8(&chars[6..9]).ok()?
        );
        Some(MeetingCode(s))
    }

    /// The meeting code a room name is reserved for: rooms named exactly like a meeting code
    /// (`XXX-XXX-XXX`, canonical form) belong to meetings and are entered only through them.
    pub fn reserved_by(room: &str) -> Option<MeetingCode> {
        MeetingCode::parse(room).filter(|c| c.as_str() == room)
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeetingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a meeting is in its life. `Ended` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeetingStatus {
    /// Created, not started; people may wait.
    Waiting,
    /// Running.
    Active,
    /// Over.
    Ended,
}

impl MeetingStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingStatus::Waiting => "waiting",
            MeetingStatus::Active => "active",
            MeetingStatus::Ended => "ended",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<MeetingStatus> {
        match s {
            "waiting" => Some(MeetingStatus::Waiting),
            "active" => Some(MeetingStatus::Active),
            "ended" => Some(MeetingStatus::Ended),
            _ => None,
        }
    }

    /// Whether the status machine allows `self → to`.
    pub fn can_become(self, to: MeetingStatus) -> bool {
        matches!(
            (self, to),
            (MeetingStatus::Waiting, MeetingStatus::Active)
                | (MeetingStatus::Waiting, MeetingStatus::Ended)
                | (MeetingStatus::Active, MeetingStatus::Ended)
        )
    }
}

/// Roles are the protocol's.
pub use conclave_signaling::Role;

/// A stored meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// Row id.
    pub id: i64,
    /// Code.
    pub code: MeetingCode,
    /// Name.
    pub name: String,
    /// argon2 hash; never leaves the server.
    pub password_hash: Option<String>,
    /// Current host's identity.
    pub host_identity: String,
    /// Current host's name.
    pub host_name: Option<String>,
    /// API key name or `browser`.
    pub created_by: String,
    /// Status.
    pub status: MeetingStatus,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub ended_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_documented_shape_and_alphabet() {
        for _ in 0..200 {
            let c = MeetingCode::random();
            let s = c.as_str();
            assert_eq!(s.len(), 11);
            assert_eq!((&s[3..4], &s[7..8]), ("-", "-"));
            assert!(
                s.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| CODE_ALPHABET.contains(&b))
            );
            assert!(!s.contains('0') && !s.contains('O') && !s.contains('1') && !s.contains('I'));
            assert_eq!(MeetingCode::parse(s).as_ref(), Some(&c));
        }
    }

    #[test]
    fn user_input_is_normalised_and_look_alikes_refused() {
        assert_eq!(
            MeetingCode::parse("abc def ghj").unwrap().as_str(),
            "ABC-DEF-GHJ"
        );
        assert_eq!(
            MeetingCode::parse("ABCDEFGHJ").unwrap().as_str(),
            "ABC-DEF-GHJ"
        );
        assert!(MeetingCode::parse("ABC-DEF-GH0").is_none());
        assert!(MeetingCode::parse("ABC-DEF-GHI").is_none());
        assert!(MeetingCode::parse("ABC-DEF").is_none());
    }

    #[test]
    fn ended_is_final() {
        use MeetingStatus::*;
        assert!(
            Waiting.can_become(Active) && Active.can_become(Ended) && Waiting.can_become(Ended)
        );
        for to in [Waiting, Active, Ended] {
            assert!(!Ended.can_become(to));
        }
        assert!(!Active.can_become(Waiting));
    }
}
