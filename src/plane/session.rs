//! One client's negotiation state on the plane: the sections agreed so far, answers to the
//! client's offers, and the plane's own offers when it has tracks to add or stop (the client
//! offers first; see docs/signaling.md for who offers when).
//!
//! Sections are matched by mid. A client offer may add sections (appended) but not drop or
//! reorder agreed ones (JSEP keeps m-lines). The plane's offers append new `sendonly`
//! sections with the payload type the client itself used for that codec, and write stopped
//! ones with port 0.

use super::sdp::{
    self, Answered, Direction, Local, Offer, OfferedMedia, SdpError, Section, Sending,
};

/// Codecs the plane can describe on its own.
const KNOWN: [&str; 4] = ["opus/48000/2", "VP8/90000", "VP9/90000", "H264/90000"];

/// Errors of a negotiation step.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The SDP itself.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// An agreed section is missing or moved.
    #[error("section {0} is missing or out of order")]
    SectionsChanged(String),
    /// An answer came with no offer outstanding.
    #[error("no offer of ours is waiting for an answer")]
    NoOffer,
    /// The client never offered this kind of media, so no payload type is known for it.
    #[error("the client offered no {0} codec {1}")]
    NoCodec(String, String),
}

/// A client's sections and the plane's offer state.
#[derive(Debug, Default)]
pub struct Session {
    sections: Vec<Section>,
    version: u64,
    /// Sections of the outstanding offer of ours (the agreed ones come first).
    offered: Option<Vec<Section>>,
    /// Codecs the client offered, per kind (payload type, rtpmap), for the plane's offers.
    client_codecs: Vec<(String, u8, String)>,
    next_mid: u32,
    /// How many of `sections` both sides have agreed on; the rest wait for our next offer.
    agreed: usize,
}

impl Session {
    /// A session before the first offer.
    pub fn new() -> Self {
        Session::default()
    }

    /// The sections agreed so far.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Whether an offer of ours waits for its answer.
    pub fn offer_outstanding(&self) -> bool {
        self.offered.is_some()
    }

    /// Answers a client offer: `decide` says how each section is answered (given what was
    /// agreed for it before, if anything).
    pub fn answer(
        &mut self,
        offer: &Offer,
        mut decide: impl FnMut(&OfferedMedia, Option<&Section>) -> Answered,
        local: &Local<'_>,
    ) -> Result<String, NegotiationError> {
        for (i, agreed) in self.sections[..self.agreed].iter().enumerate() {
            if offer.media.get(i).map(|m| &m.mid) != Some(&agreed.mid) {
                return Err(NegotiationError::SectionsChanged(agreed.mid.clone()));
            }
        }
        for m in &offer.media {
            for (pt, rtpmap) in &m.codecs {
                if !self
                    .client_codecs
                    .iter()
                    .any(|(k, p, r)| k == &m.kind && p == pt && r == rtpmap)
                {
                    self.client_codecs
                        .push((m.kind.clone(), *pt, rtpmap.clone()));
                }
            }
            if let Ok(n) = m.mid.parse::<u32>() {
                self.next_mid = self.next_mid.max(n + 1);
            }
        }
        let pending = self.sections.split_off(self.agreed);
        let mut answered: Vec<Section> = offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| sdp::answer_section(m, &decide(m, self.sections.get(i))))
            .collect();
        self.agreed = answered.len();
        // Sections of ours not offered yet stay for our next offer, renumbered if the
        // client's offer took their mid.
        for mut p in pending {
            if answered.iter().any(|s| s.mid == p.mid) {
                p.mid = self.next_mid.to_string();
                self.next_mid += 1;
            }
            answered.push(p);
        }
        self.sections = answered;
        self.version += 1;
        Ok(sdp::write(&self.sections, self.version, "passive", local))
    }

    /// Adds a section sending `sending` in the client's payload type for `codec` (an `rtpmap`
    /// prefix such as `VP8/90000`), to go in the next offer. Returns its mid (which changes if
    /// a client offer takes it first: the section's `sending.ssrc` is what identifies it).
    pub fn add_send(&mut self, kind: &str, sending: Sending) -> Result<String, NegotiationError> {
        let codec = self
            .client_codecs
            .iter()
            .find(|(k, _, r)| {
                k == kind
                    && r.to_ascii_lowercase()
                        .starts_with(&sending.codec.to_ascii_lowercase())
            })
            .map(|(_, pt, r)| (*pt, r.clone()))
            .or_else(|| self.unused_payload_type(&sending.codec))
            .ok_or_else(|| NegotiationError::NoCodec(kind.into(), sending.codec.clone()))?;
        let mid = self.next_mid.to_string();
        self.next_mid += 1;
        self.sections.push(Section {
            kind: kind.into(),
            mid: mid.clone(),
            codec,
            direction: Direction::SendOnly,
            sending: Some(sending),
        });
        Ok(mid)
    }

    /// A codec the client never offered (it offered no section of that kind yet): the plane's
    /// full `rtpmap` for it, in a dynamic payload type no offered codec uses.
    fn unused_payload_type(&self, codec: &str) -> Option<(u8, String)> {
        let rtpmap = KNOWN.iter().find(|r| {
            r.to_ascii_lowercase()
                .starts_with(&codec.to_ascii_lowercase())
        })?;
        let used = |pt: u8| {
            self.client_codecs.iter().any(|(_, p, _)| *p == pt)
                || self.sections.iter().any(|s| s.codec.0 == pt)
        };
        (96..=127)
            .find(|pt| !used(*pt))
            .map(|pt| (pt, (*rtpmap).to_owned()))
    }

    /// Stops sending in section `mid` (it is written with port 0 from the next offer on).
    pub fn stop_send(&mut self, mid: &str) -> bool {
        match self.sections.iter_mut().find(|s| s.mid == mid) {
            Some(s) if s.sending.is_some() => {
                s.direction = match s.direction {
                    Direction::SendRecv => Direction::RecvOnly,
                    _ => Direction::Inactive,
                };
                s.sending = None;
                true
            }
            _ => false,
        }
    }

    /// The plane's offer of every section as it now stands.
    pub fn offer(&mut self, local: &Local<'_>) -> String {
        self.version += 1;
        self.offered = Some(self.sections.clone());
        sdp::write(&self.sections, self.version, "actpass", local)
    }

    /// Applies the client's answer to our offer: sections it rejected become inactive.
    pub fn apply_answer(&mut self, answer: &str) -> Result<(), NegotiationError> {
        let Some(offered) = self.offered.take() else {
            return Err(NegotiationError::NoOffer);
        };
        let parsed = sdp::parse_offer(answer)?;
        for (i, s) in offered.iter().enumerate() {
            match parsed.media.get(i) {
                Some(m) if m.mid == s.mid => {
                    if m.rejected
                        && let Some(agreed) = self.sections.iter_mut().find(|x| x.mid == s.mid)
                    {
                        agreed.direction = Direction::Inactive;
                        agreed.sending = None;
                    }
                }
                _ => {
                    self.offered = Some(offered.clone());
                    return Err(NegotiationError::SectionsChanged(s.mid.clone()));
                }
            }
        }
        self.agreed = offered.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "a=fingerprint:sha-256 AB:CD\r\n";

    fn offer(mids: &[&str]) -> Offer {
        let mut s = format!("v=0\r\n{FP}");
        for mid in mids {
            s.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{mid}\r\na=rtpmap:111 opus/48000/2\r\n"
            ));
        }
        sdp::parse_offer(&s).unwrap()
    }

    fn local() -> Local<'static> {
        Local {
            ufrag: "uf",
            pwd: "pw",
            fingerprint: "EF",
            candidate: "127.0.0.1:5000".parse().unwrap(),
        }
    }

    fn sending(ssrc: u32, codec: &str) -> Sending {
        Sending {
            codec: codec.into(),
            ssrc,
            msid: ("s".into(), "t".into()),
        }
    }

    #[test]
    fn a_pending_section_survives_a_client_offer_that_takes_its_mid() {
        let mut s = Session::new();
        s.answer(
            &offer(&["0"]),
            |_, _| Answered::Receive("opus/48000".into()),
            &local(),
        )
        .unwrap();
        assert_eq!(s.add_send("audio", sending(7, "opus/48000")).unwrap(), "1");
        // The client offers a second section of its own, mid 1, before our offer went out.
        s.answer(
            &offer(&["0", "1"]),
            |_, _| Answered::Receive("opus/48000".into()),
            &local(),
        )
        .unwrap();
        let mids: Vec<&str> = s.sections().iter().map(|x| x.mid.as_str()).collect();
        assert_eq!(mids, ["0", "1", "2"]);
        assert_eq!(s.sections()[2].sending.as_ref().map(|x| x.ssrc), Some(7));
        let ours = s.offer(&local());
        assert!(ours.contains("a=mid:2\r\na=sendonly\r\n"));
        assert!(
            ours.contains("a=setup:actpass\r\n"),
            "our offers leave the DTLS role to the client"
        );
    }

    #[test]
    fn video_the_client_never_offered_gets_a_free_dynamic_payload_type() {
        let mut s = Session::new();
        s.answer(
            &offer(&["0"]),
            |_, _| Answered::Receive("opus/48000".into()),
            &local(),
        )
        .unwrap();
        s.add_send("video", sending(9, "VP8/90000")).unwrap();
        let v = &s.sections()[1];
        assert_eq!(v.codec, (96, "VP8/90000".into()));
        assert_eq!(
            s.add_send("video", sending(10, "AV2/90000")),
            Err(NegotiationError::NoCodec(
                "video".into(),
                "AV2/90000".into()
            ))
        );
    }

    #[test]
    fn a_stopped_section_goes_out_with_port_zero_and_leaves_the_bundle() {
        let mut s = Session::new();
        s.answer(
            &offer(&["0", "1"]),
            |_, _| Answered::Send(sending(5, "opus/48000")),
            &local(),
        )
        .unwrap();
        assert!(s.stop_send("1"));
        assert!(!s.stop_send("1"), "already stopped");
        let o = s.offer(&local());
        assert!(o.contains("a=group:BUNDLE 0\r\n"));
        assert!(o.contains(
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=inactive\r\n"
        ));
    }
}
