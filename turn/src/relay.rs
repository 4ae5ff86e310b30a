//! Relay and listener sockets handed to the webrtc-rs TURN engine.
//!
//! The engine relays to any peer a client names. Conclave only needs clients to reach
//! its own SFU, so relay sockets are wrapped to refuse every other peer; otherwise any
//! meeting participant could use the server to probe or flood the host's network.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

/// Creates relay sockets on the listener's IP and advertises them under `public_ip`.
pub(crate) struct RelayAllocator {
    pub(crate) bind_ip: IpAddr,
    pub(crate) public_ip: IpAddr,
    pub(crate) port_range: Option<(u16, u16)>,
    pub(crate) allowed_peers: Arc<[IpAddr]>,
}

#[async_trait]
impl RelayAddressGenerator for RelayAllocator {
    fn validate(&self) -> Result<(), turn::Error> {
        // TurnConfig::validate already vetted every field this type is built from.
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(turn::Error::Other(
                "requested address family is not served by this relay".into(),
            ));
        }
        let socket = match (requested_port, self.port_range) {
            (0, Some((lo, hi))) => self.bind_in_range(lo, hi).await?,
            (port, _) => UdpSocket::bind((self.bind_ip, port)).await?,
        };
        let relay_addr = SocketAddr::new(self.public_ip, socket.local_addr()?.port());
        let conn = PeerFilteredConn {
            socket,
            allowed: Arc::clone(&self.allowed_peers),
        };
        Ok((Arc::new(conn), relay_addr))
    }
}

impl RelayAllocator {
    // Starts at a random offset so consecutive allocations don't have guessable ports,
    // then walks the whole range so a nearly full range still finds the free slot.
    async fn bind_in_range(&self, lo: u16, hi: u16) -> Result<UdpSocket, turn::Error> {
        let span = u32::from(hi - lo) + 1;
        let start = (RandomState::new().hash_one(0u8) % u64::from(span)) as u32;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if let Ok(socket) = UdpSocket::bind((self.bind_ip, port)).await {
                return Ok(socket);
            }
        }
        Err(turn::Error::ErrMaxRetriesExceeded)
    }
}

fn is_allowed(allowed: &[IpAddr], ip: IpAddr) -> bool {
    allowed.contains(&ip.to_canonical())
}

fn unsupported(what: &str) -> webrtc_util::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} is not used on relay sockets"),
    )
    .into()
}

/// A relay socket that only talks to Conclave's own addresses.
struct PeerFilteredConn {
    socket: UdpSocket,
    allowed: Arc<[IpAddr]>,
}

#[async_trait]
impl Conn for PeerFilteredConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported("connect"))
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(unsupported("recv"))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if is_allowed(&self.allowed, from.ip()) {
                return Ok((n, from));
            }
            // Dropped rather than returned as an error: the engine tears the whole
            // allocation down on any receive error, which a stranger could then trigger.
            tracing::trace!(%from, "dropped datagram from non-Conclave peer");
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported("send"))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !is_allowed(&self.allowed, target.ip()) {
            tracing::debug!(%target, "refused to relay to non-Conclave peer");
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("relaying to {target} is not permitted"),
            )
            .into());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        // The socket closes when the engine drops its last handle.
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}

/// The TURN listener socket, which reports through `released` once the engine has let go of it.
///
/// The engine shares this socket with every allocation task, so "the port is free again"
/// is only knowable from the moment the last of them drops it.
pub(crate) struct ListenerConn {
    pub(crate) socket: UdpSocket,
    pub(crate) _released: oneshot::Sender<()>,
}

#[async_trait]
impl Conn for ListenerConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok(self.socket.recv_from(buf).await?)
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}
