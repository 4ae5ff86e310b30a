//! Guessing passwords and hammering endpoints: exponential backoff per address and meeting,
//! per-address request rates, and a bounded number of password hashes at once whose memory
//! goes back after the burst.

mod common;

use common::{api_key_auth, start_server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// One request; returns status, the `Retry-After` header if any, and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Option<u64>, String) {
    let (status, head, body) = common::http_with_head(addr, method, path, auth, body).await;
    let retry = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after: ")
            .and_then(|v| v.trim().parse().ok())
    });
    (status, retry, body)
}

async fn meeting_with_password(addr: SocketAddr, password: &str) -> String {
    let (s, _, body) = call(
        addr,
        "POST",
        "/api/meetings",
        Some(&api_key_auth()),
        &json!({"name": "Deal review", "password": password}).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_back_off_exponentially_and_say_when_to_retry() {
    let server = start_server(|a| a.rate_limit_per_minute = Some(10_000)).await;
    let addr = server.http_addr;
    let code = meeting_with_password(addr, "4812").await;
    let join = format!("/api/meetings/{code}/join");
    let guess = |pin: &str| json!({"name": "Mallory", "password": pin}).to_string();
    for pin in ["0000", "0001", "0002", "0003", "0004"] {
        let (s, _, body) = call(addr, "POST", &join, None, &guess(pin)).await;
        assert_eq!(s, 401, "{body}");
    }
    let (s, _, _) = call(addr, "POST", &join, None, &guess("0005")).await;
    assert_eq!(
        s, 401,
        "the sixth wrong guess is still checked, then the waits begin"
    );
    // Now even the right password waits: no oracle while blocked.
    let (s, retry, body) = call(addr, "POST", &join, None, &guess("4812")).await;
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("too_many_attempts"), "{body}");
    assert_eq!(retry, Some(1));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, _, _) = call(addr, "POST", &join, None, &guess("0006")).await;
    assert_eq!(s, 401);
    let (s, retry, _) = call(addr, "POST", &join, None, &guess("4812")).await;
    assert_eq!((s, retry), (429, Some(2)), "the wait doubled");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (s, _, body) = call(addr, "POST", &join, None, &guess("4812")).await;
    assert_eq!(s, 200, "the right password after the wait: {body}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_rate_limited_on_token_and_meeting_creation() {
    let server = start_server(|a| a.rate_limit_per_minute = Some(6)).await;
    let addr = server.http_addr;
    let body = r#"{"name":"Ada"}"#;
    // Bursts of a third of the minute's quota: two at once, then one every 10 s.
    for _ in 0..2 {
        let (s, _, b) = call(addr, "POST", "/api/rooms/lobby/guest-token", None, body).await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, retry, b) = call(addr, "POST", "/api/rooms/lobby/guest-token", None, body).await;
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("rate_limited"), "{b}");
    assert!(retry.is_some_and(|r| (1..=10).contains(&r)), "{retry:?}");
    let (s, _, b) = call(addr, "POST", "/api/meetings", None, r#"{"name":"x"}"#).await;
    assert_eq!(s, 429, "the same address, another guarded endpoint: {b}");
    // The API key is an operator's, not a stranger's: not limited.
    let (s, _, b) = call(
        addr,
        "POST",
        "/api/meetings",
        Some(&api_key_auth()),
        r#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    server.shutdown().await.unwrap();
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_password_checks_is_bounded_and_its_memory_returns() {
    let server = start_server(|a| {
        a.rate_limit_per_minute = Some(10_000);
        a.password_hashes = Some(2);
    })
    .await;
    let addr = server.http_addr;
    let code = meeting_with_password(addr, "correct horse").await;
    let join = format!("/api/meetings/{code}/join");
    let before = rss_mib();
    // 64 guesses at once: they all pass the backoff check before any has failed, so this
    // is 64 argon2 checks of 19 MiB each; two run at a time.
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let r = rss_mib();
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(r);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let guesses = (0..64).map(|i| {
        let join = join.clone();
        tokio::spawn(async move {
            call(
                addr,
                "POST",
                &join,
                None,
                &json!({"name": "M", "password": format!("guess {i}")}).to_string(),
            )
            .await
            .0
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    sampler.abort();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mib();
    let peak = *peak.lock().unwrap();
    println!("RSS: before {before:.0} MiB, peak {peak:.0} MiB, after {after:.0} MiB");
    // Two hashes at a time: about 40 MiB, not 64 × 19 MiB.
    assert!(
        peak - before < 120.0,
        "peak {peak:.0} MiB from {before:.0} MiB"
    );
    assert!(
        after - before < 40.0,
        "kept {:.0} MiB after the burst",
        after - before
    );
    server.shutdown().await.unwrap();
}
