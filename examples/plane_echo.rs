//! The new media plane (`conclave::plane`) against a browser, with nothing else of Conclave in
//! the way: a page offers its camera and microphone, the plane answers with its own SDP,
//! connects (ICE-lite, DTLS, SRTP) and sends each of the page's tracks back to it under the
//! plane's own SSRCs. `tests/browser/plane.test.mjs` opens it in Chromium and checks that the
//! page decodes what comes back.
//!
//! `cargo run --example plane_echo` prints `listening on http://127.0.0.1:<port>/`.
//! The HTTP side is a minimal one for this example only: one request per connection, bodies up
//! to 64 kB, 5 s to send one.

use conclave::plane::engine::{Engine, TransportId};
use conclave::plane::sdp::{self, Answered, Sending};
use conclave::plane::transport::{Credentials, Identity, Transport, TransportEvent};
use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize, Unmarshal};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>plane echo</title>
<video id="v" autoplay muted playsinline></video><audio id="a" autoplay></audio>
<script>
window.result = { state: 'new' };
(async () => {
  try {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const pc = new RTCPeerConnection();
    window.pc = pc;
    for (const t of media.getTracks()) pc.addTrack(t, media);
    pc.ontrack = (e) => {
      const el = document.getElementById(e.track.kind === 'audio' ? 'a' : 'v');
      el.srcObject = new MediaStream([e.track]);
    };
    pc.onconnectionstatechange = () => { window.result.state = pc.connectionState; };
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch('/offer', { method: 'POST', body: pc.localDescription.sdp });
    if (!res.ok) throw new Error('offer refused: ' + (await res.text()));
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  } catch (e) { window.result.error = String(e); }
})();
</script>"#;

/// An offer from the HTTP thread and where its answer goes.
type OfferMsg = (String, mpsc::Sender<Result<String, String>>);

struct Echo {
    transport: TransportId,
    /// Payload type -> the plane's SSRC for that section's kind.
    ssrc_by_pt: HashMap<u8, u32>,
}

fn main() {
    let engine = Engine::bind("127.0.0.1:0".parse().unwrap()).expect("bind the plane's socket");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind HTTP");
    println!("listening on http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel::<OfferMsg>();
    std::thread::spawn(move || plane(engine, rx));
    for stream in listener.incoming().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &tx);
        });
    }
}

fn plane(mut engine: Engine, offers: mpsc::Receiver<OfferMsg>) {
    let identity = Identity::generate().expect("certificate");
    let provider = rtc::crypto::default_provider().expect("crypto");
    let mut echoes: Vec<Echo> = Vec::new();
    let mut next_ssrc = 0x1000_0000u32;
    let mut inbound: Vec<(TransportId, bytes::BytesMut)> = Vec::new();
    loop {
        let now = Instant::now();
        while let Ok((offer, reply)) = offers.try_recv() {
            let answered = (|| {
                let parsed = sdp::parse_offer(&offer).map_err(|e| e.to_string())?;
                let mut sections = Vec::new();
                let mut ssrc_by_pt = HashMap::new();
                for m in &parsed.media {
                    let codec = match m.kind.as_str() {
                        "audio" => "opus/48000",
                        "video" => "VP8/90000",
                        _ => {
                            sections.push(Answered::Reject);
                            continue;
                        }
                    };
                    next_ssrc += 1;
                    if let Some((pt, _)) = m.codecs.iter().find(|(_, c)| {
                        c.to_ascii_lowercase()
                            .starts_with(&codec.to_ascii_lowercase())
                    }) {
                        ssrc_by_pt.insert(*pt, next_ssrc);
                    }
                    sections.push(Answered::SendRecv(Sending {
                        codec: codec.into(),
                        ssrc: next_ssrc,
                        msid: ("echo".into(), format!("{}-{next_ssrc}", m.kind)),
                    }));
                }
                let creds = Credentials::generate(&*provider, parsed.fingerprint.clone());
                let answer = sdp::answer(
                    &parsed,
                    &sections,
                    &creds.local_ufrag,
                    &creds.local_pwd,
                    &identity.fingerprint,
                    engine.local_addr(),
                );
                let t = Transport::new(&identity, creds, engine.local_addr(), now)
                    .map_err(|e| e.to_string())?;
                echoes.push(Echo {
                    transport: engine.insert(t),
                    ssrc_by_pt,
                });
                Ok(answer)
            })();
            let _ = reply.send(answered);
        }
        engine.handle_timeouts(now, |id, ev| {
            if let TransportEvent::Failed(why) = ev {
                eprintln!("transport {id} failed: {why}");
            }
        });
        engine.receive(now, |id, ev| match ev {
            TransportEvent::Rtp(p) => inbound.push((id, p)),
            TransportEvent::Connected => eprintln!("transport {id} connected"),
            TransportEvent::Failed(why) => eprintln!("transport {id} failed: {why}"),
            TransportEvent::Rtcp(_) => {}
        });
        for (id, p) in inbound.drain(..) {
            let Some(echo) = echoes.iter().find(|e| e.transport == id) else {
                continue;
            };
            let mut b = &p[..];
            let Ok(mut header) = rtp::header::Header::unmarshal(&mut b) else {
                continue;
            };
            let Some(&ssrc) = echo.ssrc_by_pt.get(&header.payload_type) else {
                continue; // padding-only or a codec the answer did not take
            };
            let payload = &p[header.marshal_size()..];
            header.ssrc = ssrc;
            header.extension = false;
            header.extensions.clear();
            let mut raw = [0u8; 128];
            if let Ok(n) = header.marshal_to(&mut raw) {
                let _ = engine.send_rtp(id, &raw[..n], payload);
            }
        }
        engine.flush();
        engine.wait(Duration::from_millis(5));
    }
}

fn serve(stream: TcpStream, offers: &mpsc::Sender<OfferMsg>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(usize::MAX);
        }
    }
    let mut out = stream;
    let respond = |out: &mut TcpStream, status: &str, kind: &str, body: &str| {
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if request.starts_with("GET / ") {
        return respond(&mut out, "200 OK", "text/html; charset=utf-8", PAGE);
    }
    if !request.starts_with("POST /offer ") {
        return respond(&mut out, "404 Not Found", "text/plain", "not found");
    }
    if length > 64 * 1024 {
        return respond(
            &mut out,
            "413 Payload Too Large",
            "text/plain",
            "offer too large",
        );
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let (reply_tx, reply_rx) = mpsc::channel();
    let _ = offers.send((String::from_utf8_lossy(&body).into_owned(), reply_tx));
    match reply_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(answer)) => respond(&mut out, "200 OK", "application/sdp", &answer),
        Ok(Err(e)) => respond(&mut out, "400 Bad Request", "text/plain", &e),
        Err(_) => respond(
            &mut out,
            "503 Service Unavailable",
            "text/plain",
            "plane busy",
        ),
    }
}
