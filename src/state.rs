//! What request handlers share.

use crate::auth::TokenAuthority;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::RoomManager;
use crate::routing::RoomRouter;
use crate::transcription::Transcription;
use conclave_signaling::IceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The embedded TURN server as the join path needs it.
pub struct TurnService {
    pub(crate) server: conclave_turn::TurnServer,
    pub(crate) secret: String,
    pub(crate) ttl: Duration,
}

impl TurnService {
    /// ICE server entry with fresh credentials for `identity`.
    pub fn ice_server(&self, identity: &str, now: SystemTime) -> IceServer {
        let c = conclave_turn::credentials(&self.secret, identity, self.ttl, now);
        IceServer {
            urls: self.server.urls(),
            username: Some(c.username),
            credential: Some(c.password),
        }
    }

    /// The TURN listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// Everything request handlers share.
pub struct AppState {
    /// Resolved settings.
    pub config: Config,
    /// Where rooms are reached: every join, broadcast and lookup goes through it.
    pub router: Arc<dyn RoomRouter>,
    /// The cluster router itself, when this node is part of one (for its metrics).
    pub cluster: Option<Arc<crate::cluster::RedisRouter>>,
    /// This node's rooms, for node-local concerns only (metrics, shutdown, tests).
    pub rooms: Arc<RoomManager>,
    /// Live transcription, when a model is loaded.
    pub transcription: Option<Arc<Transcription>>,
    /// Issues and checks access tokens.
    pub tokens: TokenAuthority,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Embedded TURN, when enabled.
    pub turn: Option<TurnService>,
    /// The media plane, when participants run on it (`--media-plane worker`).
    pub plane: Option<Arc<crate::plane::participant::Plane>>,
    /// Meetings.
    pub meetings: Arc<crate::meetings::MeetingService>,
    /// AI agent participants.
    pub agents: Arc<crate::agents::AgentService>,
    /// Scheduled meetings.
    pub scheduler: Arc<crate::schedule::Scheduler>,
    /// Notifications and webhooks.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Meeting email, when SMTP is configured.
    pub mailer: Option<Arc<crate::notify::email::Mailer>>,
    /// Request rates and password backoff.
    pub abuse: crate::http::abuse::Abuse,
    /// Set once the server is shutting down.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// The ICE servers handed to a joining participant.
    pub fn ice_servers_for(&self, identity: &str) -> Vec<IceServer> {
        self.turn
            .iter()
            .map(|t| t.ice_server(identity, SystemTime::now()))
            .collect()
    }
}
