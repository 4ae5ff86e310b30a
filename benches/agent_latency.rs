//! The agent as the lead hears it: a scripted lead (webrtc-rs, espeak-ng answers) on a call
//! with a dispatched agent, on an in-process server with the real Whisper model, Silero VAD
//! and the default Piper voice. Per round: the lead answers the first question; talks over the
//! long second question with its answer; answers the third. Reports
//!
//! - **response**: end of the lead's speech (the last voiced packet left the lead) → the
//!   agent's first audio packet at the lead, p50/p95;
//! - **barge-in stop**: the lead starting to talk over the agent → the agent's last packet of
//!   that turn at the lead;
//! - **CPU per conversation**: CPU seconds of the whole process (server, agent, and the lead's
//!   own WebRTC client) per second of conversation: an upper bound of one agent's cost, so
//!   agents per core is at least its inverse.
//!
//! Run: `cargo bench --bench agent_latency` (`-- --rounds N`, default 4). Release build.

#[path = "../tests/common/mod.rs"]
mod common;

use common::agent_call::start_call;
use common::speech::speak_48k;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = std::env::temp_dir();
        let answer1 = speak_48k(
            "The main problem is that our old tool drops calls, and we are losing customers.",
            &tmp,
        );
        let barge = speak_48k("Sorry to cut in, we have about fifty thousand euros for it.", &tmp);
        let answer3 = speak_48k("I make the final call on this.", &tmp);
        let set = json!({
            "name": "Bench",
            "greeting": "Hi {name}.",
            "closing": "Thanks.",
            "questions": [
                {"text": "What problem are you trying to solve?", "category": "need"},
                {"text": "Thinking about the next year and everything your team has planned, and keeping in mind that prices depend on the number of seats and the support level you choose, what budget do you have in mind for this project?", "category": "budget"},
                {"text": "Who makes the final decision?", "category": "authority"}
            ]
        });
        let (mut response, mut stops) = (Vec::new(), Vec::new());
        let (mut cpu, mut wall) = (0.0, 0.0);
        for round in 0..rounds {
            let mut call = start_call(&format!("bench-{round}"), set.clone()).await;
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            call.asked(1, Duration::from_secs(40)).await.expect("greeting");
            let (_, end) = call.say(&answer1).await;
            let first = call.agent_starts(Duration::from_secs(15)).await.expect("response 1");
            response.push(first.duration_since(end).as_secs_f64() * 1e3);
            let q2 = call.starts_line(2, Duration::from_secs(20)).await.expect("question 2");
            tokio::time::sleep_until(q2 + Duration::from_millis(1_500)).await;
            let started = Instant::now();
            let (_, end) = call.say(&barge).await;
            let cut = call.agent_turn(Duration::from_secs(20)).await.expect("cut question");
            stops.push(cut.last.duration_since(started).as_secs_f64() * 1e3);
            let first = call.agent_starts(Duration::from_secs(15)).await.expect("response 2");
            response.push(first.duration_since(end).as_secs_f64() * 1e3);
            call.asked(3, Duration::from_secs(30)).await.expect("question 3 ends");
            let (_, end) = call.say(&answer3).await;
            let first = call.agent_starts(Duration::from_secs(15)).await.expect("response 3");
            response.push(first.duration_since(end).as_secs_f64() * 1e3);
            call.asked(4, Duration::from_secs(40)).await.expect("summary ends");
            cpu += cpu_seconds() - cpu0;
            wall += t0.elapsed().as_secs_f64();
            eprintln!("round {round}: response {:?} ms, stop {:.0} ms", &response[response.len() - 3..], stops[round]);
            call.lead.leave().await;
            call.host.leave().await;
            let _ = call.server.shutdown().await;
        }
        let per_conversation = cpu / wall;
        println!(
            "agent response (end of lead speech -> first agent audio at the lead): p50 {:.0} ms, p95 {:.0} ms, n={}",
            pct(&response, 0.5),
            pct(&response, 0.95),
            response.len()
        );
        println!(
            "barge-in (lead starts over the agent -> agent's last packet): p50 {:.0} ms, max {:.0} ms, n={}",
            pct(&stops, 0.5),
            pct(&stops, 1.0),
            stops.len()
        );
        println!(
            "CPU per conversation (whole process incl. the lead's client): {:.2} cores; agents per core >= {:.1}",
            per_conversation,
            1.0 / per_conversation
        );
        println!(
            "{}",
            json!({"response_p50_ms": pct(&response, 0.5), "response_p95_ms": pct(&response, 0.95),
                   "barge_in_stop_p50_ms": pct(&stops, 0.5), "cpu_cores_per_conversation": per_conversation})
        );
    });
}
