//! Prometheus metrics. Gauges and rare events are plain atomics here; per-packet counters live
//! on each producer and sink (one writer each, no shared cache line across cores) and are
//! summed when `/metrics` is scraped.

use crate::room::producer::ProducerCounts;
use conclave_media::pool::PipelineStats;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters and gauges, rendered in Prometheus text format at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Rooms open now.
    pub rooms: AtomicI64,
    /// Participants connected now.
    pub participants: AtomicI64,
    /// Tracks published now.
    pub tracks: AtomicI64,
    /// Signaling WebSockets open now.
    pub websockets: AtomicI64,
    /// Signaling messages refused as bad input.
    pub signaling_errors: AtomicU64,
    /// Joins refused (bad token, unknown room, ...).
    pub joins_refused: AtomicU64,
    /// TCP connections closed at once for being over a connection limit.
    pub connections_refused: AtomicU64,
    /// Signaling sockets closed because no `join` came in time.
    pub join_timeouts: AtomicU64,
    /// Signaling sockets closed because the peer stopped answering pings.
    pub dead_peers: AtomicU64,
    /// Signaling sockets closed because their client left too many replies unread.
    pub signaling_overflows: AtomicU64,
    /// RTP packets a client's track carried of another stream (another SSRC or kind), dropped.
    pub foreign_packets: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition: `packets` are the summed per-producer counts, `pipeline`
    /// and `consumers` the audio pipeline's and the caption/storage consumers' counters when a
    /// transcription model is loaded.
    pub fn render(
        &self,
        packets: ProducerCounts,
        pipeline: Option<(&PipelineStats, &crate::transcription::ConsumerStats)>,
    ) -> String {
        let mut out = String::with_capacity(2048);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "conclave_rooms",
            "Rooms open now.",
            self.rooms.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "conclave_participants",
            "Participants connected now.",
            self.participants.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "conclave_tracks",
            "Tracks published now.",
            self.tracks.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "conclave_websockets",
            "Signaling WebSockets open now.",
            self.websockets.load(Ordering::Relaxed),
        );
        let packet_counters = [
            (
                "conclave_rtp_packets_in_total",
                "RTP packets delivered to the room's producers: every published packet on the PeerConnection stack; on the media plane (the default) only published audio, tapped for transcription and agents (the plane's forwarding counts are conclave_plane_*).",
                packets.packets_in,
            ),
            (
                "conclave_rtp_packets_out_total",
                "RTP packets written to producers' sinks: subscribers on the PeerConnection stack; on the media plane room-level sinks only (transcription, agents; legs are counted by conclave_plane_forwarded_total).",
                packets.sinks.written,
            ),
            (
                "conclave_rtp_packets_dropped_total",
                "RTP packets dropped at a full sink queue (a slow subscriber or tap).",
                packets.sinks.dropped,
            ),
            (
                "conclave_rtp_packets_skipped_total",
                "Video packets skipped by a subscriber waiting for a keyframe after a loss.",
                packets.sinks.skipped,
            ),
            (
                "conclave_keyframe_requests_total",
                "Keyframe requests relayed to publishers.",
                packets.keyframe_requests,
            ),
        ];
        for (name, help, v) in packet_counters {
            counter(&mut out, name, help, v as f64);
        }
        let counters = [
            (
                "conclave_signaling_errors_total",
                "Signaling messages refused as bad input.",
                &self.signaling_errors,
            ),
            (
                "conclave_joins_refused_total",
                "Joins refused.",
                &self.joins_refused,
            ),
            (
                "conclave_connections_refused_total",
                "TCP connections closed at once for being over a connection limit.",
                &self.connections_refused,
            ),
            (
                "conclave_join_timeouts_total",
                "Signaling sockets closed because no join came in time.",
                &self.join_timeouts,
            ),
            (
                "conclave_signaling_overflows_total",
                "Signaling sockets closed because their client left too many replies unread.",
                &self.signaling_overflows,
            ),
            (
                "conclave_foreign_packets_total",
                "RTP packets of another stream handed to a client's track, dropped.",
                &self.foreign_packets,
            ),
            (
                "conclave_dead_peers_total",
                "Signaling sockets closed because the client stopped answering.",
                &self.dead_peers,
            ),
        ];
        for (name, help, v) in counters {
            counter(&mut out, name, help, v.load(Ordering::Relaxed) as f64);
        }
        gauge(
            &mut out,
            "conclave_transcription_enabled",
            "Whether a Whisper model is loaded.",
            i64::from(pipeline.is_some()),
        );
        if let Some((st, consumers)) = pipeline {
            for (name, help, v) in consumers.rows() {
                counter(&mut out, name, help, v as f64);
            }
            let counters = [
                (
                    "conclave_audio_input_dropped_total",
                    "Audio packets dropped because a pipeline's input queue was full.",
                    &st.input_dropped,
                ),
                (
                    "conclave_audio_packets_lost_total",
                    "Audio packets concealed or skipped as lost.",
                    &st.packets_lost,
                ),
                (
                    "conclave_audio_packets_late_total",
                    "Audio packets too late for the reorder buffer.",
                    &st.packets_late,
                ),
                (
                    "conclave_audio_decode_errors_total",
                    "Opus payloads that failed to decode.",
                    &st.decode_errors,
                ),
                (
                    "conclave_transcription_jobs_dropped_total",
                    "Final transcriptions dropped by the pool's limits.",
                    &st.jobs_dropped,
                ),
                (
                    "conclave_transcription_interims_skipped_total",
                    "Interim transcriptions not run because the pool was busy.",
                    &st.interims_skipped,
                ),
                (
                    "conclave_transcriptions_total",
                    "Transcriptions completed.",
                    &st.transcriptions_done,
                ),
                (
                    "conclave_transcription_errors_total",
                    "Transcriptions that failed.",
                    &st.transcription_errors,
                ),
                (
                    "conclave_end_of_turn_verdicts_total",
                    "Pauses the end-of-turn model judged (rooms with an agent).",
                    &st.turn_verdicts,
                ),
                (
                    "conclave_end_of_turn_verdicts_skipped_total",
                    "Pauses left unjudged: the end-of-turn model was busy or failed.",
                    &st.turn_verdicts_skipped,
                ),
                (
                    "conclave_transcriptions_aborted_total",
                    "Transcriptions stopped midway: past their deadline, or no longer wanted.",
                    &st.transcriptions_aborted,
                ),
            ];
            for (name, help, v) in counters {
                counter(&mut out, name, help, v.load(Ordering::Relaxed) as f64);
            }
            let secs = st.transcription_micros.load(Ordering::Relaxed) as f64 / 1e6;
            counter(
                &mut out,
                "conclave_transcription_seconds_total",
                "Time spent transcribing.",
                secs,
            );
        }
        out
    }
}

/// Appends `(name, help, value)` counters in Prometheus text format.
fn write_counters(out: &mut String, counters: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in counters {
        let v = v.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}

/// Appends the meeting-email counters to a `/metrics` body.
pub fn render_mail(out: &mut String, m: &crate::notify::email::MailStats) {
    write_counters(
        out,
        &[
            (
                "conclave_emails_sent_total",
                "Meeting emails the SMTP server accepted.",
                &m.sent,
            ),
            (
                "conclave_email_failed_attempts_total",
                "Email attempts that failed (retried).",
                &m.failed_attempts,
            ),
            (
                "conclave_emails_failed_total",
                "Emails given up after their retries (logged).",
                &m.failed,
            ),
        ],
    );
}

/// Appends the agents' gauge and counters to a `/metrics` body.
pub fn render_agents(out: &mut String, running: usize, a: &crate::agents::AgentStats) {
    let _ = writeln!(
        out,
        "# HELP conclave_agents Agents in rooms now.\n# TYPE conclave_agents gauge\nconclave_agents {running}"
    );
    let counters = [
        (
            "conclave_agents_dispatched_total",
            "Agents dispatched.",
            &a.dispatched,
        ),
        (
            "conclave_agent_utterances_total",
            "Lines the agents started saying.",
            &a.utterances,
        ),
        (
            "conclave_agent_interruptions_total",
            "Agent lines cut off by a person.",
            &a.interruptions,
        ),
        (
            "conclave_agent_pauses_total",
            "Times an agent paused for a voice over it.",
            &a.pauses,
        ),
        (
            "conclave_agent_echoes_total",
            "Final transcripts ignored as an agent's own voice in a microphone.",
            &a.echoes,
        ),
        (
            "conclave_agent_voice_failures_total",
            "Sentences the agents' voice failed to synthesize.",
            &a.voice_failures,
        ),
        (
            "conclave_agent_frames_skipped_total",
            "Agent audio frames skipped because playback fell behind.",
            &a.frames_skipped,
        ),
        (
            "conclave_agent_store_failures_total",
            "Agent conversation writes that failed.",
            &a.store_failures,
        ),
    ];
    write_counters(out, &counters);
}

/// Appends the scheduler's and the notifier's counters to a `/metrics` body.
pub fn render_schedule(
    out: &mut String,
    s: &crate::schedule::SchedulerStats,
    n: &crate::notify::NotifyStats,
) {
    let counters = [
        (
            "conclave_scheduler_ticks_total",
            "Scheduler ticks run.",
            &s.ticks,
        ),
        (
            "conclave_scheduler_tick_errors_total",
            "Scheduler ticks that failed or timed out (logged).",
            &s.tick_errors,
        ),
        (
            "conclave_occurrences_created_total",
            "Meeting occurrences created from schedules.",
            &s.occurrences_created,
        ),
        (
            "conclave_occurrence_transitions_total",
            "Occurrence status changes applied by this process.",
            &s.transitions,
        ),
        (
            "conclave_occurrences_ready_total",
            "Occurrences made ready (due meetings, each with its room).",
            &s.ready,
        ),
        (
            "conclave_autojoin_wanted_total",
            "Due occurrences that wanted the agent.",
            &s.agent_wanted,
        ),
        (
            "conclave_autojoin_dispatches_total",
            "Agent dispatch attempts (retries included).",
            &s.dispatches,
        ),
        (
            "conclave_autojoin_failures_total",
            "Agent attempts that failed (logged, with a reason code).",
            &s.dispatch_failures,
        ),
        (
            "conclave_autojoin_in_call_total",
            "Agents that reached their scheduled call.",
            &s.in_call,
        ),
        (
            "conclave_notifications_total",
            "Notifications stored.",
            &n.notifications,
        ),
        (
            "conclave_webhook_deliveries_total",
            "Webhook POSTs answered 2xx.",
            &n.delivered,
        ),
        (
            "conclave_webhook_failed_attempts_total",
            "Webhook POSTs that failed (retried).",
            &n.failed_attempts,
        ),
        (
            "conclave_webhook_gave_up_total",
            "Webhook deliveries given up after 24 h (logged).",
            &n.gave_up,
        ),
    ];
    write_counters(out, &counters);
}

/// Appends the media plane worker's counters to a `/metrics` body.
pub fn render_plane(out: &mut String, w: &crate::plane::worker::WorkerStats) {
    write_counters(
        out,
        &[
            (
                "conclave_plane_forwarded_total",
                "RTP packets the media plane sent to subscriber legs.",
                &w.forwarded,
            ),
            (
                "conclave_plane_leg_not_ready_total",
                "Packets for a leg whose transport was not connected yet; dropped.",
                &w.leg_not_ready,
            ),
            (
                "conclave_plane_awaiting_keyframe_total",
                "Packets held back from a new video leg until a keyframe.",
                &w.awaiting_keyframe,
            ),
            (
                "conclave_plane_unknown_stream_total",
                "RTP with an SSRC nobody published; dropped.",
                &w.unknown_stream,
            ),
            (
                "conclave_plane_tap_dropped_total",
                "Packets a full room tap (transcription) refused; dropped, forwarding went on.",
                &w.tap_dropped,
            ),
            (
                "conclave_plane_events_dropped_total",
                "Worker events a full participant queue refused; dropped.",
                &w.events_dropped,
            ),
            (
                "conclave_plane_keyframe_requests_total",
                "Keyframe requests relayed to publishers.",
                &w.keyframe_requests,
            ),
            (
                "conclave_plane_retransmitted_total",
                "Video packets the media plane sent again to a subscriber that NACKed them.",
                &w.retransmitted,
            ),
            (
                "conclave_plane_nack_missed_total",
                "NACKed packets not sent again (no longer kept, never seen, or over the leg's budget).",
                &w.nack_missed,
            ),
            (
                "conclave_plane_reports_sent_total",
                "Receiver reports (with a REMB for video) the media plane sent to publishers.",
                &w.reports_sent,
            ),
            (
                "conclave_plane_stale_commands_total",
                "Commands naming a transport or stream the worker no longer has.",
                &w.stale_commands,
            ),
            (
                "conclave_plane_datagrams_received_total",
                "Datagrams read from the plane's socket.",
                &w.received,
            ),
            (
                "conclave_plane_datagrams_unrouted_total",
                "Datagrams no transport claimed; dropped.",
                &w.unrouted,
            ),
            (
                "conclave_plane_datagrams_sent_total",
                "Datagrams handed to the kernel.",
                &w.sent,
            ),
            (
                "conclave_plane_datagrams_send_failed_total",
                "Datagrams the kernel refused; dropped.",
                &w.send_failed,
            ),
            (
                "conclave_plane_sendmmsg_total",
                "sendmmsg calls.",
                &w.batches,
            ),
            (
                "conclave_plane_srtp_refused_total",
                "SRTP/SRTCP packets refused (authentication, replay, malformed); dropped.",
                &w.srtp_refused,
            ),
            (
                "conclave_plane_buffers_allocated_total",
                "Packet buffers the plane allocated because its pool had none free.",
                &w.buffers_allocated,
            ),
        ],
    );
}

/// Appends the embedded TURN server's gauges and counters to a `/metrics` body.
pub fn render_turn(out: &mut String, t: &conclave_turn::TurnStats) {
    let gauges = [
        (
            "conclave_turn_allocations",
            "TURN allocations held now.",
            t.allocations,
        ),
        (
            "conclave_turn_permissions",
            "TURN permissions held now.",
            t.permissions,
        ),
        (
            "conclave_turn_channels",
            "TURN channel bindings held now.",
            t.channels,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let counters = [
        (
            "conclave_turn_requests_total",
            "TURN/STUN requests received.",
            t.requests,
        ),
        (
            "conclave_turn_challenges_total",
            "401 challenges to requests without credentials.",
            t.challenges,
        ),
        (
            "conclave_turn_stale_nonces_total",
            "438 answers to expired or unknown nonces.",
            t.stale_nonces,
        ),
        (
            "conclave_turn_auth_failures_total",
            "401 answers to wrong, expired or malformed credentials.",
            t.auth_failures,
        ),
        (
            "conclave_turn_quota_refusals_total",
            "Allocations, permissions or channels refused by a quota.",
            t.quota_refusals,
        ),
        (
            "conclave_turn_forbidden_peers_total",
            "Relay attempts to peers that are not Conclave's media ports.",
            t.forbidden_peers,
        ),
        (
            "conclave_turn_malformed_total",
            "TURN datagrams that did not parse.",
            t.malformed,
        ),
        (
            "conclave_turn_dropped_from_client_total",
            "Client datagrams not relayed (no allocation, permission or channel).",
            t.dropped_from_client,
        ),
        (
            "conclave_turn_dropped_from_peer_total",
            "Peer datagrams not relayed (no permission, not Conclave).",
            t.dropped_from_peer,
        ),
        (
            "conclave_turn_relayed_to_peer_total",
            "Datagrams relayed from TURN clients to peers.",
            t.relayed_to_peer,
        ),
        (
            "conclave_turn_relayed_to_client_total",
            "Datagrams relayed from peers to TURN clients.",
            t.relayed_to_client,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}
