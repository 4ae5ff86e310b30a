//! The TURN server's view of the shared-secret credentials.

use std::net::SocketAddr;
use std::time::SystemTime;

use turn::auth::{AuthHandler, generate_auth_key};

use crate::TurnError;
use crate::credentials::{check_username, password_for};

/// Source of the current time, injectable so expiry checks are testable without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<F> Clock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// Derives each user's long-term key from the shared secret, refusing malformed or expired usernames.
pub struct RestAuthHandler<C: Clock = SystemClock> {
    secret: String,
    realm: String,
    clock: C,
}

impl<C: Clock> RestAuthHandler<C> {
    /// Builds a handler for `realm` that validates against `secret` using `clock` for expiry.
    pub fn new(secret: impl Into<String>, realm: impl Into<String>, clock: C) -> Self {
        Self {
            secret: secret.into(),
            realm: realm.into(),
            clock,
        }
    }

    /// Returns the RFC 5389 long-term key (`MD5(username:realm:password)`) the client must have used.
    pub fn key_for(&self, username: &str) -> Result<Vec<u8>, TurnError> {
        check_username(username, self.clock.now())?;
        let password = password_for(&self.secret, username);
        // Our own realm, not the one echoed by the client: a client that signs with any
        // other realm is talking to a different deployment and must fail integrity.
        Ok(generate_auth_key(username, &self.realm, &password))
    }
}

impl<C: Clock> AuthHandler for RestAuthHandler<C> {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.key_for(username).map_err(|err| {
            tracing::debug!(%src_addr, %err, "TURN authentication refused");
            turn::Error::Other(err.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, UNIX_EPOCH};

    use stun::integrity::MessageIntegrity;
    use stun::message::{BINDING_REQUEST, Message, Setter};
    use stun::textattrs::{Realm, Username};

    use super::*;
    use crate::credentials::credentials;

    const SECRET: &str = "conclave-test-secret";
    const REALM: &str = "conclave.test";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn handler_at(secs: u64) -> RestAuthHandler<impl Clock> {
        RestAuthHandler::new(SECRET, REALM, move || at(secs))
    }

    fn src() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 50_000))
    }

    // Builds the request a client would send, signed with the password it believes in.
    fn signed_request(username: &str, password: &str) -> Message {
        let mut m = Message::new();
        let integrity = MessageIntegrity::new_long_term_integrity(
            username.to_owned(),
            REALM.to_owned(),
            password.to_owned(),
        );
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(Username::new(
                stun::attributes::ATTR_USERNAME,
                username.to_owned(),
            )),
            Box::new(Realm::new(stun::attributes::ATTR_REALM, REALM.to_owned())),
            Box::new(integrity),
        ];
        m.build(&setters).unwrap();
        m
    }

    #[test]
    fn key_matches_independent_md5() {
        // Password is the HMAC vector from credentials.rs; the key was computed with:
        //   printf '%s' '1700000000:alice:conclave.test:PdFS96UpgJz0X95iNI41P/qWVKw=' \
        //     | openssl dgst -md5
        let key = handler_at(1_699_999_000)
            .key_for("1700000000:alice")
            .unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "565348dfb7150af33970b0c72bb972ff");
    }

    #[test]
    fn valid_credentials_pass_integrity_check() {
        let c = credentials(SECRET, "alice", Duration::from_secs(600), at(1_000));
        let key = handler_at(1_100)
            .auth_handle(&c.username, REALM, src())
            .unwrap();
        let mut m = signed_request(&c.username, &c.password);
        MessageIntegrity(key)
            .check(&mut m)
            .expect("integrity should verify");
    }

    #[test]
    fn wrong_password_fails_integrity_check() {
        let c = credentials(SECRET, "alice", Duration::from_secs(600), at(1_000));
        let forged = credentials(
            "guessed-secret",
            "alice",
            Duration::from_secs(600),
            at(1_000),
        );
        assert_eq!(c.username, forged.username);
        let key = handler_at(1_100)
            .auth_handle(&c.username, REALM, src())
            .unwrap();
        let mut m = signed_request(&c.username, &forged.password);
        assert!(MessageIntegrity(key).check(&mut m).is_err());
    }

    #[test]
    fn expired_username_is_refused_by_handler() {
        let c = credentials(SECRET, "alice", Duration::from_secs(600), at(1_000));
        assert!(
            handler_at(1_599)
                .auth_handle(&c.username, REALM, src())
                .is_ok()
        );
        assert!(
            handler_at(1_600)
                .auth_handle(&c.username, REALM, src())
                .is_err()
        );
        assert!(matches!(
            handler_at(9_999).key_for(&c.username),
            Err(TurnError::Expired {
                expired_at: 1_600,
                now: 9_999
            })
        ));
    }

    #[test]
    fn malformed_username_is_refused_by_handler() {
        for bad in ["alice", "soon:alice", ""] {
            assert!(
                handler_at(0).auth_handle(bad, REALM, src()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn system_clock_is_usable() {
        let h = RestAuthHandler::new(SECRET, REALM, SystemClock);
        let c = credentials(SECRET, "alice", Duration::from_secs(60), SystemTime::now());
        assert!(h.key_for(&c.username).is_ok());
    }
}
