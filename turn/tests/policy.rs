//! What the relay refuses: peers outside Conclave's media ports, allocations beyond the
//! quotas, lifetimes beyond the cap, stale nonces. Driven by hand-built STUN messages so
//! every response code is visible.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use conclave_turn::{TurnConfig, TurnLimits, TurnServer, credentials};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
    Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;

const SECRET: &str = "policy-secret";
const REALM: &str = "conclave.test";
const WAIT: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(400);

fn config() -> TurnConfig {
    TurnConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        realm: REALM.into(),
        shared_secret: SECRET.into(),
        relay_port_range: None,
        peer_port_range: None,
        limits: TurnLimits::default(),
    }
}

/// A clock the test can move forward.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
    fn closure(&self) -> impl Fn() -> SystemTime + Send + Sync + 'static {
        let offset = Arc::clone(&self.0);
        move || SystemTime::now() + Duration::from_secs(offset.load(Ordering::SeqCst))
    }
}

/// A TURN client speaking raw STUN: it learns the nonce from the first 401 and signs after.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    nonce: Option<TextAttribute>,
}

impl Raw {
    async fn new(server: &TurnServer, username: &str, password: &str) -> Self {
        Self::new_from("127.0.0.1:0", server, username, password).await
    }

    async fn new_from(bind: &str, server: &TurnServer, username: &str, password: &str) -> Self {
        Self {
            sock: UdpSocket::bind(bind).await.unwrap(),
            server: server.local_addr(),
            username: username.into(),
            password: password.into(),
            nonce: None,
        }
    }

    async fn exchange(&self, setters: &[Box<dyn Setter>]) -> Message {
        let mut req = Message::new();
        req.build(setters).unwrap();
        self.sock.send_to(&req.raw, self.server).await.unwrap();
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, _) = timeout(WAIT, self.sock.recv_from(&mut buf))
                .await
                .expect("no STUN reply")
                .unwrap();
            let mut res = Message::new();
            res.raw = buf[..n].to_vec();
            if res.decode().is_ok() && res.transaction_id == req.transaction_id {
                return res;
            }
        }
    }

    /// Sends `method` with `attrs`, authenticating (and re-authenticating on 401/438) as needed.
    async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn() -> Vec<Box<dyn Setter>>,
    ) -> Message {
        for _ in 0..3 {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(method, CLASS_REQUEST)),
            ];
            setters.extend(attrs());
            if let Some(nonce) = &self.nonce {
                setters.push(Box::new(TextAttribute::new(
                    ATTR_USERNAME,
                    self.username.clone(),
                )));
                setters.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
                setters.push(Box::new(nonce.clone()));
                setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                    self.username.clone(),
                    REALM.into(),
                    self.password.clone(),
                )));
            }
            setters.push(Box::new(FINGERPRINT));
            let res = self.exchange(&setters).await;
            let code = (res.typ.class == CLASS_ERROR_RESPONSE).then(|| error_code(&res));
            let retry = match code {
                Some(401) => self.nonce.is_none(),
                Some(438) => true,
                _ => false,
            };
            if !retry {
                return res;
            }
            self.nonce = Some(
                TextAttribute::get_from_as(&res, ATTR_NONCE).expect("challenge without NONCE"),
            );
        }
        panic!("server kept challenging");
    }

    async fn allocate(&mut self) -> Message {
        self.request(METHOD_ALLOCATE, || {
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })]
        })
        .await
    }

    async fn allocate_ok(&mut self) -> SocketAddr {
        let res = self.allocate().await;
        assert_eq!(
            res.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "allocate failed: {}",
            describe(&res)
        );
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&res).unwrap();
        SocketAddr::new(relayed.ip, relayed.port)
    }

    async fn release(&mut self) -> Message {
        self.request(METHOD_REFRESH, || vec![Box::new(Lifetime(Duration::ZERO))])
            .await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
            Box::new(Data(data.to_vec())),
        ];
        let mut m = Message::new();
        m.build(&setters).unwrap();
        self.sock.send_to(&m.raw, self.server).await.unwrap();
    }
}

fn peer_attr(peer: SocketAddr) -> Box<dyn Setter> {
    Box::new(PeerAddress {
        ip: peer.ip(),
        port: peer.port(),
    })
}

fn error_code(m: &Message) -> u16 {
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).expect("error response without ERROR-CODE");
    code.code.0
}

fn describe(m: &Message) -> String {
    if m.typ.class == CLASS_ERROR_RESPONSE {
        let mut code = ErrorCodeAttribute::default();
        let _ = code.get_from(m);
        format!("{} {}", code.code.0, String::from_utf8_lossy(&code.reason))
    } else {
        format!("{:?}", m.typ)
    }
}

fn creds(identity: &str) -> conclave_turn::TurnCredentials {
    credentials(
        SECRET,
        identity,
        Duration::from_secs(3600 * 4),
        SystemTime::now(),
    )
}

async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1500];
    match timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn relay_reaches_only_the_media_port_range() {
    // The "SFU" owns the one media port; the "database" is another service on the same IP.
    let sfu = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sfu_addr = sfu.local_addr().unwrap();
    let database = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let db_addr = database.local_addr().unwrap();
    let mut cfg = config();
    cfg.peer_port_range = Some((sfu_addr.port(), sfu_addr.port()));
    let server = TurnServer::start(cfg).await.unwrap();
    let c = creds("alice");
    let mut client = Raw::new(&server, &c.username, &c.password).await;
    let relayed = client.allocate_ok().await;

    // A permission names an IP, which the SFU shares with the database: allowed.
    let res = client
        .request(METHOD_CREATE_PERMISSION, || vec![peer_attr(sfu_addr)])
        .await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    // A permission for another host: 403.
    let res = client
        .request(METHOD_CREATE_PERMISSION, || {
            vec![peer_attr("127.0.0.2:9".parse().unwrap())]
        })
        .await;
    assert_eq!(error_code(&res), 403);

    // Send indications reach the SFU port, never the database port.
    client.send_indication(sfu_addr, b"to-sfu").await;
    assert_eq!(
        recv_within(&sfu, WAIT).await.as_deref(),
        Some(&b"to-sfu"[..])
    );
    client.send_indication(db_addr, b"to-db").await;
    assert_eq!(
        recv_within(&database, SILENCE).await,
        None,
        "relay reached a non-media port"
    );

    // Channels bind only to a media port.
    let res = client
        .request(METHOD_CHANNEL_BIND, || {
            vec![Box::new(ChannelNumber(0x4000)), peer_attr(db_addr)]
        })
        .await;
    assert_eq!(error_code(&res), 403);
    let res = client
        .request(METHOD_CHANNEL_BIND, || {
            vec![Box::new(ChannelNumber(0x4000)), peer_attr(sfu_addr)]
        })
        .await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    // Channel numbers outside RFC 8656's range are a bad request.
    let res = client
        .request(METHOD_CHANNEL_BIND, || {
            vec![Box::new(ChannelNumber(0x3FFF)), peer_attr(sfu_addr)]
        })
        .await;
    assert_eq!(error_code(&res), 400);

    // ChannelData from the client reaches the SFU.
    let mut frame = vec![0x40, 0x00, 0x00, 0x04];
    frame.extend_from_slice(b"chan");
    client
        .sock
        .send_to(&frame, server.local_addr())
        .await
        .unwrap();
    assert_eq!(recv_within(&sfu, WAIT).await.as_deref(), Some(&b"chan"[..]));

    // The SFU's answer comes back over the channel; the database's is dropped.
    sfu.send_to(b"from-sfu", relayed).await.unwrap();
    let got = recv_within(&client.sock, WAIT)
        .await
        .expect("nothing relayed back");
    assert_eq!(&got[..4], &[0x40, 0x00, 0x00, 0x08]);
    assert_eq!(&got[4..], b"from-sfu");
    database.send_to(b"from-db", relayed).await.unwrap();
    assert_eq!(recv_within(&client.sock, SILENCE).await, None);

    let stats = server.stats();
    assert_eq!(stats.forbidden_peers, 3, "{stats:?}");
    assert!(
        stats.dropped_from_peer >= 1 && stats.relayed_to_peer == 2,
        "{stats:?}"
    );
    server.close().await.unwrap();
}

#[tokio::test]
async fn allocations_are_limited_per_credential_and_per_address() {
    let mut cfg = config();
    cfg.limits.allocations_per_username = 3;
    cfg.limits.allocations_per_address = 5;
    let server = TurnServer::start(cfg).await.unwrap();
    let alice = creds("alice");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::new(&server, &alice.username, &alice.password).await;
        c.allocate_ok().await;
        clients.push(c);
    }
    let mut fourth = Raw::new(&server, &alice.username, &alice.password).await;
    let res = fourth.allocate().await;
    assert_eq!(error_code(&res), 486, "{}", describe(&res));

    // Releasing one frees its slot for the same credential.
    let res = clients[0].release().await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    fourth.allocate_ok().await;

    // Another credential from the same address fills the per-address quota of 5.
    let bob = creds("bob");
    for _ in 0..2 {
        let mut c = Raw::new(&server, &bob.username, &bob.password).await;
        c.allocate_ok().await;
        clients.push(c);
    }
    let mut sixth = Raw::new(&server, &bob.username, &bob.password).await;
    let res = sixth.allocate().await;
    assert_eq!(error_code(&res), 486, "{}", describe(&res));
    assert_eq!(server.stats().allocations, 5);
    assert_eq!(server.stats().quota_refusals, 2);

    // A refresh or permission under another credential is refused: 441.
    let mut thief = Raw::new(&server, &bob.username, &bob.password).await;
    thief.sock = std::mem::replace(
        &mut fourth.sock,
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    let res = thief
        .request(METHOD_REFRESH, || vec![Box::new(Lifetime(Duration::ZERO))])
        .await;
    assert_eq!(error_code(&res), 441, "{}", describe(&res));
    server.close().await.unwrap();
}

#[tokio::test]
async fn lifetimes_are_capped_and_allocations_expire() {
    let clock = TestClock::default();
    let server = TurnServer::start_with_clock(config(), clock.closure())
        .await
        .unwrap();
    let c = creds("alice");
    let mut client = Raw::new(&server, &c.username, &c.password).await;
    let res = client
        .request(METHOD_ALLOCATE, || {
            vec![
                Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                }),
                Box::new(Lifetime(Duration::from_secs(7 * 24 * 3600))),
            ]
        })
        .await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    let mut granted = Lifetime::default();
    granted.get_from(&res).unwrap();
    assert_eq!(
        granted.0,
        Duration::from_secs(3600),
        "a week must be capped to an hour"
    );

    // A credential that expires in two minutes gets at most two minutes.
    let short = credentials(SECRET, "bob", Duration::from_secs(120), clock.closure()());
    let mut brief = Raw::new(&server, &short.username, &short.password).await;
    let res = brief.allocate().await;
    let mut granted = Lifetime::default();
    granted.get_from(&res).unwrap();
    assert!(granted.0 <= Duration::from_secs(120), "{:?}", granted.0);
    assert_eq!(server.stats().allocations, 2);

    // Past both lifetimes, the once-a-second sweep removes them without any client action.
    clock.advance(Duration::from_secs(3601));
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.stats().allocations > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "allocations never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.close().await.unwrap();
}

#[tokio::test]
async fn nonces_expire_with_438_and_a_fresh_nonce_works() {
    let clock = TestClock::default();
    let server = TurnServer::start_with_clock(config(), clock.closure())
        .await
        .unwrap();
    let c = creds("alice");
    let mut client = Raw::new(&server, &c.username, &c.password).await;
    let res = client
        .request(METHOD_ALLOCATE, || {
            vec![
                Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                }),
                Box::new(Lifetime(Duration::from_secs(3600))),
            ]
        })
        .await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    let first_nonce = client.nonce.clone().unwrap();

    clock.advance(Duration::from_secs(601));
    // One signed Refresh with the old nonce, by hand, to see the 438 itself.
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
        Box::new(TextAttribute::new(ATTR_USERNAME, c.username.clone())),
        Box::new(TextAttribute::new(ATTR_REALM, REALM.into())),
        Box::new(first_nonce.clone()),
        Box::new(MessageIntegrity::new_long_term_integrity(
            c.username.clone(),
            REALM.into(),
            c.password.clone(),
        )),
        Box::new(FINGERPRINT),
    ];
    let res = client.exchange(&setters).await;
    assert_eq!(error_code(&res), 438);
    let fresh = TextAttribute::get_from_as(&res, ATTR_NONCE).unwrap();
    assert_ne!(fresh.text, first_nonce.text);

    // The client's usual path (retry with the new nonce) then succeeds.
    let res = client
        .request(METHOD_REFRESH, || {
            vec![Box::new(Lifetime(Duration::from_secs(600)))]
        })
        .await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    assert!(server.stats().stale_nonces >= 2);

    // A nonce issued to another address is not accepted from this one (127.0.0.2 is
    // loopback too on Linux).
    let mut other = Raw::new_from("127.0.0.2:0", &server, &c.username, &c.password).await;
    other.nonce = client.nonce.clone();
    let res = other.allocate().await;
    assert_eq!(res.typ.class, CLASS_SUCCESS_RESPONSE, "{}", describe(&res));
    assert!(server.stats().stale_nonces >= 3, "{:?}", server.stats());
    server.close().await.unwrap();
}

#[tokio::test]
async fn permissions_and_channels_are_bounded() {
    let sfu = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config();
    cfg.limits.channels_per_allocation = 2;
    let server = TurnServer::start(cfg).await.unwrap();
    let c = creds("alice");
    let mut client = Raw::new(&server, &c.username, &c.password).await;
    client.allocate_ok().await;
    let base = sfu.local_addr().unwrap();
    for (i, expect) in [(0u16, 200u16), (1, 200), (2, 508)] {
        let peer = SocketAddr::new(base.ip(), base.port().wrapping_add(i));
        let res = client
            .request(METHOD_CHANNEL_BIND, || {
                vec![Box::new(ChannelNumber(0x4000 + i)), peer_attr(peer)]
            })
            .await;
        let got = if res.typ.class == CLASS_SUCCESS_RESPONSE {
            200
        } else {
            error_code(&res)
        };
        assert_eq!(got, expect, "binding {i}: {}", describe(&res));
    }
    // Rebinding a number to another peer is a conflict, not a silent move.
    let res = client
        .request(METHOD_CHANNEL_BIND, || {
            vec![
                Box::new(ChannelNumber(0x4000)),
                peer_attr(SocketAddr::new(base.ip(), base.port().wrapping_add(1))),
            ]
        })
        .await;
    assert_eq!(error_code(&res), 400);
    server.close().await.unwrap();
}
