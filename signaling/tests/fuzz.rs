//! A bounded fuzz run over the signaling parser and the session state machine, in the test
//! suite (no nightly toolchain needed): valid messages mutated byte by byte, spliced, cut and
//! wrapped, plus random JSON, fed to `decode_client` and `decode_server`; every decoded client
//! message goes through a session. Nothing may panic, a decoded message must survive an
//! encode/decode round trip, and the session must never ask for a second join.
//!
//! `CONCLAVE_FUZZ_ITERS` sets the number of inputs (default 30,000, about a second); the
//! seed is printed, and `CONCLAVE_FUZZ_SEED` replays a run.

use conclave_signaling::session::{Action, Session, SessionState};
use conclave_signaling::{ClientMessage, decode_client, decode_server, encode};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SEEDS: &[&str] = &[
    r#"{"v":1,"type":"join","room":"demo","name":"Ada","token":"eyJ.a.b"}"#,
    r#"{"type":"join","room":"ABC-DEF-GHJ","token":"t"}"#,
    r#"{"v":1,"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}"#,
    r#"{"v":1,"type":"answer","sdp":""}"#,
    r#"{"v":1,"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
    r#"{"v":1,"type":"mute","track_id":"TR_x","muted":true}"#,
    r#"{"v":1,"type":"leave"}"#,
    r#"{"v":1,"type":"ping","id":7}"#,
    r#"{"type":"caption","participant_id":"PA_1","name":"n","text":"hi","final":true,"start_ms":0,"end_ms":1}"#,
    r#"{"type":"joined","room":"r","participant_id":"PA_1","participants":[],"ice_servers":[]}"#,
];

const NOISE: &[&str] = &[
    "",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ":",
    ",",
    "null",
    "true",
    "-0",
    "1e309",
    "\u{0}",
    "\u{feff}",
    "é",
    "😀",
    "\"type\"",
    "\"v\"",
    "99999999999999999999",
    "{\"type\":{}}",
    "\n",
];

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut bytes = input.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes.truncate(i);
            }
            2 => {
                let i = rng.below(bytes.len() + 1);
                let noise = rng.pick(NOISE).as_bytes().to_vec();
                bytes.splice(i..i, noise);
            }
            3 if bytes.len() > 1 => {
                let a = rng.below(bytes.len());
                let b = a + rng.below(bytes.len() - a);
                bytes.drain(a..b);
            }
            4 => {
                let other = rng.pick(SEEDS).as_bytes();
                let cut = rng.below(other.len());
                bytes.extend_from_slice(&other[cut..]);
            }
            _ => {
                let depth = rng.below(64);
                bytes = format!(
                    "{}{}{}",
                    "[".repeat(depth),
                    String::from_utf8_lossy(&bytes),
                    "]".repeat(depth)
                )
                .into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_parser_and_the_session_survive_arbitrary_input() {
    let iters: usize = std::env::var("CONCLAVE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let seed: u64 = std::env::var("CONCLAVE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("fuzz seed {seed} ({iters} inputs); replay with CONCLAVE_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let mut session = Session::new();
    let (mut decoded, mut joins) = (0usize, 0usize);
    for i in 0..iters {
        let input = if rng.below(10) == 0 {
            (0..rng.below(40))
                .map(|_| rng.pick(NOISE))
                .collect::<String>()
        } else {
            let seed = rng.pick(SEEDS).to_owned();
            mutate(&mut rng, &seed)
        };
        let _ = decode_server(&input);
        let Ok(msg) = decode_client(&input) else {
            continue;
        };
        decoded += 1;
        let again = decode_client(&encode(&msg)).unwrap_or_else(|e| {
            panic!("input {i}: {input:?} decoded but its encoding did not: {e}")
        });
        assert_eq!(again, msg, "input {i}: {input:?}");
        match session.on_message(msg) {
            Action::Join(ClientMessage::Join { .. }) => {
                joins += 1;
                assert_eq!(joins, 1, "input {i}: a second join was accepted");
                // Half the time the join succeeds, half the time it is refused.
                if rng.below(2) == 0 {
                    session.join_accepted();
                } else {
                    session.join_refused();
                    joins = 0;
                }
            }
            Action::Join(other) => panic!("input {i}: Join carried {other:?}"),
            Action::Leave => session = Session::new(),
            _ => {}
        }
        if session.state() == SessionState::AwaitingJoin {
            joins = 0;
        }
    }
    println!("{decoded} of {iters} inputs decoded as client messages");
    assert!(
        decoded > iters / 50,
        "the mutations never produced a valid message"
    );
}
