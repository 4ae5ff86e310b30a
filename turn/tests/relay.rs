//! End-to-end checks against a real server on loopback, driven by real TURN clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use conclave_turn::{TurnConfig, TurnError, TurnLimits, TurnServer, credentials};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE, Message,
    MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use turn::proto::PROTO_UDP;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use webrtc_util::Conn;

const SECRET: &str = "integration-secret";
const REALM: &str = "conclave.test";
const WAIT: Duration = Duration::from_secs(5);
// How long to listen before concluding a datagram was (correctly) never delivered.
const SILENCE: Duration = Duration::from_millis(400);

fn config(bind: SocketAddr) -> TurnConfig {
    TurnConfig {
        bind,
        public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        realm: REALM.into(),
        shared_secret: SECRET.into(),
        relay_port_range: None,
        peer_port_range: None,
        limits: TurnLimits::default(),
    }
}

async fn start() -> TurnServer {
    TurnServer::start(config("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

async fn turn_client(server: &TurnServer, username: &str, password: &str) -> Client {
    let addr = server.local_addr().to_string();
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(ClientConfig {
        stun_serv_addr: addr.clone(),
        turn_serv_addr: addr,
        username: username.into(),
        password: password.into(),
        // Learned from the server's 401 challenge.
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

fn creds_expiring_in(ttl: Duration, now: SystemTime) -> conclave_turn::TurnCredentials {
    credentials(SECRET, "alice", ttl, now)
}

/// Sends one STUN request and decodes the reply.
async fn exchange(sock: &UdpSocket, server: SocketAddr, setters: &[Box<dyn Setter>]) -> Message {
    let mut req = Message::new();
    req.build(setters).unwrap();
    sock.send_to(&req.raw, server).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("no STUN reply")
        .unwrap();
    let mut res = Message::new();
    res.raw = buf[..n].to_vec();
    res.decode().unwrap();
    assert_eq!(res.transaction_id, req.transaction_id);
    res
}

/// Performs the two-step Allocate by hand so the exact response class and code are visible.
async fn raw_allocate(server: SocketAddr, username: &str, password: &str) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let allocate = || -> Vec<Box<dyn Setter>> {
        vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
        ]
    };

    let mut first = allocate();
    first.push(Box::new(FINGERPRINT));
    let challenge = exchange(&sock, server, &first).await;
    assert_eq!(challenge.typ.class, CLASS_ERROR_RESPONSE);
    assert_eq!(
        error_code(&challenge),
        401,
        "unauthenticated Allocate must be challenged"
    );
    let nonce = TextAttribute::get_from_as(&challenge, ATTR_NONCE).unwrap();
    let realm = TextAttribute::get_from_as(&challenge, ATTR_REALM).unwrap();
    assert_eq!(realm.text, REALM);

    let mut second = allocate();
    second.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.into())));
    second.push(Box::new(realm.clone()));
    second.push(Box::new(nonce));
    second.push(Box::new(MessageIntegrity::new_long_term_integrity(
        username.into(),
        realm.text,
        password.into(),
    )));
    second.push(Box::new(FINGERPRINT));
    exchange(&sock, server, &second).await
}

fn error_code(m: &Message) -> u16 {
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).expect("error response without ERROR-CODE");
    code.code.0
}

#[tokio::test]
async fn allocate_with_valid_credentials_relays_both_ways() {
    let server = start().await;
    assert_eq!(
        server.urls(),
        vec![format!(
            "turn:127.0.0.1:{}?transport=udp",
            server.local_addr().port()
        )]
    );
    let c = creds_expiring_in(Duration::from_secs(600), SystemTime::now());
    let client = turn_client(&server, &c.username, &c.password).await;
    let relay = timeout(WAIT, client.allocate())
        .await
        .unwrap()
        .expect("allocate failed");
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(relayed.port(), server.local_addr().port());

    // A stand-in for the SFU on Conclave's own address.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    relay
        .send_to(b"client->peer", peer.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"client->peer");
    assert_eq!(
        from, relayed,
        "peer must see traffic coming from the relayed address"
    );

    peer.send_to(b"peer->client", relayed).await.unwrap();
    let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"peer->client");
    assert_eq!(from, peer.local_addr().unwrap());

    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test]
async fn raw_allocate_succeeds_then_expired_and_wrong_password_are_rejected() {
    let server = start().await;
    let addr = server.local_addr();

    let good = creds_expiring_in(Duration::from_secs(600), SystemTime::now());
    let ok = raw_allocate(addr, &good.username, &good.password).await;
    assert_eq!(ok.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&ok).unwrap();
    assert_eq!(relayed.ip, IpAddr::V4(Ipv4Addr::LOCALHOST));

    // Minted an hour ago with a 60 s lifetime: correctly signed, but stale.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = creds_expiring_in(Duration::from_secs(60), hour_ago);
    let res = raw_allocate(addr, &expired.username, &expired.password).await;
    assert_eq!(res.typ.class, CLASS_ERROR_RESPONSE);
    // RFC 8489 §9.2.4: a username the server does not accept is answered 401, with a
    // fresh nonce and the realm so a client with better credentials can retry.
    assert_eq!(error_code(&res), 401);
    assert!(res.contains(ATTR_NONCE) && res.contains(ATTR_REALM));

    let res = raw_allocate(addr, &good.username, "not-the-password").await;
    assert_eq!(res.typ.class, CLASS_ERROR_RESPONSE);
    assert_eq!(error_code(&res), 401);

    let res = raw_allocate(addr, "alice", &good.password).await;
    assert_eq!(res.typ.class, CLASS_ERROR_RESPONSE);
    assert_eq!(error_code(&res), 401);
    let stats = server.stats();
    assert_eq!(stats.allocations, 1);
    assert_eq!(stats.auth_failures, 3);

    server.close().await.unwrap();
}

#[tokio::test]
async fn turn_client_with_expired_credentials_cannot_allocate() {
    let server = start().await;
    let expired = creds_expiring_in(
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(3600),
    );
    let client = turn_client(&server, &expired.username, &expired.password).await;
    let result = timeout(WAIT, client.allocate()).await.unwrap();
    assert!(
        result.is_err(),
        "expired credentials must not yield a relay"
    );
    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test]
async fn relay_refuses_peers_other_than_conclave() {
    let server = start().await;
    let c = creds_expiring_in(Duration::from_secs(600), SystemTime::now());
    let client = turn_client(&server, &c.username, &c.password).await;
    let relay = timeout(WAIT, client.allocate()).await.unwrap().unwrap();
    let relayed = relay.local_addr().unwrap();

    // 127.0.0.2 is loopback on Linux but is not the configured public_ip.
    let outsider = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let _ = relay
        .send_to(b"should not leave", outsider.local_addr().unwrap())
        .await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(SILENCE, outsider.recv_from(&mut buf))
            .await
            .is_err(),
        "relay forwarded to a non-Conclave peer"
    );

    // The client did create a permission for this IP, so only our filter can stop this.
    outsider
        .send_to(b"should not arrive", relayed)
        .await
        .unwrap();
    assert!(
        timeout(SILENCE, relay.recv_from(&mut buf)).await.is_err(),
        "relay delivered traffic from a non-Conclave peer"
    );

    client.close().await.unwrap();
    server.close().await.unwrap();
}

#[tokio::test]
async fn relay_ports_come_from_configured_range() {
    // Borrow a free port from the OS, then make it the only port in the range.
    let port = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config("127.0.0.1:0".parse().unwrap());
    cfg.relay_port_range = Some((port, port));
    let server = TurnServer::start(cfg).await.unwrap();

    let c = creds_expiring_in(Duration::from_secs(600), SystemTime::now());
    let ok = raw_allocate(server.local_addr(), &c.username, &c.password).await;
    assert_eq!(ok.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&ok).unwrap();
    assert_eq!(relayed.port, port);

    // The single port is now taken, so a second allocation must be refused, not misplaced.
    let res = raw_allocate(server.local_addr(), &c.username, &c.password).await;
    assert_eq!(res.typ.class, CLASS_ERROR_RESPONSE);
    server.close().await.unwrap();
}

#[tokio::test]
async fn port_in_use_is_a_clear_bind_error() {
    let first = start().await;
    let err = TurnServer::start(config(first.local_addr()))
        .await
        .unwrap_err();
    match &err {
        TurnError::Bind { addr, source } => {
            assert_eq!(*addr, first.local_addr());
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected Bind error, got {other:?}"),
    }
    assert!(err.to_string().contains("already using this port"), "{err}");
    first.close().await.unwrap();
}

#[tokio::test]
async fn close_frees_the_port_even_with_live_allocations() {
    let server = start().await;
    let addr = server.local_addr();
    let c = creds_expiring_in(Duration::from_secs(600), SystemTime::now());
    let ok = raw_allocate(addr, &c.username, &c.password).await;
    assert_eq!(ok.typ.class, CLASS_SUCCESS_RESPONSE);

    server.close().await.unwrap();
    server.close().await.unwrap(); // idempotent
    let again = TurnServer::start(config(addr))
        .await
        .expect("port still held after close");
    again.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_server_frees_the_port() {
    let server = start().await;
    let addr = server.local_addr();
    drop(server);
    // Shutdown after drop runs in the background, so give it a moment to finish.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match UdpSocket::bind(addr).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("port never released after drop: {e}"),
        }
    }
}
