//! The AI agent end to end with real audio: a scripted lead (a webrtc-rs participant that
//! speaks espeak-ng answers after each of the agent's turns ends, hearing the agent's audio
//! through the SFU) against a dispatched agent, with the real Whisper model and Silero VAD
//! listening. Runs: the whole question set with a follow-up; the lead interrupting the agent;
//! the lead saying "mm-hmm" while the agent talks.

mod common;

use common::agent_call::{Call, api, start_call};
use common::speech::speak_48k;
use conclave_signaling::ServerMessage;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// One scenario at a time: each runs a transcribing server, and three at once on two cores
/// would measure the machine, not the agent.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kinds(status: &Value) -> Vec<String> {
    status["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["who"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            )
        })
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn bant_set() -> Value {
    json!({
        "name": "Discovery",
        "greeting": "Hi {name}, I'm Ava.",
        "closing": "Thanks, talk soon.",
        "questions": [
            {"text": "What problem are you trying to solve?", "category": "need"},
            {"text": "What budget do you have for this?", "category": "budget",
             "follow_up": "Roughly what amount would that be?"},
            {"text": "Who makes the final decision?", "category": "authority"},
            {"text": "When do you need it running?", "category": "timeline"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_lead_is_asked_every_question_in_order_and_scored() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("discovery", bant_set()).await;
    // The lead answers whatever was asked, in this order; the second answer lacks an amount,
    // so the agent must follow up before moving on.
    let answers = [
        "The main problem is that our old tool drops calls, and we are losing customers.",
        "We do have some money set aside for this.",
        "About one hundred thousand dollars for the first year.",
        "I make the final decision on this.",
        "We want to be live by the end of February.",
    ];
    let speech: Vec<Vec<f32>> = answers
        .iter()
        .map(|a| speak_48k(a, &std::env::temp_dir()))
        .collect();
    let mut latencies = Vec::new();
    let mut overlaps = Vec::new();
    for (i, pcm) in speech.iter().enumerate() {
        let heard = call
            .asked(i + 1, Duration::from_secs(40))
            .await
            .unwrap_or_else(|| panic!("agent turn {i} never came"));
        assert!(heard.packets > 25, "turn {i}: {} packets", heard.packets);
        let (start, end) = call.say(pcm).await;
        // Never over the lead: agent audio while the lead speaks.
        overlaps.push(call.agent_packets_between(start, end) as f64 * 20.0);
        let next = call
            .agent_starts(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("agent did not answer answer {i}"));
        latencies.push(next.duration_since(end).as_secs_f64() * 1_000.0);
    }
    // The summary and the closing.
    let summary = call
        .asked(answers.len() + 1, Duration::from_secs(40))
        .await
        .expect("summary");
    assert!(summary.packets > 50, "summary: {} packets", summary.packets);
    let status = call.finished(Duration::from_secs(20)).await;
    eprintln!("events: {:#?}", status["events"]);
    eprintln!("end of lead speech -> agent's first audio at the lead, ms: {latencies:?}");
    eprintln!("agent audio during lead speech, ms: {overlaps:?}");
    assert_eq!(status["status"], "finished", "{status}");
    assert_eq!(
        kinds(&status)
            .iter()
            .filter(|k| k.starts_with("agent:") && *k != "agent:acknowledgement")
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            "agent:greeting",
            "agent:question",
            "agent:follow_up",
            "agent:question",
            "agent:question",
            "agent:summary"
        ],
        "{status}"
    );
    let questions: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["who"] == "agent" && e["kind"] != "acknowledgement")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(questions[0].ends_with("What problem are you trying to solve?"));
    assert!(questions[1].ends_with("What budget do you have for this?"));
    assert!(questions[3].ends_with("Who makes the final decision?"));
    assert!(questions[4].ends_with("When do you need it running?"));
    let score = &status["score"];
    assert_eq!(score["budget"]["kind"], "amount", "{score}");
    assert_eq!(
        score["budget"]["amount"].as_f64(),
        Some(100_000.0),
        "{score}"
    );
    assert_eq!(score["budget"]["currency"], "USD");
    assert_eq!(score["authority"], "decision_maker", "{score}");
    assert_eq!(score["need"], true, "{score}");
    assert_eq!(score["timeline_by"], "2027-02-28", "{score}");
    assert_eq!(score["band"], "hot", "{score}");
    assert!(
        score["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["criterion"] == "budget"
                && e["quote"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains("first year")),
        "{score}"
    );
    assert!(
        status["summary"]["key_points"].as_array().unwrap().len() >= 4,
        "{status}"
    );
    // The spoken summary says what was heard.
    let said = questions.last().unwrap();
    assert!(
        said.contains("100k dollars") && said.contains("February 28, 2027"),
        "{said}"
    );
    for (i, o) in overlaps.iter().enumerate() {
        assert!(*o <= 300.0, "agent talked over answer {i} for {o} ms");
    }
    let p50 = percentile(&mut latencies.clone(), 0.5);
    eprintln!("p50 {p50:.0} ms");
    assert!(p50 < 2_500.0, "agent answers too slowly: {latencies:?}");
    // The host saw the score fill in live.
    let pushed = call
        .host
        .wait_for(
            Duration::from_secs(5),
            |m| matches!(m, ServerMessage::LeadScore { score, .. } if score["band"] == "hot"),
        )
        .await;
    assert!(pushed.is_some(), "the host never got a hot lead_score");
    // Still readable after everyone left and the room closed.
    call.lead.leave().await;
    call.host.leave().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = api(
        call.server.http_addr,
        "GET",
        "/api/rooms/discovery/agent",
        Value::Null,
    )
    .await;
    assert_eq!(after.0, 200);
    assert_eq!(after.1["score"]["band"], "hot");
    assert_eq!(after.1["status"], "finished");
}

fn long_set() -> Value {
    json!({
        "name": "Long",
        "greeting": "Hi {name}.",
        "closing": "Thanks.",
        "questions": [
            {"text": "What problem are you trying to solve?", "category": "need"},
            {"text": "Thinking about the next year and everything your team has planned, and keeping in mind that prices depend on the number of seats and the support level you choose, what budget do you have in mind for this project?", "category": "budget"},
            {"text": "Who makes the final decision?", "category": "authority"}
        ]
    })
}

/// Plays the first question and answers it, then returns when the long second question starts.
async fn into_long_question(call: &mut Call) -> Instant {
    call.asked(1, Duration::from_secs(40))
        .await
        .expect("greeting");
    let pcm = speak_48k(
        "The main problem is that our old tool drops calls, and we are losing customers.",
        &std::env::temp_dir(),
    );
    call.say(&pcm).await;
    call.starts_line(2, Duration::from_secs(20))
        .await
        .expect("second question starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_talking_over_the_agent_stops_it_and_the_answer_counts() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("interrupt", long_set()).await;
    let started = into_long_question(&mut call).await;
    tokio::time::sleep_until(started + Duration::from_millis(1_500)).await;
    let answer = speak_48k(
        "Sorry to cut in, we have about fifty thousand euros for it.",
        &std::env::temp_dir(),
    );
    let barge = Instant::now();
    call.say(&answer).await;
    let cut = call
        .agent_turn(Duration::from_secs(20))
        .await
        .expect("cut turn");
    let stop_ms = cut.last.duration_since(barge).as_millis();
    let played_ms = cut.last.duration_since(cut.first).as_millis();
    eprintln!(
        "lead started over the agent -> agent's last packet: {stop_ms} ms (played {played_ms} ms of the question)"
    );
    // The full question is ~14 s of speech; cut off well before.
    assert!(
        played_ms < 6_000,
        "the agent did not stop: played {played_ms} ms"
    );
    // It pauses 350 ms into the voice and the words then make it a stop: about 0.5 s at the
    // lead (measured 499-666 ms in debug builds); the words alone would take 1.3 s or more.
    assert!(stop_ms < 1_000, "the agent took {stop_ms} ms to stop");
    // The answer counted: next comes the authority question.
    let next = call
        .asked(3, Duration::from_secs(30))
        .await
        .expect("next question");
    assert!(next.packets > 25);
    let status = call.status().await;
    eprintln!("{:#?}", status["events"]);
    let k = kinds(&status);
    assert!(k.contains(&"agent:interruption".to_owned()), "{k:?}");
    let last_q = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["who"] == "agent" && e["kind"] == "question")
        .unwrap();
    assert!(
        last_q["text"]
            .as_str()
            .unwrap()
            .ends_with("Who makes the final decision?"),
        "{status}"
    );
    assert_eq!(
        status["score"]["budget"]["amount"].as_f64(),
        Some(50_000.0),
        "{status}"
    );
    assert_eq!(status["score"]["budget"]["currency"], "EUR", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mm_hmm_while_the_agent_talks_does_not_interrupt_it() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("backchannel", long_set()).await;
    let started = into_long_question(&mut call).await;
    tokio::time::sleep_until(started + Duration::from_millis(2_000)).await;
    call.say(&speak_48k("Mm-hmm.", &std::env::temp_dir())).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    call.say(&speak_48k("Right.", &std::env::temp_dir())).await;
    let turn = call
        .agent_turn(Duration::from_secs(30))
        .await
        .expect("long question");
    // A backchannel may pause the agent until its words are transcribed (over a second on a
    // busy machine), which looks like the end of a turn: what starts again within 4 s is the
    // same question (and is waited for to its end, however long it is: CI failed when the
    // wait for the rest of the question was itself bounded by the 4 s). The measure is the
    // audio it played, 20 ms a packet.
    let mut packets = turn.packets;
    while let Some(more) = call.agent_turn(Duration::from_secs(4)).await {
        packets += more.packets;
    }
    let played_ms = packets as u64 * 20;
    eprintln!("long question played {played_ms} ms of audio with two backchannels");
    let status = call.status().await;
    eprintln!("{:#?}", status["events"]);
    let k = kinds(&status);
    // Only what happened from the long question on is this test's business: on a busy machine
    // an earlier answer with a pause in it can be taken as a finished turn, and the agent,
    // talked over, rightly stops (seen in CI once: an interruption before the long question).
    let from = k
        .iter()
        .rposition(|e| e == "agent:question")
        .expect("the long question is in the events");
    assert!(
        !k[from..].contains(&"agent:interruption".to_owned()),
        "the backchannels interrupted the long question: {k:?}"
    );
    assert!(played_ms > 9_000, "the question was cut: {played_ms} ms");
}

async fn metric(call: &Call, name: &str) -> f64 {
    let (_, body) = common::http(call.server.http_addr, "GET", "/metrics", None, "").await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_voice_coming_back_through_the_leads_microphone_does_not_stop_it() {
    let _serial = SERIAL.lock().await;
    let mut call = start_call("echo", bant_set()).await;
    // A loudspeaker beside the lead's microphone and no echo cancellation: everything the
    // lead hears from the agent goes back into the room at 0.7 of its level.
    call.lead
        .echo(Some((&call.agent, call.speech.clone(), 0.7)));
    call.asked(1, Duration::from_secs(40))
        .await
        .expect("greeting and first question");
    // Whatever its echo did (a pause at most), the line is over and nothing was taken for
    // an answer: the agent waits for the lead.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = call.status().await;
    let k = kinds(&status);
    assert_eq!(k, vec!["agent:greeting"], "{:#?}", status["events"]);
    assert!(
        metric(&call, "conclave_agent_echoes_total").await >= 1.0,
        "the echo never reached the agent's ears, so this test tested nothing"
    );
    let pauses = metric(&call, "conclave_agent_pauses_total").await;
    assert!(pauses <= 1.0, "{pauses} pauses for one echoing microphone");
    // The lead answers; the next question plays in full over its own echo.
    let answer = speak_48k(
        "The main problem is that our old tool drops calls, and we are losing customers.",
        &std::env::temp_dir(),
    );
    call.say(&answer).await;
    let q2 = call
        .asked(2, Duration::from_secs(30))
        .await
        .expect("second question");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = call.status().await;
    eprintln!("{:#?}", status["events"]);
    let k = kinds(&status);
    assert!(!k.contains(&"agent:interruption".to_owned()), "{k:?}");
    assert_eq!(
        k.iter().filter(|k| *k == "lead:answer").count(),
        1,
        "only the lead's own words are answers: {k:?}"
    );
    // "What budget do you have for this?" is about 2 s of Piper speech.
    assert!(
        q2.packets >= 70,
        "second question cut short: {} packets",
        q2.packets
    );
    assert_eq!(
        metric(&call, "conclave_agent_pauses_total").await,
        pauses,
        "a known echo source paused the agent again"
    );
    call.lead.echo(None);
}
