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
//! With `--concurrent K`, K such calls (each its own room with a lead and an agent) run at
//! once on one server, every round: the agents-per-core figure is the largest K whose
//! response p95 stays within the target on this machine.
//!
//! Run: `cargo bench --bench agent_latency` (`-- --rounds N`, default 4; `--concurrent K`,
//! default 1). Release build.

#[path = "../tests/common/mod.rs"]
mod common;

use common::agent_call::{Call, agent_server, join_call};
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

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Clips {
    answer1: Vec<f32>,
    barge: Vec<f32>,
    answer3: Vec<f32>,
}

/// One scripted conversation: three response times and the barge-in stop time, ms.
async fn conversation(call: &mut Call, clips: &Clips) -> (Vec<f64>, f64) {
    let mut response = Vec::new();
    call.asked(1, Duration::from_secs(40))
        .await
        .expect("greeting");
    let (_, end) = call.say(&clips.answer1).await;
    let first = call
        .agent_starts(Duration::from_secs(15))
        .await
        .expect("response 1");
    response.push(first.duration_since(end).as_secs_f64() * 1e3);
    let q2 = call
        .starts_line(2, Duration::from_secs(20))
        .await
        .expect("question 2");
    tokio::time::sleep_until(q2 + Duration::from_millis(1_500)).await;
    let started = Instant::now();
    let (_, end) = call.say(&clips.barge).await;
    let cut = call
        .agent_turn(Duration::from_secs(20))
        .await
        .expect("cut question");
    let stop = cut.last.duration_since(started).as_secs_f64() * 1e3;
    let first = call
        .agent_starts(Duration::from_secs(15))
        .await
        .expect("response 2");
    response.push(first.duration_since(end).as_secs_f64() * 1e3);
    call.asked(3, Duration::from_secs(30))
        .await
        .expect("question 3 ends");
    let (_, end) = call.say(&clips.answer3).await;
    let first = call
        .agent_starts(Duration::from_secs(15))
        .await
        .expect("response 3");
    response.push(first.duration_since(end).as_secs_f64() * 1e3);
    call.asked(4, Duration::from_secs(40))
        .await
        .expect("summary ends");
    (response, stop)
}

fn main() {
    let rounds = arg("--rounds", 4);
    let concurrent = arg("--concurrent", 1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = std::env::temp_dir();
        let clips = std::sync::Arc::new(Clips {
            answer1: speak_48k(
                "The main problem is that our old tool drops calls, and we are losing customers.",
                &tmp,
            ),
            barge: speak_48k("Sorry to cut in, we have about fifty thousand euros for it.", &tmp),
            answer3: speak_48k("I make the final call on this.", &tmp),
        });
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
            let server = std::sync::Arc::new(agent_server().await);
            let mut calls = Vec::new();
            for k in 0..concurrent {
                calls.push(join_call(server.clone(), &format!("bench-{round}-{k}"), set.clone()).await);
            }
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let runs = calls.into_iter().map(|mut call| {
                let clips = clips.clone();
                tokio::spawn(async move {
                    let r = conversation(&mut call, &clips).await;
                    call.lead.leave().await;
                    call.host.leave().await;
                    r
                })
            });
            let results = futures::future::join_all(runs).await;
            cpu += cpu_seconds() - cpu0;
            wall += t0.elapsed().as_secs_f64();
            for r in results {
                let (resp, stop) = r.expect("conversation");
                eprintln!("round {round}: response {resp:?} ms, stop {stop:.0} ms");
                response.extend(resp);
                stops.push(stop);
            }
            if let Ok(server) = std::sync::Arc::try_unwrap(server) {
                let _ = server.shutdown().await;
            }
        }
        let cores = cpu / wall;
        let per_conversation = cores / concurrent as f64;
        println!(
            "{concurrent} concurrent conversation(s): agent response (end of lead speech -> first agent audio at the lead): p50 {:.0} ms, p95 {:.0} ms, n={}",
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
            "CPU: {cores:.2} cores for the whole process ({per_conversation:.2} per conversation, lead clients included)"
        );
        println!(
            "{}",
            json!({"concurrent": concurrent, "response_p50_ms": pct(&response, 0.5), "response_p95_ms": pct(&response, 0.95),
                   "barge_in_stop_p50_ms": pct(&stops, 0.5), "barge_in_stop_max_ms": pct(&stops, 1.0),
                   "cpu_cores": cores, "cpu_cores_per_conversation": per_conversation})
        );
    });
}
