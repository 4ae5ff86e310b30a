//! Shared harness for integration tests: an in-process server and a webrtc-rs test client
//! that joins over the real signaling WebSocket, publishes Opus audio and VP8 video, and
//! records what it receives.
#![allow(dead_code)]

pub mod client;

use conclave::auth::{Grants, TokenAuthority, TokenRequest};
use conclave::config::{Config, ServeArgs};
use conclave::server::RunningServer;
use std::time::{Duration, SystemTime};

pub const API_KEY: &str = "test-key";
pub const API_SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// Starts a server on loopback with ephemeral ports.
pub async fn start_server(tweak: impl FnOnce(&mut ServeArgs)) -> RunningServer {
    let dir = std::env::temp_dir().join(format!("conclave-test-{}", conclave::ids::random_id(8)));
    let mut args = ServeArgs {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        udp_ip: Some("127.0.0.1".parse().unwrap()),
        turn_port: Some(0),
        data_dir: Some(dir),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        ..Default::default()
    };
    tweak(&mut args);
    let config = Config::load(args).expect("config");
    conclave::telemetry::init("warn", "text");
    conclave::server::start(config).await.expect("server starts")
}

/// A token for `room`/`identity` signed with the test key.
pub fn token(room: &str, identity: &str) -> String {
    token_with(room, identity, Grants::default(), Duration::from_secs(600), SystemTime::now())
}

/// A token with explicit grants, lifetime and issue time.
pub fn token_with(room: &str, identity: &str, grants: Grants, ttl: Duration, now: SystemTime) -> String {
    TokenAuthority::new(API_KEY, API_SECRET).issue(
        &TokenRequest { room: room.into(), identity: identity.into(), name: None, grants, ttl },
        now,
    )
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
