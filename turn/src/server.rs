//! The TURN server (RFC 8656, UDP): authentication, allocations with quotas, permissions,
//! channels and relaying.
//!
//! One task owns the listener and the allocation table; it answers every request and
//! forwards client-to-peer datagrams. Each allocation has one more task that forwards
//! peer-to-client datagrams. Nothing is kept for a client that has not authenticated:
//! nonces are stateless, so a flood of unauthenticated requests costs no memory.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun::attributes::{
    ATTR_EVEN_PORT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_RESERVATION_TOKEN, ATTR_USERNAME,
};
use stun::error_code::{
    CODE_ADDR_FAMILY_NOT_SUPPORTED, CODE_ALLOC_MISMATCH, CODE_ALLOC_QUOTA_REACHED,
    CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_STALE_NONCE,
    CODE_UNAUTHORIZED, CODE_UNSUPPORTED_TRANS_PROTO, CODE_WRONG_CREDENTIALS, ErrorCode,
    ErrorCodeAttribute,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
    METHOD_SEND, Message, MessageClass, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use turn::auth::generate_auth_key;
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqfamily::{
    REQUESTED_FAMILY_IPV4, REQUESTED_FAMILY_IPV6, RequestedAddressFamily,
};
use turn::proto::reqtrans::RequestedTransport;

use crate::allocation::{
    Allocation, RouteError, Routes, read_routes, relay_to_client, write_routes,
};
use crate::auth::{Clock, SystemClock};
use crate::config::PeerPolicy;
use crate::credentials::{check_username, password_for};
use crate::nonce::Nonces;
use crate::{TurnConfig, TurnError, TurnLimits, wire};

// Upper bound on how long close() waits for the server's tasks to let go of the sockets.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 8656 §7.2: the lifetime granted when the client asks for less (or nothing).
const DEFAULT_LIFETIME_SECS: u64 = 600;
/// Channel numbers RFC 8656 §12 lets clients bind.
const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;

pub(crate) fn now_secs<C: Clock + ?Sized>(clock: &C) -> u64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counters the server keeps, shared with its relay tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allocations: AtomicUsize,
    permissions: AtomicUsize,
    channels: AtomicUsize,
    requests: AtomicU64,
    challenges: AtomicU64,
    stale_nonces: AtomicU64,
    auth_failures: AtomicU64,
    quota_refusals: AtomicU64,
    forbidden_peers: AtomicU64,
    malformed: AtomicU64,
    pub(crate) dropped_from_client: AtomicU64,
    pub(crate) dropped_from_peer: AtomicU64,
    relayed_to_peer: AtomicU64,
    pub(crate) relayed_to_client: AtomicU64,
}

/// A snapshot of what the server holds and has refused, for `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations held now.
    pub allocations: usize,
    /// Permissions held by all allocations, as of the last once-a-second sweep.
    pub permissions: usize,
    /// Channel bindings held by all allocations, as of the last sweep.
    pub channels: usize,
    /// STUN requests received (all methods).
    pub requests: u64,
    /// 401 challenges sent to requests without credentials.
    pub challenges: u64,
    /// 438 Stale Nonce answers (expired or unknown nonce).
    pub stale_nonces: u64,
    /// 401 answers to wrong, expired or malformed credentials.
    pub auth_failures: u64,
    /// 486/508 answers: a quota or a table was full.
    pub quota_refusals: u64,
    /// Permissions, bindings or sends refused because the peer is not one of Conclave's ports (403 or dropped).
    pub forbidden_peers: u64,
    /// Datagrams that were neither STUN nor ChannelData, or did not parse.
    pub malformed: u64,
    /// Client datagrams dropped: no allocation, no permission or channel, or a send error.
    pub dropped_from_client: u64,
    /// Peer datagrams dropped: not permitted, not Conclave, or a send error.
    pub dropped_from_peer: u64,
    /// Datagrams relayed from clients to peers.
    pub relayed_to_peer: u64,
    /// Datagrams relayed from peers to clients.
    pub relayed_to_client: u64,
}

/// A running TURN server; dropping it stops the server in the background.
pub struct TurnServer {
    local_addr: SocketAddr,
    public_ip: IpAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
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
    /// Validates `config`, binds its UDP port and starts serving.
    pub async fn start(config: TurnConfig) -> Result<Self, TurnError> {
        Self::start_with_clock(config, SystemClock).await
    }

    /// Like [`TurnServer::start`], but credential expiry, nonce age and every lifetime are
    /// judged by `clock`.
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
        if config.peer_port_range.is_none() {
            tracing::warn!(
                "TURN relays may reach any port on Conclave's own address: set a UDP media port range to restrict them to the SFU"
            );
        }
        let counters = Arc::new(Counters::default());
        // Derived from the shared secret, which never leaves the server, so nonces cannot be forged.
        let mut mac = Hmac::<Sha1>::new_from_slice(config.shared_secret.as_bytes())
            .expect("HMAC takes any key size");
        mac.update(b"conclave-turn-nonce");
        let mut nonce_key = [0u8; 32];
        nonce_key[..20].copy_from_slice(&mac.finalize().into_bytes());
        let engine = Engine {
            listener: Arc::new(socket),
            policy: Arc::new(config.peer_policy()),
            nonces: Nonces::new(nonce_key, config.limits.nonce_ttl),
            bind_ip: local_addr.ip(),
            public_ip: config.public_ip,
            relay_port_range: config.relay_port_range,
            realm: config.realm,
            secret: config.shared_secret,
            limits: config.limits,
            clock: Arc::new(clock),
            counters: Arc::clone(&counters),
            allocations: HashMap::new(),
            per_username: HashMap::new(),
            per_address: HashMap::new(),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(engine.run(stopped));
        tracing::info!(%local_addr, public_ip = %config.public_ip, "TURN server listening");
        Ok(Self {
            local_addr,
            public_ip: config.public_ip,
            counters,
            stop,
            task: Mutex::new(Some(task)),
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

    /// What the server holds and has refused so far.
    pub fn stats(&self) -> TurnStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TurnStats {
            allocations: c.allocations.load(Ordering::Relaxed),
            permissions: c.permissions.load(Ordering::Relaxed),
            channels: c.channels.load(Ordering::Relaxed),
            requests: get(&c.requests),
            challenges: get(&c.challenges),
            stale_nonces: get(&c.stale_nonces),
            auth_failures: get(&c.auth_failures),
            quota_refusals: get(&c.quota_refusals),
            forbidden_peers: get(&c.forbidden_peers),
            malformed: get(&c.malformed),
            dropped_from_client: get(&c.dropped_from_client),
            dropped_from_peer: get(&c.dropped_from_peer),
            relayed_to_peer: get(&c.relayed_to_peer),
            relayed_to_client: get(&c.relayed_to_client),
        }
    }

    /// Stops the server, drops every allocation and waits until its UDP ports are free again.
    pub async fn close(&self) -> Result<(), TurnError> {
        let _ = self.stop.send(true);
        // Taken out first so the std mutex is never held across an await; a second call
        // finds nothing to wait for and returns at once.
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(RELEASE_TIMEOUT, task).await.is_err()
        {
            tracing::warn!(local_addr = %self.local_addr, "TURN server did not stop in time");
        }
        tracing::info!(local_addr = %self.local_addr, "TURN server closed");
        Ok(())
    }
}

struct Authenticated {
    username: String,
    key: Vec<u8>,
    credential_expires: u64,
}

struct Engine<C: Clock> {
    listener: Arc<UdpSocket>,
    policy: Arc<PeerPolicy>,
    nonces: Nonces,
    bind_ip: IpAddr,
    public_ip: IpAddr,
    relay_port_range: Option<(u16, u16)>,
    realm: String,
    secret: String,
    limits: TurnLimits,
    clock: Arc<C>,
    counters: Arc<Counters>,
    allocations: HashMap<SocketAddr, Allocation>,
    per_username: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
}

impl<C: Clock> Engine<C> {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 65_536];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.listener.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.handle(&buf[..n], from).await,
                    Err(err) => {
                        tracing::debug!(%err, "TURN listener receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sweep.tick() => self.sweep(),
                _ = stop.changed() => break,
            }
        }
        // Abort every relay task and wait for it, so no task still holds the listener (or
        // a relay socket) once this returns and the ports are free for a new server.
        let tasks: Vec<_> = self
            .allocations
            .drain()
            .filter_map(|(_, mut a)| a.task.take())
            .inspect(|task| task.abort())
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        self.counters.allocations.store(0, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        now_secs(self.clock.as_ref())
    }

    async fn handle(&mut self, buf: &[u8], from: SocketAddr) {
        if wire::is_channel_data(buf) {
            self.channel_data(buf, from).await;
            return;
        }
        let mut m = Message::new();
        m.raw = buf.to_vec();
        if m.decode().is_err() {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (method, class) = (m.typ.method, m.typ.class);
        if class == CLASS_INDICATION {
            if method == METHOD_SEND {
                self.send_indication(&m, from).await;
            } else {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if class != CLASS_REQUEST {
            // Responses are never addressed to a server.
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if method == METHOD_BINDING {
            let attrs: Vec<Box<dyn Setter>> = vec![Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            })];
            self.reply(from, &m, CLASS_SUCCESS_RESPONSE, attrs, None)
                .await;
            return;
        }
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
        {
            self.error(from, &m, CODE_BAD_REQUEST, "unsupported method", None)
                .await;
            return;
        }
        let Some(auth) = self.authenticate(&mut m, from).await else {
            return;
        };
        match method {
            METHOD_ALLOCATE => self.allocate(&m, from, auth).await,
            METHOD_REFRESH => self.refresh(&m, from, auth).await,
            METHOD_CREATE_PERMISSION => self.create_permission(&m, from, auth).await,
            _ => self.channel_bind(&m, from, auth).await,
        }
    }

    /// RFC 8489 §9.2 long-term credentials, with stateless nonces.
    async fn authenticate(&mut self, m: &mut Message, from: SocketAddr) -> Option<Authenticated> {
        let now = self.now();
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            self.counters.challenges.fetch_add(1, Ordering::Relaxed);
            self.challenge(from, m, CODE_UNAUTHORIZED, "credentials required", now)
                .await;
            return None;
        }
        let (Ok(username), Ok(_realm), Ok(nonce)) = (
            TextAttribute::get_from_as(m, ATTR_USERNAME),
            TextAttribute::get_from_as(m, ATTR_REALM),
            TextAttribute::get_from_as(m, ATTR_NONCE),
        ) else {
            self.error(
                from,
                m,
                CODE_BAD_REQUEST,
                "USERNAME, REALM and NONCE are required",
                None,
            )
            .await;
            return None;
        };
        if self.nonces.check(&nonce.text, from.ip(), now).is_err() {
            self.counters.stale_nonces.fetch_add(1, Ordering::Relaxed);
            self.challenge(from, m, CODE_STALE_NONCE, "stale nonce", now)
                .await;
            return None;
        }
        let username = username.text;
        let credential_expires = match check_username(&username, self.clock.now()) {
            Ok(expires) => expires,
            Err(err) => {
                tracing::debug!(%from, %err, "TURN credentials refused");
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                self.challenge(from, m, CODE_UNAUTHORIZED, "credentials refused", now)
                    .await;
                return None;
            }
        };
        // Our own realm, not the one the client sent: a client signing with another realm
        // is talking to a different deployment and must fail integrity.
        let key = generate_auth_key(
            &username,
            &self.realm,
            &password_for(&self.secret, &username),
        );
        if MessageIntegrity(key.clone()).check(m).is_err() {
            tracing::debug!(%from, "TURN message integrity check failed");
            self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            self.challenge(from, m, CODE_UNAUTHORIZED, "credentials refused", now)
                .await;
            return None;
        }
        Some(Authenticated {
            username,
            key,
            credential_expires,
        })
    }

    /// The lifetime to grant for a request: RFC 8656 §7.2's default and maximum, and never
    /// past the credential's own expiry.
    fn lifetime(&self, m: &Message, credential_expires: u64, now: u64) -> u64 {
        let mut requested = Lifetime::default();
        let asked = if requested.get_from(m).is_ok() {
            requested.0.as_secs()
        } else {
            DEFAULT_LIFETIME_SECS
        };
        let granted = asked
            .max(DEFAULT_LIFETIME_SECS)
            .min(self.limits.max_lifetime.as_secs());
        granted.min(credential_expires.saturating_sub(now)).max(1)
    }

    async fn allocate(&mut self, m: &Message, from: SocketAddr, auth: Authenticated) {
        let key = Some(auth.key.as_slice());
        if let Some(existing) = self.allocations.get(&from) {
            if existing.allocate_txid == m.transaction_id {
                // A retransmission: the first answer was lost on the way back.
                let raw = existing.allocate_response.clone();
                self.send(&raw, from).await;
            } else {
                self.error(from, m, CODE_ALLOC_MISMATCH, "allocation exists", key)
                    .await;
            }
            return;
        }
        let mut transport = RequestedTransport::default();
        if transport.get_from(m).is_err() {
            self.error(
                from,
                m,
                CODE_BAD_REQUEST,
                "REQUESTED-TRANSPORT missing",
                key,
            )
            .await;
            return;
        }
        if transport.protocol != PROTO_UDP {
            self.error(from, m, CODE_UNSUPPORTED_TRANS_PROTO, "UDP only", key)
                .await;
            return;
        }
        if m.contains(ATTR_EVEN_PORT) || m.contains(ATTR_RESERVATION_TOKEN) {
            self.error(
                from,
                m,
                CODE_INSUFFICIENT_CAPACITY,
                "port reservations are not offered",
                key,
            )
            .await;
            return;
        }
        if m.contains(ATTR_REQUESTED_ADDRESS_FAMILY) {
            let mut family = RequestedAddressFamily::default();
            let ours = if self.bind_ip.is_ipv4() {
                REQUESTED_FAMILY_IPV4
            } else {
                REQUESTED_FAMILY_IPV6
            };
            if family.get_from(m).is_err() || family != ours {
                self.error(
                    from,
                    m,
                    CODE_ADDR_FAMILY_NOT_SUPPORTED,
                    "address family not served",
                    key,
                )
                .await;
                return;
            }
        }
        let client_ip = from.ip().to_canonical();
        let quota = if self.allocations.len() >= self.limits.max_allocations {
            Some((
                CODE_INSUFFICIENT_CAPACITY,
                "server allocation limit reached",
            ))
        } else if self.per_username.get(&auth.username).copied().unwrap_or(0)
            >= self.limits.allocations_per_username
        {
            Some((
                CODE_ALLOC_QUOTA_REACHED,
                "allocation quota of this credential reached",
            ))
        } else if self.per_address.get(&client_ip).copied().unwrap_or(0)
            >= self.limits.allocations_per_address
        {
            Some((
                CODE_ALLOC_QUOTA_REACHED,
                "allocation quota of this address reached",
            ))
        } else {
            None
        };
        if let Some((code, reason)) = quota {
            self.counters.quota_refusals.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%from, username = %auth.username, reason, "TURN allocation refused");
            self.error(from, m, code, reason, key).await;
            return;
        }
        let (relay, relay_port) = match self.bind_relay().await {
            Ok(bound) => bound,
            Err(err) => {
                tracing::warn!(%err, "cannot bind a TURN relay socket");
                self.counters.quota_refusals.fetch_add(1, Ordering::Relaxed);
                self.error(
                    from,
                    m,
                    CODE_INSUFFICIENT_CAPACITY,
                    "no relay port free",
                    key,
                )
                .await;
                return;
            }
        };
        let now = self.now();
        let lifetime = self.lifetime(m, auth.credential_expires, now);
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(RelayedAddress {
                ip: self.public_ip,
                port: relay_port,
            }),
            Box::new(Lifetime(Duration::from_secs(lifetime))),
            Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }),
        ];
        let Some(raw) = self.build(m, CLASS_SUCCESS_RESPONSE, attrs, key) else {
            return;
        };
        let routes = Arc::new(RwLock::new(Routes::default()));
        let task = tokio::spawn(relay_to_client(
            Arc::clone(&relay),
            Arc::clone(&self.listener),
            from,
            Arc::clone(&routes),
            Arc::clone(&self.policy),
            Arc::clone(&self.clock),
            Arc::clone(&self.counters),
        ));
        *self.per_username.entry(auth.username.clone()).or_default() += 1;
        *self.per_address.entry(client_ip).or_default() += 1;
        tracing::debug!(%from, username = %auth.username, relay_port, lifetime, "TURN allocation created");
        self.allocations.insert(
            from,
            Allocation {
                username: auth.username,
                relay,
                routes,
                expires: now + lifetime,
                allocate_txid: m.transaction_id,
                allocate_response: raw.clone(),
                task: Some(task),
            },
        );
        self.counters
            .allocations
            .store(self.allocations.len(), Ordering::Relaxed);
        self.send(&raw, from).await;
    }

    // Starts at a random offset so consecutive allocations don't have guessable ports,
    // then walks the whole range so a nearly full range still finds the free slot.
    async fn bind_relay(&self) -> std::io::Result<(Arc<UdpSocket>, u16)> {
        let socket = match self.relay_port_range {
            None => UdpSocket::bind((self.bind_ip, 0)).await?,
            Some((lo, hi)) => {
                let span = u32::from(hi - lo) + 1;
                let start = (RandomState::new().hash_one(0u8) % u64::from(span)) as u32;
                let mut bound = None;
                for i in 0..span {
                    let port = lo + ((start + i) % span) as u16;
                    if let Ok(socket) = UdpSocket::bind((self.bind_ip, port)).await {
                        bound = Some(socket);
                        break;
                    }
                }
                bound.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("every relay port in {lo}-{hi} is taken"),
                    )
                })?
            }
        };
        let port = socket.local_addr()?.port();
        Ok((Arc::new(socket), port))
    }

    /// Looks up the client's allocation and checks it belongs to the authenticated user.
    async fn owned_allocation(&self, m: &Message, from: SocketAddr, auth: &Authenticated) -> bool {
        let key = Some(auth.key.as_slice());
        match self.allocations.get(&from) {
            None => {
                self.error(from, m, CODE_ALLOC_MISMATCH, "no allocation", key)
                    .await;
                false
            }
            Some(a) if a.username != auth.username => {
                self.error(
                    from,
                    m,
                    CODE_WRONG_CREDENTIALS,
                    "allocation belongs to another credential",
                    key,
                )
                .await;
                false
            }
            Some(_) => true,
        }
    }

    async fn refresh(&mut self, m: &Message, from: SocketAddr, auth: Authenticated) {
        if !self.owned_allocation(m, from, &auth).await {
            return;
        }
        let mut asked = Lifetime::default();
        let now = self.now();
        let lifetime =
            if m.contains(ATTR_LIFETIME) && asked.get_from(m).is_ok() && asked.0.is_zero() {
                self.remove(from);
                0
            } else {
                let lifetime = self.lifetime(m, auth.credential_expires, now);
                if let Some(a) = self.allocations.get_mut(&from) {
                    a.expires = now + lifetime;
                }
                lifetime
            };
        let attrs: Vec<Box<dyn Setter>> = vec![Box::new(Lifetime(Duration::from_secs(lifetime)))];
        self.reply(from, m, CLASS_SUCCESS_RESPONSE, attrs, Some(&auth.key))
            .await;
    }

    async fn create_permission(&mut self, m: &Message, from: SocketAddr, auth: Authenticated) {
        if !self.owned_allocation(m, from, &auth).await {
            return;
        }
        let key = Some(auth.key.as_slice());
        let peers = match wire::peer_addresses(m) {
            Some(peers) if !peers.is_empty() => peers,
            _ => {
                self.error(
                    from,
                    m,
                    CODE_BAD_REQUEST,
                    "XOR-PEER-ADDRESS missing or malformed",
                    key,
                )
                .await;
                return;
            }
        };
        if let Some(bad) = peers.iter().find(|p| !self.policy.allows_ip(p.ip())) {
            self.counters
                .forbidden_peers
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, peer = %bad, "TURN permission refused: not Conclave");
            self.error(from, m, CODE_FORBIDDEN, "peer is not this server", key)
                .await;
            return;
        }
        let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
        let now = self.now();
        let result = {
            let a = &self.allocations[&from];
            write_routes(&a.routes).permit(&ips, now, self.limits.permissions_per_allocation)
        };
        match result {
            Ok(()) => {
                self.reply(from, m, CLASS_SUCCESS_RESPONSE, Vec::new(), key)
                    .await
            }
            Err(_) => {
                self.counters.quota_refusals.fetch_add(1, Ordering::Relaxed);
                self.error(
                    from,
                    m,
                    CODE_INSUFFICIENT_CAPACITY,
                    "permission limit reached",
                    key,
                )
                .await
            }
        }
    }

    async fn channel_bind(&mut self, m: &Message, from: SocketAddr, auth: Authenticated) {
        if !self.owned_allocation(m, from, &auth).await {
            return;
        }
        let key = Some(auth.key.as_slice());
        let mut number = ChannelNumber::default();
        let peers = wire::peer_addresses(m).unwrap_or_default();
        if number.get_from(m).is_err() || !CHANNELS.contains(&number.0) || peers.len() != 1 {
            self.error(
                from,
                m,
                CODE_BAD_REQUEST,
                "CHANNEL-NUMBER 0x4000-0x4FFF and one XOR-PEER-ADDRESS required",
                key,
            )
            .await;
            return;
        }
        let peer = peers[0];
        if !self.policy.allows(peer) {
            self.counters
                .forbidden_peers
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, %peer, "TURN channel refused: not a Conclave media port");
            self.error(
                from,
                m,
                CODE_FORBIDDEN,
                "peer is not this server's media port",
                key,
            )
            .await;
            return;
        }
        let now = self.now();
        let result = {
            let a = &self.allocations[&from];
            write_routes(&a.routes).bind(
                number.0,
                peer,
                now,
                self.limits.channels_per_allocation,
                self.limits.permissions_per_allocation,
            )
        };
        match result {
            Ok(()) => {
                self.reply(from, m, CLASS_SUCCESS_RESPONSE, Vec::new(), key)
                    .await
            }
            Err(RouteError::Conflict) => {
                self.error(
                    from,
                    m,
                    CODE_BAD_REQUEST,
                    "channel or peer already bound differently",
                    key,
                )
                .await
            }
            Err(RouteError::Full) => {
                self.counters.quota_refusals.fetch_add(1, Ordering::Relaxed);
                self.error(
                    from,
                    m,
                    CODE_INSUFFICIENT_CAPACITY,
                    "channel limit reached",
                    key,
                )
                .await
            }
        }
    }

    async fn send_indication(&self, m: &Message, from: SocketAddr) {
        let Some(a) = self.allocations.get(&from) else {
            self.counters
                .dropped_from_client
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut data = Data::default();
        let peer = match wire::peer_addresses(m) {
            Some(p) if p.len() == 1 && data.get_from(m).is_ok() => p[0],
            _ => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if !self.policy.allows(peer) {
            self.counters
                .forbidden_peers
                .fetch_add(1, Ordering::Relaxed);
            self.counters
                .dropped_from_client
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !read_routes(&a.routes).permitted(peer.ip(), self.now()) {
            self.counters
                .dropped_from_client
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.to_peer(&a.relay, &data.0, peer).await;
    }

    async fn channel_data(&self, buf: &[u8], from: SocketAddr) {
        let Some(a) = self.allocations.get(&from) else {
            self.counters
                .dropped_from_client
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some((number, payload)) = wire::parse_channel_data(buf) else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let peer = read_routes(&a.routes).peer_for_channel(number, self.now());
        match peer {
            Some(peer) if self.policy.allows(peer) => self.to_peer(&a.relay, payload, peer).await,
            _ => {
                self.counters
                    .dropped_from_client
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn to_peer(&self, relay: &UdpSocket, payload: &[u8], peer: SocketAddr) {
        match relay.send_to(payload, peer).await {
            Ok(_) => self
                .counters
                .relayed_to_peer
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .counters
                .dropped_from_client
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    fn remove(&mut self, client: SocketAddr) {
        let Some(a) = self.allocations.remove(&client) else {
            return;
        };
        decrement(&mut self.per_username, &a.username);
        decrement(&mut self.per_address, &client.ip().to_canonical());
        self.counters
            .allocations
            .store(self.allocations.len(), Ordering::Relaxed);
        tracing::debug!(%client, username = %a.username, "TURN allocation removed");
    }

    fn sweep(&mut self) {
        let now = self.now();
        let expired: Vec<SocketAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for client in expired {
            self.remove(client);
        }
        let (mut permissions, mut channels) = (0, 0);
        for a in self.allocations.values() {
            let mut routes = write_routes(&a.routes);
            routes.sweep(now);
            let (p, c) = routes.sizes();
            permissions += p;
            channels += c;
        }
        self.counters
            .permissions
            .store(permissions, Ordering::Relaxed);
        self.counters.channels.store(channels, Ordering::Relaxed);
    }

    fn build(
        &self,
        m: &Message,
        class: MessageClass,
        attrs: Vec<Box<dyn Setter>>,
        key: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(Message {
                transaction_id: m.transaction_id,
                ..Default::default()
            }),
            Box::new(MessageType::new(m.typ.method, class)),
        ];
        setters.extend(attrs);
        if let Some(key) = key {
            setters.push(Box::new(MessageIntegrity(key.to_vec())));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut out = Message::new();
        match out.build(&setters) {
            Ok(()) => Some(out.raw),
            Err(err) => {
                tracing::warn!(%err, "cannot encode a TURN response");
                None
            }
        }
    }

    // The builders run before the returned future exists: `stun`'s setters are not `Send`,
    // so they must never live across an await of the server task.
    fn reply(
        &self,
        to: SocketAddr,
        m: &Message,
        class: MessageClass,
        attrs: Vec<Box<dyn Setter>>,
        key: Option<&[u8]>,
    ) -> impl Future<Output = ()> + Send + '_ {
        let raw = self.build(m, class, attrs, key);
        async move {
            if let Some(raw) = raw {
                self.send(&raw, to).await;
            }
        }
    }

    fn error(
        &self,
        to: SocketAddr,
        m: &Message,
        code: ErrorCode,
        reason: &str,
        key: Option<&[u8]>,
    ) -> impl Future<Output = ()> + Send + '_ {
        let attrs: Vec<Box<dyn Setter>> = vec![Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        })];
        self.reply(to, m, CLASS_ERROR_RESPONSE, attrs, key)
    }

    /// 401 or 438 with our realm and a fresh nonce bound to the client's address.
    fn challenge(
        &self,
        to: SocketAddr,
        m: &Message,
        code: ErrorCode,
        reason: &str,
        now: u64,
    ) -> impl Future<Output = ()> + Send + '_ {
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(ErrorCodeAttribute {
                code,
                reason: reason.as_bytes().to_vec(),
            }),
            Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())),
            Box::new(TextAttribute::new(
                ATTR_NONCE,
                self.nonces.issue(to.ip(), now),
            )),
        ];
        self.reply(to, m, CLASS_ERROR_RESPONSE, attrs, None)
    }

    async fn send(&self, raw: &[u8], to: SocketAddr) {
        if let Err(err) = self.listener.send_to(raw, to).await {
            tracing::debug!(%to, %err, "TURN response not sent");
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}
