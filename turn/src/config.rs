//! Server configuration and its up-front validation.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::TurnError;

/// How to run the embedded TURN server.
#[derive(Clone)]
pub struct TurnConfig {
    /// UDP address the TURN listener binds, e.g. `0.0.0.0:3478`; relay sockets bind on its IP too.
    pub bind: SocketAddr,
    /// Address advertised to clients for relays (and in `urls()`); also the only peer relays may reach.
    pub public_ip: IpAddr,
    /// Realm announced in 401 challenges and mixed into every long-term key.
    pub realm: String,
    /// Secret shared with the signaling server that mints credentials.
    pub shared_secret: String,
    /// Inclusive UDP port range for relay sockets; `None` lets the OS pick ephemeral ports.
    pub relay_port_range: Option<(u16, u16)>,
}

// Hand-written so the shared secret never ends up in logs via `{:?}`.
impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("bind", &self.bind)
            .field("public_ip", &self.public_ip)
            .field("realm", &self.realm)
            .field("shared_secret", &"<redacted>")
            .field("relay_port_range", &self.relay_port_range)
            .finish()
    }
}

impl TurnConfig {
    /// Rejects settings that would start a server nobody can use or that would be unsafe.
    pub fn validate(&self) -> Result<(), TurnError> {
        let invalid = |msg: String| Err(TurnError::InvalidConfig(msg));
        if self.shared_secret.is_empty() {
            // An empty HMAC key makes every credential forgeable by anyone.
            return invalid("shared_secret must not be empty".into());
        }
        if self.realm.is_empty() {
            return invalid("realm must not be empty".into());
        }
        if self.public_ip.is_unspecified() || self.public_ip.is_multicast() {
            return invalid(format!(
                "public_ip {} is not a unicast address",
                self.public_ip
            ));
        }
        if self.public_ip.is_ipv4() != self.bind.ip().is_ipv4() {
            // Relays bind on the listener's IP, so they can only carry that family.
            return invalid(format!(
                "public_ip {} and bind {} must be the same address family",
                self.public_ip, self.bind
            ));
        }
        if let Some((lo, hi)) = self.relay_port_range
            && (lo == 0 || lo > hi)
        {
            return invalid(format!(
                "relay_port_range ({lo}, {hi}) must be non-zero and ascending"
            ));
        }
        Ok(())
    }

    /// Peer IPs relays may exchange traffic with: Conclave's own addresses and nothing else.
    pub(crate) fn allowed_peers(&self) -> Vec<IpAddr> {
        let mut peers = vec![self.public_ip.to_canonical()];
        let bind_ip = self.bind.ip().to_canonical();
        if !bind_ip.is_unspecified() && !peers.contains(&bind_ip) {
            peers.push(bind_ip);
        }
        peers
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn base() -> TurnConfig {
        TurnConfig {
            bind: "127.0.0.1:3478".parse().unwrap(),
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            realm: "conclave.test".into(),
            shared_secret: "s3cret".into(),
            relay_port_range: None,
        }
    }

    #[test]
    fn accepts_sane_config() {
        base().validate().unwrap();
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: [fn(&mut TurnConfig); 6] = [
            |c| c.shared_secret.clear(),
            |c| c.realm.clear(),
            |c| c.public_ip = "0.0.0.0".parse().unwrap(),
            |c| c.public_ip = "::1".parse().unwrap(),
            |c| c.relay_port_range = Some((0, 10)),
            |c| c.relay_port_range = Some((5000, 4000)),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = base();
            mutate(&mut c);
            assert!(
                matches!(c.validate(), Err(TurnError::InvalidConfig(_))),
                "case {i}"
            );
        }
    }

    #[test]
    fn debug_hides_secret() {
        assert!(!format!("{:?}", base()).contains("s3cret"));
    }

    #[test]
    fn allowed_peers_skip_wildcard_bind() {
        let mut c = base();
        c.bind = "0.0.0.0:3478".parse().unwrap();
        c.public_ip = "203.0.113.7".parse().unwrap();
        assert_eq!(
            c.allowed_peers(),
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        c.bind = "10.0.0.5:3478".parse().unwrap();
        assert_eq!(c.allowed_peers().len(), 2);
    }
}
