//! One client's relay: its socket, its permissions and channels, and the task that carries
//! peer traffic back to the client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use stun::agent::TransactionId;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::auth::Clock;
use crate::config::PeerPolicy;
use crate::server::{Counters, now_secs};
use crate::wire;

/// RFC 8656 §9: a permission lasts 300 s unless refreshed.
pub(crate) const PERMISSION_LIFETIME_SECS: u64 = 300;
/// RFC 8656 §12: a channel binding lasts 600 s unless refreshed.
pub(crate) const CHANNEL_LIFETIME_SECS: u64 = 600;

/// Permissions and channel bindings of one allocation, read per relayed datagram.
///
/// Written only by the listener task (requests and the once-a-second sweep); read by this
/// allocation's relay task. The lock is per allocation, never shared between clients.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    permissions: HashMap<IpAddr, u64>,
    channels: HashMap<u16, (SocketAddr, u64)>,
    by_peer: HashMap<SocketAddr, u16>,
}

/// Why a permission or binding was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    /// The table is full (508).
    Full,
    /// The channel is bound to another peer, or the peer to another channel (400).
    Conflict,
}

impl Routes {
    pub(crate) fn permitted(&self, ip: IpAddr, now: u64) -> bool {
        self.permissions
            .get(&ip.to_canonical())
            .is_some_and(|&exp| exp > now)
    }

    pub(crate) fn peer_for_channel(&self, number: u16, now: u64) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|(_, exp)| *exp > now)
            .map(|(peer, _)| *peer)
    }

    fn channel_for_peer(&self, peer: SocketAddr, now: u64) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.peer_for_channel(n, now).map(|_| n)
    }

    /// Installs or refreshes permissions for every IP in `ips`, all or none.
    pub(crate) fn permit(
        &mut self,
        ips: &[IpAddr],
        now: u64,
        limit: usize,
    ) -> Result<(), RouteError> {
        let mut fresh: Vec<IpAddr> = ips
            .iter()
            .map(|ip| ip.to_canonical())
            .filter(|ip| !self.permissions.contains_key(ip))
            .collect();
        fresh.sort();
        fresh.dedup();
        if self.permissions.len() + fresh.len() > limit {
            return Err(RouteError::Full);
        }
        for ip in ips {
            self.permissions
                .insert(ip.to_canonical(), now + PERMISSION_LIFETIME_SECS);
        }
        Ok(())
    }

    /// Binds (or refreshes) `number` to `peer` and refreshes the peer's permission.
    pub(crate) fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: u64,
        channel_limit: usize,
        permission_limit: usize,
    ) -> Result<(), RouteError> {
        match (self.channels.get(&number), self.by_peer.get(&peer)) {
            (Some((bound, _)), _) if *bound != peer => return Err(RouteError::Conflict),
            (_, Some(&n)) if n != number => return Err(RouteError::Conflict),
            (None, _) if self.channels.len() >= channel_limit => return Err(RouteError::Full),
            _ => {}
        }
        self.permit(&[peer.ip()], now, permission_limit)?;
        self.channels
            .insert(number, (peer, now + CHANNEL_LIFETIME_SECS));
        self.by_peer.insert(peer, number);
        Ok(())
    }

    pub(crate) fn sweep(&mut self, now: u64) {
        self.permissions.retain(|_, exp| *exp > now);
        let by_peer = &mut self.by_peer;
        self.channels.retain(|_, (peer, exp)| {
            let keep = *exp > now;
            if !keep {
                by_peer.remove(peer);
            }
            keep
        });
    }

    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.permissions.len(), self.channels.len())
    }
}

/// A live allocation, owned by the listener task's table.
pub(crate) struct Allocation {
    pub(crate) username: String,
    pub(crate) relay: Arc<UdpSocket>,
    pub(crate) routes: Arc<RwLock<Routes>>,
    /// Unix seconds at which the allocation lapses unless refreshed.
    pub(crate) expires: u64,
    /// The Allocate transaction and its answer, resent verbatim on a retransmission.
    pub(crate) allocate_txid: TransactionId,
    pub(crate) allocate_response: Vec<u8>,
    /// `None` only once shutdown has taken it to wait for it.
    pub(crate) task: Option<JoinHandle<()>>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub(crate) fn read_routes(routes: &RwLock<Routes>) -> std::sync::RwLockReadGuard<'_, Routes> {
    routes.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write_routes(routes: &RwLock<Routes>) -> std::sync::RwLockWriteGuard<'_, Routes> {
    routes.write().unwrap_or_else(|p| p.into_inner())
}

// Largest payload that still fits a Data indication's 16-bit length (header, address, DATA).
const MAX_RELAYED: usize = 65_535 - 48;

/// Carries datagrams from permitted peers back to `client`, as ChannelData when a channel is
/// bound and as Data indications otherwise. Ends when its allocation is dropped (aborted).
pub(crate) async fn relay_to_client<C: Clock>(
    relay: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    routes: Arc<RwLock<Routes>>,
    policy: Arc<PeerPolicy>,
    clock: Arc<C>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(1_600);
    let mut txid_state = seed();
    loop {
        let (n, from) = match relay.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(err) => {
                // An unconnected UDP socket only fails like this on transient kernel errors.
                tracing::trace!(%client, %err, "relay receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if !policy.allows(from) || n > MAX_RELAYED {
            counters.dropped_from_peer.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let now = now_secs(clock.as_ref());
        let route = {
            let r = read_routes(&routes);
            r.permitted(from.ip(), now)
                .then(|| r.channel_for_peer(from, now))
        };
        match route {
            None => {
                // No permission for this peer: RFC 8656 §10.3 says drop silently.
                counters.dropped_from_peer.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Some(Some(number)) => wire::channel_data(&mut out, number, &buf[..n]),
            Some(None) => {
                let txid = next_txid(&mut txid_state);
                wire::data_indication(&mut out, &txid, from, &buf[..n]);
            }
        }
        match listener.send_to(&out, client).await {
            Ok(_) => {
                counters.relayed_to_client.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                counters.dropped_from_peer.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%client, %err, "send to TURN client failed");
            }
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

// splitmix64: indication transaction ids only need to be unpredictable enough not to repeat.
fn next_txid(state: &mut u64) -> [u8; 12] {
    let mut next = || {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = next().to_be_bytes();
    let b = next().to_be_bytes();
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&a);
    id[8..].copy_from_slice(&b[..4]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn permissions_expire_and_are_bounded() {
        let mut r = Routes::default();
        let ip = addr("127.0.0.1:1").ip();
        r.permit(&[ip], 100, 2).unwrap();
        assert!(r.permitted(ip, 100 + PERMISSION_LIFETIME_SECS - 1));
        assert!(!r.permitted(ip, 100 + PERMISSION_LIFETIME_SECS));
        let other = addr("127.0.0.2:1").ip();
        let third = addr("127.0.0.3:1").ip();
        r.permit(&[other], 100, 2).unwrap();
        assert_eq!(r.permit(&[third], 100, 2), Err(RouteError::Full));
        // Refreshing an existing permission needs no room.
        r.permit(&[ip, other], 200, 2).unwrap();
        r.sweep(200 + PERMISSION_LIFETIME_SECS);
        assert_eq!(r.sizes(), (0, 0));
    }

    #[test]
    fn channels_bind_one_to_one() {
        let mut r = Routes::default();
        let a = addr("127.0.0.1:50000");
        let b = addr("127.0.0.1:50001");
        r.bind(0x4000, a, 0, 2, 8).unwrap();
        r.bind(0x4000, a, 10, 2, 8).unwrap(); // refresh
        assert_eq!(r.bind(0x4000, b, 10, 2, 8), Err(RouteError::Conflict));
        assert_eq!(r.bind(0x4001, a, 10, 2, 8), Err(RouteError::Conflict));
        r.bind(0x4001, b, 10, 2, 8).unwrap();
        assert_eq!(
            r.bind(0x4002, addr("127.0.0.1:50002"), 10, 2, 8),
            Err(RouteError::Full)
        );
        assert_eq!(r.peer_for_channel(0x4000, 20), Some(a));
        assert_eq!(r.channel_for_peer(b, 20), Some(0x4001));
        assert!(r.permitted(a.ip(), 20));
        r.sweep(10 + CHANNEL_LIFETIME_SECS);
        assert_eq!(r.peer_for_channel(0x4000, 10 + CHANNEL_LIFETIME_SECS), None);
        assert_eq!(r.sizes(), (0, 0));
    }

    #[test]
    fn txids_do_not_repeat() {
        let mut s = 1;
        let a = next_txid(&mut s);
        let b = next_txid(&mut s);
        assert_ne!(a, b);
    }
}
