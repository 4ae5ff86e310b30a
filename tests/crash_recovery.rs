//! A real server process killed with SIGKILL in the middle of a meeting, then started again
//! on the same data: the meeting is not left `active` for ever with a phantom participant;
//! the stays are closed and the meeting waits a grace period for its host, then ends.

mod common;

use common::client::TestClient;
use common::{API_KEY, API_SECRET, api_key_auth, http};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::free_port;

fn spawn_server(addr: SocketAddr, data: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "serve",
            "--http-addr",
            &addr.to_string(),
            "--udp-ip",
            "127.0.0.1",
        ])
        .args([
            "--turn-port",
            "0",
            "--transcription",
            "false",
            "--host-grace-secs",
            "2",
        ])
        .args([
            "--api-key",
            API_KEY,
            "--api-secret",
            API_SECRET,
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server binary")
}

async fn wait_healthy(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (s, _) = http(addr, "GET", "/healthz", None, "").await;
            if s == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server at {addr} did not come up");
}

async fn meeting(addr: SocketAddr, code: &str) -> Value {
    let (_, b) = http(addr, "GET", &format!("/api/meetings/{code}"), None, "").await;
    serde_json::from_str(&b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_active_at_a_crash_waits_for_its_host_then_ends() {
    let data = std::env::temp_dir().join(format!("conclave-crash-{}", conclave::ids::random_id(8)));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = spawn_server(addr, &data);
    wait_healthy(addr).await;

    let (s, b) = http(
        addr,
        "POST",
        "/api/meetings",
        Some(&api_key_auth()),
        &json!({"name": "Renewal", "host_name": "Hana"}).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let created: Value = serde_json::from_str(&b).unwrap();
    let code = created["code"].as_str().unwrap().to_owned();
    let host = created["host_token"].as_str().unwrap();
    let (_, b) = http(
        addr,
        "POST",
        &format!("/api/meetings/{code}/join"),
        Some(&format!("Bearer {host}")),
        r#"{"name":"Hana"}"#,
    )
    .await;
    let joined: Value = serde_json::from_str(&b).unwrap();
    let hana = TestClient::join(
        addr,
        &code,
        "Hana",
        joined["token"].as_str().unwrap(),
        false,
    )
    .await;
    for _ in 0..50 {
        if meeting(addr, &code).await["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(meeting(addr, &code).await["status"], "active");

    // SIGKILL: no shutdown path runs, nothing is recorded.
    server.kill().unwrap();
    server.wait().unwrap();
    drop(hana);

    let mut server = spawn_server(addr, &data);
    wait_healthy(addr).await;
    let (s, b) = http(
        addr,
        "GET",
        &format!("/api/meetings/{code}/participants"),
        Some(&api_key_auth()),
        "",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let list: Value = serde_json::from_str(&b).unwrap();
    let stays = list["participants"].as_array().unwrap();
    assert!(!stays.is_empty(), "{list}");
    assert!(
        stays.iter().all(|p| !p["left_at"].is_null()),
        "a stay was left open by the crash: {list}"
    );
    // Nobody comes back: after the 2 s grace period the meeting ends.
    let mut status = Value::Null;
    for _ in 0..80 {
        status = meeting(addr, &code).await["status"].clone();
        if status == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "ended", "the recovered meeting never ended");
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
