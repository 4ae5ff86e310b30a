//! The AI agent as the meeting bot of scheduled meetings: dispatched on its own at start
//! minus the host's buffer, its statuses (dispatched → joining → in_call → left | failed) with
//! times and reason codes, every attempt in the auto-join log, preferences and overrides
//! honoured at the next tick, and failures that are not retried when retrying cannot help.
//! A real agent (Whisper tiny.en listening, flite speaking) joins a real room.

mod common;

use common::agent_call::api;

use chrono::TimeZone;
use common::speech::whisper_model;
use common::start_server;
use serde_json::{Value, json};
use std::time::Duration;

const MIN: i64 = 60_000;

fn local(ms: i64) -> String {
    chrono_tz::America::New_York
        .timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

fn minute_from_now(minutes: i64) -> i64 {
    (conclave::clock::now_ms() / MIN + minutes) * MIN
}

async fn schedule(
    addr: std::net::SocketAddr,
    title: &str,
    host: &str,
    start: i64,
) -> (i64, String) {
    let (got, s) = api(
        addr,
        "POST",
        "/api/schedules",
        json!({"title": title, "host_identity": host, "time_zone": "America/New_York",
               "start": local(start), "duration_minutes": 30, "auto_join": true}),
    )
    .await;
    assert_eq!(got, 201, "{s}");
    (
        s["id"].as_i64().unwrap(),
        s["meeting"]["code"].as_str().unwrap().to_owned(),
    )
}

async fn first_occurrence(addr: std::net::SocketAddr, id: i64) -> Value {
    let (_, s) = api(addr, "GET", &format!("/api/schedules/{id}"), Value::Null).await;
    let occ = s["occurrences"][0]["id"]
        .as_i64()
        .expect("stored occurrence");
    let (_, o) = api(addr, "GET", &format!("/api/occurrences/{occ}"), Value::Null).await;
    o
}

fn log(o: &Value) -> Vec<String> {
    o["auto_join_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| match l["error"].as_str() {
            Some(e) => format!(
                "{}:{}:{}",
                l["attempt"],
                l["outcome"].as_str().unwrap(),
                e.split(':').next().unwrap()
            ),
            None => format!("{}:{}", l["attempt"], l["outcome"].as_str().unwrap()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_joins_a_scheduled_meeting_on_its_own_and_obeys_overrides() {
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let server = start_server(|a| {
        a.scheduler_tick_ms = Some(0);
        a.whisper_model = Some(model.clone());
        a.voice = Some("flite".into());
    })
    .await;
    let addr = server.http_addr;
    let sched = server.state.scheduler.clone();
    // Two minutes' buffer for this host; one of their meetings is internal.
    let (got, p) = api(
        addr,
        "PUT",
        "/api/hosts/sam/preferences",
        json!({"auto_join": true, "excluded_keywords": ["internal"], "join_buffer_minutes": 2, "question_set_id": null}),
    )
    .await;
    assert_eq!(got, 200, "{p}");
    let start = minute_from_now(5);
    let (id, code) = schedule(addr, "Acme discovery", "sam", start).await;
    let (internal, _) = schedule(addr, "Internal sync", "sam", start + 60 * MIN).await;
    // Ready 15 minutes before, but the agent waits for its buffer.
    sched.tick(start - 10 * MIN).await.unwrap();
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["status"], "ready");
    assert!(o["bot"]["status"].is_null(), "{o}");
    // At start minus 2 minutes: dispatched, then joining.
    let due = start - 2 * MIN;
    let r = sched.tick(due).await.unwrap();
    assert_eq!(r.dispatches, 1, "{r:?}");
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["bot"]["status"], "joining", "{o}");
    // The agent is a member of the meeting's room within moments; the next tick sees it.
    let room = conclave_signaling::RoomName::validate(&code).unwrap();
    let t0 = std::time::Instant::now();
    assert!(
        common::eventually(Duration::from_secs(20), || server
            .state
            .rooms
            .get(&room)
            .is_some_and(|r| r.with_members(|m| m
                .filter(|x| x.role == Some(conclave_signaling::Role::Agent))
                .count())
                == 1))
        .await,
        "the agent never joined the room"
    );
    eprintln!(
        "dispatch -> agent in the room: {} ms",
        t0.elapsed().as_millis()
    );
    sched.tick(due + 5_000).await.unwrap();
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["bot"]["status"], "in_call", "{o}");
    assert!(o["bot"]["joined_at"].is_string(), "{o}");
    assert_eq!(log(&o), ["1:dispatched", "1:joining", "1:in_call"]);
    // Ticking again sends no second agent.
    assert_eq!(sched.tick(due + 10_000).await.unwrap().dispatches, 0);
    // The host takes it out: it leaves and is not sent again.
    let occ = o["id"].as_i64().unwrap();
    let (got, v) = api(
        addr,
        "POST",
        &format!("/api/occurrences/{occ}/override"),
        json!({"action": "stop_agent"}),
    )
    .await;
    assert_eq!(got, 200, "{v}");
    assert_eq!(v["bot"]["status"], "left");
    assert!(
        common::eventually(Duration::from_secs(10), || server.state.agents.running()
            == 0)
        .await,
        "the agent did not leave"
    );
    sched.tick(due + 20_000).await.unwrap();
    assert_eq!(first_occurrence(addr, id).await["bot"]["status"], "left");
    // ... until the host sends it now.
    let (got, v) = api(
        addr,
        "POST",
        &format!("/api/occurrences/{occ}/override"),
        json!({"action": "dispatch_agent"}),
    )
    .await;
    assert_eq!(got, 200, "{v}");
    assert_eq!(v["bot"]["status"], "joining", "{v}");
    // Bad overrides: unknown action, an occurrence that does not exist.
    let (got, _) = api(
        addr,
        "POST",
        &format!("/api/occurrences/{occ}/override"),
        json!({"action": "dance"}),
    )
    .await;
    assert_eq!(got, 400, "unknown action");
    let (got, _) = api(
        addr,
        "POST",
        "/api/occurrences/99999/override",
        json!({"action": "cancel"}),
    )
    .await;
    assert_eq!(got, 404);
    // The internal meeting never gets one.
    sched.tick(start + 60 * MIN - MIN).await.unwrap();
    let o = first_occurrence(addr, internal).await;
    assert_eq!(o["status"], "ready");
    assert!(o["bot"]["status"].is_null(), "excluded keyword: {o}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_the_attempt_fails_once_with_its_reason_and_preferences_are_honoured() {
    // No Whisper model: agents cannot listen, so dispatches fail with model_missing, which a
    // retry cannot mend.
    let server = start_server(|a| a.scheduler_tick_ms = Some(0)).await;
    let addr = server.http_addr;
    let sched = server.state.scheduler.clone();
    let start = minute_from_now(10);
    let (id, _) = schedule(addr, "Acme renewal", "kim", start).await;
    sched.tick(start - MIN).await.unwrap();
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["bot"]["status"], "failed", "{o}");
    assert_eq!(o["bot"]["reason"], "model_missing", "{o}");
    assert!(
        o["bot"]["next_attempt_at"].is_null(),
        "no retry for a missing model: {o}"
    );
    sched.tick(start).await.unwrap();
    sched.tick(start + MIN).await.unwrap();
    assert_eq!(
        log(&first_occurrence(addr, id).await),
        ["1:dispatched", "1:failed:model_missing"]
    );
    // A host who turns auto-join off mid-flow gets no agent from the next tick on.
    let start2 = minute_from_now(90);
    let (id2, _) = schedule(addr, "Acme follow-up", "kim", start2).await;
    sched.tick(start2 - 10 * MIN).await.unwrap();
    let (got, _) = api(
        addr,
        "PUT",
        "/api/hosts/kim/preferences",
        json!({"auto_join": false, "excluded_keywords": [], "join_buffer_minutes": 1, "question_set_id": null}),
    )
    .await;
    assert_eq!(got, 200);
    sched.tick(start2 - MIN).await.unwrap();
    let o = first_occurrence(addr, id2).await;
    assert_eq!(o["status"], "ready");
    assert!(o["bot"]["status"].is_null(), "{o}");
    assert_eq!(log(&o), Vec::<String>::new());
    // Bad preferences are refused.
    let (got, v) = api(
        addr,
        "PUT",
        "/api/hosts/kim/preferences",
        json!({"auto_join": true, "excluded_keywords": [], "join_buffer_minutes": 500, "question_set_id": null}),
    )
    .await;
    assert_eq!(got, 400, "{v}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dispatch_is_retried_after_its_backoff_and_then_succeeds() {
    // One agent slot, taken by an agent sent by hand elsewhere: the scheduled dispatch fails
    // (agent_start_failed, retryable), waits its backoff, and succeeds once the slot is free.
    let model = tokio::task::spawn_blocking(whisper_model).await.unwrap();
    let server = start_server(|a| {
        a.scheduler_tick_ms = Some(0);
        a.whisper_model = Some(model.clone());
        a.voice = Some("flite".into());
        a.max_agents = Some(1);
    })
    .await;
    let addr = server.http_addr;
    let sched = server.state.scheduler.clone();
    let (got, m) = api(addr, "POST", "/api/meetings", json!({"name": "Elsewhere"})).await;
    assert!(got == 200 || got == 201, "{m}");
    let elsewhere = m["code"]
        .as_str()
        .or_else(|| m["meeting"]["code"].as_str())
        .expect("meeting code")
        .to_owned();
    let (got, a) = api(
        addr,
        "POST",
        &format!("/api/meetings/{elsewhere}/agent"),
        json!({}),
    )
    .await;
    assert_eq!(got, 202, "{a}");
    let start = minute_from_now(5);
    let (id, _) = schedule(addr, "Acme retry", "lee", start).await;
    let due = start - MIN;
    sched.tick(due).await.unwrap();
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["bot"]["status"], "failed", "{o}");
    assert_eq!(o["bot"]["reason"], "agent_start_failed", "{o}");
    let next = chrono::DateTime::parse_from_rfc3339(
        o["bot"]["next_attempt_at"]
            .as_str()
            .expect("a retry is scheduled"),
    )
    .unwrap()
    .timestamp_millis();
    // 5 s base, 50-100% jitter.
    assert!(
        (due + 2_500..=due + 5_000).contains(&next),
        "retry at +{} ms",
        next - due
    );
    // Before the backoff: nothing. The slot frees up; after it: the second attempt joins.
    assert_eq!(sched.tick(next - 1).await.unwrap().dispatches, 0);
    let (got, _) = api(
        addr,
        "DELETE",
        &format!("/api/meetings/{elsewhere}/agent"),
        Value::Null,
    )
    .await;
    assert!(got == 200 || got == 202 || got == 204, "{got}");
    assert!(
        common::eventually(Duration::from_secs(10), || server.state.agents.running()
            == 0)
        .await
    );
    assert_eq!(sched.tick(next).await.unwrap().dispatches, 1);
    sched.tick(next + 1_000).await.unwrap();
    let o = first_occurrence(addr, id).await;
    assert_eq!(o["bot"]["status"], "in_call", "{o}");
    assert_eq!(o["bot"]["attempts"], 2, "{o}");
    assert_eq!(
        log(&o),
        [
            "1:dispatched",
            "1:failed:agent_start_failed",
            "2:dispatched",
            "2:joining",
            "2:in_call"
        ]
    );
    server.shutdown().await.unwrap();
}
