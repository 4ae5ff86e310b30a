//! `conclave-loadtest`: N publishers x M subscribers of webrtc-rs clients in one process
//! against Conclave (and Janus, side by side), reporting join time, delivered packets,
//! added latency, loss and the server's CPU, memory and threads. See docs/performance.md.

mod conclave;
mod http;
mod janus;
mod light;
mod peer;
mod procstat;
mod stats;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use peer::{Client, Sent, Traffic};
use serde_json::json;
use stats::{Histogram, Subscriber, Window};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// One audio publisher, 200 subscribers.
    AudioFanout,
    /// One room of 10 publishers (audio + 500 kbit/s video) and 10 subscribers.
    Meeting,
    /// 50 rooms of one audio publisher and 3 subscribers.
    Rooms,
    /// One video publisher, 100 subscribers.
    Webinar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Conclave,
    Janus,
    /// Both, alternating A B A B.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientKind {
    Webrtc,
    Light,
}

#[derive(Parser, Debug)]
#[command(
    name = "conclave-loadtest",
    about = "Load a Conclave (and a Janus) server with webrtc-rs clients"
)]
struct Args {
    /// Scenario.
    #[arg(long, value_enum, default_value = "audio-fanout")]
    preset: Preset,
    /// Server(s) to run it against.
    #[arg(long, value_enum, default_value = "conclave")]
    target: Target,
    /// Runs per target (A B A B ... with `--target both`).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Rooms (overrides the preset).
    #[arg(long)]
    rooms: Option<usize>,
    /// Conclave as a two-node cluster on this Redis URL: publishers join the room's node,
    /// subscribers join the other node, which relays their signaling (media still goes to the
    /// room's node, whose CPU is the one measured).
    #[arg(long)]
    relay: Option<String>,
    /// Publishers per room (overrides the preset).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers per room (overrides the preset).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Audio packets per second per publisher (overrides the preset; 50 is real Opus).
    #[arg(long)]
    pps: Option<u32>,
    /// Video bitrate per publisher in kbit/s, 0 for none (overrides the preset).
    #[arg(long)]
    video_kbps: Option<u32>,
    /// Milliseconds between two subscribers' joins.
    #[arg(long)]
    join_interval_ms: Option<u64>,
    /// Seconds of measurement once everyone has media.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The `conclave` binary (default: beside this one).
    #[arg(long)]
    conclave_bin: Option<PathBuf>,
    /// The server's media stack (`--media-plane` of `conclave serve`: `webrtc` or `worker`).
    #[arg(long, default_value = "worker")]
    media_plane: String,
    /// Core the server is pinned to (the client takes another); `--no-pin` to not pin.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// Core this client is pinned to.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Do not pin server or client.
    #[arg(long)]
    no_pin: bool,
    /// Where server logs go.
    #[arg(long, default_value = "/tmp")]
    log_dir: PathBuf,
    /// Fail (exit 1) if join p95 exceeds this many ms (for CI).
    #[arg(long)]
    max_join_p95_ms: Option<f64>,
    /// Fail (exit 1) if loss exceeds this fraction (for CI).
    #[arg(long)]
    max_loss: Option<f64>,
    /// Clients send their ICE candidates before their offer (some clients race them).
    #[arg(long)]
    candidates_first: bool,
    /// The clients: `webrtc` (webrtc-rs peer connections, as browsers negotiate) or `light`
    /// (the plane's own ICE, DTLS and in-place SRTP, several times cheaper per packet, for
    /// loads one client core of webrtc-rs cannot carry; Conclave only). With `light`,
    /// subscribers and audio-only publishers are light; video publishers stay webrtc-rs.
    #[arg(long, value_enum, default_value = "webrtc")]
    client: ClientKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Find the server's saturation and measure at half of it (Conclave; use with
    /// `--client light`): the audio rate rises by `--ramp-step` packets/s per
    /// publisher until a step loses more than 1% or uses 95% of the server's core; the
    /// capacity is the last clean step's packets per server CPU-second (what the whole core
    /// forwards), and a last run at half of it reports the latency.
    #[arg(long)]
    saturation: bool,
    /// Light subscribers, under load, read every this many µs instead of being woken per
    /// arrival (see `light::reader::READ_EVERY_US`; 0 waits).
    #[arg(long, default_value_t = 0)]
    read_every_us: u64,
    /// Packets/s per publisher added per ramp step (`--saturation`).
    #[arg(long, default_value_t = 500)]
    ramp_step: u32,
}

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    rooms: usize,
    publishers: usize,
    subscribers: usize,
    traffic: Traffic,
    join_interval: Duration,
}

impl Scenario {
    fn of(a: &Args) -> Scenario {
        let (rooms, publishers, subscribers, video_kbps, join_ms) = match a.preset {
            Preset::AudioFanout => (1, 1, 200, 0, 100),
            Preset::Meeting => (1, 10, 10, 500, 100),
            Preset::Rooms => (50, 1, 3, 0, 20),
            Preset::Webinar => (1, 1, 100, 1200, 100),
        };
        Scenario {
            rooms: a.rooms.unwrap_or(rooms),
            publishers: a.publishers.unwrap_or(publishers),
            subscribers: a.subscribers.unwrap_or(subscribers),
            traffic: Traffic {
                audio_pps: a.pps.unwrap_or(50),
                audio_bytes: 100,
                video_bps: a.video_kbps.unwrap_or(video_kbps) * 1000,
            },
            join_interval: Duration::from_millis(a.join_interval_ms.unwrap_or(join_ms)),
        }
    }
}

/// What one client is in a room.
pub enum Role {
    /// Sends audio (and video).
    Publisher {
        traffic: Traffic,
        streams: (u16, u16),
        sent: (Arc<Sent>, Arc<Sent>),
        window: Arc<Window>,
        /// A light client (`crate::light`; audio only) rather than webrtc-rs.
        light: bool,
    },
    /// Receives every publisher of the room.
    Subscriber {
        stats: Arc<Subscriber>,
        window: Arc<Window>,
        video: bool,
        /// A light client (`crate::light`) rather than webrtc-rs.
        light: bool,
    },
}

/// One client to join.
pub struct Join {
    /// Room name.
    pub room: String,
    /// Identity.
    pub identity: String,
    /// Role.
    pub role: Role,
    /// For Janus subscribers: the publishers' feed ids in this room.
    pub feeds: Vec<u64>,
    /// Send gathered ICE candidates before the offer (as some clients do).
    pub candidates_first: bool,
}

/// A server under test.
enum Server {
    Conclave(conclave::Server),
    /// Two Conclave nodes of one cluster: the room's, and the one subscribers' sockets use.
    Relayed {
        room: conclave::Server,
        edge: conclave::Server,
    },
    Janus(janus::Server),
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Conclave(s) | Server::Relayed { room: s, .. } => s.pid,
            Server::Janus(s) => s.pid,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Server::Conclave(_) => "conclave",
            Server::Relayed { .. } => "conclave-relayed",
            Server::Janus(_) => "janus",
        }
    }
    /// Joins a client; for a Janus publisher also returns its feed id.
    async fn join(&self, j: Join) -> anyhow::Result<(Client, Option<u64>)> {
        match self {
            Server::Conclave(s) => Ok((s.join(j).await?, None)),
            Server::Relayed { room, edge } => match j.role {
                Role::Publisher { .. } => Ok((room.join(j).await?, None)),
                Role::Subscriber { .. } => Ok((edge.join(j).await?, None)),
            },
            Server::Janus(s) => {
                let (p, feed) = s.join(j).await?;
                Ok((Client::Webrtc(p), feed))
            }
        }
    }
    async fn counters(&self) -> serde_json::Value {
        match self {
            Server::Conclave(s) => s.counters().await,
            Server::Relayed { room, edge } => {
                let mut c = room.counters().await;
                c["edge_node"] = edge.counters().await;
                if let Ok(r) = procstat::read(edge.pid) {
                    c["edge_node"]["cpu_seconds_since_start"] = serde_json::json!(r.cpu_secs);
                }
                c
            }
            Server::Janus(_) => serde_json::Value::Null,
        }
    }
    async fn stop(self) {
        match self {
            Server::Conclave(s) => s.stop().await,
            Server::Relayed { room, edge } => {
                edge.stop().await;
                room.stop().await;
            }
            Server::Janus(s) => s.stop().await,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.no_pin {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if cores > args.client_cpu.max(args.server_cpu) {
            procstat::pin_self(args.client_cpu).context("pinning the client")?;
        } else {
            eprintln!("only {cores} core(s): not pinning");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::of(&args);
    light::reader::READ_EVERY_US.store(args.read_every_us, Ordering::Relaxed);
    if args.client == ClientKind::Light && args.target != Target::Conclave {
        anyhow::bail!(
            "--client light runs against Conclave only (Janus offers first and runs full ICE)"
        );
    }
    let targets: Vec<Target> = match args.target {
        Target::Both => (0..args.rounds)
            .flat_map(|_| [Target::Conclave, Target::Janus])
            .collect(),
        t => (0..args.rounds).map(|_| t).collect(),
    };
    if args.saturation {
        return saturation(&args, scenario).await;
    }
    let mut results: Vec<serde_json::Value> = Vec::new();
    let mut failed = false;
    for (i, t) in targets.iter().enumerate() {
        let server = Arc::new(start(*t, &args, i).await?);
        let name = server.name();
        let r = run_once(&server, scenario, &args).await;
        match Arc::try_unwrap(server) {
            Ok(s) => s.stop().await,
            Err(_) => eprintln!("{name}: server still referenced; left to exit with the tool"),
        }
        let mut r = r.with_context(|| format!("{name} run failed"))?;
        r["target"] = json!(name);
        r["preset"] = json!(format!("{:?}", args.preset));
        r["round"] = json!(i / if args.target == Target::Both { 2 } else { 1 });
        r["client"] = json!(format!("{:?}", args.client).to_lowercase());
        if let Some(max) = args.max_join_p95_ms
            && r["join_ms"]["p95"].as_f64().unwrap_or(f64::MAX) > max
        {
            eprintln!(
                "{name}: join p95 {} ms is over {max} ms",
                r["join_ms"]["p95"]
            );
            failed |= *t == Target::Conclave;
        }
        if let Some(max) = args.max_loss
            && r["loss"].as_f64().unwrap_or(1.0) > max
        {
            eprintln!("{name}: loss {} is over {max}", r["loss"]);
            failed |= *t == Target::Conclave;
        }
        println!("{}", serde_json::to_string(&r)?);
        results.push(r);
        // Let sockets and the kernel settle between runs.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if args.target == Target::Both {
        println!("{}", serde_json::to_string(&compare(&results))?);
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// One run of `s` on a fresh Conclave server.
async fn conclave_once(args: &Args, s: Scenario, i: usize) -> anyhow::Result<serde_json::Value> {
    let server = Arc::new(start(Target::Conclave, args, i).await?);
    let r = run_once(&server, s, args).await;
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    r
}

/// `--saturation`: the ramp, then the run at half the capacity (see the flag's help).
async fn saturation(args: &Args, base: Scenario) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.target == Target::Conclave,
        "--saturation runs against Conclave only"
    );
    let short = |r: &serde_json::Value| {
        json!({
            "audio_pps": r["scenario"]["audio_pps"], "delivered_per_second": r["delivered_per_second"],
            "loss": r["loss"], "server_cpu_cores": r["server"]["cpu_cores"],
            "client_cpu_cores": r["client_cpu_cores"], "packets_per_cpu_second": r["packets_per_cpu_second"],
            "latency_ms": r["latency_ms"], "latency_socket_ms": r["latency_socket_ms"],
        })
    };
    let mut steps = Vec::new();
    let mut capacity = None;
    let mut pps = args.ramp_step;
    for i in 0.. {
        let mut s = base;
        s.traffic.audio_pps = pps;
        let r = conclave_once(args, s, i).await?;
        let clean = r["loss"].as_f64().unwrap_or(1.0) <= 0.01
            && r["server"]["cpu_cores"].as_f64().unwrap_or(1.0) < 0.95;
        eprintln!("ramp: {}", short(&r));
        steps.push(short(&r));
        if !clean {
            break;
        }
        capacity = r["packets_per_cpu_second"].as_f64();
        pps += args.ramp_step;
    }
    let capacity = capacity.context("the first ramp step was already saturated")?;
    // Half the capacity, spread over the scenario's subscribers.
    let receivers = (base.rooms * base.subscribers * base.publishers).max(1) as f64;
    let mut half = base;
    half.traffic.audio_pps = ((capacity / 2.0) / receivers).round().max(1.0) as u32;
    let r = conclave_once(args, half, steps.len()).await?;
    let out = json!({
        "saturation": {
            "client": format!("{:?}", args.client).to_lowercase(),
            "scenario": r["scenario"],
            "steps": steps,
            "capacity_per_cpu_second": capacity,
            "half_load": {
                "delivered_per_second": r["delivered_per_second"], "loss": r["loss"],
                "latency_ms": r["latency_ms"], "latency_socket_ms": r["latency_socket_ms"],
                "server_cpu_cores": r["server"]["cpu_cores"],
                "client_cpu_cores": r["client_cpu_cores"],
            },
        }
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn start(t: Target, args: &Args, i: usize) -> anyhow::Result<Server> {
    let cpu = (!args.no_pin).then_some(args.server_cpu);
    match t {
        Target::Conclave => {
            let bin = match &args.conclave_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe()?.with_file_name("conclave"),
            };
            let log = args.log_dir.join(format!("loadtest-conclave-{i}.log"));
            let plane = ["--media-plane".to_owned(), args.media_plane.clone()];
            let Some(redis) = &args.relay else {
                return Ok(Server::Conclave(
                    conclave::Server::start(&bin, cpu, &log, &plane).await?,
                ));
            };
            let prefix = format!("loadtest-{}-{i}", std::process::id());
            let node = |id: &str| {
                [
                    "--redis-url",
                    redis,
                    "--cluster-prefix",
                    &prefix,
                    "--node-id",
                    id,
                    "--turn-enabled",
                    "false",
                ]
                .map(str::to_owned)
                .to_vec()
            };
            let room = conclave::Server::start(&bin, cpu, &log, &node("room")).await?;
            // The room's node is placed by the publishers' joins (it is the least loaded and
            // prefers itself); the edge node only relays, so it may share the client's core.
            let edge_log = args.log_dir.join(format!("loadtest-conclave-{i}-edge.log"));
            let edge_cpu = (!args.no_pin).then_some(args.client_cpu);
            let edge = conclave::Server::start(&bin, edge_cpu, &edge_log, &node("edge")).await?;
            Ok(Server::Relayed { room, edge })
        }
        Target::Janus => {
            let dir = args.log_dir.join(format!("loadtest-janus-{i}"));
            Ok(Server::Janus(janus::Server::start(&dir, cpu).await?))
        }
        Target::Both => unreachable!(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

/// Medians per target and the ratio Conclave / Janus.
fn compare(results: &[serde_json::Value]) -> serde_json::Value {
    let pick = |target: &str, f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> f64 {
        median(
            results
                .iter()
                .filter(|r| r["target"] == target)
                .filter_map(f)
                .collect(),
        )
    };
    let metrics: [(&str, &dyn Fn(&serde_json::Value) -> Option<f64>); 5] = [
        ("packets_per_cpu_second", &|r| {
            r["packets_per_cpu_second"].as_f64()
        }),
        ("latency_p50_ms", &|r| r["latency_ms"]["p50"].as_f64()),
        ("latency_p99_ms", &|r| r["latency_ms"]["p99"].as_f64()),
        ("join_p95_ms", &|r| r["join_ms"]["p95"].as_f64()),
        ("server_cpu_cores", &|r| r["server"]["cpu_cores"].as_f64()),
    ];
    let mut out = serde_json::Map::new();
    for (name, f) in metrics {
        let c = pick("conclave", f);
        let j = pick("janus", f);
        out.insert(
            name.into(),
            json!({"conclave": c, "janus": j, "ratio": if j > 0.0 { c / j } else { f64::NAN }}),
        );
    }
    json!({"comparison": out})
}

async fn run_once(
    server: &Arc<Server>,
    s: Scenario,
    args: &Args,
) -> anyhow::Result<serde_json::Value> {
    let window = Arc::new(Window::default());
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((s.rooms * (s.publishers + s.subscribers)) as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>9} {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(server.name());
    pb.set_message("joining publishers");
    let idle = procstat::read(server.pid())?;
    let mut peers: Vec<Client> = Vec::new();
    let mut sent: Vec<Arc<Sent>> = Vec::new();
    let mut feeds: Vec<Vec<u64>> = vec![Vec::new(); s.rooms];
    let run_id = stats::now_ns() % 1_000_000;
    for room in 0..s.rooms {
        for p in 0..s.publishers {
            let idx = (room * s.publishers + p) as u16;
            let (a, v) = (Arc::new(Sent::default()), Arc::new(Sent::default()));
            sent.extend([a.clone(), v.clone()]);
            let (peer, feed) = server
                .join(Join {
                    room: format!("load-{run_id}-{room}"),
                    identity: format!("pub-{room}-{p}"),
                    role: Role::Publisher {
                        traffic: s.traffic,
                        streams: (idx * 2, idx * 2 + 1),
                        sent: (a, v),
                        window: window.clone(),
                        light: args.client == ClientKind::Light && s.traffic.video_bps == 0,
                    },
                    feeds: Vec::new(),
                    candidates_first: args.candidates_first,
                })
                .await
                .with_context(|| format!("publisher {p} of room {room}"))?;
            feeds[room].extend(feed);
            peers.push(peer);
            pb.inc(1);
        }
    }
    // Publishers connected and sending before anyone subscribes.
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &peers {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, p.connected())
            .await
            .context("a publisher did not connect within 20 s")??;
    }
    pb.set_message("joining subscribers");
    let mut subs: Vec<Arc<Subscriber>> = Vec::new();
    let mut sub_room: Vec<usize> = Vec::new();
    let mut tick = tokio::time::interval(s.join_interval.max(Duration::from_millis(1)));
    // Joins start on the interval and run concurrently, as real clients arrive.
    let mut joins = Vec::new();
    for i in 0..s.subscribers {
        for room in 0..s.rooms {
            tick.tick().await;
            let stats = Arc::new(Subscriber::default());
            subs.push(stats.clone());
            sub_room.push(room);
            let j = Join {
                room: format!("load-{run_id}-{room}"),
                identity: format!("sub-{room}-{i}"),
                role: Role::Subscriber {
                    stats,
                    window: window.clone(),
                    video: s.traffic.video_bps > 0,
                    light: args.client == ClientKind::Light,
                },
                feeds: feeds[room].clone(),
                candidates_first: args.candidates_first,
            };
            let server = server.clone();
            let pb = pb.clone();
            joins.push(tokio::spawn(async move {
                let r = server.join(j).await;
                pb.inc(1);
                r
            }));
        }
    }
    for j in joins {
        let (peer, _) = j.await?.context("a subscriber could not join")?;
        peers.push(peer);
    }
    pb.set_message("waiting for first media");
    let video = s.traffic.video_bps > 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !subs.iter().all(|x| x.has_media(video)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let without_media = subs.iter().filter(|x| !x.has_media(video)).count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pb.set_message(format!("measuring {} s", args.duration));
    let before = procstat::read(server.pid())?;
    let client_before = procstat::read(std::process::id())?;
    window.open();
    let steps = args.duration * 4;
    for _ in 0..steps {
        tokio::time::sleep(Duration::from_millis(250)).await;
        pb.tick();
    }
    window.close();
    let after = procstat::read(server.pid())?;
    let client_after = procstat::read(std::process::id())?;
    // Packets sent at the end of the window still in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pb.finish_and_clear();

    let secs = window.length().as_secs_f64();
    let cpu = after.cpu_secs - before.cpu_secs;
    let mut latency = Histogram::default();
    let mut latency_socket = Histogram::default();
    let mut received = 0u64;
    let mut received_video = 0u64;
    let mut foreign = 0u64;
    for x in &subs {
        let (r, v, f, h, hs) = x.take();
        received += r;
        received_video += v;
        foreign += f;
        latency.merge(&h);
        latency_socket.merge(&hs);
    }
    // Expected: every packet its room's publishers sent inside the window, once per subscriber.
    let mut expected = 0u64;
    let mut expected_video = 0u64;
    for room in &sub_room {
        for p in 0..s.publishers {
            let idx = room * s.publishers + p;
            expected += sent[idx * 2].in_window.load(Ordering::Relaxed);
            let v = sent[idx * 2 + 1].in_window.load(Ordering::Relaxed);
            expected += v;
            expected_video += v;
        }
    }
    let loss = |got: u64, want: u64| {
        if want > 0 {
            1.0 - (got as f64 / want as f64).min(1.0)
        } else {
            0.0
        }
    };
    let mut joins: Vec<Duration> = subs.iter().filter_map(|x| x.join_time()).collect();
    joins.sort();
    let mut video_joins: Vec<Duration> = subs.iter().filter_map(|x| x.video_join_time()).collect();
    video_joins.sort();
    let participants = s.rooms * (s.publishers + s.subscribers);
    let result = json!({
        "scenario": {
            "rooms": s.rooms, "publishers_per_room": s.publishers, "subscribers_per_room": s.subscribers,
            "audio_pps": s.traffic.audio_pps, "video_kbps": s.traffic.video_bps / 1000,
            "join_interval_ms": s.join_interval.as_millis() as u64, "seconds": secs,
        },
        "join_ms": {
            "p50": stats::quantile_ms(&joins, 0.50), "p95": stats::quantile_ms(&joins, 0.95),
            "p99": stats::quantile_ms(&joins, 0.99), "max": stats::quantile_ms(&joins, 1.0),
            "without_media": without_media,
        },
        "video_join_ms": {
            "p50": stats::quantile_ms(&video_joins, 0.50), "p95": stats::quantile_ms(&video_joins, 0.95),
            "max": stats::quantile_ms(&video_joins, 1.0),
        },
        "delivered_per_second": received as f64 / secs,
        "expected": expected, "received": received, "foreign": foreign,
        "loss": loss(received, expected),
        "loss_audio": loss(received - received_video, expected - expected_video),
        "loss_video": loss(received_video, expected_video),
        "latency_ms": {
            "p50": latency.quantile_ms(0.50), "p99": latency.quantile_ms(0.99), "max": latency.max_ms(),
        },
        // Light subscribers: send to the kernel queueing the packet to the subscriber's socket,
        // i.e. without the client's own scheduling delay (0 when not measured).
        "latency_socket_ms": {
            "p50": latency_socket.quantile_ms(0.50), "p99": latency_socket.quantile_ms(0.99),
            "max": latency_socket.max_ms(), "packets": latency_socket.count(),
        },
        "packets_per_cpu_second": if cpu > 0.0 { received as f64 / cpu } else { 0.0 },
        // Light publishers: packets of the window sent over 1 ms late (this tool's core was
        // busy), which the server then receives in a burst.
        "publisher_late": {
            "packets": sent.iter().map(|x| x.late.load(Ordering::Relaxed)).sum::<u64>(),
            "max_ms": sent.iter().map(|x| x.late_max_us.load(Ordering::Relaxed)).max().unwrap_or(0) as f64 / 1000.0,
        },
        // This tool's own cost: near 1.0 means the client, not the server, may set latency.
        "client_cpu_cores": (client_after.cpu_secs - client_before.cpu_secs) / secs,
        "server": {
            "cpu_seconds": cpu, "cpu_cores": cpu / secs,
            "rss_mb": after.rss_bytes as f64 / 1e6, "threads": after.threads,
            "rss_idle_mb": idle.rss_bytes as f64 / 1e6,
            "rss_per_participant_kb": (after.rss_bytes.saturating_sub(idle.rss_bytes)) as f64 / 1e3 / participants as f64,
        },
    });
    let mut result = result;
    result["server_counters"] = server.counters().await;
    // Leave as clients do, so the server's cleanup is not measured into the next run.
    let closing = peers.iter().map(|p| p.close());
    futures::future::join_all(closing).await;
    drop(peers);
    Ok(result)
}
