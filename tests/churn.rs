//! Join/leave churn: participants with real WebRTC connections come and go for a while;
//! afterwards the server holds no more descriptors, threads or memory than a small margin
//! over where it started, and no room is left open.
//!
//! The CI run is short (`CONCLAVE_CHURN_CYCLES`, default 8). `scripts/soak.sh` runs the same
//! test for 30 minutes in release mode and prints the figures every cycle.

mod common;

use common::client::TestClient;
use common::{eventually, start_server, token};
use std::time::{Duration, Instant};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn snapshot() -> (usize, u64, u64) {
    (
        open_fds(),
        status_field("Threads:"),
        status_field("VmRSS:") / 1024,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_nothing_behind() {
    let cycles: usize = std::env::var("CONCLAVE_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let max_secs: u64 = std::env::var("CONCLAVE_CHURN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let server = start_server(|_| {}).await;
    let http = server.http_addr;
    // One warm-up cycle so lazily created pools and caches count as the baseline.
    let warm = TestClient::join(http, "warm", "w", &token("warm", "w"), true).await;
    warm.leave().await;
    assert!(
        eventually(Duration::from_secs(10), || server.state.rooms.counts()
            == (0, 0))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, th0, rss0) = snapshot();
    println!("baseline: {fd0} fds, {th0} threads, {rss0} MiB");
    let started = Instant::now();
    for cycle in 0..cycles {
        let room = format!("churn-{}", cycle % 3);
        let a = TestClient::join(http, &room, "alice", &token(&room, "alice"), true).await;
        let b = TestClient::join(http, &room, "bob", &token(&room, "bob"), false).await;
        let c = TestClient::join(http, &room, "carol", &token(&room, "carol"), true).await;
        assert!(
            eventually(Duration::from_secs(20), || b
                .received_from(&a.participant_id)
                .audio_decoded
                > 5
                && b.received_from(&c.participant_id).audio_decoded > 5)
            .await,
            "cycle {cycle}: media did not flow"
        );
        // The publisher who joined first leaves first, so the others renegotiate mid-churn.
        a.leave().await;
        b.leave().await;
        c.leave().await;
        assert!(
            eventually(Duration::from_secs(15), || server.state.rooms.counts()
                == (0, 0))
            .await,
            "cycle {cycle}: {:?} still open",
            server.state.rooms.counts()
        );
        let (fd, th, rss) = snapshot();
        println!(
            "cycle {cycle} at {:.0} s: {fd} fds, {th} threads, {rss} MiB",
            started.elapsed().as_secs_f64()
        );
        if started.elapsed().as_secs() >= max_secs {
            break;
        }
    }
    // Closing sockets and tasks takes a moment after the last leave.
    let settled = eventually(Duration::from_secs(15), || {
        let (fd, th, _) = snapshot();
        fd <= fd0 + 8 && th <= th0 + 4
    })
    .await;
    let (fd, th, rss) = snapshot();
    println!("after: {fd} fds, {th} threads, {rss} MiB");
    assert!(
        settled,
        "descriptors or threads did not come back: {fd} fds (from {fd0}), {th} threads (from {th0})"
    );
    assert!(rss <= rss0 + 64, "memory grew from {rss0} MiB to {rss} MiB");
    server.shutdown().await.unwrap();
}
