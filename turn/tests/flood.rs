//! An unauthenticated flood leaves nothing behind: memory stays flat because nonces are
//! stateless. Its own test binary, so nothing else in the process moves the RSS.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use conclave_turn::{TurnConfig, TurnLimits, TurnServer};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{CLASS_REQUEST, METHOD_ALLOCATE, Message, MessageType, Setter};
use stun::textattrs::TextAttribute;
use tokio::net::UdpSocket;
use turn::proto::PROTO_UDP;
use turn::proto::reqtrans::RequestedTransport;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn allocate(signed_with_forged_nonce: Option<usize>) -> Vec<u8> {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        }),
    ];
    if let Some(i) = signed_with_forged_nonce {
        let user = format!("{}:flood-{i}", u64::MAX / 2);
        setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, user.clone())));
        setters.push(Box::new(TextAttribute::new(
            ATTR_REALM,
            "conclave.test".into(),
        )));
        setters.push(Box::new(TextAttribute::new(
            ATTR_NONCE,
            format!("{i:x}.deadbeefdeadbeef"),
        )));
        setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
            user,
            "conclave.test".into(),
            "guess".into(),
        )));
    }
    let mut m = Message::new();
    m.build(&setters).unwrap();
    m.raw
}

async fn flood(server: &TurnServer, count: usize, forged: bool) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = server.local_addr();
    let mut answered = 0;
    let mut buf = vec![0u8; 1500];
    // Sent in bursts with the answers drained between them, so replies are counted, not
    // lost to a full socket buffer.
    for burst in 0..count / 100 {
        for i in 0..100 {
            let n = burst * 100 + i;
            sock.send_to(&allocate(forged.then_some(n)), target)
                .await
                .unwrap();
        }
        let mut got = 0;
        while got < 100 {
            match tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        answered += got;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_flood_keeps_memory_flat() {
    let server = TurnServer::start(TurnConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        realm: "conclave.test".into(),
        shared_secret: "flood-secret".into(),
        relay_port_range: None,
        peer_port_range: None,
        limits: TurnLimits::default(),
    })
    .await
    .unwrap();
    // Warm up allocator arenas and buffers first, then measure.
    flood(&server, 2_000, false).await;
    let before = rss_kib();
    let started = SystemTime::now();
    let challenged = flood(&server, 20_000, false).await;
    let stale = flood(&server, 20_000, true).await;
    let after = rss_kib();
    let stats = server.stats();
    eprintln!(
        "flood: 40,000 requests in {:?}, {challenged} 401s and {stale} 438s received, RSS {before} -> {after} KiB, {stats:?}",
        started.elapsed().unwrap()
    );
    assert!(
        challenged >= 19_000 && stale >= 19_000,
        "server stopped answering"
    );
    assert_eq!(stats.allocations, 0);
    assert!(
        stats.challenges >= 21_000 && stats.stale_nonces >= 19_000,
        "{stats:?}"
    );
    // The engine this replaced grew ~4.4 MB per 40,000 such requests, linearly.
    assert!(
        after <= before + 1024,
        "RSS grew {} KiB under an unauthenticated flood",
        after - before
    );
    server.close().await.unwrap();
}
