//! Scheduled meetings running themselves, timed: N meetings (default 20) with the agent on
//! auto-join, starting 2 s apart, on one in-process server whose scheduler ticks every second
//! (real clock, real Whisper tiny.en, flite voice). For each: did its room open (ready), was
//! the agent dispatched, did it reach the call, and when it was in the room relative to its
//! dispatch time (start minus the host's 1-minute buffer) and to the start.
//!
//! Run: `cargo bench --bench schedule_join` (`-- --meetings N`). Release build. One JSON line
//! at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{api_key_auth, http, speech::whisper_model, start_server};
use serde_json::{Value, json};
use std::time::Duration;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn api(addr: std::net::SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http(addr, method, path, Some(&api_key_auth()), &body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn main() {
    let n = arg("--meetings", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
        let server = start_server(|a| {
            a.whisper_model = Some(model.clone());
            a.voice = Some("flite".into());
            a.max_agents = Some(n + 2);
            a.scheduler_tick_ms = Some(1_000);
            a.ready_lead_minutes = Some(2);
        })
        .await;
        let addr = server.http_addr;
        let now = conclave::clock::now_ms();
        // Agents due (start minus 1 min) from 10 s from now, one every 2 s; the wait ends at
        // the last start.
        let first_start = (now / 1_000 + 70) * 1_000;
        let mut meetings = Vec::new();
        for i in 0..n {
            let start = first_start + i as i64 * 2_000;
            let local = chrono::DateTime::from_timestamp_millis(start).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
            let (got, s) = api(addr, "POST", "/api/schedules", json!({"title": format!("Bench call {i}"),
                "host_identity": format!("bench-host-{i}"), "time_zone": "UTC", "start": local,
                "duration_minutes": 30, "auto_join": true})).await;
            assert_eq!(got, 201, "{s}");
            meetings.push((start, s["meeting"]["code"].as_str().unwrap().to_owned(), None::<i64>));
        }
        // Watch the rooms every 50 ms until every agent is in (or 60 s after the last is due).
        let deadline = first_start + n as i64 * 2_000;
        while conclave::clock::now_ms() < deadline && meetings.iter().any(|m| m.2.is_none()) {
            let t = conclave::clock::now_ms();
            for m in meetings.iter_mut().filter(|m| m.2.is_none()) {
                let room = conclave_signaling::RoomName::validate(&m.1).unwrap();
                let agent_in = server.state.rooms.get(&room).is_some_and(|r| {
                    r.with_members(|x| x.filter(|p| p.role == Some(conclave_signaling::Role::Agent)).count() > 0)
                });
                if agent_in {
                    m.2 = Some(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The API's bot status follows at the scheduler's next tick.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let (mut after_dispatch, mut before_start) = (Vec::new(), Vec::new());
        let (mut ready, mut dispatched, mut in_call, mut failed) = (0, 0, 0, 0);
        for (i, (start, code, joined)) in meetings.iter().enumerate() {
            let (_, s) = api(addr, "GET", "/api/schedules", Value::Null).await;
            let series = s["schedules"].as_array().unwrap().iter().find(|x| x["meeting"]["code"] == *code).unwrap().clone();
            let occ = &series["occurrences"][0];
            if matches!(occ["status"].as_str(), Some("ready" | "ongoing")) {
                ready += 1;
            }
            if occ["bot"]["attempts"].as_i64().unwrap_or(0) > 0 {
                dispatched += 1;
            }
            match occ["bot"]["status"].as_str() {
                Some("in_call") => in_call += 1,
                Some("failed") => failed += 1,
                _ => {}
            }
            if let Some(t) = joined {
                let due = start - 60_000;
                after_dispatch.push((t - due) as f64);
                before_start.push((start - t) as f64);
            } else {
                eprintln!("meeting {i}: the agent never came in: {occ}");
            }
        }
        let rate = |x: usize| x as f64 / n as f64 * 100.0;
        println!("{n} scheduled meetings, scheduler tick 1 s: rooms ready {:.0}%, agents dispatched {:.0}% (automation), in call {:.0}% (success), failed auto-joins per 100 meetings {:.0}",
            rate(ready), rate(dispatched), rate(in_call), rate(failed));
        if !after_dispatch.is_empty() {
            println!("agent in the room after its dispatch time (start - 1 min): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; before the start: min {:.1} s",
                pct(&after_dispatch, 0.5), pct(&after_dispatch, 0.95), pct(&after_dispatch, 1.0), pct(&before_start, 0.0) / 1e3);
        }
        println!("{}", json!({"meetings": n, "ready_pct": rate(ready), "automation_pct": rate(dispatched), "success_pct": rate(in_call),
            "failed_per_100": rate(failed), "in_room_after_dispatch_p50_ms": after_dispatch.is_empty().then_some(0.0).unwrap_or_else(|| pct(&after_dispatch, 0.5)),
            "in_room_after_dispatch_p95_ms": after_dispatch.is_empty().then_some(0.0).unwrap_or_else(|| pct(&after_dispatch, 0.95)),
            "min_seconds_before_start": before_start.is_empty().then_some(0.0).unwrap_or_else(|| pct(&before_start, 0.0) / 1e3)}));
        let _ = server.shutdown().await;
    });
}
