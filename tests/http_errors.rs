//! Every error is ours: whatever the router rejects (query, path, method, upgrade) comes back
//! in the API's JSON error shape; metrics can be protected; a socket whose client leaves its
//! replies unread is closed with a reason, not left silently short of replies.

mod common;

use common::{api_key_auth, http, start_server};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn code_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not our JSON error body ({e}): {body:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_own_rejections_use_the_json_error_body() {
    let server = start_server(|_| {}).await;
    let addr = server.http_addr;
    let key = api_key_auth();
    let cases = [
        (
            "GET",
            "/api/rooms/demo/transcript?limit=lots",
            Some(key.as_str()),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/transcripts/search",
            Some(key.as_str()),
            400,
            "invalid_request",
        ),
        ("DELETE", "/api/stats", None, 405, "method_not_allowed"),
        ("PUT", "/api/meetings", None, 405, "method_not_allowed"),
        ("GET", "/ws", None, 400, ""),
        ("GET", "/api/meetings/%FF%FE", None, 404, ""),
        ("GET", "/nowhere", None, 404, "not_found"),
    ];
    for (method, path, auth, status, code) in cases {
        let (s, body) = http(addr, method, path, auth, "").await;
        let got = code_of(&body);
        if code.is_empty() {
            assert!(s >= 400 && !got.is_empty(), "{method} {path}: {s} {body}");
        } else {
            assert_eq!((s, got.as_str()), (status, code), "{method} {path}: {body}");
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token() {
    let server = start_server(|a| a.metrics_token = Some("scrape-me-0123456789".into())).await;
    let addr = server.http_addr;
    for path in ["/metrics", "/api/stats"] {
        let (s, body) = http(addr, "GET", path, None, "").await;
        assert_eq!(
            (s, code_of(&body).as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        let (s, _) = http(addr, "GET", path, Some("Bearer wrong"), "").await;
        assert_eq!(s, 401, "{path}");
        let (s, _) = http(addr, "GET", path, Some("Bearer scrape-me-0123456789"), "").await;
        assert_eq!(s, 200, "{path}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_and_never_reads_is_closed_with_a_reason() {
    let server = start_server(|_| {}).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http_addr))
        .await
        .unwrap();
    // Each malformed frame earns an error reply; none is read while sending.
    let flood = async {
        for i in 0..50_000 {
            if let Err(e) = ws.feed(Message::Text("x".into())).await {
                println!("send failed after {i} frames: {e}");
                break;
            }
        }
        let _ = ws.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), flood).await;
    let mut replies = 0u64;
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Text(_)) => replies += 1,
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(e) => {
                    println!("read error after {replies} replies: {e}");
                    return None;
                }
            }
        }
        None
    })
    .await
    .expect("the socket was closed in time");
    let close = close.expect("a close frame with a reason");
    println!("{replies} replies, then {close:?}");
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    assert!(close.reason.contains("unread"), "{close:?}");
    assert!(replies < 50_000);
    let metrics = http(server.http_addr, "GET", "/metrics", None, "").await.1;
    assert!(
        metrics.contains("conclave_signaling_overflows_total 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("overflow"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.shutdown().await.unwrap();
}
