//! Server configuration and its up-front validation.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
    /// Inclusive port range relays may reach on Conclave's addresses (the SFU's media ports).
    /// `None` allows every port on those addresses: only for an SFU on ephemeral ports.
    pub peer_port_range: Option<(u16, u16)>,
    /// Quotas and lifetimes; [`TurnLimits::default`] documents each default.
    pub limits: TurnLimits,
}

/// Bounds on what clients may hold. Every table the server keeps is capped by one of these.
#[derive(Debug, Clone)]
pub struct TurnLimits {
    /// Allocations the whole server holds at once (default 1024).
    pub max_allocations: usize,
    /// Allocations one credential (username) may hold at once (default 5: a browser makes
    /// one per peer connection and ICE restart).
    pub allocations_per_username: usize,
    /// Allocations one client IP address may hold at once (default 32, for offices behind one NAT).
    pub allocations_per_address: usize,
    /// Longest lifetime an Allocate or Refresh may obtain (default 3600 s, RFC 8656's
    /// recommended maximum). Never longer than the credential's own expiry either.
    pub max_lifetime: Duration,
    /// Peer permissions per allocation (default 8; relays only reach Conclave's own IPs).
    pub permissions_per_allocation: usize,
    /// Channel bindings per allocation (default 16).
    pub channels_per_allocation: usize,
    /// How long a nonce stays valid before a request using it gets 438 Stale Nonce (default
    /// 600 s). Nonces are stateless (a MAC over time and client address), so none are stored.
    pub nonce_ttl: Duration,
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self {
            max_allocations: 1024,
            allocations_per_username: 5,
            allocations_per_address: 32,
            max_lifetime: Duration::from_secs(3600),
            permissions_per_allocation: 8,
            channels_per_allocation: 16,
            nonce_ttl: Duration::from_secs(600),
        }
    }
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
            .field("peer_port_range", &self.peer_port_range)
            .field("limits", &self.limits)
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
        for (name, range) in [
            ("relay_port_range", self.relay_port_range),
            ("peer_port_range", self.peer_port_range),
        ] {
            if let Some((lo, hi)) = range
                && (lo == 0 || lo > hi)
            {
                return invalid(format!(
                    "{name} ({lo}, {hi}) must be non-zero and ascending"
                ));
            }
        }
        if let (Some((rlo, rhi)), Some((plo, phi))) = (self.relay_port_range, self.peer_port_range)
            && rlo <= phi
            && plo <= rhi
        {
            // A relay port inside the peer range would let one client's relay reach another's.
            return invalid(format!(
                "relay_port_range ({rlo}, {rhi}) overlaps peer_port_range ({plo}, {phi})"
            ));
        }
        let l = &self.limits;
        if l.max_allocations == 0
            || l.allocations_per_username == 0
            || l.allocations_per_address == 0
            || l.permissions_per_allocation == 0
            || l.channels_per_allocation == 0
        {
            return invalid("every TURN quota must be at least 1".into());
        }
        if l.max_lifetime < Duration::from_secs(60) || l.nonce_ttl < Duration::from_secs(30) {
            return invalid("max_lifetime must be >= 60 s and nonce_ttl >= 30 s".into());
        }
        Ok(())
    }

    /// Which peers relays may exchange traffic with.
    pub(crate) fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy {
            ips: self.allowed_peers(),
            ports: self.peer_port_range,
        }
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

/// Conclave's own addresses and, when known, its media ports: the only peers a relay serves.
#[derive(Debug, Clone)]
pub(crate) struct PeerPolicy {
    ips: Vec<IpAddr>,
    ports: Option<(u16, u16)>,
}

impl PeerPolicy {
    /// A permission (RFC 8656 §9) names an IP only; the port is checked on every datagram.
    pub(crate) fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip.to_canonical())
    }

    pub(crate) fn allows(&self, peer: SocketAddr) -> bool {
        self.allows_ip(peer.ip())
            && self
                .ports
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&peer.port()))
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
            peer_port_range: None,
            limits: TurnLimits::default(),
        }
    }

    #[test]
    fn accepts_sane_config() {
        base().validate().unwrap();
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: [fn(&mut TurnConfig); 10] = [
            |c| c.shared_secret.clear(),
            |c| c.realm.clear(),
            |c| c.public_ip = "0.0.0.0".parse().unwrap(),
            |c| c.public_ip = "::1".parse().unwrap(),
            |c| c.relay_port_range = Some((0, 10)),
            |c| c.relay_port_range = Some((5000, 4000)),
            |c| c.peer_port_range = Some((0, 10)),
            |c| {
                c.relay_port_range = Some((40_000, 50_000));
                c.peer_port_range = Some((50_000, 60_000));
            },
            |c| c.limits.allocations_per_username = 0,
            |c| c.limits.nonce_ttl = Duration::from_secs(1),
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

    #[test]
    fn peer_policy_checks_ip_and_port() {
        let mut c = base();
        c.peer_port_range = Some((50_000, 50_010));
        let p = c.peer_policy();
        assert!(p.allows("127.0.0.1:50000".parse().unwrap()));
        assert!(p.allows("127.0.0.1:50010".parse().unwrap()));
        assert!(!p.allows("127.0.0.1:50011".parse().unwrap()));
        assert!(!p.allows("127.0.0.1:5432".parse().unwrap()));
        assert!(!p.allows("127.0.0.2:50000".parse().unwrap()));
        // An IPv4-mapped IPv6 peer is the same host.
        assert!(p.allows("[::ffff:127.0.0.1]:50001".parse().unwrap()));
        c.peer_port_range = None;
        assert!(c.peer_policy().allows("127.0.0.1:5432".parse().unwrap()));
    }
}
