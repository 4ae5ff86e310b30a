//! Two real `conclave serve` processes on one PostgreSQL, each with its own scheduler ticking
//! every 100 ms: every occurrence is created once, every status change is made once, and each
//! due agent is dispatched exactly once (one claimed attempt, one log entry), whichever
//! process wins. Needs `CONCLAVE_TEST_POSTGRES_URL` (CI sets it).

mod common;

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "race-key";
const SECRET: &str = "race-secret-that-is-long-enough-0123456789";

struct Node {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use common::free_port;

fn spawn(db: &str) -> Node {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("conclave-race-{port}"));
    let child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--udp-ip",
            "127.0.0.1",
        ])
        .args(["--turn-port", "0", "--api-key", KEY, "--api-secret", SECRET])
        .args(["--database-url", db, "--scheduler-tick-ms", "100"])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("conclave runs");
    Node {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    }
}

async fn api(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Value,
) -> Option<(u16, Value)> {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
    );
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not: take the outermost JSON object.
    let json = body
        .find('{')
        .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
        .unwrap_or("null");
    Some((status, serde_json::from_str(json).unwrap_or(Value::Null)))
}

async fn up(n: &Node) {
    for _ in 0..300 {
        if let Some((200, _)) = api(n.addr, "GET", "/healthz", Value::Null).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} did not start", n.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_dispatch_each_agent_once() {
    let Ok(base) = std::env::var("CONCLAVE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: needs CONCLAVE_TEST_POSTGRES_URL (CI sets it)");
        return;
    };
    let db = common::fresh_pg_schema(&base).await;
    let a = spawn(&db);
    up(&a).await;
    // The second starts once the first has migrated the schema.
    let b = spawn(&db);
    up(&b).await;
    // Meetings starting in under a minute: ready at once (15 min lead), agent due at once
    // (1 min buffer). No Whisper model here, so each attempt fails with model_missing and is not
    // retried: exactly one attempt per meeting is the only right count.
    let now = conclave::clock::now_ms();
    // 45 s ahead: the agent's time (start minus 1 min) has come, the start has not.
    let start = (now / 1_000 + 45) * 1_000;
    let local = chrono::DateTime::from_timestamp_millis(start)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let mut ids = Vec::new();
    for i in 0..6 {
        let (got, s) = api(
            if i % 2 == 0 { a.addr } else { b.addr },
            "POST",
            "/api/schedules",
            json!({"title": format!("Race {i}"), "host_identity": format!("host-{i}"), "time_zone": "UTC",
                   "start": local, "duration_minutes": 30, "auto_join": true}),
        )
        .await
        .expect("API answers");
        assert_eq!(got, 201, "{s}");
        ids.push(s["id"].as_i64().unwrap());
    }
    // Let both tick for a while (each every 100 ms).
    let mut settled = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled.clear();
        for id in &ids {
            let (_, s) = api(a.addr, "GET", &format!("/api/schedules/{id}"), Value::Null)
                .await
                .unwrap();
            let Some(occ) = s["occurrences"][0]["id"].as_i64() else {
                break;
            };
            let (_, o) = api(
                b.addr,
                "GET",
                &format!("/api/occurrences/{occ}"),
                Value::Null,
            )
            .await
            .unwrap();
            if o["bot"]["status"] == "failed" {
                settled.push(o);
            }
        }
        if settled.len() == ids.len() {
            break;
        }
    }
    assert_eq!(
        settled.len(),
        ids.len(),
        "not every meeting got its attempt"
    );
    // A few more ticks of both: nothing changes.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut nodes = std::collections::BTreeSet::new();
    for o in &settled {
        let id = o["id"].as_i64().unwrap();
        let (_, o) = api(
            a.addr,
            "GET",
            &format!("/api/occurrences/{id}"),
            Value::Null,
        )
        .await
        .unwrap();
        let history: Vec<&str> = o["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["to"].as_str().unwrap())
            .collect();
        assert_eq!(history, ["ready"], "one status change, made once: {o}");
        let log: Vec<String> = o["auto_join_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("{}:{}", l["attempt"], l["outcome"].as_str().unwrap()))
            .collect();
        assert_eq!(log, ["1:dispatched", "1:failed"], "one attempt: {o}");
        assert_eq!(o["bot"]["reason"], "model_missing", "{o}");
        assert_eq!(o["bot"]["attempts"], 1, "{o}");
        nodes.insert(o["history"][0]["node"].as_str().unwrap().to_owned());
    }
    eprintln!(
        "status changes made by {} process(es): {nodes:?}",
        nodes.len()
    );
}
