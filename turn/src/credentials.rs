//! Time-limited TURN credentials in the "TURN REST API" scheme.
//!
//! The signaling server and the TURN server share one secret, so credentials can be
//! minted per participant without any shared state: the username carries its own expiry
//! and the password is an HMAC over it, which the TURN server simply recomputes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::TurnError;

/// A username/password pair a browser can put in `RTCIceServer`, plus when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `"<unix-expiry-seconds>:<identity>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(shared_secret, username))`.
    pub password: String,
    /// Lifetime granted, in whole seconds.
    pub ttl_secs: u64,
    /// Unix time (seconds) after which the server refuses the username.
    pub expires_at_unix: u64,
}

/// Mints credentials for `identity` that expire `ttl` after `now`.
pub fn credentials(
    secret: &str,
    identity: &str,
    ttl: Duration,
    now: SystemTime,
) -> TurnCredentials {
    let ttl_secs = ttl.as_secs();
    // A clock before 1970 is a broken host; treating it as the epoch still yields a
    // credential the server will consider expired, which is the safe outcome.
    let expires_at_unix = unix_secs(now).saturating_add(ttl_secs);
    let username = format!("{expires_at_unix}:{identity}");
    let password = password_for(secret, &username);
    TurnCredentials {
        username,
        password,
        ttl_secs,
        expires_at_unix,
    }
}

/// Recomputes the password the shared secret implies for `username`.
pub fn password_for(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key size");
    mac.update(username.as_bytes());
    BASE64_STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks the username's shape and expiry against `now`, returning the expiry on success.
pub fn check_username(username: &str, now: SystemTime) -> Result<u64, TurnError> {
    let malformed = || TurnError::MalformedUsername(username.to_owned());
    let (expiry, _identity) = username.split_once(':').ok_or_else(malformed)?;
    // `u64::from_str` tolerates a leading '+', which we never issue; insist on bare digits
    // so exactly one textual form of each expiry is valid.
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let expires_at: u64 = expiry.parse().map_err(|_| malformed())?;
    let now = unix_secs(now);
    if expires_at <= now {
        return Err(TurnError::Expired {
            expired_at: expires_at,
            now,
        });
    }
    Ok(expires_at)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "conclave-test-secret";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn password_matches_independent_hmac() {
        // Computed outside Rust with:
        //   printf '%s' '1700000000:alice' \
        //     | openssl dgst -sha1 -hmac 'conclave-test-secret' -binary | base64
        let expected = "PdFS96UpgJz0X95iNI41P/qWVKw=";
        let c = credentials(
            SECRET,
            "alice",
            Duration::from_secs(3600),
            at(1_699_996_400),
        );
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, expected);
        assert_eq!(c.ttl_secs, 3600);
        assert_eq!(c.expires_at_unix, 1_700_000_000);
    }

    #[test]
    fn fresh_username_is_accepted_until_expiry() {
        let c = credentials(SECRET, "bob", Duration::from_secs(60), at(1_000));
        assert_eq!(check_username(&c.username, at(1_000)).unwrap(), 1_060);
        assert_eq!(check_username(&c.username, at(1_059)).unwrap(), 1_060);
    }

    #[test]
    fn expired_username_is_refused() {
        let c = credentials(SECRET, "bob", Duration::from_secs(60), at(1_000));
        for now in [1_060, 1_061, 5_000] {
            match check_username(&c.username, at(now)) {
                Err(TurnError::Expired { expired_at, .. }) => assert_eq!(expired_at, 1_060),
                other => panic!("expected Expired at now={now}, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for bad in [
            "",
            "alice",
            "1700000000",
            ":alice",
            "abc:alice",
            "+1700000000:alice",
            "-5:alice",
            " 1700000000:alice",
            "99999999999999999999999:alice",
        ] {
            assert!(
                matches!(
                    check_username(bad, at(0)),
                    Err(TurnError::MalformedUsername(_))
                ),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn identity_may_contain_colons() {
        // Identities are opaque to the server; only the first colon delimits the expiry.
        assert_eq!(
            check_username("2000:room:42:alice", at(1_000)).unwrap(),
            2_000
        );
    }

    #[test]
    fn different_secret_gives_different_password() {
        let a = credentials(SECRET, "alice", Duration::from_secs(60), at(0));
        let b = credentials("other", "alice", Duration::from_secs(60), at(0));
        assert_eq!(a.username, b.username);
        assert_ne!(a.password, b.password);
    }
}
