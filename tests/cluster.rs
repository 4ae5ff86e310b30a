//! Several real `conclave serve` processes on one machine, one Redis (127.0.0.1:6379, or
//! `CONCLAVE_TEST_REDIS_URL`) and one database (a fresh PostgreSQL schema when
//! `CONCLAVE_TEST_POSTGRES_URL` is set, as in CI; a shared SQLite file otherwise): a member
//! whose socket is on one node and a member on the room's node hear each other; nodes racing
//! to place the same rooms agree on one owner each; killing the room's node with SIGKILL
//! moves the room to a live node when its members rejoin; a Redis outage (a proxy in front
//! of the real Redis, cut) leaves running rooms forwarding and refuses joins that need the
//! cluster with a clear error, until Redis is back.

mod common;

use common::client::TestClient;
use common::{API_KEY, API_SECRET, free_port, token, ws};
use conclave_signaling::{ErrorCode, ServerMessage};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Short, so that a killed node is noticed within a test's patience (default 5 s).
const NODE_TTL_MS: u64 = 1500;

fn redis_url() -> String {
    std::env::var("CONCLAVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One cluster's shared pieces: a key prefix of its own in the shared Redis, one database.
struct Cluster {
    prefix: String,
    db: String,
    dir: std::path::PathBuf,
}

impl Cluster {
    async fn new() -> Cluster {
        let tag = conclave::ids::random_id(8).to_lowercase();
        let dir = std::env::temp_dir().join(format!("conclave-cluster-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = match std::env::var("CONCLAVE_TEST_POSTGRES_URL") {
            Ok(base) => common::fresh_pg_schema(&base).await,
            Err(_) => format!("sqlite://{}/shared.db?mode=rwc", dir.display()),
        };
        Cluster {
            prefix: format!("conclave-test-{tag}"),
            db,
            dir,
        }
    }

    fn node(&self, id: &str) -> Node {
        self.node_with(id, &redis_url(), &[])
    }

    fn node_with(&self, id: &str, redis: &str, extra: &[&str]) -> Node {
        let port = free_port();
        let log = self.dir.join(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_conclave"))
            .arg("serve")
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--udp-ip",
                "127.0.0.1",
                "--udp-port-min",
                "0",
                "--udp-port-max",
                "0",
            ])
            .args(["--turn-enabled", "false"])
            .args(if extra.contains(&"--transcription") {
                &[][..]
            } else {
                &["--transcription", "false"][..]
            })
            .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
            .args(["--database-url", &self.db])
            .args(["--redis-url", redis, "--cluster-prefix", &self.prefix])
            .args(["--node-id", id, "--node-ttl-ms", &NODE_TTL_MS.to_string()])
            .args(if extra.contains(&"--scheduler-tick-ms") {
                &[][..]
            } else {
                &["--scheduler-tick-ms", "0"][..]
            })
            .args(["--log-level", "info"])
            .args(extra)
            .arg("--data-dir")
            .arg(self.dir.join(id))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
            .spawn()
            .expect("conclave runs");
        Node {
            child,
            http: format!("127.0.0.1:{port}").parse().unwrap(),
            id: id.to_owned(),
            log,
        }
    }
}

struct Node {
    child: Child,
    http: SocketAddr,
    id: String,
    log: std::path::PathBuf,
}

impl Node {
    /// Waits until the node listens (it has migrated the shared database by then: nodes are
    /// started one after the other, as SQLite migrations must not race).
    async fn listening(self) -> Node {
        let ok = common::eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&self.http, Duration::from_millis(200)).is_ok()
        })
        .await;
        assert!(ok, "node {} never listened:\n{}", self.id, self.log_tail());
        self
    }

    /// Waits until the node answers and sees `nodes` live nodes (itself included).
    async fn ready(&self, nodes: usize) {
        let what = format!("node {} to see {nodes} nodes", self.id);
        common::poll_until(
            Duration::from_secs(15),
            Duration::from_millis(100),
            &what,
            || async {
                let (status, body) = get(self.http, "/api/nodes").await;
                let seen = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["nodes"].as_array().map(|n| n.len()))
                    .unwrap_or(0);
                if status == 200 && seen == nodes {
                    Ok(())
                } else {
                    Err(format!(
                        "{seen} seen ({status} {body})\n{}",
                        self.log_tail()
                    ))
                }
            },
        )
        .await
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no goodbye, no cleanup
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn stats(&self) -> serde_json::Value {
        let (_, body) = get(self.http, "/api/stats").await;
        serde_json::from_str(&body).unwrap_or_default()
    }

    async fn metric(&self, name: &str) -> u64 {
        let (_, body) = get(self.http, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::http(addr, "GET", path, Some(&common::api_key_auth()), "").await
}

/// Which node Redis says the room is on.
async fn owner_of(prefix: &str, room: &str) -> Option<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(format!("{prefix}:room:{room}"))
        .query_async(&mut con)
        .await
        .unwrap()
}

/// Joins over a bare WebSocket and returns the first server message (a join's answer).
async fn first_answer(http: SocketAddr, room: &str, identity: &str) -> ServerMessage {
    let mut ws = ws::join(http, room, &token(room, identity)).await;
    ws::wait_for(&mut ws, 15, |_| true)
        .await
        .expect("an answer in time")
}

/// Joins through `node` until the answer is `joined` (the room may be coming back elsewhere).
async fn joins_eventually(node: &Node, room: &str, identity: &str, timeout: Duration, what: &str) {
    common::poll_until(timeout, Duration::from_millis(300), what, || async {
        match first_answer(node.http, room, identity).await {
            ServerMessage::Joined { .. } => Ok(()),
            other => Err(format!("{other:?}\n{}", node.log_tail())),
        }
    })
    .await
}

/// Waits until `listener` has received audio and video from `publisher`, and more of it
/// over half a second (media flows, not a burst that stopped).
async fn hears(listener: &TestClient, publisher: &TestClient, what: &str) {
    let from = &publisher.participant_id;
    let ok = common::eventually(Duration::from_secs(20), || {
        let r = listener.received_from(from);
        r.audio_packets > 10 && r.video_packets > 10
    })
    .await;
    assert!(ok, "{what}: no media ({:?})", listener.received_from(from));
    let before = listener.received_from(from).audio_packets;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = listener.received_from(from).audio_packets;
    assert!(
        after > before + 10,
        "{what}: media stopped ({before} then {after})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_socket_is_on_another_node_hears_and_is_heard() {
    let cluster = Cluster::new().await;
    let a = cluster.node("node-a").listening().await;
    let b = cluster.node("node-b").listening().await;
    a.ready(2).await;
    b.ready(2).await;

    // Ada joins through B: the room is placed on B (least loaded, B on a tie).
    let ada = TestClient::join(b.http, "crossing", "ada", &token("crossing", "ada"), true).await;
    assert_eq!(
        owner_of(&cluster.prefix, "crossing").await.as_deref(),
        Some("node-b")
    );
    // Bo's socket lands on A: A relays Bo's signaling to B; the media goes to B directly.
    let bo = TestClient::join(a.http, "crossing", "bo", &token("crossing", "bo"), true).await;
    hears(
        &ada,
        &bo,
        "ada (room's node) hearing bo (socket on the other node)",
    )
    .await;
    hears(&bo, &ada, "bo hearing ada").await;

    assert_eq!(b.stats().await["participants"], 2, "both members are B's");
    assert_eq!(
        a.stats().await["participants"],
        0,
        "A holds only Bo's socket"
    );
    assert_eq!(a.metric("conclave_cluster_relayed_sessions_total").await, 1);
    assert_eq!(b.metric("conclave_cluster_hosted_sessions_total").await, 1);
    let (_, nodes) = get(a.http, "/api/nodes").await;
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-a", "node-b"], "{nodes}");
    assert_eq!(nodes["cluster"], true);

    // Bo leaves through A: the session on B ends and B says so to Ada.
    let mut ada = ada;
    bo.leave().await;
    let left = ada
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, ServerMessage::ParticipantLeft { .. })
        })
        .await;
    assert!(left.is_some(), "ada never heard that bo left");
    common::poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "bo's session on B to end",
        || async {
            let stats = b.stats().await;
            if stats["participants"] == 1 {
                Ok(())
            } else {
                Err(stats.to_string())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_racing_to_place_the_same_rooms_agree_on_one_owner_each() {
    let cluster = Cluster::new().await;
    let a = cluster.node("race-a").listening().await;
    let b = cluster.node("race-b").listening().await;
    let c = cluster.node("race-c").listening().await;
    for n in [&a, &b, &c] {
        n.ready(3).await;
    }
    // Every node is equally loaded and prefers itself on a tie: each one tries to place
    // every room on itself, at the same moment as the other two.
    let rooms: Vec<String> = (0..8).map(|i| format!("contested-{i}")).collect();
    let mut creates = Vec::new();
    for room in &rooms {
        for n in [&a, &b, &c] {
            let (http, room) = (n.http, room.clone());
            creates.push(tokio::spawn(async move {
                let admin = common::token_with(
                    &room,
                    "admin",
                    conclave::auth::Grants {
                        room_admin: true,
                        ..Default::default()
                    },
                    Duration::from_secs(60),
                    std::time::SystemTime::now(),
                );
                let body = serde_json::json!({ "name": room }).to_string();
                common::http(
                    http,
                    "POST",
                    "/api/rooms",
                    Some(&format!("Bearer {admin}")),
                    &body,
                )
                .await
            }));
        }
    }
    for c in creates {
        let (status, body) = c.await.unwrap();
        assert!(status == 201 || status == 200, "{status} {body}");
    }
    let mut placed = std::collections::HashMap::<String, usize>::new();
    for room in &rooms {
        let owner = owner_of(&cluster.prefix, room).await.expect("placed");
        *placed.entry(owner).or_default() += 1;
    }
    // Each node runs exactly the rooms Redis names it for: no room opened twice.
    let mut total = 0;
    for n in [&a, &b, &c] {
        let here = n.stats().await["rooms"].as_u64().unwrap() as usize;
        assert_eq!(
            here,
            placed.get(&n.id).copied().unwrap_or(0),
            "{placed:?} vs {} on {}",
            here,
            n.id
        );
        total += here;
    }
    assert_eq!(total, rooms.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_rooms_node_moves_the_room_to_a_live_node() {
    let cluster = Cluster::new().await;
    let a = cluster.node("kill-a").listening().await;
    let mut b = cluster.node("kill-b").listening().await;
    let c = cluster.node("kill-c").listening().await;
    for n in [&a, &b, &c] {
        n.ready(3).await;
    }
    let ada = TestClient::join(b.http, "sturdy", "ada", &token("sturdy", "ada"), true).await;
    assert_eq!(
        owner_of(&cluster.prefix, "sturdy").await.as_deref(),
        Some("kill-b")
    );
    let mut bo = TestClient::join(a.http, "sturdy", "bo", &token("sturdy", "bo"), true).await;
    hears(&bo, &ada, "bo through A hearing ada on B").await;

    b.kill9();
    // Bo's socket is on A, which notices B's registration lapse and ends the relayed session
    // with a reason; Ada's socket died with B.
    let cut = bo
        .wait_for(Duration::from_millis(NODE_TTL_MS * 4), |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }
            )
        })
        .await;
    assert!(cut.is_some(), "bo was not told that the room's node died");
    drop(ada);
    drop(bo);

    // Both rejoin, through C and A: the room comes back on a live node.
    let ada = TestClient::join(c.http, "sturdy", "ada", &token("sturdy", "ada"), true).await;
    let bo = TestClient::join(a.http, "sturdy", "bo", &token("sturdy", "bo"), true).await;
    let owner = owner_of(&cluster.prefix, "sturdy").await;
    assert!(
        matches!(owner.as_deref(), Some("kill-a" | "kill-c")),
        "room placed on {owner:?}"
    );
    hears(&ada, &bo, "ada hearing bo after the move").await;
    hears(&bo, &ada, "bo hearing ada after the move").await;
    let took = a.metric("conclave_cluster_rooms_taken_over_total").await
        + c.metric("conclave_cluster_rooms_taken_over_total").await;
    assert_eq!(took, 1, "one node took the room over");
    a.ready(2).await;
}

/// A TCP proxy in front of the real Redis that can be cut (every connection reset, new ones
/// refused) and restored.
struct RedisProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    async fn start() -> RedisProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (up, conns) = (up.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    }));
                }
            })
        };
        RedisProxy {
            addr,
            up,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_rooms_forwarding_and_refuses_joins_that_need_the_cluster() {
    let cluster = Cluster::new().await;
    let proxy = RedisProxy::start().await;
    let a = cluster
        .node_with("out-a", &proxy.url(), &[])
        .listening()
        .await;
    let b = cluster
        .node_with("out-b", &proxy.url(), &[])
        .listening()
        .await;
    a.ready(2).await;
    b.ready(2).await;
    let ada = TestClient::join(a.http, "steady", "ada", &token("steady", "ada"), true).await;
    let cy = TestClient::join(a.http, "steady", "cy", &token("steady", "cy"), true).await;
    let mut bo = TestClient::join(b.http, "steady", "bo", &token("steady", "bo"), true).await;
    hears(&ada, &cy, "before the outage").await;
    hears(&bo, &ada, "bo (relayed) before the outage").await;

    proxy.cut();
    // The relayed session rode on the bus, which is gone: Bo is told to join again.
    let cut = bo
        .wait_for(Duration::from_secs(10), |m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::Unavailable,
                    ..
                }
            )
        })
        .await;
    assert!(
        cut.is_some(),
        "bo's relayed session did not end when the bus went"
    );
    // The room on A keeps forwarding between its members on A.
    hears(&ada, &cy, "ada hearing cy during the outage").await;
    hears(&cy, &ada, "cy hearing ada during the outage").await;
    // A new join to A's room through B cannot be routed: a clear error, not a hang.
    match first_answer(b.http, "steady", "dee").await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Unavailable, "{message}");
            assert!(message.contains("cluster"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // A still admits members to the room it runs.
    let dee = TestClient::join(a.http, "steady", "dee", &token("steady", "dee"), true).await;
    hears(
        &dee,
        &ada,
        "a member joining the running room during the outage",
    )
    .await;

    proxy.restore();
    // Once Redis is back and both nodes have registered again, B routes to A's room again.
    a.ready(2).await;
    b.ready(2).await;
    joins_eventually(
        &b,
        "steady",
        "eve",
        Duration::from_secs(20),
        "joins through B to work after Redis came back",
    )
    .await;
    assert!(a.metric("conclave_cluster_heartbeat_failures_total").await > 0);
    drop((ada, cy, dee));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_takes_no_new_rooms_and_keeps_its_own() {
    let cluster = Cluster::new().await;
    let a = cluster.node("drain-a").listening().await;
    let b = cluster
        .node_with("drain-b", &redis_url(), &["--drain"])
        .listening()
        .await;
    a.ready(2).await;
    b.ready(2).await;
    // B drains from the start: a room opened through B goes to A.
    let ada = TestClient::join(b.http, "fresh", "ada", &token("fresh", "ada"), true).await;
    assert_eq!(
        owner_of(&cluster.prefix, "fresh").await.as_deref(),
        Some("drain-a")
    );
    assert_eq!(b.stats().await["draining"], true);
    // Undrain B, open a room on it, drain it again: the room goes on, new ones go to A.
    let undrain = serde_json::json!({ "draining": false }).to_string();
    let auth = common::api_key_auth();
    let (status, _) = common::http(
        b.http,
        "POST",
        "/api/nodes/self/drain",
        Some(&auth),
        &undrain,
    )
    .await;
    assert_eq!(status, 200);
    common::poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "A to see B undrained",
        || async {
            let (_, body) = get(a.http, "/api/nodes").await;
            if body.contains("\"draining\":false") && !body.contains("\"draining\":true") {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    // A now has a member, B none: B is the least loaded for a new room.
    let bo = TestClient::join(b.http, "kept", "bo", &token("kept", "bo"), true).await;
    assert_eq!(
        owner_of(&cluster.prefix, "kept").await.as_deref(),
        Some("drain-b")
    );
    let drain = serde_json::json!({ "draining": true }).to_string();
    let (status, _) =
        common::http(b.http, "POST", "/api/nodes/self/drain", Some(&auth), &drain).await;
    assert_eq!(status, 200);
    let (status, _) = common::http(b.http, "POST", "/api/nodes/self/drain", None, &drain).await;
    assert_eq!(status, 401, "draining needs the API key");
    let cy = TestClient::join(a.http, "kept", "cy", &token("kept", "cy"), true).await;
    hears(&cy, &bo, "a member joining a draining node's running room").await;
    assert_eq!(b.stats().await["participants"], 2);
    drop((ada, bo, cy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_whose_members_landed_on_different_nodes_keeps_one_lifecycle() {
    let cluster = Cluster::new().await;
    let grace = ["--host-grace-secs", "1"];
    let a = cluster
        .node_with("meet-a", &redis_url(), &grace)
        .listening()
        .await;
    let b = cluster
        .node_with("meet-b", &redis_url(), &grace)
        .listening()
        .await;
    a.ready(2).await;
    b.ready(2).await;
    let created = common::http_json(
        a.http,
        "POST",
        "/api/meetings",
        None,
        serde_json::json!({"name": "split", "host_name": "Hana"}),
    )
    .await;
    let code = created["code"].as_str().expect("a meeting").to_owned();
    let host_auth = created["host_token"].as_str().unwrap().to_owned();
    let join = |node: SocketAddr, name: &'static str, auth: Option<String>| {
        let code = code.clone();
        async move {
            let v = common::http_json(
                node,
                "POST",
                &format!("/api/meetings/{code}/join"),
                auth.as_deref(),
                serde_json::json!({"name": name}),
            )
            .await;
            v["token"]
                .as_str()
                .unwrap_or_else(|| panic!("join failed: {v}"))
                .to_owned()
        }
    };

    // Gus's socket is on B, where he waits: the meeting has not started.
    let mut gus = ws::join(b.http, &code, &join(b.http, "Gus", None).await).await;
    let waiting = ws::wait_for(&mut gus, 10, |_| true).await;
    assert!(
        matches!(waiting, Some(ServerMessage::Waiting { .. })),
        "{waiting:?}"
    );
    // The host arrives through A: the room is placed (on A), the meeting starts there, and B
    // hears of it and lets Gus in, relayed to the room's node.
    let host = TestClient::join(
        a.http,
        &code,
        "Hana",
        &join(a.http, "Hana", Some(host_auth)).await,
        true,
    )
    .await;
    let joined = ws::wait_for(&mut gus, 10, |m| matches!(m, ServerMessage::Joined { .. })).await;
    assert!(
        matches!(&joined, Some(ServerMessage::Joined { participants, .. }) if participants.len() == 1),
        "gus waiting on B was not let in when the host started the meeting on A: {joined:?}"
    );
    let owner = owner_of(&cluster.prefix, &code).await.expect("placed");
    // A second guest through B, with media: both hear each other across the nodes.
    let ivy = TestClient::join(b.http, &code, "Ivy", &join(b.http, "Ivy", None).await, true).await;
    hears(&ivy, &host, "ivy (socket on B) hearing the host (on A)").await;
    hears(&host, &ivy, "the host hearing ivy").await;
    // The room's node keeps the lifecycle: the host leaves, and after the grace period the
    // earliest guest becomes host, announced to the sockets on B.
    host.leave().await;
    let changed = ws::wait_for(&mut gus, 15, |m| {
        matches!(m, ServerMessage::HostChanged { .. })
    })
    .await;
    let Some(ServerMessage::HostChanged { identity, .. }) = changed else {
        panic!("no host hand-over reached B: {changed:?}\nroom node {owner}")
    };
    let info = common::http_json(
        b.http,
        "GET",
        &format!("/api/meetings/{code}"),
        None,
        serde_json::json!({}),
    )
    .await;
    assert_eq!(info["status"], "active", "{info}");
    assert_eq!(
        info["host_identity"].as_str(),
        Some(identity.as_str()),
        "{info}"
    );
    // Everyone leaves: the meeting ends (once, on the room's node), for every node.
    drop(gus);
    ivy.leave().await;
    common::poll_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        "the empty meeting to end",
        || async {
            let info = common::http_json(
                a.http,
                "GET",
                &format!("/api/meetings/{code}"),
                None,
                serde_json::json!({}),
            )
            .await;
            if info["status"] == "ended" {
                Ok(())
            } else {
                Err(info.to_string())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_transcript_lines_outlive_the_node_that_wrote_them() {
    use common::speech::{speak_48k, vad_files, whisper_model, word_error_rate};
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let vad = tokio::task::spawn_blocking(vad_files).await.unwrap();
    let cluster = Cluster::new().await;
    let transcribing = [
        "--transcription".to_owned(),
        "true".to_owned(),
        "--whisper-model".to_owned(),
        model.display().to_string(),
        "--silero-model".to_owned(),
        vad.model.display().to_string(),
        "--onnxruntime".to_owned(),
        vad.runtime.display().to_string(),
    ];
    let args: Vec<&str> = transcribing.iter().map(String::as_str).collect();
    // The room's node transcribes; the speaker's socket is on the other node.
    let mut a = cluster
        .node_with("words-a", &redis_url(), &args)
        .listening()
        .await;
    let b = cluster.node("words-b").listening().await;
    a.ready(2).await;
    b.ready(2).await;
    let host = TestClient::join(a.http, "minutes", "ana", &token("minutes", "ana"), false).await;
    assert_eq!(
        owner_of(&cluster.prefix, "minutes").await.as_deref(),
        Some("words-a")
    );
    let (speaker, mic) =
        TestClient::join_live(b.http, "minutes", "Sam Okafor", &token("minutes", "sam")).await;
    // Speak once the room's node hears the microphone (its audio reaches A, not B).
    common::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "the speaker's media to reach A",
        || async {
            let n = a.metric("conclave_rtp_packets_in_total").await;
            if n >= 50 {
                Ok(())
            } else {
                Err(format!("{n} packets"))
            }
        },
    )
    .await;
    let sentence = "Please send the signed contract to our legal team today.";
    let dir = std::env::temp_dir();
    mic.say(&speak_48k(sentence, &dir));
    let path = "/api/rooms/minutes/transcript";
    let lines = |body: &str| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["lines"].as_array().cloned())
            .unwrap_or_default()
    };
    // Stored by A into the shared database: B lists it too.
    let stored = common::poll_until(
        Duration::from_secs(45),
        Duration::from_millis(250),
        "a line to be stored",
        || async {
            let (_, body) = get(b.http, path).await;
            let l = lines(&body);
            if l.is_empty() {
                Err(format!("{body}\n{}", a.log_tail()))
            } else {
                Ok(l)
            }
        },
    )
    .await;
    assert_eq!(stored[0]["speaker_name"], "Sam Okafor", "{stored:?}");
    let heard = stored[0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(word_error_rate(sentence, &heard) <= 0.3, "heard {heard:?}");

    // The room's node dies; the lines it stored stay, and the meeting goes on on B.
    a.kill9();
    drop(host);
    drop(speaker);
    let (_, body) = get(b.http, path).await;
    assert_eq!(
        lines(&body).len(),
        stored.len(),
        "lines lost with their node: {body}"
    );
    let back = Duration::from_millis(NODE_TTL_MS * 4) + Duration::from_secs(10);
    joins_eventually(&b, "minutes", "ana", back, "the room to come back on B").await;
    assert_eq!(
        owner_of(&cluster.prefix, "minutes").await.as_deref(),
        Some("words-b")
    );
    let (_, body) = get(b.http, path).await;
    assert_eq!(
        lines(&body)[0]["text"].as_str(),
        Some(heard.as_str()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduled_agent_is_tended_once_by_its_rooms_node() {
    let cluster = Cluster::new().await;
    let tick = ["--scheduler-tick-ms", "100"];
    let a = cluster
        .node_with("plan-a", &redis_url(), &tick)
        .listening()
        .await;
    let b = cluster
        .node_with("plan-b", &redis_url(), &tick)
        .listening()
        .await;
    a.ready(2).await;
    b.ready(2).await;
    // Meetings whose agent is due now (start in 45 s, one-minute join buffer). No Whisper
    // model here, so each attempt fails with model_missing and is not retried: one attempt per
    // meeting, made by the node its room is placed on, is the only right outcome.
    let now = conclave::clock::now_ms();
    let start = chrono::DateTime::from_timestamp_millis((now / 1_000 + 45) * 1_000)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let auth = common::api_key_auth();
    let mut ids = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { a.http } else { b.http };
        let body = serde_json::json!({"title": format!("Plan {i}"), "host_identity": format!("host-{i}"),
            "time_zone": "UTC", "start": start, "duration_minutes": 30, "auto_join": true});
        let (status, text) = common::http(
            node,
            "POST",
            "/api/schedules",
            Some(&auth),
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 201, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        ids.push(v["id"].as_i64().unwrap());
    }
    let occurrence = |id: i64, node: SocketAddr| {
        let auth = auth.clone();
        async move {
            let (_, s) = common::http(
                node,
                "GET",
                &format!("/api/schedules/{id}"),
                Some(&auth),
                "",
            )
            .await;
            let s: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
            let occ = s["occurrences"][0]["id"].as_i64()?;
            let (_, o) = common::http(
                node,
                "GET",
                &format!("/api/occurrences/{occ}"),
                Some(&auth),
                "",
            )
            .await;
            Some((
                s["meeting"]["code"].as_str()?.to_owned(),
                serde_json::from_str::<serde_json::Value>(&o).ok()?,
            ))
        }
    };
    common::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(200),
        "every agent to be tended",
        || async {
            let mut failed = 0;
            for id in &ids {
                if let Some((_, o)) = occurrence(*id, a.http).await
                    && o["bot"]["status"] == "failed"
                {
                    failed += 1;
                }
            }
            if failed == ids.len() {
                Ok(())
            } else {
                Err(format!("{failed} of {} tended", ids.len()))
            }
        },
    )
    .await;
    // More ticks of both: nothing changes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let (code, o) = occurrence(*id, b.http).await.expect("an occurrence");
        let log: Vec<(String, String)> = o["auto_join_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["outcome"].as_str().unwrap_or("").to_owned(),
                    l["node"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let owner = owner_of(&cluster.prefix, &code)
            .await
            .expect("the meeting's room was placed");
        assert_eq!(
            log,
            [
                ("dispatched".to_owned(), owner.clone()),
                ("failed".to_owned(), owner.clone())
            ],
            "one attempt, by the room's node {owner}: {o}"
        );
        *by_node.entry(owner).or_default() += 1;
    }
    eprintln!("agents tended per node: {by_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_nodes_bus_is_dropped_and_counted_and_the_node_goes_on() {
    let cluster = Cluster::new().await;
    let a = cluster.node("junk-a").listening().await;
    a.ready(1).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{}:bus:junk-a", cluster.prefix);
    let junk = [
        "not json at all".to_owned(),
        r#"{"t":"warp_drive","sid":"x"}"#.to_owned(),
        // Well-formed, for sessions that do not exist.
        r#"{"t":"client","sid":"nobody","msg":{"v":1,"type":"ping"}}"#.to_owned(),
        r#"{"t":"joined","sid":"nobody","participant_id":"PA_x"}"#.to_owned(),
        "x".repeat(200_000),
    ];
    for payload in &junk {
        let listeners: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(payload)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(listeners, 1, "the node listens on its channel");
    }
    common::poll_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "every junk message to be counted as dropped",
        || async {
            let n = a.metric("conclave_cluster_bus_dropped_total").await;
            if n >= junk.len() as u64 {
                Ok(())
            } else {
                Err(format!("{n} dropped"))
            }
        },
    )
    .await;
    // The node still places and serves rooms.
    let ada = TestClient::join(
        a.http,
        "after-junk",
        "ada",
        &token("after-junk", "ada"),
        true,
    )
    .await;
    let bo = TestClient::join(a.http, "after-junk", "bo", &token("after-junk", "bo"), true).await;
    hears(&ada, &bo, "after junk on the bus").await;
}
