//! Janus 1.1 (VideoRoom plugin over its HTTP API) as a load target, started by
//! `scripts/janus/start.sh` with a configuration that script writes. Each client has its own
//! session and plugin handle; events come from a long poll per session. See
//! scripts/janus/API-NOTES.md for the request and event shapes.

use crate::peer::{self, Peer};
use crate::{Join, Role};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCSessionDescription};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Janus.
pub struct Server {
    /// Its process id.
    pub pid: u32,
    http: SocketAddr,
    /// The one address Janus gathers on (it never uses loopback); clients bind there too.
    ice_ip: std::net::IpAddr,
    dir: PathBuf,
    /// Rooms created so far, by name.
    rooms: tokio::sync::Mutex<HashMap<String, u64>>,
    next_room: AtomicU64,
    transaction: AtomicU64,
    admin: Mutex<Option<(u64, u64)>>,
}

impl Server {
    /// Starts Janus with the script, pinned to `cpu` if given.
    pub async fn start(dir: &Path, cpu: Option<usize>) -> anyhow::Result<Server> {
        let script = script_path()?;
        let port = crate::conclave::free_port()?;
        let _ = std::fs::remove_dir_all(dir);
        let mut cmd = tokio::process::Command::new(&script);
        cmd.arg("--dir")
            .arg(dir)
            .args(["--http-port", &port.to_string()]);
        if let Some(c) = cpu {
            cmd.args(["--cpu", &c.to_string()]);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .context("janus start script timed out")??;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid: u32 = std::fs::read_to_string(dir.join("janus.pid"))?
            .trim()
            .parse()?;
        let cfg = std::fs::read_to_string(dir.join("janus.jcfg"))?;
        let ice_ip = cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("ice_enforce_list = "))
            .map(|v| v.trim_matches('"').to_string())
            .context("no ice_enforce_list in janus.jcfg")?
            .parse()
            .context("ice_enforce_list is not one address")?;
        Ok(Server {
            pid,
            http: format!("127.0.0.1:{port}").parse()?,
            ice_ip,
            dir: dir.to_path_buf(),
            rooms: Default::default(),
            next_room: AtomicU64::new(1000 + (crate::stats::now_ns() % 1000) * 1000),
            transaction: AtomicU64::new(1),
            admin: Mutex::new(None),
        })
    }

    /// Stops it.
    pub async fn stop(self) {
        if let Ok(start) = script_path() {
            let stop = start.with_file_name("stop.sh");
            let _ = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::process::Command::new(stop)
                    .arg("--dir")
                    .arg(&self.dir)
                    .output(),
            )
            .await;
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> anyhow::Result<Value> {
        body["transaction"] = json!(format!(
            "t{}",
            self.transaction.fetch_add(1, Ordering::Relaxed)
        ));
        let (status, text) = crate::http::request(
            self.http,
            "POST",
            path,
            Some(&body.to_string()),
            REQUEST_TIMEOUT,
        )
        .await?;
        if status != 200 {
            bail!("janus {path}: HTTP {status}: {text}");
        }
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("janus reply {text}"))?;
        if v["janus"] == "error" {
            bail!("janus {path}: {}", v["error"]);
        }
        Ok(v)
    }

    async fn session(&self) -> anyhow::Result<(u64, u64)> {
        let s = self.post("/janus", json!({"janus": "create"})).await?;
        let session = s["data"]["id"].as_u64().context("no session id")?;
        let h = self
            .post(
                &format!("/janus/{session}"),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        let handle = h["data"]["id"].as_u64().context("no handle id")?;
        Ok((session, handle))
    }

    /// The numeric room for `name`, created on first use.
    async fn room(&self, name: &str) -> anyhow::Result<u64> {
        let mut rooms = self.rooms.lock().await;
        if let Some(id) = rooms.get(name) {
            return Ok(*id);
        }
        let admin = *self.admin.lock().unwrap();
        let (session, handle) = match admin {
            Some(a) => a,
            None => {
                let a = self.session().await?;
                *self.admin.lock().unwrap() = Some(a);
                a
            }
        };
        let id = self.next_room.fetch_add(1, Ordering::Relaxed);
        let r = self
            .post(
                &format!("/janus/{session}/{handle}"),
                json!({"janus": "message", "body": {
                    "request": "create", "room": id, "permanent": false,
                    "publishers": 100, "bitrate": 0, "audiocodec": "opus", "videocodec": "vp8",
                    "notify_joining": false, "audiolevel_event": false,
                }}),
            )
            .await?;
        if r["plugindata"]["data"]["videoroom"] != "created" {
            bail!("janus room create: {r}");
        }
        rooms.insert(name.to_string(), id);
        Ok(id)
    }

    /// Joins one client; a publisher's feed id comes back with it.
    pub async fn join(&self, j: Join) -> anyhow::Result<(Peer, Option<u64>)> {
        let room = self.room(&j.room).await?;
        let opened = Instant::now();
        if let Role::Subscriber { stats, .. } = &j.role {
            stats.opened(opened);
        }
        let (session, handle) = self.session().await?;
        let events = self.poll_events(session);
        let path = format!("/janus/{session}/{handle}");
        match j.role {
            Role::Publisher {
                traffic,
                streams,
                sent,
                window,
                ..
            } => {
                let mut p = peer::build(None, self.ice_ip).await?;
                peer::add_senders(&mut p, &j.identity, traffic, streams, sent, window).await?;
                let offer = p.pc.create_offer(None).await?;
                p.pc.set_local_description(offer).await?;
                let sdp = p.pc.local_description().await.context("no offer")?.sdp;
                self.post(
                    &path,
                    json!({"janus": "message",
                        "body": {"request": "joinandconfigure", "ptype": "publisher", "room": room,
                                 "display": j.identity, "audio": true, "video": true},
                        "jsep": {"type": "offer", "sdp": sdp}}),
                )
                .await?;
                let mut events = events;
                let ev = wait_event(&mut events, |e| e["jsep"]["type"] == "answer").await?;
                let feed = ev["plugindata"]["data"]["id"]
                    .as_u64()
                    .context("no publisher id")?;
                let sdp = ev["jsep"]["sdp"]
                    .as_str()
                    .context("no answer sdp")?
                    .to_string();
                p.pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                    .await?;
                self.finish(&mut p, path, events).await;
                Ok((p, Some(feed)))
            }
            Role::Subscriber { stats, window, .. } => {
                let mut p = peer::build(Some((stats, window)), self.ice_ip).await?;
                let streams: Vec<Value> = j.feeds.iter().map(|f| json!({"feed": f})).collect();
                self.post(
                    &path,
                    json!({"janus": "message",
                        "body": {"request": "join", "ptype": "subscriber", "room": room,
                                 "streams": streams}}),
                )
                .await?;
                let mut events = events;
                let ev = wait_event(&mut events, |e| e["jsep"]["type"] == "offer").await?;
                let sdp = ev["jsep"]["sdp"]
                    .as_str()
                    .context("no offer sdp")?
                    .to_string();
                p.pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
                    .await?;
                let answer = p.pc.create_answer(None).await?;
                p.pc.set_local_description(answer).await?;
                let sdp = p.pc.local_description().await.context("no answer")?.sdp;
                self.post(
                    &path,
                    json!({"janus": "message", "body": {"request": "start"},
                           "jsep": {"type": "answer", "sdp": sdp}}),
                )
                .await?;
                self.finish(&mut p, path, events).await;
                Ok((p, None))
            }
        }
    }

    /// Trickles the client's candidates to Janus and applies Janus's trickled ones.
    async fn finish(&self, p: &mut Peer, path: String, mut events: mpsc::Receiver<Value>) {
        let mut candidates = std::mem::replace(&mut p.candidates, mpsc::unbounded_channel().1);
        let me = Trickler {
            http: self.http,
            path,
            transaction: AtomicU64::new(1),
        };
        p.tasks.push(tokio::spawn(async move {
            while let Some(c) = candidates.recv().await {
                let body = json!({"janus": "trickle", "candidate": {
                    "candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index,
                }});
                if let Err(e) = me.post(body).await {
                    eprintln!("janus trickle: {e:#}");
                }
            }
        }));
        let pc = p.pc.clone();
        p.tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if ev["janus"] == "trickle" {
                    let c = &ev["candidate"];
                    if let Some(candidate) = c["candidate"].as_str() {
                        let _ = pc
                            .add_ice_candidate(RTCIceCandidateInit {
                                candidate: candidate.to_string(),
                                sdp_mid: c["sdpMid"].as_str().map(String::from),
                                sdp_mline_index: c["sdpMLineIndex"].as_u64().map(|i| i as u16),
                                ..Default::default()
                            })
                            .await;
                    }
                }
            }
        }));
    }

    /// Long-polls a session's events into a channel (this also keeps the session alive).
    fn poll_events(&self, session: u64) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(64);
        let http = self.http;
        tokio::spawn(async move {
            loop {
                let r = crate::http::request(
                    http,
                    "GET",
                    &format!("/janus/{session}?maxev=10"),
                    None,
                    Duration::from_secs(40),
                )
                .await;
                let Ok((200, text)) = r else { break };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let list = match v {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                for ev in list {
                    if ev["janus"] == "keepalive" {
                        continue;
                    }
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

struct Trickler {
    http: SocketAddr,
    path: String,
    transaction: AtomicU64,
}

impl Trickler {
    async fn post(&self, mut body: Value) -> anyhow::Result<()> {
        body["transaction"] = json!(format!(
            "c{}",
            self.transaction.fetch_add(1, Ordering::Relaxed)
        ));
        let (status, text) = crate::http::request(
            self.http,
            "POST",
            &self.path,
            Some(&body.to_string()),
            REQUEST_TIMEOUT,
        )
        .await?;
        if status != 200 || text.contains("\"error\"") {
            bail!("HTTP {status}: {text}");
        }
        Ok(())
    }
}

async fn wait_event(
    events: &mut mpsc::Receiver<Value>,
    want: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no janus event within 10 s")?
            .context("janus event poll ended")?;
        if let Some(err) = ev["plugindata"]["data"]["error"].as_str() {
            bail!("janus: {err}");
        }
        if want(&ev) {
            return Ok(ev);
        }
    }
}

/// scripts/janus/start.sh of this checkout (found from the binary's place in target/).
fn script_path() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CONCLAVE_JANUS_SCRIPT") {
        return Ok(PathBuf::from(p));
    }
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/janus/start.sh");
    let p = PathBuf::from(here);
    if p.exists() {
        return Ok(p);
    }
    bail!("cannot find scripts/janus/start.sh (set CONCLAVE_JANUS_SCRIPT)")
}
