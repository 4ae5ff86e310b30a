//! Several nodes on one Redis (`--redis-url`): rooms pinned to nodes, any node takes any
//! client, signaling relayed over Redis pub/sub, media straight to the room's node.
//!
//! What lives in Redis (every key under the cluster prefix `P`, default `conclave`):
//!
//! ```text
//! P:node:<id>    this node's registration (JSON NodeInfo)   PX node_ttl, rewritten every ttl/5
//! P:nodes        set of node ids ever seen (dead ones pruned when their key is gone)
//! P:room:<name>  id of the node the room lives on           PX 3 x node_ttl, refreshed by it
//! P:bus:<id>     pub/sub channel of node <id>: relayed signaling and calls
//! ```
//!
//! A room is placed on its first join by one atomic script (an owner whose registration is
//! gone counts as none), so two nodes placing the same room at once agree. A member whose
//! socket is on another node is a *relayed session*: the socket's node forwards the member's
//! client messages to the room's node and its server messages back, in order, over the two
//! nodes' channels; the WebRTC session, and so the ICE candidates and the media, are the room
//! node's. See docs/cluster.md.

pub mod router;

pub use router::RedisRouter;

use crate::routing::JoinRequest;
use conclave_signaling::{ClientMessage, ErrorCode, ParticipantId, RoomName, ServerMessage};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// One message on a node's bus channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Bus {
    /// Socket node → room node: start a member's session for socket `from`.
    Join {
        sid: String,
        from: String,
        request: Box<JoinRequest>,
    },
    /// Room node → socket node: the session started.
    Joined {
        sid: String,
        participant_id: ParticipantId,
    },
    /// Room node → socket node: the join was refused.
    Refused {
        sid: String,
        code: ErrorCode,
        message: String,
    },
    /// Room node → socket node: a server message for the member.
    Server {
        sid: String,
        msg: Box<ServerMessage>,
    },
    /// Socket node → room node: a client message of the member.
    Client {
        sid: String,
        msg: Box<ClientMessage>,
    },
    /// Socket node → room node: the socket closed.
    Leave { sid: String },
    /// Room node → socket node: the session ended (after its last server message).
    Ended { sid: String },
    /// A request for the room node's router (broadcast, close, lookups).
    Call { id: u64, from: String, op: Op },
    /// The answer to `Call` `id`.
    Reply { id: u64, value: serde_json::Value },
    /// On the meetings channel (every node): node `from` changed meeting `code`'s status.
    Meeting {
        from: String,
        code: String,
        status: String,
    },
}

/// Router operations run on a room's node for another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    CreateRoom {
        room: RoomName,
    },
    RoomExists {
        room: RoomName,
    },
    MemberCount {
        room: RoomName,
    },
    Broadcast {
        room: RoomName,
        msg: Box<ServerMessage>,
    },
    CloseRoom {
        room: RoomName,
        farewell: Box<ServerMessage>,
    },
    ParticipantOf {
        room: RoomName,
        identity: String,
    },
}

/// Counters of the cluster layer (for `/metrics`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Heartbeats written.
    pub heartbeats: AtomicU64,
    /// Heartbeats that failed (Redis unreachable or slow).
    pub heartbeat_failures: AtomicU64,
    /// Rooms placed on this node by this node's joins or creations.
    pub rooms_placed_here: AtomicU64,
    /// Rooms whose previous node had died, placed anew by this node.
    pub rooms_taken_over: AtomicU64,
    /// Rooms this node runs whose placement now names another node (split brain after a
    /// Redis outage; the room goes on here until it ends).
    pub rooms_lost: AtomicU64,
    /// Sessions relayed for sockets here to rooms elsewhere, started.
    pub relayed_sessions: AtomicU64,
    /// Sessions hosted here for sockets on other nodes, started.
    pub hosted_sessions: AtomicU64,
    /// Relayed or hosted sessions ended because the other node died or the bus was lost.
    pub sessions_cut: AtomicU64,
    /// Bus messages published.
    pub bus_out: AtomicU64,
    /// Bus messages received.
    pub bus_in: AtomicU64,
    /// Bus messages that could not be published (Redis error, or nobody listening).
    pub bus_publish_failures: AtomicU64,
    /// Bus messages received and dropped: unparsable, for an unknown session, or a full queue.
    pub bus_dropped: AtomicU64,
    /// Calls to another node that timed out or failed.
    pub call_failures: AtomicU64,
    /// Joins refused because the cluster could not be reached.
    pub joins_unavailable: AtomicU64,
    /// Times the bus subscription was (re)established.
    pub bus_connects: AtomicU64,
}

impl ClusterStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text of these counters, with this node's id as a label-free info line.
    pub fn render(&self, out: &mut String, node_id: &str, live_nodes: usize, draining: bool) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP conclave_cluster_node_info This node's id in the cluster.\n# TYPE conclave_cluster_node_info gauge\nconclave_cluster_node_info{{node=\"{node_id}\"}} 1"
        );
        let gauges = [
            (
                "conclave_cluster_live_nodes",
                "Live nodes this node saw at its last heartbeat.",
                live_nodes as u64,
            ),
            (
                "conclave_cluster_draining",
                "1 while this node takes no new rooms.",
                u64::from(draining),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "conclave_cluster_heartbeats_total",
                "Registrations written to Redis.",
                &self.heartbeats,
            ),
            (
                "conclave_cluster_heartbeat_failures_total",
                "Registrations that failed (Redis unreachable or slow).",
                &self.heartbeat_failures,
            ),
            (
                "conclave_cluster_rooms_placed_here_total",
                "Rooms placed on this node.",
                &self.rooms_placed_here,
            ),
            (
                "conclave_cluster_rooms_taken_over_total",
                "Rooms of a dead node placed anew by this node.",
                &self.rooms_taken_over,
            ),
            (
                "conclave_cluster_rooms_lost_total",
                "Rooms running here whose placement names another node.",
                &self.rooms_lost,
            ),
            (
                "conclave_cluster_relayed_sessions_total",
                "Sessions relayed from sockets here to rooms elsewhere.",
                &self.relayed_sessions,
            ),
            (
                "conclave_cluster_hosted_sessions_total",
                "Sessions hosted here for sockets on other nodes.",
                &self.hosted_sessions,
            ),
            (
                "conclave_cluster_sessions_cut_total",
                "Relayed or hosted sessions ended because the other node or the bus was lost.",
                &self.sessions_cut,
            ),
            (
                "conclave_cluster_bus_out_total",
                "Bus messages published.",
                &self.bus_out,
            ),
            (
                "conclave_cluster_bus_in_total",
                "Bus messages received.",
                &self.bus_in,
            ),
            (
                "conclave_cluster_bus_publish_failures_total",
                "Bus messages not published (Redis error or nobody listening).",
                &self.bus_publish_failures,
            ),
            (
                "conclave_cluster_bus_dropped_total",
                "Bus messages received and dropped (unparsable, unknown session, full queue).",
                &self.bus_dropped,
            ),
            (
                "conclave_cluster_call_failures_total",
                "Calls to another node that failed or timed out.",
                &self.call_failures,
            ),
            (
                "conclave_cluster_joins_unavailable_total",
                "Joins refused because the cluster could not be reached.",
                &self.joins_unavailable,
            ),
            (
                "conclave_cluster_bus_connects_total",
                "Times the bus subscription was established.",
                &self.bus_connects,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_round_trip_as_json() {
        let m = Bus::Client {
            sid: "s1".into(),
            msg: Box::new(ClientMessage::Ping { id: Some(7) }),
        };
        let text = serde_json::to_string(&m).unwrap();
        match serde_json::from_str::<Bus>(&text).unwrap() {
            Bus::Client { sid, msg } => {
                assert_eq!(sid, "s1");
                assert_eq!(*msg, ClientMessage::Ping { id: Some(7) });
            }
            other => panic!("{other:?}"),
        }
        let op = Bus::Call {
            id: 3,
            from: "a".into(),
            op: Op::ParticipantOf {
                room: RoomName::validate("r").unwrap(),
                identity: "ada".into(),
            },
        };
        let text = serde_json::to_string(&op).unwrap();
        assert!(matches!(
            serde_json::from_str::<Bus>(&text).unwrap(),
            Bus::Call { id: 3, .. }
        ));
    }

    #[test]
    fn cpu_seconds_are_read_from_proc() {
        let a = process_cpu_seconds().expect("cpu seconds");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_cpu_seconds().unwrap();
        assert!(b >= a, "{a} then {b}");
    }
}
