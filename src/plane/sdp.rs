//! SDP the plane writes, for a client's offer: each media section is answered `sendonly` (the
//! plane forwards a track there, with its SSRC), `recvonly` (the client publishes there) or
//! rejected; one BUNDLE group, rtcp-mux, ICE-lite with one host candidate, DTLS passive. No
//! header extensions are answered, so clients send none.

use std::fmt::Write;
use std::net::SocketAddr;

/// What an offer says that an answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The client's sha-256 fingerprint (hex pairs).
    pub fingerprint: String,
    /// Media sections in order.
    pub media: Vec<OfferedMedia>,
}

/// One offered media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    /// `audio` or `video`.
    pub kind: String,
    /// `a=mid`.
    pub mid: String,
    /// Payload type and `rtpmap` value (`opus/48000/2`) of each codec, in offer order.
    pub codecs: Vec<(u8, String)>,
    /// Port 0: the section is rejected (in an answer) or stopped (in an offer).
    pub rejected: bool,
    /// The client sends media here (`sendrecv`, the default, or `sendonly`).
    pub client_sends: bool,
}

/// Errors in an offer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// No sha-256 fingerprint anywhere.
    #[error("the offer has no sha-256 fingerprint")]
    NoFingerprint,
    /// A media section without `a=mid` (BUNDLE needs one).
    #[error("media section {0} has no mid")]
    NoMid(usize),
}

/// Reads what the answer needs from an offer.
pub fn parse_offer(sdp: &str) -> Result<Offer, SdpError> {
    let mut fingerprint = None;
    let mut media: Vec<OfferedMedia> = Vec::new();
    let mut mids: Vec<Option<String>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            let mut words = rest.split(' ');
            let kind = words.next().unwrap_or("").to_owned();
            let rejected = words.next() == Some("0");
            media.push(OfferedMedia {
                kind,
                mid: String::new(),
                codecs: Vec::new(),
                rejected,
                client_sends: true,
            });
            mids.push(None);
        } else if let Some(rest) = line.strip_prefix("a=fingerprint:") {
            let mut parts = rest.splitn(2, ' ');
            if parts
                .next()
                .is_some_and(|alg| alg.eq_ignore_ascii_case("sha-256"))
            {
                fingerprint = parts.next().map(|v| v.trim().to_owned());
            }
        } else if matches!(line, "a=recvonly" | "a=inactive") {
            if let Some(m) = media.last_mut() {
                m.client_sends = false;
            }
        } else if let Some(rest) = line.strip_prefix("a=mid:") {
            if let Some(m) = mids.last_mut() {
                *m = Some(rest.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:")
            && let Some(m) = media.last_mut()
            && let Some((pt, codec)) = rest.split_once(' ')
            && let Ok(pt) = pt.parse()
        {
            m.codecs.push((pt, codec.to_owned()));
        }
    }
    for (i, (m, mid)) in media.iter_mut().zip(mids).enumerate() {
        m.mid = mid.ok_or(SdpError::NoMid(i))?;
    }
    Ok(Offer {
        fingerprint: fingerprint.ok_or(SdpError::NoFingerprint)?,
        media,
    })
}

/// What the plane sends in one answered section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    /// The codec's `rtpmap` prefix it forwards (`opus/48000`, `VP8/90000`).
    pub codec: String,
    /// Its SSRC.
    pub ssrc: u32,
    /// Stream and track ids for `a=msid`.
    pub msid: (String, String),
}

/// How one offered section is answered.
#[derive(Debug, Clone)]
pub enum Answered {
    /// The plane sends a track there.
    Send(Sending),
    /// The client publishes there, in the codec whose `rtpmap` starts with this.
    Receive(String),
    /// Both: the client publishes there and the plane sends a track back (same codec).
    SendRecv(Sending),
    /// Nothing flows yet, but the section stays in the transport (`a=inactive`, bundled): a
    /// subscriber's receive-only section before there is anything to send it.
    Idle(String),
    /// Rejected (port 0).
    Reject,
}

/// One media section as the plane last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `audio` or `video`.
    pub kind: String,
    /// Its mid.
    pub mid: String,
    /// The payload type and `rtpmap` of its one codec.
    pub codec: (u8, String),
    /// Which way media flows, from the plane's side.
    pub direction: Direction,
    /// What the plane sends there, if it does.
    pub sending: Option<Sending>,
}

/// A section's direction from the plane's side; `Inactive` sections are written with port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The plane sends.
    SendOnly,
    /// The client sends.
    RecvOnly,
    /// Both.
    SendRecv,
    /// Neither, for now; still bundled (written `a=inactive` with the transport's lines).
    Idle,
    /// Rejected or stopped.
    Inactive,
}

/// What the plane puts in every description it writes.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// ICE ufrag.
    pub ufrag: &'a str,
    /// ICE password.
    pub pwd: &'a str,
    /// Its certificate's sha-256 fingerprint.
    pub fingerprint: &'a str,
    /// The one host candidate (the engine's socket).
    pub candidate: SocketAddr,
}

/// Writes a description of `sections`: `passive` in answers, `actpass` in the plane's offers
/// (the client keeps the DTLS client role it has).
pub fn write(sections: &[Section], version: u64, setup: &str, local: &Local<'_>) -> String {
    let mut s = String::new();
    let bundled: Vec<&str> = sections
        .iter()
        .filter(|m| m.direction != Direction::Inactive)
        .map(|m| m.mid.as_str())
        .collect();
    let _ = write!(
        s,
        "v=0\r\no=- 4611731400430051336 {version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n"
    );
    if !bundled.is_empty() {
        let _ = write!(s, "a=group:BUNDLE {}\r\n", bundled.join(" "));
    }
    // Also at session level: a description whose every section is rejected (a subscriber's
    // first offer before anything is published) still names the transport, which clients
    // require (webrtc-rs refuses it otherwise: "missing ice-ufrag").
    let _ = write!(
        s,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n",
        local.ufrag, local.pwd, local.fingerprint
    );
    s.push_str("a=msid-semantic: WMS\r\n");
    for m in sections {
        let (pt, rtpmap) = &m.codec;
        let dir = match m.direction {
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::SendRecv => "sendrecv",
            Direction::Idle => "inactive",
            Direction::Inactive => {
                let _ = write!(
                    s,
                    "m={} 0 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=mid:{}\r\na=inactive\r\n\
                     a=rtpmap:{pt} {rtpmap}\r\n",
                    m.kind, m.mid
                );
                continue;
            }
        };
        let _ = write!(
            s,
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=fingerprint:sha-256 {fingerprint}\r\n\
             a=setup:{setup}\r\na=mid:{mid}\r\na={dir}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
             a=rtpmap:{pt} {rtpmap}\r\n",
            kind = m.kind,
            mid = m.mid,
            ufrag = local.ufrag,
            pwd = local.pwd,
            fingerprint = local.fingerprint,
        );
        if m.kind == "video" {
            // Feedback the plane acts on: NACKs from subscribers (answered from its history),
            // PLI and FIR (relayed to the publisher as a PLI); and what it sends publishers.
            let _ = write!(
                s,
                "a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\na=rtcp-fb:{pt} ccm fir\r\n"
            );
            // A stream the plane receives gets its ceiling by REMB (`plane::feedback`).
            if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                let _ = write!(s, "a=rtcp-fb:{pt} goog-remb\r\n");
            }
        }
        if let Some(snd) = &m.sending
            && matches!(m.direction, Direction::SendOnly | Direction::SendRecv)
        {
            let _ = write!(
                s,
                "a=msid:{stream} {track}\r\na=ssrc:{ssrc} cname:conclave\r\n\
                 a=ssrc:{ssrc} msid:{stream} {track}\r\n",
                stream = snd.msid.0,
                track = snd.msid.1,
                ssrc = snd.ssrc,
            );
        }
        let _ = write!(
            s,
            "a=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\na=end-of-candidates\r\n",
            ip = local.candidate.ip(),
            port = local.candidate.port(),
        );
    }
    s
}

/// The section answering offered section `m` as `decision` says (inactive when its codec was
/// not offered).
pub fn answer_section(m: &OfferedMedia, decision: &Answered) -> Section {
    let find = |codec: &str| {
        m.codecs
            .iter()
            .find(|(_, c)| {
                c.to_ascii_lowercase()
                    .starts_with(&codec.to_ascii_lowercase())
            })
            .cloned()
    };
    let (codec, direction, sending) = match decision {
        Answered::Send(snd) => (find(&snd.codec), Direction::SendOnly, Some(snd.clone())),
        Answered::SendRecv(snd) => (find(&snd.codec), Direction::SendRecv, Some(snd.clone())),
        Answered::Receive(codec) => (find(codec), Direction::RecvOnly, None),
        Answered::Idle(codec) => (find(codec), Direction::Idle, None),
        Answered::Reject => (None, Direction::Inactive, None),
    };
    let inactive = Section {
        kind: m.kind.clone(),
        mid: m.mid.clone(),
        codec: m.codecs.first().cloned().unwrap_or((0, String::new())),
        direction: Direction::Inactive,
        sending: None,
    };
    match codec {
        Some(codec) if direction != Direction::Inactive && !m.rejected => Section {
            codec,
            direction,
            sending,
            ..inactive
        },
        _ => inactive,
    }
}

/// Writes the answer to a first offer: section `i` as `sections[i]` says (missing ones are
/// rejected), with the codec's payload type from the offer.
pub fn answer(
    offer: &Offer,
    sections: &[Answered],
    ufrag: &str,
    pwd: &str,
    fingerprint: &str,
    candidate: SocketAddr,
) -> String {
    let answered: Vec<Section> = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| answer_section(m, sections.get(i).unwrap_or(&Answered::Reject)))
        .collect();
    let local = Local {
        ufrag,
        pwd,
        fingerprint,
        candidate,
    };
    write(&answered, 1, "passive", &local)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn an_offer_is_read_section_by_section() {
        let o = parse_offer(OFFER).unwrap();
        assert_eq!(o.fingerprint, "AB:CD");
        assert_eq!(o.media.len(), 2);
        assert_eq!(o.media[0].mid, "0");
        assert_eq!(
            o.media[0].codecs,
            vec![(111, "opus/48000/2".into()), (0, "PCMU/8000".into())]
        );
        assert_eq!(o.media[1].kind, "video");
    }

    #[test]
    fn offers_without_fingerprint_or_mid_are_refused() {
        assert_eq!(
            parse_offer("v=0\r\nm=audio 9 X 111\r\na=mid:0\r\n"),
            Err(SdpError::NoFingerprint)
        );
        assert_eq!(
            parse_offer("a=fingerprint:sha-256 AA\r\nm=audio 9 X 111\r\n"),
            Err(SdpError::NoMid(0))
        );
    }

    #[test]
    fn the_answer_sends_where_asked_and_rejects_the_rest() {
        let o = parse_offer(OFFER).unwrap();
        let snd = Sending {
            codec: "opus/48000".into(),
            ssrc: 42,
            msid: ("s".into(), "t".into()),
        };
        let a = answer(
            &o,
            &[Answered::Send(snd), Answered::Reject],
            "uf",
            "pw",
            "EF:01",
            "127.0.0.1:5000".parse().unwrap(),
        );
        assert!(
            a.contains("a=group:BUNDLE 0\r\n"),
            "a rejected section is not bundled"
        );
        assert!(a.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(a.contains("a=ssrc:42 cname:conclave\r\n"));
        assert!(a.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"));
        assert!(a.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert!(a.contains("a=sendonly\r\n"));
    }

    #[test]
    fn a_published_section_is_answered_recvonly_and_an_unoffered_codec_rejected() {
        let o = parse_offer(OFFER).unwrap();
        let a = answer(
            &o,
            &[
                Answered::Receive("opus/48000".into()),
                Answered::Receive("H264/90000".into()),
            ],
            "uf",
            "pw",
            "EF:01",
            "127.0.0.1:5000".parse().unwrap(),
        );
        assert!(a.contains("a=recvonly\r\n"));
        assert!(!a.contains("a=ssrc:"));
        assert!(
            a.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"),
            "VP8 offered, H264 wanted"
        );
    }
}
