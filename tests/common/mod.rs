//! Shared harness for integration tests: an in-process server and a webrtc-rs test client
//! that joins over the real signaling WebSocket, publishes Opus audio and VP8 video, and
//! records what it receives.
#![allow(dead_code)]

pub mod agent_call;
pub mod client;
pub mod speech;
pub mod ws;

use conclave::auth::{Grants, TokenAuthority, TokenRequest};
use conclave::config::{Config, ServeArgs};
use conclave::server::RunningServer;
use std::time::{Duration, SystemTime};

pub const API_KEY: &str = "test-key";
pub const API_SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// The databases the store tests run against: SQLite always; PostgreSQL when
/// `CONCLAVE_TEST_POSTGRES_URL` is set (CI sets it, and then an unreachable server fails the
/// tests instead of skipping them). Each PostgreSQL entry gets a fresh schema.
pub async fn databases() -> Vec<(&'static str, String)> {
    let mut out = vec![("sqlite", String::new())];
    if let Ok(base) = std::env::var("CONCLAVE_TEST_POSTGRES_URL") {
        out.push(("postgres", fresh_pg_schema(&base).await));
    }
    out
}

/// A new, empty schema in the PostgreSQL at `base`, and the URL that uses it.
pub async fn fresh_pg_schema(base: &str) -> String {
    use sqlx::Connection;
    let schema = format!("t_{}", conclave::ids::random_id(10).to_lowercase());
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap_or_else(|e| {
        panic!("CONCLAVE_TEST_POSTGRES_URL={base} is set but unreachable: {e}")
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Starts a server on loopback with ephemeral ports.
pub async fn start_server(tweak: impl FnOnce(&mut ServeArgs)) -> RunningServer {
    let dir = std::env::temp_dir().join(format!("conclave-test-{}", conclave::ids::random_id(8)));
    start_server_in(dir, tweak).await
}

/// Starts a server whose data directory is `dir` (to restart on the same data).
pub async fn start_server_in(
    dir: std::path::PathBuf,
    tweak: impl FnOnce(&mut ServeArgs),
) -> RunningServer {
    let mut args = ServeArgs {
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        udp_ip: Some("127.0.0.1".parse().unwrap()),
        turn_port: Some(0),
        data_dir: Some(dir),
        api_key: Some(API_KEY.into()),
        api_secret: Some(API_SECRET.into()),
        ..Default::default()
    };
    // The suite runs on the default stack, the media plane; CONCLAVE_TEST_MEDIA_PLANE=webrtc
    // runs it on a PeerConnection per participant.
    args.media_plane = std::env::var("CONCLAVE_TEST_MEDIA_PLANE").ok();
    tweak(&mut args);
    if args.whisper_model.is_some() && args.silero_model.is_none() {
        // Transcribing servers get the product's voice detector, installed once per cache.
        let files = speech::vad_files();
        args.silero_model = Some(files.model);
        args.onnxruntime = Some(files.runtime);
    }
    let config = Config::load(args).expect("config");
    conclave::telemetry::init(
        &std::env::var("CONCLAVE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        "text",
    );
    conclave::server::start(config)
        .await
        .expect("server starts")
}

/// A token for `room`/`identity` signed with the test key.
pub fn token(room: &str, identity: &str) -> String {
    token_with(
        room,
        identity,
        Grants::default(),
        Duration::from_secs(600),
        SystemTime::now(),
    )
}

/// A token with explicit grants, lifetime and issue time.
pub fn token_with(
    room: &str,
    identity: &str,
    grants: Grants,
    ttl: Duration,
    now: SystemTime,
) -> String {
    TokenAuthority::new(API_KEY, API_SECRET).issue(
        &TokenRequest {
            room: room.into(),
            identity: identity.into(),
            name: None,
            grants,
            ttl,
            ..Default::default()
        },
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

/// One HTTP/1.1 request over a fresh connection to a running server; returns the status code
/// and the body. `auth` is the whole `Authorization` value.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, method, path, auth, body).await;
    (status, body)
}

/// Like [`http`], also returning the response head (status line and headers).
pub async fn http_with_head(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_owned(), body.to_owned())
}

/// `Authorization` value for the test API key pair.
pub fn api_key_auth() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{API_KEY}:{API_SECRET}"))
    )
}

/// A TCP port free on loopback now (for a server process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A request with an optional bearer token and a JSON body; the JSON answer (`Null` if none).
pub async fn http_json(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let (_, body) = http(addr, method, path, auth.as_deref(), &body.to_string()).await;
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// Polls `probe` every `every` until it gives `Ok`, and returns that; panics after `timeout`
/// with `what` and the last `Err` (the state seen, for the failure report).
pub async fn poll_until<T, Fut>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} (after {timeout:?}): {last}"
            ),
        }
        tokio::time::sleep(every).await;
    }
}
