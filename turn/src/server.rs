//! Lifecycle of the embedded TURN server.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};

use crate::auth::{Clock, RestAuthHandler, SystemClock};
use crate::relay::{ListenerConn, RelayAllocator};
use crate::{TurnConfig, TurnError};

// Upper bound on how long close() waits for the engine's tasks to let go of the listener.
// They only have to notice a closed channel, so reaching this means something is stuck,
// and blocking shutdown forever on it would be worse than returning.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running TURN server; dropping it stops the server in the background.
pub struct TurnServer {
    inner: Server,
    local_addr: SocketAddr,
    public_ip: IpAddr,
    released: Mutex<Option<oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("local_addr", &self.local_addr)
            .field("public_ip", &self.public_ip)
            .finish_non_exhaustive()
    }
}

impl TurnServer {
    /// Validates `config`, binds its UDP port and starts serving Allocate requests.
    pub async fn start(config: TurnConfig) -> Result<Self, TurnError> {
        Self::start_with_clock(config, SystemClock).await
    }

    /// Like [`TurnServer::start`], but credential expiry is judged by `clock`.
    pub async fn start_with_clock(
        config: TurnConfig,
        clock: impl Clock,
    ) -> Result<Self, TurnError> {
        config.validate()?;

        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| TurnError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| TurnError::Bind {
            addr: config.bind,
            source,
        })?;
        let (released_tx, released_rx) = oneshot::channel();
        let listener = ListenerConn {
            socket,
            _released: released_tx,
        };

        let relay = RelayAllocator {
            bind_ip: local_addr.ip(),
            public_ip: config.public_ip,
            port_range: config.relay_port_range,
            allowed_peers: config.allowed_peers().into(),
        };
        let auth = RestAuthHandler::new(config.shared_secret, config.realm.clone(), clock);

        let inner = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(listener),
                relay_addr_generator: Box::new(relay),
            }],
            realm: config.realm,
            auth_handler: Arc::new(auth),
            // Zero selects the engine's default (10 minutes), matching RFC 5766.
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        })
        .await?;

        tracing::info!(%local_addr, public_ip = %config.public_ip, "TURN server listening");
        Ok(Self {
            inner,
            local_addr,
            public_ip: config.public_ip,
            released: Mutex::new(Some(released_rx)),
        })
    }

    /// The UDP address actually bound, useful when the config asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// ICE server URLs to hand to browsers alongside freshly minted credentials.
    pub fn urls(&self) -> Vec<String> {
        // SocketAddr's Display brackets IPv6 literals, as RFC 7065 URLs require.
        let host_port = SocketAddr::new(self.public_ip, self.local_addr.port());
        vec![format!("turn:{host_port}?transport=udp")]
    }

    /// Stops the server, drops every allocation and waits until the UDP port is free again.
    pub async fn close(&self) -> Result<(), TurnError> {
        // Taken out first so the std mutex is never held across an await; a second call
        // finds nothing to wait for and returns at once.
        let released = self
            .released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.inner.close().await?;
        if let Some(released) = released {
            // Err(RecvError) is the expected outcome: the sender is dropped, never used.
            if tokio::time::timeout(RELEASE_TIMEOUT, released)
                .await
                .is_err()
            {
                tracing::warn!(local_addr = %self.local_addr, "TURN listener still held after close");
            }
        }
        tracing::info!(local_addr = %self.local_addr, "TURN server closed");
        Ok(())
    }
}
