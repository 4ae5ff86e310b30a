//! Access tokens: HS256 JWTs signed with the server's API secret, in the spirit of LiveKit's.
//!
//! A token names one room, one identity and what that identity may do there.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grants {
    /// May publish tracks.
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May receive others' tracks.
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// May create and administer the room.
    #[serde(default)]
    pub room_admin: bool,
    /// May create meetings even when guest access is off (operators' own tools).
    #[serde(default)]
    pub create_meetings: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            can_publish: true,
            can_subscribe: true,
            room_admin: false,
            create_meetings: false,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// API key that signed it.
    pub iss: String,
    /// Identity (stable per user).
    pub sub: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Room name.
    pub room: String,
    /// Permissions.
    #[serde(default)]
    pub grants: Grants,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// Meeting code, when the token admits to a meeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting: Option<String>,
    /// Role in that meeting (`host`, `participant`, `agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<conclave_signaling::Role>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("the access token has expired")]
    Expired,
    /// Bad signature, wrong key, malformed, or missing claims.
    #[error("the access token is invalid: {0}")]
    Invalid(String),
    /// Valid, but for a different room.
    #[error("the access token is for room {0:?}, not this one")]
    WrongRoom(String),
}

/// Issues and verifies tokens with one API key/secret pair.
#[derive(Clone)]
pub struct TokenAuthority {
    api_key: String,
    api_secret: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenAuthority {
    /// A secret for `purpose` derived from the API secret (HMAC-SHA256, hex, 40 characters):
    /// stable across restarts and nodes sharing the secret, useless for anything else.
    pub fn derived_secret(&self, purpose: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(self.api_secret.as_bytes()).expect("any key");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())[..40].to_owned()
    }
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// The parameters of a new token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Room.
    pub room: String,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: Option<String>,
    /// Permissions.
    pub grants: Grants,
    /// Lifetime.
    pub ttl: Duration,
    /// Meeting code.
    pub meeting: Option<String>,
    /// Role in the meeting.
    pub role: Option<conclave_signaling::Role>,
}

impl TokenAuthority {
    /// An authority for `api_key` signing with `api_secret`.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        TokenAuthority {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            encoding: EncodingKey::from_secret(api_secret.as_bytes()),
            decoding: DecodingKey::from_secret(api_secret.as_bytes()),
        }
    }

    /// The API key name.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Whether `key`/`secret` is this server's API key pair (server-to-server calls).
    /// Compared in constant time so the secret cannot be guessed byte by byte.
    pub fn check_api_key(&self, key: &str, secret: &str) -> bool {
        let a = secret.as_bytes();
        let b = self.api_secret.as_bytes();
        let mut diff = (a.len() ^ b.len()) as u8;
        for (x, y) in a.iter().zip(b.iter()) {
            diff |= x ^ y;
        }
        key == self.api_key && diff == 0
    }

    /// Signs a token issued at `now`.
    pub fn issue(&self, req: &TokenRequest, now: SystemTime) -> String {
        let iat = unix(now);
        let claims = Claims {
            iss: self.api_key.clone(),
            sub: req.identity.clone(),
            name: req.name.clone(),
            room: req.room.clone(),
            grants: req.grants.clone(),
            iat,
            exp: iat + req.ttl.as_secs().max(1),
            meeting: req.meeting.clone(),
            role: req.role,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Verifies signature and expiry at `now`, and that the token is for `room` (unless
    /// `room` is `None`).
    pub fn verify(
        &self,
        token: &str,
        room: Option<&str>,
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock, not the wall clock.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub", "iss"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        validation.set_issuer(&[&self.api_key]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => {
                    TokenError::Invalid("signed by an unknown API key".into())
                }
                ErrorKind::InvalidAlgorithm => TokenError::Invalid("only HS256 is accepted".into()),
                _ => TokenError::Invalid(e.to_string()),
            },
        )?;
        let claims = data.claims;
        if claims.exp <= unix(now) {
            return Err(TokenError::Expired);
        }
        if let Some(room) = room
            && claims.room != room
        {
            return Err(TokenError::WrongRoom(claims.room));
        }
        Ok(claims)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> TokenRequest {
        TokenRequest {
            room: "demo".into(),
            identity: "ada".into(),
            name: Some("Ada".into()),
            grants: Grants::default(),
            ttl: Duration::from_secs(60),
            ..Default::default()
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let auth = TokenAuthority::new("key", "secret");
        let t0 = SystemTime::now();
        let token = auth.issue(&req(), t0);
        let claims = auth.verify(&token, Some("demo"), t0).unwrap();
        assert_eq!(claims.sub, "ada");
        assert!(claims.grants.can_publish && !claims.grants.room_admin);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            auth.verify(&token, Some("demo"), later),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_wrong_room_and_garbage_tokens_are_refused() {
        let auth = TokenAuthority::new("key", "secret");
        let forger = TokenAuthority::new("key", "not-the-secret");
        let now = SystemTime::now();
        let forged = forger.issue(&req(), now);
        assert!(matches!(
            auth.verify(&forged, None, now),
            Err(TokenError::Invalid(_))
        ));
        let token = auth.issue(&req(), now);
        assert_eq!(
            auth.verify(&token, Some("other"), now),
            Err(TokenError::WrongRoom("demo".into()))
        );
        assert!(matches!(
            auth.verify("abc.def.ghi", None, now),
            Err(TokenError::Invalid(_))
        ));
        let other_key = TokenAuthority::new("key2", "secret").issue(&req(), now);
        assert!(matches!(
            auth.verify(&other_key, None, now),
            Err(TokenError::Invalid(_))
        ));
    }
}
