//! The caption consumer: turns a room's pipeline frames into speaking indicators and live
//! captions for its members. It never waits on anything but the frames.

use super::{ConsumerStats, Names, is_speech};
use crate::room::Room;
use crate::signal;
use conclave_media::frames::Frame;
use conclave_signaling::ParticipantId;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast;

pub(super) async fn run(
    room: Weak<Room>,
    mut frames: broadcast::Receiver<Frame>,
    names: Names,
    stats: Arc<ConsumerStats>,
) {
    loop {
        let frame = match frames.recv().await {
            Ok(f) => f,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "caption consumer fell behind");
                stats.caption_frames_missed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // Nobody left to show captions to: the room is gone.
        let Some(room) = room.upgrade() else { return };
        let name_of = |speaker: &str| -> String {
            let id = ParticipantId(speaker.to_owned());
            names
                .lock()
                .expect("names")
                .get(&id)
                .map(|(_, name)| name.clone())
                .unwrap_or_else(|| speaker.to_owned())
        };
        match frame {
            Frame::UserStartedSpeaking(e) => {
                room.broadcast(signal::speaking(&ParticipantId(e.speaker), true));
            }
            Frame::UserStoppedSpeaking(e) => {
                room.broadcast(signal::speaking(&ParticipantId(e.speaker), false));
            }
            Frame::InterimTranscript(t) if is_speech(&t.text) => {
                room.broadcast(signal::caption(&t, name_of(&t.speaker), false));
            }
            Frame::FinalTranscript(mut t) => {
                if !is_speech(&t.text) {
                    // An empty final clears the speaker's interim line on clients.
                    t.text.clear();
                }
                room.broadcast(signal::caption(&t, name_of(&t.speaker), true));
            }
            Frame::TranscriptGap(g) => {
                let t = conclave_media::frames::Transcript {
                    speaker: g.speaker,
                    start_ms: g.start_ms,
                    end_ms: g.end_ms,
                    text: super::GAP_TEXT.to_owned(),
                };
                room.broadcast(signal::caption(&t, name_of(&t.speaker), true));
            }
            _ => {}
        }
    }
}
