//! Notifications and webhooks of scheduled meetings against a real local HTTP receiver:
//! per-type preferences, live and stored notifications marked read, signed deliveries
//! (HMAC-SHA256 over timestamp and body) retried after a 500 with the same event id, a dead
//! endpoint given up after 24 h, the delivery log with status codes, and bad input refused.

mod common;

use common::agent_call::api;

use chrono::TimeZone;
use common::start_server;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIN: i64 = 60_000;

#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver answering each request with the next of `codes` (then 200), recording it.
async fn receiver(codes: Vec<u16>) -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = got.clone();
    tokio::spawn(async move {
        let mut codes = codes.into_iter();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break (head.to_owned(), rest[..len].to_owned());
                    }
                }
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                })
                .collect();
            log.lock().unwrap().push(Received { headers, body });
            let code = codes.next().unwrap_or(200);
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (addr, got)
}

fn verify(secret: &str, r: &Received) -> bool {
    let Some(sig) = r.header("x-conclave-signature") else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    // Replay window: five minutes either side of our clock.
    if (t - conclave::clock::now_ms() / 1_000).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_notifications_and_signed_webhook_deliveries_that_are_retried() {
    let server = start_server(|a| {
        a.scheduler_tick_ms = Some(0);
        a.webhook_tick_ms = Some(0);
    })
    .await;
    let addr = server.http_addr;
    let (hook, got) = receiver(vec![500]).await;
    let (got_code, w) = api(
        addr,
        "POST",
        "/api/hosts/sam/webhooks",
        json!({"url": format!("http://{hook}/conclave")}),
    )
    .await;
    assert_eq!(got_code, 201, "{w}");
    let secret = w["secret"].as_str().unwrap().to_owned();
    // A dead endpoint too, only for failures.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_, w2) = api(
        addr,
        "POST",
        "/api/hosts/sam/webhooks",
        json!({"url": format!("http://{dead}/"), "kinds": ["agent_failed"]}),
    )
    .await;
    // Sam does not want agent_dispatched notifications.
    let (c, p) = api(
        addr,
        "PUT",
        "/api/users/sam/notification-preferences",
        json!({"agent_dispatched": false}),
    )
    .await;
    assert_eq!(c, 200, "{p}");
    assert_eq!(p["agent_dispatched"], false);
    assert_eq!(p["meeting_starting"], true);
    let mut live = server.state.notifier.subscribe();
    // A meeting with the agent on a server without a model: ready, dispatched, failed.
    let start = (conclave::clock::now_ms() / MIN + 10) * MIN;
    let local = chrono_tz::UTC
        .timestamp_millis_opt(start)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (c, s) = api(
        addr,
        "POST",
        "/api/schedules",
        json!({"title": "Acme call", "host_identity": "sam",
        "time_zone": "UTC", "start": local, "duration_minutes": 30, "auto_join": true}),
    )
    .await;
    assert_eq!(c, 201, "{s}");
    server.state.scheduler.tick(start - MIN).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("live notification")
            .unwrap();
        kinds.push(n.kind.clone());
    }
    assert_eq!(
        kinds,
        ["meeting_starting", "agent_failed"],
        "agent_dispatched is muted"
    );
    let (_, n) = api(
        addr,
        "GET",
        "/api/users/sam/notifications?unread=true",
        Value::Null,
    )
    .await;
    let list = n["notifications"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{n}");
    assert_eq!(list[0]["kind"], "agent_failed");
    assert_eq!(list[0]["data"]["reason"], "model_missing", "{n}");
    let id = list[1]["id"].as_i64().unwrap();
    let (c, _) = api(
        addr,
        "POST",
        &format!("/api/users/sam/notifications/{id}/read"),
        Value::Null,
    )
    .await;
    assert_eq!(c, 204);
    let (_, n) = api(
        addr,
        "GET",
        "/api/users/sam/notifications?unread=true",
        Value::Null,
    )
    .await;
    assert_eq!(n["notifications"].as_array().unwrap().len(), 1);
    let (c, _) = api(
        addr,
        "POST",
        "/api/users/kim/notifications/1/read",
        Value::Null,
    )
    .await;
    assert_eq!(c, 404, "not kim's");
    // Deliveries: the receiver gets all three kinds (webhooks take every kind), the first
    // answered 500.
    // On the scheduler's clock (the events' time).
    let now = start - MIN;
    server.state.notifier.deliver_due(now).await.unwrap();
    assert_eq!(got.lock().unwrap().len(), 3);
    // Nothing is due again before the backoff.
    assert_eq!(
        server
            .state
            .notifier
            .deliver_due(now + 5_000)
            .await
            .unwrap(),
        0
    );
    server
        .state
        .notifier
        .deliver_due(now + 20_000)
        .await
        .unwrap();
    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 4, "the failed one was sent again");
    for r in &received {
        assert!(verify(&secret, r), "bad signature: {r:?}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(r.header("x-conclave-event-id"), body["id"].as_str());
        assert_eq!(r.header("x-conclave-event"), body["kind"].as_str());
    }
    assert!(
        !verify("whsec_wrong", &received[0]),
        "a wrong secret must not verify"
    );
    assert_eq!(
        received[0].header("x-conclave-event-id"),
        received[3].header("x-conclave-event-id"),
        "same event id on retry"
    );
    let (_, d) = api(
        addr,
        "GET",
        &format!("/api/webhooks/{}/deliveries", w["id"]),
        Value::Null,
    )
    .await;
    let deliveries = d["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{d}");
    let retried: Vec<&Value> = deliveries.iter().filter(|x| x["attempts"] == 2).collect();
    assert_eq!(retried.len(), 1, "{d}");
    assert_eq!(retried[0]["attempt_status_codes"], json!([500, 200]));
    assert!(deliveries.iter().all(|x| x["status"] == "delivered"), "{d}");
    // The dead endpoint: retried with growing gaps, given up after 24 h.
    let mut t = now;
    for _ in 0..40 {
        t += 3_600_000;
        server.state.notifier.deliver_due(t).await.unwrap();
    }
    let (_, d2) = api(
        addr,
        "GET",
        &format!("/api/webhooks/{}/deliveries", w2["id"]),
        Value::Null,
    )
    .await;
    let only = &d2["deliveries"][0];
    assert_eq!(only["status"], "gave_up", "{d2}");
    assert!(only["attempts"].as_i64().unwrap() >= 5, "{d2}");
    assert!(
        only["attempt_status_codes"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null),
        "{d2}"
    );
    // Bad input.
    for (body, code) in [
        (json!({"url": "ftp://example.test/"}), "invalid_url"),
        (json!({"url": "not a url"}), "invalid_url"),
        (
            json!({"url": format!("http://{hook}/"), "kinds": ["everything"]}),
            "unknown_kind",
        ),
    ] {
        let (c, v) = api(addr, "POST", "/api/hosts/sam/webhooks", body).await;
        assert_eq!(c, 400, "{v}");
        assert_eq!(v["error"]["code"], code);
    }
    let (c, v) = api(
        addr,
        "PUT",
        "/api/users/sam/notification-preferences",
        json!({"birthday": true}),
    )
    .await;
    assert_eq!(c, 400, "{v}");
    let (c, _) = api(addr, "DELETE", "/api/webhooks/9999", Value::Null).await;
    assert_eq!(c, 404);
    let (c, _) = api(
        addr,
        "DELETE",
        &format!("/api/webhooks/{}", w["id"]),
        Value::Null,
    )
    .await;
    assert_eq!(c, 204);
    let (_, l) = api(addr, "GET", "/api/hosts/sam/webhooks", Value::Null).await;
    assert_eq!(l["webhooks"].as_array().unwrap().len(), 1, "{l}");
    assert!(
        l["webhooks"][0].get("secret").is_none(),
        "secrets are not listed"
    );
    server.shutdown().await.unwrap();
}
