//! Slow, silent and greedy clients: every connection has a deadline, and one address cannot
//! take every descriptor. The server runs with short limits so the tests are quick; each
//! test checks both that the bad client is cut off and that a good one is still served.

mod common;

use common::{eventually, start_server, token};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn limited() -> conclave::server::RunningServer {
    start_server(|a| {
        a.header_timeout_secs = Some(1);
        a.body_timeout_secs = Some(1);
        a.idle_timeout_secs = Some(2);
        a.join_timeout_secs = Some(1);
        a.max_connections_per_address = Some(6);
    })
    .await
}

/// Reads until the server closes the connection (or `within` passes: `None`).
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

async fn healthy(addr: std::net::SocketAddr) {
    let (status, body) = common::http(addr, "GET", "/healthz", None, "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let server = limited().await;
    let mut s = TcpStream::connect(server.http_addr).await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(6))
            .await
            .is_some(),
        "a silent connection was still open after 6 s"
    );
    healthy(server.http_addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_line_at_a_time_hit_the_header_deadline() {
    let server = limited().await;
    let s = TcpStream::connect(server.http_addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // A header line every 400 ms keeps the connection from ever being idle, for 8 s.
    let trickle = tokio::spawn(async move {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if wr
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "trickled headers were still accepted after {:?} (deadline 1 s)",
        started.elapsed()
    );
    trickle.abort();
    healthy(server.http_addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_refused_with_408() {
    let server = limited().await;
    let mut s = TcpStream::connect(server.http_addr).await.unwrap();
    s.write_all(
        b"POST /api/meetings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut s, Duration::from_secs(6))
        .await
        .expect("the server still waited for the body after 6 s");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
        "{answer}"
    );
    healthy(server.http_addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_joins_is_closed_with_join_timeout() {
    let server = limited().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http_addr))
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue, // pings
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("told in time");
    assert!(text.contains("join_timeout"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_peer_that_stops_answering_is_dropped() {
    let server = limited().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http_addr))
        .await
        .unwrap();
    let join = serde_json::json!({"v": 1, "type": "join", "room": "quiet", "name": "Zed", "token": token("quiet", "zed")});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(joined.to_string().contains("joined"), "{joined}");
    assert_eq!(server.state.rooms.counts(), (1, 1));
    // From here the client reads nothing, so it answers no ping: a dead peer.
    assert!(
        eventually(Duration::from_secs(8), || server.state.rooms.counts()
            == (0, 0))
        .await,
        "a silent joined socket was kept"
    );
    let metrics = common::http(server.http_addr, "GET", "/metrics", None, "")
        .await
        .1;
    assert!(
        metrics.contains("conclave_dead_peers_total 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("dead"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(ws);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let server = limited().await;
    let addr = server.http_addr;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept all six before the seventh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(800))
            .await
            .is_some(),
        "a seventh connection from the same address was kept"
    );
    let metrics_line = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("conclave_connections_refused_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Freeing a place lets the next one in.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, metrics) = common::http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(metrics_line(&metrics) >= 1, "the refusal was not counted");
    drop(held);
    server.shutdown().await.unwrap();
}
