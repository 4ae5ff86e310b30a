//! [`RedisRouter`]: the cluster's router, around this node's [`LocalRouter`].

use super::{Bus, ClusterStats, Op, process_cpu_seconds};
use crate::config::ClusterSettings;
use crate::room::JoinError;
use crate::routing::{
    ClusterView, JoinRequest, LocalRouter, MeetingEvents, NodeInfo, NodeStats, RoomRouter, Session,
};
use anyhow::Context;
use conclave_signaling::{ClientMessage, ErrorCode, ParticipantId, RoomName, ServerMessage};
use dashmap::DashMap;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Every Redis command and bus call waits at most this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// A room's node has this long to start a relayed member's session.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Client messages queued on the room's node for one relayed member; more end the session.
const HOSTED_QUEUE: usize = 256;
/// Server messages queued on the room's node for one relayed member before they are sent.
const SIGNAL_QUEUE: usize = 256;

/// Places a room: the owner if its node is alive (and not the one to avoid), else `ARGV[1]`.
/// Returns the owner and 0 (it was placed), 1 (placed now), 2 (taken over from a dead
/// node) or 3 (its node looks dead, but taking over is not allowed yet).
/// A dead owner's room is taken over only when `ARGV[5]` is `1` (see `Inner::steady`).
const PLACE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[4] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return {owner, 0}
end
if owner and owner ~= ARGV[4] and ARGV[5] ~= '1' then
  return {owner, 3}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if owner then return {ARGV[1], 2} end
return {ARGV[1], 1}
"#;

/// Refreshes this node's rooms: each key that names it (or nothing, after Redis lost its
/// data) is set to it again; returns the rooms whose key names another node.
const REFRESH: &str = r#"
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == false or owner == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"#;

/// Deletes a room key if it names this node.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Where a room runs.
enum Placement {
    Here,
    There(String),
}

/// A session whose socket is here and whose room is on `owner`.
struct RelayEnd {
    owner: String,
    signal: mpsc::Sender<ServerMessage>,
    joined: Mutex<Option<oneshot::Sender<Result<ParticipantId, JoinError>>>>,
    /// The owner ended the session, or its messages could not be delivered here.
    ended: Notify,
    overflowed: AtomicBool,
}

/// A session hosted here for a socket on node `from`.
struct HostedEnd {
    queue: mpsc::Sender<ClientMessage>,
}

struct Inner {
    settings: ClusterSettings,
    client: redis::Client,
    con: ConnectionManager,
    local: Arc<LocalRouter>,
    stats: Arc<ClusterStats>,
    /// Live node ids as of the last heartbeat that could read them.
    alive: watch::Sender<Arc<HashSet<String>>>,
    /// Registrations read at the last heartbeat.
    nodes: Mutex<Vec<NodeInfo>>,
    /// Bumped each time the bus subscription is established: sessions of an older one may
    /// have lost messages and end.
    bus_epoch: watch::Sender<u64>,
    relays: DashMap<String, Arc<RelayEnd>>,
    hosted: DashMap<String, HostedEnd>,
    calls: DashMap<u64, oneshot::Sender<serde_json::Value>>,
    next_call: AtomicU64,
    stopping: AtomicBool,
    /// The last CPU sample (when, process CPU seconds) and the use it gave, percent.
    cpu: Mutex<(Option<(std::time::Instant, f64)>, f64)>,
    /// Since when every heartbeat has succeeded (none: the last one failed).
    healthy_since: Mutex<Option<std::time::Instant>>,
    /// The meeting service, once the server has wired it.
    meetings: std::sync::RwLock<Option<Weak<dyn MeetingEvents>>>,
    /// Rooms running here that Redis places elsewhere, already reported.
    lost: Mutex<HashSet<String>>,
    scripts: Scripts,
}

/// The cluster's router: rooms this node hosts go to the local router; the others are
/// reached over Redis.
pub struct RedisRouter {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisRouter {
    /// Connects to Redis, subscribes to this node's bus channel, registers the node and starts
    /// its heartbeat. Fails when Redis cannot be reached.
    pub async fn start(
        settings: ClusterSettings,
        local: Arc<LocalRouter>,
        stats: Arc<ClusterStats>,
    ) -> anyhow::Result<RedisRouter> {
        let client = redis::Client::open(settings.redis_url.as_str())
            .with_context(|| "invalid --redis-url".to_string())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let con = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within {REDIS_TIMEOUT:?}"))?
        .context("cannot connect to Redis")?;
        let inner = Arc::new(Inner {
            settings,
            client,
            con,
            local,
            stats,
            alive: watch::channel(Arc::new(HashSet::new())).0,
            nodes: Mutex::new(Vec::new()),
            bus_epoch: watch::channel(0).0,
            relays: DashMap::new(),
            hosted: DashMap::new(),
            calls: DashMap::new(),
            next_call: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            cpu: Mutex::new((None, 0.0)),
            healthy_since: Mutex::new(None),
            meetings: std::sync::RwLock::new(None),
            lost: Mutex::new(HashSet::new()),
            scripts: Scripts {
                place: redis::Script::new(PLACE),
                refresh: redis::Script::new(REFRESH),
                release: redis::Script::new(RELEASE),
            },
        });
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let bus = tokio::spawn(
            Inner::run_bus(Arc::downgrade(&inner), subscribed_tx)
                .instrument(tracing::info_span!("cluster_bus", node = %inner.id())),
        );
        tokio::time::timeout(REDIS_TIMEOUT * 2, subscribed_rx)
            .await
            .map_err(|_| anyhow::anyhow!("cannot subscribe to the cluster bus in time"))?
            .map_err(|_| anyhow::anyhow!("the cluster bus ended before subscribing"))?;
        inner
            .heartbeat()
            .await
            .map_err(|e| anyhow::anyhow!("cannot register this node in Redis: {e}"))?;
        tracing::info!(node = %inner.id(), prefix = %inner.settings.prefix, "joined the cluster");
        let beat = tokio::spawn(Inner::run_heartbeat(Arc::downgrade(&inner)));
        Ok(RedisRouter {
            inner,
            tasks: Mutex::new(vec![bus, beat]),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.inner.id()
    }

    /// Live nodes as of the last heartbeat.
    pub fn live_nodes(&self) -> usize {
        self.inner.alive.borrow().len()
    }

    /// Appends the cluster's metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.stats.render(
            out,
            self.inner.id(),
            self.live_nodes(),
            self.inner.local.draining(),
        );
    }
}

impl Drop for RedisRouter {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

/// A Redis reply within [`REDIS_TIMEOUT`], or why not.
async fn answered<T>(reply: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, reply).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("Redis: {e}")),
        Err(_) => Err(format!("Redis did not answer within {REDIS_TIMEOUT:?}")),
    }
}

/// The Lua scripts, hashed once (`EVALSHA`, loaded on first use).
struct Scripts {
    place: redis::Script,
    refresh: redis::Script,
    release: redis::Script,
}

fn unavailable(what: impl std::fmt::Display) -> JoinError {
    JoinError::Unavailable(format!(
        "the cluster cannot be reached ({what}); try again in a moment"
    ))
}

impl Inner {
    fn id(&self) -> &str {
        &self.settings.node_id
    }

    fn key(&self, what: &str, name: &str) -> String {
        format!("{}:{what}:{name}", self.settings.prefix)
    }

    fn room_ttl(&self) -> Duration {
        self.settings.node_ttl * 3
    }

    /// The channel every node listens to for meeting status changes.
    fn meetings_channel(&self) -> String {
        format!("{}:meetings", self.settings.prefix)
    }

    fn meeting_events(&self) -> Option<Arc<dyn MeetingEvents>> {
        self.meetings
            .read()
            .expect("meetings")
            .as_ref()
            .and_then(|w| w.upgrade())
    }

    /// Whether this node has reached Redis for a whole node TTL. Only then may it take over a
    /// room whose node's registration is gone: right after an outage every registration has
    /// lapsed, and the others need one heartbeat to come back before they count as dead.
    fn steady(&self) -> bool {
        self.healthy_since
            .lock()
            .expect("healthy")
            .is_some_and(|t| t.elapsed() >= self.settings.node_ttl)
    }

    async fn redis<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T, String> {
        let mut con = self.con.clone();
        answered(cmd.query_async::<T>(&mut con)).await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, String> {
        let mut con = self.con.clone();
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        answered(inv.invoke_async::<T>(&mut con)).await
    }

    /// Publishes `msg` on node `to`'s channel; an error if Redis failed or nobody listens.
    async fn publish(&self, to: &str, msg: &Bus) -> Result<(), String> {
        let channel = self.key("bus", to);
        self.publish_on(&channel, to, msg).await
    }

    async fn publish_on(&self, channel: &str, to: &str, msg: &Bus) -> Result<(), String> {
        let payload = serde_json::to_string(msg).map_err(|e| e.to_string())?;
        let listeners: Result<i64, String> = self
            .redis(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await;
        match listeners {
            Ok(n) if n > 0 => {
                ClusterStats::add(&self.stats.bus_out, 1);
                Ok(())
            }
            Ok(_) => {
                ClusterStats::add(&self.stats.bus_publish_failures, 1);
                Err(format!("node {to} is not listening"))
            }
            Err(e) => {
                ClusterStats::add(&self.stats.bus_publish_failures, 1);
                Err(e)
            }
        }
    }

    /// The node a new room should go to: the least loaded live node that is not draining,
    /// this one on a tie.
    fn candidate(&self) -> Option<String> {
        let me = self.id();
        let nodes = self.nodes.lock().expect("nodes");
        let alive = self.alive.borrow();
        let mut best: Option<(&NodeInfo, (usize, usize, bool))> = None;
        for n in nodes
            .iter()
            .filter(|n| !n.draining && alive.contains(&n.id))
        {
            let load = (n.participants, n.rooms, n.id != me);
            if best.as_ref().is_none_or(|(_, b)| load < *b) {
                best = Some((n, load));
            }
        }
        match best {
            Some((n, _)) => Some(n.id.clone()),
            None if !self.local.draining() => Some(me.to_owned()),
            None => None,
        }
    }

    /// Where `room` runs; with `place`, puts it on a node if it is nowhere (or on a dead one).
    async fn placement(&self, room: &RoomName, place: bool) -> Result<Option<Placement>, String> {
        if self.local.rooms().get(room).is_some() {
            return Ok(Some(Placement::Here));
        }
        let key = self.key("room", room.as_str());
        if !place {
            let owner: Option<String> = self.redis(redis::cmd("GET").arg(&key)).await?;
            return Ok(owner.map(|o| {
                if o == self.id() {
                    Placement::Here
                } else {
                    Placement::There(o)
                }
            }));
        }
        let candidate = self
            .candidate()
            .ok_or_else(|| "every node is draining; none takes new rooms".to_string())?;
        // A draining node hands its rooms that are not open any more to another node.
        let avoid = if self.local.draining() {
            self.id().to_owned()
        } else {
            String::new()
        };
        let (owner, placed): (String, i64) = self
            .script(
                &self.scripts.place,
                &[key],
                &[
                    candidate,
                    self.room_ttl().as_millis().to_string(),
                    format!("{}:node:", self.settings.prefix),
                    avoid,
                    if self.steady() { "1" } else { "0" }.to_owned(),
                ],
            )
            .await?;
        if placed == 3 {
            return Err(format!(
                "room {room}'s node {owner} is not registered, and this node reconnected to Redis too recently to tell whether it is dead"
            ));
        }
        if owner == self.id() {
            match placed {
                1 => ClusterStats::add(&self.stats.rooms_placed_here, 1),
                2 => ClusterStats::add(&self.stats.rooms_taken_over, 1),
                _ => {}
            }
        }
        if placed == 2 {
            tracing::info!(%room, node = %owner, "room of a lost node placed anew");
        }
        Ok(Some(if owner == self.id() {
            Placement::Here
        } else {
            Placement::There(owner)
        }))
    }

    /// Writes this node's registration, refreshes its rooms' placements and reads the others'.
    async fn heartbeat(&self) -> Result<(), String> {
        let cpu_percent = {
            let now = std::time::Instant::now();
            let mut cpu = self.cpu.lock().expect("cpu");
            match cpu.0 {
                // Samples closer than half a second say little: keep the last figure.
                Some((t, _)) if now.duration_since(t) < Duration::from_millis(500) => {}
                last => {
                    let secs = process_cpu_seconds().unwrap_or(0.0);
                    if let Some((t, c)) = last {
                        let used = (secs - c) / now.duration_since(t).as_secs_f64() * 100.0;
                        cpu.1 = (used * 10.0).round() / 10.0;
                    }
                    cpu.0 = Some((now, secs));
                }
            }
            cpu.1
        };
        let info = self
            .local
            .node_info(self.settings.advertise_url.clone(), cpu_percent);
        let ttl = self.settings.node_ttl.as_millis().to_string();
        let json = serde_json::to_string(&info).map_err(|e| e.to_string())?;
        let nodes_key = format!("{}:nodes", self.settings.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key("node", self.id()))
            .arg(json)
            .arg("PX")
            .arg(&ttl)
            .ignore()
            .cmd("SADD")
            .arg(&nodes_key)
            .arg(self.id())
            .ignore()
            .cmd("SMEMBERS")
            .arg(&nodes_key);
        let mut con = self.con.clone();
        let (ids,): (Vec<String>,) = answered(pipe.query_async(&mut con)).await?;
        let rooms = self.local.rooms().names();
        if !rooms.is_empty() {
            let keys: Vec<String> = rooms.iter().map(|r| self.key("room", r.as_str())).collect();
            let lost: Vec<String> = self
                .script(
                    &self.scripts.refresh,
                    &keys,
                    &[
                        self.id().to_owned(),
                        self.room_ttl().as_millis().to_string(),
                    ],
                )
                .await?;
            let mut reported = self.lost.lock().expect("lost");
            // Rooms no longer here are forgotten, so a later loss is reported again.
            reported.retain(|k| keys.contains(k));
            for key in lost {
                if reported.insert(key.clone()) {
                    ClusterStats::add(&self.stats.rooms_lost, 1);
                    tracing::warn!(%key, "a room running here is placed on another node; it goes on here until it ends");
                }
            }
        }
        let keys: Vec<String> = ids.iter().map(|id| self.key("node", id)).collect();
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.redis(redis::cmd("MGET").arg(&keys)).await?
        };
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, v) in ids.iter().zip(values) {
            match v.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
                Some(n) => live.push(n),
                None => dead.push(id.clone()),
            }
        }
        if !dead.is_empty() {
            let _: Result<i64, String> = self
                .redis(redis::cmd("SREM").arg(&nodes_key).arg(&dead))
                .await;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: HashSet<String> = live.iter().map(|n| n.id.clone()).collect();
        self.alive.send_if_modified(|old| {
            if **old == ids {
                false
            } else {
                tracing::info!(nodes = ?ids, "live nodes changed");
                *old = Arc::new(ids);
                true
            }
        });
        *self.nodes.lock().expect("nodes") = live;
        ClusterStats::add(&self.stats.heartbeats, 1);
        self.healthy_since
            .lock()
            .expect("healthy")
            .get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    async fn run_heartbeat(this: Weak<Inner>) {
        let Some(every) = this.upgrade().map(|i| i.settings.node_ttl / 5) else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let Some(inner) = this.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            match inner.heartbeat().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("Redis reachable again; this node is registered");
                }
                Ok(()) => {}
                Err(e) => {
                    *inner.healthy_since.lock().expect("healthy") = None;
                    ClusterStats::add(&inner.stats.heartbeat_failures, 1);
                    if !failing {
                        tracing::warn!(error = %e, "heartbeat failed: rooms here go on; joins that need the cluster fail until Redis is back");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Subscribes to this node's channel and dispatches what arrives; resubscribes after a
    /// lost connection (ending the relayed sessions, whose messages may have been lost).
    async fn run_bus(this: Weak<Inner>, subscribed: oneshot::Sender<()>) {
        let mut subscribed = Some(subscribed);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(inner) = this.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let channel = inner.key("bus", inner.id());
            let everyone = inner.meetings_channel();
            let connect = async {
                let mut ps = inner.client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                ps.subscribe(&everyone).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let ps = match tokio::time::timeout(REDIS_TIMEOUT * 2, connect).await {
                Ok(Ok(ps)) => ps,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster bus: cannot subscribe");
                    drop(inner);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(_) => {
                    drop(inner);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            ClusterStats::add(&inner.stats.bus_connects, 1);
            inner.bus_epoch.send_modify(|e| *e += 1);
            if let Some(s) = subscribed.take() {
                let _ = s.send(());
            } else {
                tracing::info!("cluster bus subscribed again");
            }
            drop(inner);
            let mut stream = ps.into_on_message();
            while let Some(msg) = stream.next().await {
                let Some(inner) = this.upgrade() else { return };
                ClusterStats::add(&inner.stats.bus_in, 1);
                match msg
                    .get_payload::<String>()
                    .ok()
                    .and_then(|p| serde_json::from_str::<Bus>(&p).ok())
                {
                    Some(m) => inner.dispatch(m),
                    None => {
                        ClusterStats::add(&inner.stats.bus_dropped, 1);
                        tracing::warn!("unparsable cluster bus message dropped");
                    }
                }
            }
            let Some(inner) = this.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            tracing::warn!("cluster bus connection lost: relayed sessions end; local rooms go on");
            // Sessions notice the epoch change; bump it now too, so they end at once.
            inner.bus_epoch.send_modify(|e| *e += 1);
        }
    }

    fn dispatch(self: &Arc<Self>, m: Bus) {
        match m {
            Bus::Join { sid, from, request } => {
                let this = self.clone();
                tokio::spawn(
                    async move { this.host(sid, from, *request).await }
                        .instrument(tracing::info_span!("hosted_session")),
                );
            }
            Bus::Joined {
                sid,
                participant_id,
            } => self.answer_join(&sid, Ok(participant_id)),
            Bus::Refused { sid, code, message } => {
                self.answer_join(&sid, Err(JoinError::Remote(code, message)))
            }
            Bus::Server { sid, msg } => {
                let Some(end) = self.relays.get(&sid).map(|e| e.clone()) else {
                    ClusterStats::add(&self.stats.bus_dropped, 1);
                    return;
                };
                if end.signal.try_send(*msg).is_err() {
                    // The socket does not keep up (or is gone): end the session rather than
                    // lose one of its messages.
                    ClusterStats::add(&self.stats.bus_dropped, 1);
                    end.overflowed.store(true, Ordering::Relaxed);
                    end.ended.notify_one();
                }
            }
            Bus::Ended { sid } => {
                if let Some(end) = self.relays.get(&sid) {
                    end.ended.notify_one();
                }
            }
            Bus::Client { sid, msg } => {
                let full = match self.hosted.get(&sid) {
                    Some(h) => h.queue.try_send(*msg).is_err(),
                    None => {
                        ClusterStats::add(&self.stats.bus_dropped, 1);
                        false
                    }
                };
                if full {
                    ClusterStats::add(&self.stats.bus_dropped, 1);
                    tracing::warn!(%sid, "relayed member floods its session; ending it");
                    self.hosted.remove(&sid);
                }
            }
            Bus::Leave { sid } => {
                self.hosted.remove(&sid);
            }
            Bus::Call { id, from, op } => {
                let this = self.clone();
                tokio::spawn(async move {
                    let value = this.serve_call(op).await;
                    let _ = this.publish(&from, &Bus::Reply { id, value }).await;
                });
            }
            Bus::Reply { id, value } => {
                if let Some((_, tx)) = self.calls.remove(&id) {
                    let _ = tx.send(value);
                }
            }
            Bus::Meeting { from, code, status } => {
                if from != self.id()
                    && let Some(m) = self.meeting_events()
                {
                    m.status_changed_elsewhere(&code, &status);
                }
            }
        }
    }

    fn answer_join(&self, sid: &str, result: Result<ParticipantId, JoinError>) {
        let tx = self
            .relays
            .get(sid)
            .and_then(|e| e.joined.lock().expect("joined").take());
        match tx {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => ClusterStats::add(&self.stats.bus_dropped, 1),
        }
    }

    /// Runs a relayed member's session here, for the socket on node `from`.
    async fn host(self: Arc<Self>, sid: String, from: String, request: JoinRequest) {
        let (signal_tx, mut signal_rx) = mpsc::channel::<ServerMessage>(SIGNAL_QUEUE);
        // Server messages go out in order from this one task; `Ended` after the last.
        let forwarder = {
            let this = self.clone();
            let (sid, from) = (sid.clone(), from.clone());
            tokio::spawn(async move {
                while let Some(msg) = signal_rx.recv().await {
                    let m = Bus::Server {
                        sid: sid.clone(),
                        msg: Box::new(msg),
                    };
                    if let Err(e) = this.publish(&from, &m).await {
                        tracing::debug!(error = %e, "relayed member's messages cannot be sent; ending its session");
                        this.hosted.remove(&sid);
                        break;
                    }
                }
                let _ = this.publish(&from, &Bus::Ended { sid: sid.clone() }).await;
            })
        };
        let room = request.room.clone();
        // The meeting's lifecycle is kept where its room is: this node records the presence.
        let presence = match (&request.meeting, request.role) {
            (Some(_), Some(role)) => Some((
                room.to_string(),
                request.identity.clone(),
                request.name.clone(),
                role,
            )),
            _ => None,
        };
        let session = match self.local.join(request, signal_tx).await {
            Ok(s) => s,
            Err(e) => {
                let _ = self
                    .publish(
                        &from,
                        &Bus::Refused {
                            sid,
                            code: e.code(),
                            message: e.to_string(),
                        },
                    )
                    .await;
                drop(forwarder);
                return;
            }
        };
        ClusterStats::add(&self.stats.hosted_sessions, 1);
        if let (Some((code, identity, name, role)), Some(m)) = (&presence, self.meeting_events()) {
            m.connected(code, identity, name, *role).await;
        }
        tracing::info!(%room, participant = %session.participant_id, socket_node = %from, "hosting a member whose socket is on another node");
        let (queue, mut queued) = mpsc::channel(HOSTED_QUEUE);
        self.hosted.insert(sid.clone(), HostedEnd { queue });
        let joined = Bus::Joined {
            sid: sid.clone(),
            participant_id: session.participant_id.clone(),
        };
        if self.publish(&from, &joined).await.is_err() {
            self.hosted.remove(&sid);
        }
        let Session {
            client, mut done, ..
        } = session;
        let mut alive = self.alive.subscribe();
        let mut epoch = self.bus_epoch.subscribe();
        epoch.mark_unchanged();
        let mut finished = false;
        loop {
            tokio::select! {
                m = queued.recv() => match m {
                    Some(m) => if client.send(m).await.is_err() { break },
                    None => break, // left, flooded, or the socket's node is gone
                },
                _ = &mut done => {
                    finished = true;
                    break;
                }
                Ok(()) = alive.changed() => {
                    if !alive.borrow().contains(&from) {
                        ClusterStats::add(&self.stats.sessions_cut, 1);
                        tracing::info!(node = %from, "the member's socket node died; ending its session");
                        break;
                    }
                }
                Ok(()) = epoch.changed() => {
                    ClusterStats::add(&self.stats.sessions_cut, 1);
                    break;
                }
            }
        }
        self.hosted.remove(&sid);
        drop(client);
        if !finished {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        if let (Some((code, identity, ..)), Some(m)) = (&presence, self.meeting_events()) {
            m.disconnected(code, identity).await;
        }
    }

    /// Starts a member's session on node `owner` for a socket here.
    async fn relay(
        self: &Arc<Self>,
        owner: String,
        request: JoinRequest,
        signal: mpsc::Sender<ServerMessage>,
    ) -> Result<Session, JoinError> {
        let sid = format!("{}.{}", self.id(), crate::ids::random_id(12));
        let (joined_tx, joined_rx) = oneshot::channel();
        let end = Arc::new(RelayEnd {
            owner: owner.clone(),
            signal: signal.clone(),
            joined: Mutex::new(Some(joined_tx)),
            ended: Notify::new(),
            overflowed: AtomicBool::new(false),
        });
        self.relays.insert(sid.clone(), end.clone());
        let room = request.room.clone();
        let ask = Bus::Join {
            sid: sid.clone(),
            from: self.id().to_owned(),
            request: Box::new(request),
        };
        if let Err(e) = self.publish(&owner, &ask).await {
            self.relays.remove(&sid);
            ClusterStats::add(&self.stats.joins_unavailable, 1);
            return Err(JoinError::Unavailable(format!(
                "room {room} is on node {owner}, which cannot be reached ({e}); try again in a moment"
            )));
        }
        let participant_id = match tokio::time::timeout(JOIN_TIMEOUT, joined_rx).await {
            Ok(Ok(Ok(p))) => p,
            Ok(Ok(Err(e))) => {
                self.relays.remove(&sid);
                return Err(e);
            }
            _ => {
                self.relays.remove(&sid);
                let _ = self.publish(&owner, &Bus::Leave { sid }).await;
                ClusterStats::add(&self.stats.joins_unavailable, 1);
                return Err(JoinError::Unavailable(format!(
                    "room {room}'s node {owner} did not start the session within {JOIN_TIMEOUT:?}; try again"
                )));
            }
        };
        ClusterStats::add(&self.stats.relayed_sessions, 1);
        tracing::info!(%room, participant = %participant_id, node = %owner, "relaying a member to the room's node");
        let (client_tx, mut client_rx) =
            mpsc::channel::<ClientMessage>(crate::peer::participant::CLIENT_QUEUE);
        let this = self.clone();
        let done = tokio::spawn(
            async move {
                let mut alive = this.alive.subscribe();
                let mut epoch = this.bus_epoch.subscribe();
                epoch.mark_unchanged();
                let cut = |why: &str| {
                    ClusterStats::add(&this.stats.sessions_cut, 1);
                    let _ = signal.try_send(crate::signal::error(ErrorCode::Unavailable, why));
                };
                loop {
                    tokio::select! {
                        m = client_rx.recv() => match m {
                            Some(m) => {
                                let msg = Bus::Client { sid: sid.clone(), msg: Box::new(m) };
                                if this.publish(&end.owner, &msg).await.is_err() {
                                    cut("the room's node cannot be reached; join again");
                                    break;
                                }
                            }
                            None => {
                                let _ = this.publish(&end.owner, &Bus::Leave { sid: sid.clone() }).await;
                                break;
                            }
                        },
                        () = end.ended.notified() => {
                            if end.overflowed.load(Ordering::Relaxed) {
                                let _ = this.publish(&end.owner, &Bus::Leave { sid: sid.clone() }).await;
                            }
                            break;
                        }
                        Ok(()) = alive.changed() => {
                            if !alive.borrow().contains(&end.owner) {
                                tracing::info!(node = %end.owner, "the room's node died");
                                cut("the node hosting this room stopped; join again to continue on a live node");
                                break;
                            }
                        }
                        Ok(()) = epoch.changed() => {
                            cut("the cluster bus connection was lost; join again");
                            break;
                        }
                    }
                }
                this.relays.remove(&sid);
            }
            .in_current_span(),
        );
        Ok(Session {
            participant_id,
            client: client_tx,
            done,
            remote: true,
        })
    }

    /// Calls `op` on node `owner`'s router.
    async fn call(&self, owner: &str, op: Op) -> Result<serde_json::Value, String> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls.insert(id, tx);
        let sent = self
            .publish(
                owner,
                &Bus::Call {
                    id,
                    from: self.id().to_owned(),
                    op,
                },
            )
            .await;
        let result = match sent {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(REDIS_TIMEOUT, rx).await {
                Ok(Ok(v)) => Ok(v),
                _ => Err(format!(
                    "node {owner} did not answer within {REDIS_TIMEOUT:?}"
                )),
            },
        };
        self.calls.remove(&id);
        if result.is_err() {
            ClusterStats::add(&self.stats.call_failures, 1);
        }
        result
    }

    async fn serve_call(&self, op: Op) -> serde_json::Value {
        let local = &self.local;
        match op {
            Op::CreateRoom { room } => {
                serde_json::json!(local.create_room(&room).await.map_err(|e| e.to_string()))
            }
            Op::RoomExists { room } => serde_json::json!(local.room_exists(&room).await),
            Op::MemberCount { room } => serde_json::json!(local.member_count(&room).await),
            Op::Broadcast { room, msg } => {
                local.broadcast(&room, *msg).await;
                serde_json::Value::Null
            }
            Op::CloseRoom { room, farewell } => {
                local.close_room(&room, *farewell).await;
                serde_json::Value::Null
            }
            Op::ParticipantOf { room, identity } => {
                serde_json::json!(local.participant_of(&room, &identity).await)
            }
        }
    }

    /// `op` on the room's node: here, on its node, or `None` when it is on no node.
    async fn on_owner(&self, room: &RoomName, op: Op) -> Option<serde_json::Value> {
        match self.placement(room, false).await {
            Ok(Some(Placement::There(owner))) => match self.call(&owner, op).await {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(%room, node = %owner, error = %e, "call to the room's node failed");
                    None
                }
            },
            Ok(Some(Placement::Here)) => Some(self.serve_call(op).await),
            Ok(None) => None,
            Err(e) => {
                // Without Redis, what is here is all that can be known.
                tracing::debug!(%room, error = %e, "placement unknown; answering for this node");
                Some(self.serve_call(op).await)
            }
        }
    }
}

#[async_trait::async_trait]
impl RoomRouter for RedisRouter {
    async fn join(
        &self,
        request: JoinRequest,
        signal: mpsc::Sender<ServerMessage>,
    ) -> Result<Session, JoinError> {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::Relaxed) {
            return Err(JoinError::ShuttingDown);
        }
        match inner.placement(&request.room, true).await {
            Ok(Some(Placement::Here)) => inner.local.join(request, signal).await,
            Ok(Some(Placement::There(owner))) => inner.relay(owner, request, signal).await,
            Ok(None) => unreachable!("placing always names a node"),
            Err(e) => {
                ClusterStats::add(&inner.stats.joins_unavailable, 1);
                tracing::warn!(room = %request.room, error = %e, "join refused: the room cannot be placed");
                Err(unavailable(e))
            }
        }
    }

    async fn create_room(&self, room: &RoomName) -> Result<(), JoinError> {
        let inner = &self.inner;
        match inner.placement(room, true).await.map_err(unavailable)? {
            Some(Placement::There(owner)) => {
                let v = inner
                    .call(&owner, Op::CreateRoom { room: room.clone() })
                    .await
                    .map_err(unavailable)?;
                match serde_json::from_value::<Result<(), String>>(v) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(JoinError::Remote(ErrorCode::Internal, e)),
                    Err(e) => Err(unavailable(e)),
                }
            }
            _ => inner.local.create_room(room).await,
        }
    }

    async fn room_exists(&self, room: &RoomName) -> bool {
        self.inner
            .on_owner(room, Op::RoomExists { room: room.clone() })
            .await
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    async fn member_count(&self, room: &RoomName) -> usize {
        self.inner
            .on_owner(room, Op::MemberCount { room: room.clone() })
            .await
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize
    }

    async fn broadcast(&self, room: &RoomName, msg: ServerMessage) {
        let op = Op::Broadcast {
            room: room.clone(),
            msg: Box::new(msg),
        };
        self.inner.on_owner(room, op).await;
    }

    async fn close_room(&self, room: &RoomName, farewell: ServerMessage) {
        let op = Op::CloseRoom {
            room: room.clone(),
            farewell: Box::new(farewell),
        };
        self.inner.on_owner(room, op).await;
    }

    async fn participant_of(&self, room: &RoomName, identity: &str) -> Option<ParticipantId> {
        let op = Op::ParticipantOf {
            room: room.clone(),
            identity: identity.to_owned(),
        };
        self.inner
            .on_owner(room, op)
            .await
            .and_then(|v| serde_json::from_value(v).ok())
    }

    async fn stats(&self) -> NodeStats {
        self.inner.local.stats().await
    }

    fn shutdown(&self) {
        let inner = self.inner.clone();
        inner.stopping.store(true, Ordering::Relaxed);
        let rooms = inner.local.rooms().names();
        inner.local.shutdown();
        // Leave the cluster at once rather than after the TTL: the registration and this
        // node's placements go, so rejoining members land on a live node straight away.
        tokio::spawn(async move {
            for r in rooms {
                let _: Result<i64, String> = inner
                    .script(
                        &inner.scripts.release,
                        &[inner.key("room", r.as_str())],
                        &[inner.id().to_owned()],
                    )
                    .await;
            }
            let _: Result<i64, String> = inner
                .redis(redis::cmd("DEL").arg(inner.key("node", inner.id())))
                .await;
            tracing::info!("left the cluster");
        });
    }

    async fn nodes(&self) -> Result<ClusterView, String> {
        let inner = &self.inner;
        // A fresh read, so an operator sees what Redis says now.
        inner.heartbeat().await?;
        let nodes = inner.nodes.lock().expect("nodes").clone();
        Ok(ClusterView {
            cluster: true,
            node_id: inner.id().to_owned(),
            nodes,
        })
    }

    fn set_draining(&self, draining: bool) {
        self.inner.local.set_draining(draining);
        // Tell the others now rather than at the next heartbeat.
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.heartbeat().await {
                tracing::warn!(error = %e, "drain state not yet registered");
            }
        });
    }

    fn draining(&self) -> bool {
        self.inner.local.draining()
    }

    fn follow_meetings(&self, events: Weak<dyn MeetingEvents>) {
        *self.inner.meetings.write().expect("meetings") = Some(events);
    }

    async fn announce_meeting_status(&self, code: &str, status: &str) {
        let inner = &self.inner;
        let msg = Bus::Meeting {
            from: inner.id().to_owned(),
            code: code.to_owned(),
            status: status.to_owned(),
        };
        if let Err(e) = inner
            .publish_on(&inner.meetings_channel(), "every node", &msg)
            .await
        {
            tracing::warn!(meeting = code, status, error = %e, "meeting status not announced to the other nodes");
        }
    }

    async fn hosts(&self, room: &RoomName) -> Result<bool, String> {
        Ok(matches!(
            self.inner.placement(room, true).await?,
            Some(Placement::Here)
        ))
    }
}
