//! Forwarding jitter with and without live transcription: does Whisper starve the SFU?
//!
//! Three scenarios (C: the old thread default, as many Whisper threads as cores) on an in-process server, each in its own room and server:
//! (A) transcription off; (B) transcription on with the real Whisper model and the default
//! thread settings (no `whisper_threads` / `transcription_workers` overrides). In both, four
//! "talker" participants publish real speech (espeak-ng sentences with short pauses, longer
//! than the run), one "probe" participant publishes the steady 440 Hz tone (plus the test
//! client's VP8-shaped video), and one subscriber records the monotonic arrival time of every
//! audio RTP packet from the probe.
//!
//! After media flows from all five publishers, the first [`WARMUP`] are skipped and the
//! probe's packets are measured for [`WINDOW`]. Reported per scenario: packets received, lost
//! (sequence gaps), the inter-arrival deviation |gap − 20 ms × Δseq| at p50 / p99 / max, gaps
//! longer than 40 ms, and the RFC 3550 interarrival jitter (final value and mean over the
//! window). For (B) it also counts the captions the subscriber saw, per speaker, and the
//! pool's counters; no final caption at all means transcription was not really working, and
//! the bench then exits non-zero after printing its numbers.
//!
//! Everything runs in one process on one tokio runtime with the server's default worker count
//! (one per core, as `conclave serve`), so the clients' own sending and receiving competes for
//! the same cores; that is the same in both scenarios.
//!
//! Run: `cargo bench --bench forward_jitter` (takes about two minutes).

#[path = "../tests/common/mod.rs"]
mod common;

use common::client::{AudioArrival, TestClient};
use common::speech::{speak_48k, whisper_model};
use conclave_signaling::{ParticipantId, ServerMessage};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const TALKERS: usize = 4;
/// Skipped after media flows from every publisher.
const WARMUP: Duration = Duration::from_secs(3);
/// Measured.
const WINDOW: Duration = Duration::from_secs(30);
/// Speech per talker: comfortably longer than joining + warm-up + window.
const SPEECH_SECS: f64 = 55.0;
/// Opus packet interval of the test client.
const PACKET_MS: f64 = 20.0;

const SENTENCES: [&str; 6] = [
    "The quarterly budget was approved on Monday morning.",
    "We need the new contract signed before the end of March.",
    "Please send the meeting notes to everyone on the project.",
    "Our customers want a faster way to export their reports.",
    "The engineering team will ship the update next Tuesday.",
    "Let us move the design review to Thursday afternoon.",
];

fn main() {
    // As `conclave serve` does: tokio's default of one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run());
    drop(rt);
    std::process::exit(code);
}

#[derive(Debug, Default)]
struct Captions {
    finals: u64,
    interims: u64,
    /// Finals per speaker name.
    finals_by: HashMap<String, u64>,
}

#[derive(Debug)]
struct Outcome {
    name: &'static str,
    transcription: bool,
    whisper_threads: usize,
    transcription_workers: usize,
    stats: Stats,
    /// Talker audio packets the subscriber got during the window (all four together).
    talker_packets: usize,
    captions: Captions,
    /// Pool counters at the end of the window: (done, finals dropped, interims skipped,
    /// seconds spent transcribing).
    pool: Option<(u64, u64, u64, f64)>,
    secs: f64,
}

#[derive(Debug, Default)]
struct Stats {
    packets: usize,
    lost: u64,
    reordered: u64,
    p50: f64,
    p99: f64,
    max: f64,
    /// Gaps longer than 40 ms (one packet interval late or worse).
    over_40: usize,
    rfc3550_final: f64,
    rfc3550_mean: f64,
}

async fn run() -> i32 {
    let started = Instant::now();
    let model = within(
        Duration::from_secs(600),
        "Whisper model install",
        tokio::task::spawn_blocking(whisper_model),
    )
    .await
    .expect("whisper_model task");
    let dir = std::env::temp_dir().join(format!(
        "conclave-jitter-bench-{}",
        conclave::ids::random_id(6)
    ));
    let speech = within(
        Duration::from_secs(120),
        "espeak-ng speech",
        tokio::task::spawn_blocking(move || talker_speech(&dir)),
    )
    .await
    .expect("speech task");
    for (i, s) in speech.iter().enumerate() {
        eprintln!(
            "talker {i}: {:.1} s of speech and pauses",
            s.len() as f64 / 48_000.0
        );
    }

    let a = scenario("A: transcription off", false, None, &model, &speech).await;
    let b = scenario(
        "B: transcription on (default threads)",
        true,
        None,
        &model,
        &speech,
    )
    .await;
    // One thread, never bursting to two: what forwarding gets when transcription never takes
    // a second core even for a moment.
    let b1 = scenario(
        "B1: transcription on, 1 Whisper thread fixed (no burst)",
        true,
        Some(1),
        &model,
        &speech,
    )
    .await;
    // The old default: two Whisper threads per job, as many as the cores.
    let c = scenario(
        "C: transcription on, whisper threads = cores",
        true,
        Some(cores()),
        &model,
        &speech,
    )
    .await;
    let total = started.elapsed().as_secs_f64();

    println!();
    println!(
        "forward_jitter: probe audio (20 ms Opus) at a subscriber, {} s window after {} s warm-up; {TALKERS} talkers; {} cores; tokio workers = cores",
        WINDOW.as_secs(),
        WARMUP.as_secs(),
        cores()
    );
    println!();
    println!(
        "| scenario | whisper threads x workers | packets | lost | p50 |gap-20ms| | p99 | max | gaps > 40 ms | RFC 3550 J (end / mean) | captions final / interim |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in [&a, &b, &b1, &c] {
        let s = &o.stats;
        println!(
            "| {} | {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.2} / {:.2} ms | {} |",
            o.name,
            if o.transcription {
                format!("{} x {}", o.whisper_threads, o.transcription_workers)
            } else {
                "-".into()
            },
            s.packets,
            s.lost,
            s.p50,
            s.p99,
            s.max,
            s.over_40,
            s.rfc3550_final,
            s.rfc3550_mean,
            if o.transcription {
                format!("{} / {}", o.captions.finals, o.captions.interims)
            } else {
                "-".into()
            },
        );
    }
    println!();
    if let Some((done, dropped, skipped, busy)) = b.pool {
        let mut by: Vec<_> = b.captions.finals_by.iter().collect();
        by.sort();
        println!(
            "B pool: {done} transcriptions done, {dropped} finals dropped, {skipped} interims skipped, {busy:.1} s transcribing; finals by speaker: {by:?}"
        );
    }
    let json = serde_json::json!({
        "bench": "forward_jitter",
        "cores": cores(),
        "window_s": WINDOW.as_secs(),
        "warmup_s": WARMUP.as_secs(),
        "talkers": TALKERS,
        "total_s": (total * 10.0).round() / 10.0,
        "scenarios": [a.json(), b.json(), b1.json(), c.json()],
    });
    println!("{json}");
    eprintln!("forward_jitter: took {total:.1} s");

    if b.captions.finals == 0 {
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!! WARNING: scenario B produced NO final caption at the subscriber.         !!");
        eprintln!("!! Transcription was not really running, so B does not show caption load.   !!");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        return 2;
    }
    0
}

impl Outcome {
    fn json(&self) -> serde_json::Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let s = &self.stats;
        serde_json::json!({
            "name": self.name,
            "transcription": self.transcription,
            "whisper_threads": self.transcription.then_some(self.whisper_threads),
            "transcription_workers": self.transcription.then_some(self.transcription_workers),
            "packets": s.packets,
            "expected": (WINDOW.as_secs_f64() * 1000.0 / PACKET_MS) as u64,
            "lost": s.lost,
            "reordered": s.reordered,
            "dev_p50_ms": r2(s.p50),
            "dev_p99_ms": r2(s.p99),
            "dev_max_ms": r2(s.max),
            "gaps_over_40ms": s.over_40,
            "rfc3550_jitter_ms": r2(s.rfc3550_final),
            "rfc3550_jitter_mean_ms": r2(s.rfc3550_mean),
            "talker_packets": self.talker_packets,
            "captions_final": self.captions.finals,
            "captions_interim": self.captions.interims,
            "pool_done": self.pool.map(|p| p.0),
            "pool_finals_dropped": self.pool.map(|p| p.1),
            "pool_interims_skipped": self.pool.map(|p| p.2),
            "pool_busy_s": self.pool.map(|p| r2(p.3)),
            "scenario_s": r2(self.secs),
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `fut`, or a panic naming `what` after `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("forward_jitter: {what} did not finish within {limit:?}"),
    }
}

/// One speech buffer per talker: the sentences from a different start, each followed by a
/// pause (longer than the endpointer's 500 ms, a little different per talker so that they do
/// not stay in step), repeated to at least [`SPEECH_SECS`].
fn talker_speech(dir: &Path) -> Vec<Arc<Vec<f32>>> {
    let spoken: Vec<Vec<f32>> = SENTENCES.iter().map(|s| speak_48k(s, dir)).collect();
    assert!(
        spoken.iter().all(|s| s.len() > 48_000),
        "espeak-ng produced less than a second for a sentence"
    );
    (0..TALKERS)
        .map(|t| {
            let pause = 48_000 * (700 + 150 * t) / 1000;
            let mut buf = Vec::new();
            let mut i = t;
            while (buf.len() as f64) < SPEECH_SECS * 48_000.0 {
                buf.extend_from_slice(&spoken[i % spoken.len()]);
                buf.extend(std::iter::repeat_n(0.0f32, pause));
                i += 1;
            }
            Arc::new(buf)
        })
        .collect()
}

async fn scenario(
    name: &'static str,
    transcription: bool,
    whisper_threads: Option<usize>,
    model: &Path,
    speech: &[Arc<Vec<f32>>],
) -> Outcome {
    eprintln!("forward_jitter: {name}");
    let started = Instant::now();
    let model = model.to_path_buf();
    let server = within(
        Duration::from_secs(120),
        "server start",
        common::start_server(move |a| {
            a.transcription = Some(transcription);
            a.whisper_threads = whisper_threads;
            if transcription {
                a.whisper_model = Some(model);
            }
        }),
    )
    .await;
    assert_eq!(
        server.state.transcription.is_some(),
        transcription,
        "{name}: transcription should be {}",
        if transcription { "on" } else { "off" }
    );
    let whisper_threads = server.state.config.transcription.whisper_threads;
    let transcription_workers = server.state.config.transcription.workers;
    let http = server.http_addr;
    let room = if transcription {
        "jitter-b"
    } else {
        "jitter-a"
    };
    let join_limit = Duration::from_secs(20);

    let mut sub = within(
        join_limit,
        "subscriber join",
        TestClient::join(http, room, "sub", &common::token(room, "sub"), false),
    )
    .await;
    let probe = within(
        join_limit,
        "probe join",
        TestClient::join(http, room, "probe", &common::token(room, "probe"), true),
    )
    .await;
    let mut talkers = Vec::new();
    for (i, s) in speech.iter().enumerate() {
        let who = format!("talker{i}");
        talkers.push(
            within(
                join_limit,
                "talker join",
                TestClient::join_speaking(http, room, &who, &common::token(room, &who), s.clone()),
            )
            .await,
        );
    }

    let publishers: Vec<ParticipantId> = std::iter::once(probe.participant_id.clone())
        .chain(talkers.iter().map(|t| t.participant_id.clone()))
        .collect();
    let flowing = common::eventually(Duration::from_secs(30), || {
        publishers
            .iter()
            .all(|p| sub.received_from(p).audio_packets > 0)
    })
    .await;
    if !flowing {
        let got: Vec<_> = publishers
            .iter()
            .map(|p| (p.as_str().to_owned(), sub.received_from(p).audio_packets))
            .collect();
        panic!(
            "{name}: audio did not flow from every publisher to the subscriber within 30 s: {got:?}"
        );
    }
    tokio::time::sleep(WARMUP).await;
    let from = Instant::now();
    let talker_before: usize = talkers
        .iter()
        .map(|t| sub.audio_arrivals_from(&t.participant_id).len())
        .sum();
    tokio::time::sleep(WINDOW).await;
    let to = Instant::now();
    let talker_after: usize = talkers
        .iter()
        .map(|t| sub.audio_arrivals_from(&t.participant_id).len())
        .sum();
    let arrivals: Vec<AudioArrival> = sub
        .audio_arrivals_from(&probe.participant_id)
        .into_iter()
        .filter(|a| a.at >= from && a.at < to)
        .collect();
    let pool = server.state.transcription.as_ref().map(|t| {
        use conclave_media::pool::PipelineStats as P;
        let s = t.stats();
        (
            P::get(&s.transcriptions_done),
            P::get(&s.jobs_dropped),
            P::get(&s.interims_skipped),
            P::get(&s.transcription_micros) as f64 / 1e6,
        )
    });

    // Every caption that reached the subscriber so far (they queue in its event channel).
    let mut captions = Captions::default();
    sub.wait_for(Duration::from_millis(500), |m| {
        if let ServerMessage::Caption {
            is_final,
            name: speaker,
            ..
        } = m
        {
            if *is_final {
                captions.finals += 1;
                *captions.finals_by.entry(speaker.clone()).or_default() += 1;
            } else {
                captions.interims += 1;
            }
        }
        false
    })
    .await;

    let stats = stats(&arrivals);
    eprintln!("forward_jitter: {name}: {stats:?}; captions {captions:?}; pool {pool:?}");

    let mut clients = vec![sub, probe];
    clients.extend(talkers);
    for c in clients {
        within(Duration::from_secs(10), "leave", c.leave()).await;
    }
    within(
        Duration::from_secs(30),
        "server shutdown",
        server.shutdown(),
    )
    .await
    .expect("server shuts down cleanly");
    Outcome {
        name,
        transcription,
        whisper_threads,
        transcription_workers,
        stats,
        talker_packets: talker_after - talker_before,
        captions,
        pool,
        secs: started.elapsed().as_secs_f64(),
    }
}

fn stats(arrivals: &[AudioArrival]) -> Stats {
    assert!(
        arrivals.len() > 100,
        "only {} probe packets in the window",
        arrivals.len()
    );
    let mut devs = Vec::with_capacity(arrivals.len());
    let mut out = Stats {
        packets: arrivals.len(),
        ..Default::default()
    };
    let mut jitter = 0.0f64;
    let mut jitter_sum = 0.0f64;
    for w in arrivals.windows(2) {
        let (a, b) = (w[0], w[1]);
        let gap_ms = (b.at - a.at).as_secs_f64() * 1000.0;
        // RFC 3550 6.4.1: D = (Rj - Ri) - (Sj - Si), J += (|D| - J) / 16, in arrival order.
        let sent_ms = b.rtp_timestamp.wrapping_sub(a.rtp_timestamp) as i32 as f64 / 48.0;
        jitter += ((gap_ms - sent_ms).abs() - jitter) / 16.0;
        jitter_sum += jitter;
        let dseq = b.seq.wrapping_sub(a.seq) as i16;
        if dseq <= 0 {
            out.reordered += 1;
            continue;
        }
        out.lost += dseq as u64 - 1;
        if gap_ms > 2.0 * PACKET_MS {
            out.over_40 += 1;
        }
        devs.push((gap_ms - PACKET_MS * dseq as f64).abs());
    }
    devs.sort_by(f64::total_cmp);
    let pick = |q: f64| devs[((devs.len() - 1) as f64 * q).round() as usize];
    out.p50 = pick(0.5);
    out.p99 = pick(0.99);
    out.max = *devs.last().unwrap();
    out.rfc3550_final = jitter;
    out.rfc3550_mean = jitter_sum / (arrivals.len() - 1) as f64;
    out
}
