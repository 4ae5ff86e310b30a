// Media negotiation with the server's SFU over one RTCPeerConnection: we send the first
// offer, the server re-offers as people publish and leave, and on a collision we give way.

/**
 * conclave: the call state (`pc` is kept current there). send(msg): to the server.
 * relay: ask for TURN relay candidates only. tiles: where remote tracks are shown
 * (attachTrack, detachTrack, watchStream). onConnectionState(state): the current
 * connection's connectionState changed.
 */
export function createNegotiation({ conclave, send, relay, tiles, onConnectionState }) {
  let pendingCandidates = []; // arrived before the remote description they belong to
  let reofferWanted = false;

  /** A fresh connection for this join; returns it (also as `conclave.pc`). */
  function open(iceServers) {
    const pc = new RTCPeerConnection({
      iceServers: iceServers.map(iceServer),
      iceTransportPolicy: relay ? 'relay' : 'all',
    });
    conclave.pc = pc;
    pc.onicecandidate = (e) => {
      if (e.candidate) send({ type: 'candidate', candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => {
      const owner = e.streams[0] ? e.streams[0].id : null;
      if (owner) tiles.attachTrack(e.track, owner);
      for (const s of e.streams) tiles.watchStream(s);
      e.track.addEventListener('ended', () => tiles.detachTrack(e.track));
    };
    pc.onconnectionstatechange = () => {
      if (conclave.pc === pc) onConnectionState(pc.connectionState);
    };
    return pc;
  }

  /** Our local tracks, or with none, receive-only slots the server fills later. */
  function publish(stream) {
    const pc = conclave.pc;
    if (stream) {
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
    } else {
      // The first offer still needs m-lines for the server to put media in.
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
  }

  function iceServer(s) {
    const out = { urls: s.urls };
    if (s.username != null) out.username = s.username;
    if (s.credential != null) out.credential = s.credential;
    return out;
  }

  // The server offers only once our first offer is answered, so the first move is ours.
  async function offer() {
    const pc = conclave.pc;
    reofferWanted = false;
    const desc = await pc.createOffer();
    await pc.setLocalDescription(desc);
    send({ type: 'offer', sdp: pc.localDescription.sdp });
  }

  async function onAnswer(sdp) {
    const pc = conclave.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') {
      console.warn('ignoring an answer with no offer outstanding');
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await flushCandidates();
    reconcileTracks();
  }

  async function onOffer(sdp) {
    const pc = conclave.pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (pc.signalingState !== 'stable') {
      // Polite side: withdraw our offer; the server turns it down as a collision anyway.
      await pc.setLocalDescription({ type: 'rollback' });
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await flushCandidates();
    await pc.setLocalDescription(await pc.createAnswer());
    send({ type: 'answer', sdp: pc.localDescription.sdp });
    reconcileTracks();
    if (reofferWanted) await offer();
  }

  /** The server dropped our offer for its own: offer again once things are stable. */
  function onCollision() {
    const pc = conclave.pc;
    if (pc && pc.signalingState === 'stable') return offer();
    reofferWanted = true;
    return undefined;
  }

  async function onCandidate(c) {
    if (!c || !c.candidate) return; // end-of-candidates: nothing to do
    const pc = conclave.pc;
    if (!pc || !pc.remoteDescription) {
      pendingCandidates.push(c);
      return;
    }
    await addCandidate(pc, c);
  }

  async function flushCandidates() {
    const pc = conclave.pc;
    const batch = pendingCandidates;
    pendingCandidates = [];
    for (const c of batch) await addCandidate(pc, c);
  }

  async function addCandidate(pc, c) {
    const init = {
      candidate: c.candidate,
      sdpMid: c.sdpMid ?? null,
      sdpMLineIndex: c.sdpMLineIndex ?? null,
    };
    if (c.usernameFragment) init.usernameFragment = c.usernameFragment;
    // A candidate must name an m-line or browsers refuse it; all media is bundled on the first.
    if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
    try {
      await pc.addIceCandidate(init);
    } catch (err) {
      // Keep going: the other candidates may be fine.
      console.warn('addIceCandidate failed', init, err);
    }
  }

  // Once a negotiation completes, the remote SDP names the owner of every receiving m-line.
  // This catches what track events miss: a transceiver gone inactive or handed to someone else.
  function reconcileTracks() {
    const pc = conclave.pc;
    if (!pc || !pc.remoteDescription) return;
    const owners = msidOwners(pc.remoteDescription.sdp);
    for (const t of pc.getTransceivers()) {
      const track = t.receiver.track;
      const receiving = t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv';
      const owner = receiving && t.mid != null ? owners.get(t.mid) : undefined;
      if (owner && owner !== '-' && owner !== conclave.participantId) tiles.attachTrack(track, owner);
      else tiles.detachTrack(track);
    }
  }

  function msidOwners(sdp) {
    const owners = new Map();
    for (const section of sdp.split(/\r?\nm=/).slice(1)) {
      const mid = /^a=mid:(\S+)/m.exec(section);
      const msid = /^a=msid:(\S+)/m.exec(section) || /^a=ssrc:\d+ msid:(\S+)/m.exec(section);
      if (mid && msid) owners.set(mid[1], msid[1]);
    }
    return owners;
  }

  /** Ends the connection for good and forgets anything pending. */
  function close() {
    if (conclave.pc) conclave.pc.close();
    pendingCandidates = [];
  }

  return { open, publish, offer, onAnswer, onOffer, onCollision, onCandidate, close };
}
