// Conclave call engine: joins a room over the signaling WebSocket (protocol v1) and shows
// everyone's media. The room page (room-page.js) and the meeting page (meeting.js) drive it
// on the same element ids; no framework and no build step, so this file is served as it is.
'use strict';

window.ConclaveRoom = (() => {
  const PING_INTERVAL_MS = 20000;
  const MAX_CAPTIONS = 200;
  const MAX_CAPTION_LINES = 50; // in the page; the panel shows about six
  // The server sends no final for an utterance it judges not to be speech, so an interim
  // caption left without updates this long is dropped rather than shown for ever.
  const STALE_INTERIM_MS = 10000;
  // After these the socket closing is expected and must not be reported as a disconnection.
  const FINAL_STATES = new Set(['left', 'ended']);
  const ENDED_DETAIL = {
    host_ended: 'The host ended the meeting.',
    empty: 'Everyone had left.',
    api: 'It was ended remotely.',
  };

  /**
   * Wires the call elements of the page and returns the live call state, also published as
   * `window.conclave`. It is an EventTarget: `meeting` (meeting info changed), `refused`
   * (detail {code, message}: the join was refused), `ended` (detail {reason}) and `leave`
   * (detail {byUser}).
   *
   * Live captions (when the server transcribes) are kept in `captions`: {participant_id,
   * name, text, final}, oldest first; an interim entry is updated in place until it is final.
   *
   * options: room; getToken(name) → Promise<string>; relay, nomedia (booleans); identity (our
   * identity, to recognise ourselves in host_changed); meeting (initial meeting info);
   * text.left (title once we left).
   */
  function mount(options) {
    const room = options.room || '';
    const text = { left: 'You left the room', ended: 'The meeting has ended', ...options.text };

    const $ = (id) => document.getElementById(id);
    const ui = {
      status: $('status'),
      lobby: $('lobby'),
      joinButton: $('join-button'),
      waiting: $('waiting'),
      waitingLeave: $('waiting-leave-button'),
      meeting: $('meeting'),
      ended: $('ended'),
      endedTitle: $('ended-title'),
      endedDetail: $('ended-detail'),
      rejoin: $('rejoin-button'),
      tiles: $('tiles'),
      localTile: $('local-tile'),
      localVideo: $('local-video'),
      localLabel: $('local-label'),
      people: $('participants'),
      mic: $('mic-button'),
      cam: $('cam-button'),
      leave: $('leave-button'),
      captions: $('captions'),
      captionLines: $('caption-lines'),
      captionInterim: $('caption-interim'),
    };

    // Tests and curious users read this; it is kept current, never replaced. `participants`
    // holds the other participants only (the server never lists us to ourselves). `meeting`
    // is null in a plain room.
    const conclave = Object.assign(new EventTarget(), {
      pc: null,
      ws: null,
      participantId: null,
      participants: new Map(),
      state: 'idle',
      lastError: null,
      room,
      name: '',
      identity: options.identity || null,
      meeting: options.meeting ? { ...options.meeting } : null,
      captions: [],
      speaking: new Set(), // participant ids, ours included
      join,
      leave,
      fail,
      markEnded,
      updateMeeting,
    });
    window.conclave = conclave;

    let localStream = null;
    // Our own published track ids by kind, learnt from track_published about ourselves.
    const ownTrackIds = { audio: null, video: null };
    const localMuted = { audio: false, video: false };
    const tiles = new Map(); // participant id -> tile
    const trackOwner = new Map(); // remote MediaStreamTrack -> participant id
    const watchedStreams = new WeakSet();
    let pendingCandidates = [];
    let reofferWanted = false;
    let pingTimer = null;
    let pingId = 0;
    const interimCaptions = new Map(); // participant id -> {entry, el, timer} of the caption in progress

    // Signaling messages are handled strictly one at a time: an offer must never be applied
    // while an earlier answer (or getUserMedia at join) is still in progress.
    let queue = Promise.resolve();
    const enqueue = (fn) => {
      queue = queue.then(fn).catch((err) => {
        console.error(err);
        showError('client_error', err && err.message ? err.message : String(err));
      });
      return queue;
    };

    ui.mic.addEventListener('click', () => toggle('audio'));
    ui.cam.addEventListener('click', () => toggle('video'));
    ui.leave.addEventListener('click', () => leave({ byUser: true }));
    if (ui.waitingLeave) ui.waitingLeave.addEventListener('click', () => leave({ byUser: true }));
    // The page's address holds all it needs to join again (query flags, stored meeting join).
    ui.rejoin.addEventListener('click', () => location.reload());
    window.addEventListener('pagehide', () => {
      if (['joined', 'joining', 'waiting'].includes(conclave.state)) leave({ byUser: false });
    });

    function emit(type, detail) {
      conclave.dispatchEvent(new CustomEvent(type, { detail }));
    }

    function setState(state) {
      conclave.state = state;
      document.body.dataset.state = state;
    }

    function setStatus(message, isError = false) {
      ui.status.textContent = message;
      ui.status.classList.toggle('error', isError);
    }

    function showError(code, message) {
      conclave.lastError = { code, message };
      setStatus(`Error: ${message} (${code})`, true);
    }

    function fail(message) {
      setState('error');
      setStatus(`Error: ${message}`, true);
      if (ui.joinButton) ui.joinButton.disabled = true;
    }

    // Exactly one of the page's main sections is visible at a time.
    function showSection(which) {
      for (const key of ['lobby', 'waiting', 'meeting', 'ended']) {
        if (ui[key]) ui[key].hidden = key !== which;
      }
    }

    // ---------- joining ----------

    async function join(name) {
      if (conclave.state !== 'idle' && conclave.state !== 'error') return;
      if (!name) {
        setStatus('Please enter your name', true);
        return;
      }
      conclave.name = name;
      conclave.lastError = null;
      setState('joining');
      if (ui.joinButton) ui.joinButton.disabled = true;
      setStatus('Joining…');
      try {
        const token = await options.getToken(name);
        connect(name, token);
      } catch (err) {
        setState('error');
        if (ui.joinButton) ui.joinButton.disabled = false;
        showError(err.code || 'token_failed', err.message || String(err));
      }
    }

    function connect(name, token) {
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      const ws = new WebSocket(`${scheme}://${location.host}/ws`);
      conclave.ws = ws;
      ws.onopen = () => {
        send({ type: 'join', room, name, token });
        pingTimer = setInterval(() => send({ type: 'ping', id: ++pingId }), PING_INTERVAL_MS);
      };
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          console.warn('ignoring a non-JSON frame', ev.data);
          return;
        }
        // The end must not wait behind a slow negotiation (or getUserMedia) in the queue, and
        // captions and voice activity, which touch no media state, must not lag behind one.
        if (msg.type === 'meeting_ended') markEnded(msg.reason);
        else if (msg.type === 'caption') onCaption(msg);
        else if (msg.type === 'speaking') setSpeaking(msg.participant_id, msg.speaking);
        else enqueue(() => handle(msg));
      };
      ws.onclose = () => {
        clearInterval(pingTimer);
        if (conclave.ws !== ws || FINAL_STATES.has(conclave.state)) return;
        // Keep a refusal (bad token, full room) visible: it says more than "Disconnected".
        const prior = conclave.lastError;
        const wasInside = conclave.state === 'joined' || conclave.state === 'waiting';
        setState('error');
        teardownMedia();
        if (prior && prior.code !== 'disconnected') {
          setStatus(`Error: ${prior.message} (${prior.code}). Disconnected`, true);
        } else {
          conclave.lastError = { code: 'disconnected', message: 'Disconnected' };
          setStatus('Disconnected', true);
        }
        if (wasInside) showEnded('Disconnected', { rejoin: true });
        if (ui.joinButton) ui.joinButton.disabled = false;
      };
    }

    function send(msg) {
      const ws = conclave.ws;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ v: 1, ...msg }));
    }

    // ---------- server messages ----------

    async function handle(msg) {
      switch (msg.type) {
        case 'joined':
          return onJoined(msg);
        case 'waiting':
          return onWaiting(msg);
        case 'answer':
          return onAnswer(msg.sdp);
        case 'offer':
          return onOffer(msg.sdp);
        case 'candidate':
          return onCandidate(msg.candidate);
        case 'participant_joined':
          upsertParticipant(msg.participant);
          return renderPeople();
        case 'participant_left':
          return removeParticipant(msg.participant_id);
        case 'track_published':
          return onTrackPublished(msg.participant_id, msg.track);
        case 'track_unpublished':
          return onTrackUnpublished(msg.participant_id, msg.track_id);
        case 'track_muted':
          return onTrackMuted(msg.participant_id, msg.track_id, msg.muted);
        case 'meeting_started':
          return updateMeeting({ status: 'active' });
        case 'host_changed':
          return onHostChanged(msg.identity);
        case 'pong':
          return;
        case 'error':
          return onServerError(msg.code, msg.message);
        default:
          console.debug('ignoring unknown message', msg);
      }
    }

    function onWaiting(msg) {
      if (msg.meeting) updateMeeting(msg.meeting);
      setState('waiting');
      showSection('waiting');
      setStatus('Waiting for the host');
    }

    async function onJoined(msg) {
      conclave.participantId = msg.participant_id;
      if (msg.meeting) updateMeeting(msg.meeting);
      for (const p of msg.participants || []) upsertParticipant(p);
      showSection('meeting');
      ui.localLabel.textContent = `${conclave.name} (you)`;
      setState('joined');
      setStatus('Connecting media…');
      renderPeople();

      const pc = new RTCPeerConnection({
        iceServers: (msg.ice_servers || []).map(iceServer),
        iceTransportPolicy: options.relay ? 'relay' : 'all',
      });
      conclave.pc = pc;
      pc.onicecandidate = (e) => {
        if (e.candidate) send({ type: 'candidate', candidate: e.candidate.toJSON() });
      };
      pc.ontrack = (e) => {
        const owner = e.streams[0] ? e.streams[0].id : null;
        if (owner) attachTrack(e.track, owner);
        for (const s of e.streams) watchStream(s);
        e.track.addEventListener('ended', () => detachTrack(e.track));
      };
      pc.onconnectionstatechange = () => {
        if (conclave.pc !== pc || conclave.state !== 'joined') return;
        if (pc.connectionState === 'connected') setStatus('Connected');
        else if (pc.connectionState === 'failed') showError('media_failed', 'media connection failed');
        else if (pc.connectionState === 'disconnected') setStatus('Media connection interrupted…');
      };

      if (!options.nomedia) {
        try {
          localStream = await navigator.mediaDevices.getUserMedia({
            audio: true,
            video: { width: 640, height: 360 },
          });
        } catch (err) {
          // Joining to listen beats not joining at all.
          console.warn('getUserMedia failed', err);
          setStatus(`No camera or microphone (${err.name}); joined to watch and listen`, true);
        }
      }
      if (pc.signalingState === 'closed') {
        // Left (or lost the socket) while waiting for the devices: release them again.
        if (localStream) for (const t of localStream.getTracks()) t.stop();
        localStream = null;
        return;
      }
      if (localStream) {
        for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
        ui.localVideo.srcObject = localStream;
      } else {
        // Receive-only still needs m-lines in the first offer for the server to fill later.
        pc.addTransceiver('audio', { direction: 'recvonly' });
        pc.addTransceiver('video', { direction: 'recvonly' });
        ui.localTile.classList.add('no-media');
      }
      updateControls();
      await makeOffer();
    }

    function iceServer(s) {
      const out = { urls: s.urls };
      if (s.username != null) out.username = s.username;
      if (s.credential != null) out.credential = s.credential;
      return out;
    }

    // The server only offers after our first offer has been answered, so we always open.
    async function makeOffer() {
      const pc = conclave.pc;
      reofferWanted = false;
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
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
        // We are the polite peer: drop our offer; the server refuses it as a collision.
        await pc.setLocalDescription({ type: 'rollback' });
      }
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await flushCandidates();
      await pc.setLocalDescription(await pc.createAnswer());
      send({ type: 'answer', sdp: pc.localDescription.sdp });
      reconcileTracks();
      if (reofferWanted) await makeOffer();
    }

    async function onCandidate(c) {
      if (!c || !c.candidate) return; // end-of-candidates needs nothing from us
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
      // Browsers reject a candidate naming no m-line; everything is bundled on the first.
      if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
      try {
        await pc.addIceCandidate(init);
      } catch (err) {
        // One bad candidate must not stop the others.
        console.warn('addIceCandidate failed', init, err);
      }
    }

    function onServerError(code, message) {
      if (code === 'negotiation_collision') {
        // Our offer was dropped in favour of the server's. Offer again once that settles.
        const pc = conclave.pc;
        if (pc && pc.signalingState === 'stable') return makeOffer();
        reofferWanted = true;
        return;
      }
      showError(code, message);
      if (conclave.state === 'joining') {
        // A refused join leaves the socket open for another try; we start afresh instead.
        setState('error');
        const ws = conclave.ws;
        conclave.ws = null;
        if (ws) ws.close(1000, 'join refused');
        clearInterval(pingTimer);
        if (ui.joinButton) ui.joinButton.disabled = false;
        emit('refused', { code, message });
      }
    }

    // ---------- meetings ----------

    /** Merges meeting info (from the REST API or signaling) and tells the page. */
    function updateMeeting(info) {
      conclave.meeting = { ...(conclave.meeting || {}), ...info };
      emit('meeting', conclave.meeting);
      if (conclave.state === 'joined') renderPeople();
    }

    function onHostChanged(identity) {
      const meeting = conclave.meeting || {};
      let role = meeting.role;
      if (conclave.identity && identity === conclave.identity) role = 'host';
      else if (role === 'host') role = 'participant';
      updateMeeting({ host_identity: identity, role });
    }

    /** The meeting is over for everyone: stop media for good (no rejoin offered). */
    function markEnded(reason) {
      if (conclave.state === 'ended') return;
      setState('ended');
      clearInterval(pingTimer);
      teardownMedia();
      const ws = conclave.ws;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'meeting ended');
      if (conclave.meeting) conclave.meeting.status = 'ended';
      setStatus(text.ended);
      showEnded(text.ended, { detail: ENDED_DETAIL[reason] || '', rejoin: false });
      emit('ended', { reason: reason || null });
    }

    // ---------- participants ----------

    function upsertParticipant(p) {
      if (!p || p.id === conclave.participantId) return;
      const prev = conclave.participants.get(p.id);
      conclave.participants.set(p.id, {
        id: p.id,
        identity: p.identity,
        name: p.name || p.identity || 'Guest',
        tracks: p.tracks ? p.tracks.map((t) => ({ ...t })) : prev ? prev.tracks : [],
      });
      ensureTile(p.id);
    }

    function removeParticipant(id) {
      conclave.participants.delete(id);
      conclave.speaking.delete(id);
      dropInterim(id);
      const tile = tiles.get(id);
      if (tile) {
        for (const track of tile.tracks) trackOwner.delete(track);
        tile.el.remove();
        tiles.delete(id);
      }
      renderPeople();
    }

    function onTrackPublished(pid, track) {
      if (pid === conclave.participantId) {
        ownTrackIds[track.kind] = track.id;
        // The user may have muted before the server knew the track: tell it now.
        if (localMuted[track.kind] !== Boolean(track.muted)) {
          send({ type: 'mute', track_id: track.id, muted: localMuted[track.kind] });
        }
        return renderPeople();
      }
      const p = conclave.participants.get(pid);
      if (!p) return;
      p.tracks = p.tracks.filter((t) => t.id !== track.id).concat([{ ...track }]);
      renderPeople();
    }

    function onTrackUnpublished(pid, trackId) {
      if (pid === conclave.participantId) {
        for (const kind of ['audio', 'video']) if (ownTrackIds[kind] === trackId) ownTrackIds[kind] = null;
        return renderPeople();
      }
      const p = conclave.participants.get(pid);
      if (!p) return;
      p.tracks = p.tracks.filter((t) => t.id !== trackId);
      renderPeople();
    }

    function onTrackMuted(pid, trackId, muted) {
      const p = conclave.participants.get(pid);
      if (p) {
        const t = p.tracks.find((x) => x.id === trackId);
        if (t) t.muted = muted;
      }
      renderPeople();
    }

    function mutedKinds(p) {
      const kinds = new Set();
      for (const t of p.tracks) if (t.muted) kinds.add(t.kind);
      return kinds;
    }

    function isHost(p) {
      const m = conclave.meeting;
      if (!m) return false;
      return p ? Boolean(m.host_identity) && p.identity === m.host_identity : m.role === 'host';
    }

    function renderPeople() {
      const rows = [];
      const self = document.createElement('li');
      self.className = 'self';
      self.dataset.participantId = conclave.participantId || '';
      self.classList.toggle('speaking', conclave.speaking.has(conclave.participantId));
      const selfMuted = new Set(['audio', 'video'].filter((k) => localMuted[k] && localStream));
      fillPerson(self, `${conclave.name} (you)`, selfMuted, isHost(null));
      rows.push(self);
      for (const p of conclave.participants.values()) {
        const li = document.createElement('li');
        li.dataset.participantId = p.id;
        li.classList.toggle('speaking', conclave.speaking.has(p.id));
        const muted = mutedKinds(p);
        fillPerson(li, p.name, muted, isHost(p));
        rows.push(li);
        updateTileLabel(p.id, p.name, muted);
      }
      ui.people.replaceChildren(...rows);
    }

    function fillPerson(li, name, muted, host) {
      const label = document.createElement('span');
      label.className = 'person-name';
      label.textContent = name;
      li.append(label);
      if (host) li.append(badge('host', 'Meeting host', 'host'));
      li.append(...badges(muted));
    }

    function badges(muted) {
      const out = [];
      if (muted.has('audio')) out.push(badge('mic off', 'Microphone muted'));
      if (muted.has('video')) out.push(badge('cam off', 'Camera off'));
      return out;
    }

    function badge(label, title, variant) {
      const b = document.createElement('span');
      b.className = variant ? `badge ${variant}` : 'badge';
      b.textContent = label;
      b.title = title;
      b.setAttribute('aria-label', title);
      return b;
    }

    // ---------- voice activity and captions ----------

    function setSpeaking(pid, speaking) {
      if (!pid) return;
      if (speaking) conclave.speaking.add(pid);
      else conclave.speaking.delete(pid);
      const self = pid === conclave.participantId;
      const tile = self ? ui.localTile : tiles.get(pid)?.el;
      if (tile) tile.classList.toggle('speaking', Boolean(speaking));
      for (const li of ui.people.children) {
        if (li.dataset.participantId === pid) li.classList.toggle('speaking', Boolean(speaking));
      }
    }

    // Finals go into the aria-live list; interims sit outside it (aria-hidden) so a screen
    // reader reads each utterance once, when it is final, not every guess on the way.
    function onCaption(msg) {
      const pid = msg.participant_id;
      if (!ui.captions || !pid) return;
      const text = (msg.text || '').trim();
      const isFinal = Boolean(msg.final);
      // An utterance that came to nothing (noise) leaves no line behind.
      if (!text) return isFinal ? dropInterim(pid) : undefined;
      const box = ui.captions;
      // Follow the newest line unless the reader has scrolled back.
      const follow = box.hidden || box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      let current = interimCaptions.get(pid);
      if (!current) {
        current = { entry: { participant_id: pid }, el: null, timer: null };
        conclave.captions.push(current.entry);
        if (conclave.captions.length > MAX_CAPTIONS) conclave.captions.shift();
      }
      clearTimeout(current.timer);
      const name = msg.name || conclave.participants.get(pid)?.name || 'Someone';
      Object.assign(current.entry, { name, text, final: isFinal });
      const line = captionLine(current.entry);
      if (isFinal) {
        interimCaptions.delete(pid);
        if (current.el) current.el.remove();
        ui.captionLines.append(line);
        if (ui.captionLines.children.length > MAX_CAPTION_LINES) ui.captionLines.firstElementChild.remove();
      } else {
        if (current.el) current.el.replaceWith(line);
        else ui.captionInterim.append(line);
        current.el = line;
        current.timer = setTimeout(() => dropInterim(pid), STALE_INTERIM_MS);
        interimCaptions.set(pid, current);
      }
      box.hidden = false;
      if (follow) box.scrollTop = box.scrollHeight;
    }

    function dropInterim(pid) {
      const current = interimCaptions.get(pid);
      if (!current) return;
      interimCaptions.delete(pid);
      clearTimeout(current.timer);
      if (current.el) current.el.remove();
      const i = conclave.captions.indexOf(current.entry);
      if (i >= 0) conclave.captions.splice(i, 1);
      if (ui.captions) ui.captions.hidden = !ui.captionLines.children.length && !ui.captionInterim.children.length;
    }

    function captionLine(entry) {
      const line = document.createElement('li');
      line.className = entry.final ? 'caption' : 'caption interim';
      line.dataset.participantId = entry.participant_id;
      const who = document.createElement('span');
      who.className = 'caption-name';
      who.textContent = `${entry.name}: `;
      line.append(who, entry.text);
      return line;
    }

    // ---------- remote media ----------

    function ensureTile(pid) {
      let tile = tiles.get(pid);
      if (tile) return tile;
      const el = document.createElement('figure');
      el.className = 'tile remote no-video';
      el.classList.toggle('speaking', conclave.speaking.has(pid));
      el.dataset.participantId = pid;
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true; // sound comes from the <audio> element, so autoplay rules stay happy
      const audio = document.createElement('audio');
      audio.autoplay = true;
      const caption = document.createElement('figcaption');
      caption.className = 'label';
      const name = document.createElement('span');
      const marks = document.createElement('span');
      caption.append(name, marks);
      el.append(video, audio, caption);
      ui.tiles.append(el);
      tile = { el, video, audio, name, marks, tracks: new Set(), videoMuted: false };
      tiles.set(pid, tile);
      const p = conclave.participants.get(pid);
      updateTileLabel(pid, p ? p.name : '…', p ? mutedKinds(p) : new Set());
      return tile;
    }

    function updateTileLabel(pid, name, muted) {
      const tile = tiles.get(pid);
      if (!tile) return;
      tile.name.textContent = name;
      tile.marks.replaceChildren(...badges(muted));
      tile.videoMuted = muted.has('video');
      refreshTile(tile);
      tile.video.setAttribute('aria-label', `Video of ${name}`);
    }

    function attachTrack(track, pid) {
      const current = trackOwner.get(track);
      if (current === pid) return;
      if (current) detachTrack(track);
      const tile = ensureTile(pid);
      trackOwner.set(track, pid);
      tile.tracks.add(track);
      refreshTile(tile);
    }

    function detachTrack(track) {
      const pid = trackOwner.get(track);
      if (pid === undefined) return;
      trackOwner.delete(track);
      const tile = tiles.get(pid);
      if (!tile) return;
      tile.tracks.delete(track);
      refreshTile(tile);
    }

    // Elements get a fresh MediaStream whenever their track set changes: browsers do not
    // reliably pick up tracks added to a stream that is already playing.
    function refreshTile(tile) {
      const live = [...tile.tracks].filter((t) => t.readyState === 'live');
      const videos = live.filter((t) => t.kind === 'video');
      const audios = live.filter((t) => t.kind === 'audio');
      const video = videos[videos.length - 1];
      if (tile.video.srcObject?.getTracks()[0] !== video) {
        tile.video.srcObject = video ? new MediaStream([video]) : null;
      }
      const audioNow = tile.audio.srcObject ? tile.audio.srcObject.getTracks() : [];
      if (audioNow.length !== audios.length || audios.some((t) => !audioNow.includes(t))) {
        tile.audio.srcObject = audios.length ? new MediaStream(audios) : null;
      }
      // A disabled camera still sends (black) frames; say so instead of showing black.
      tile.el.classList.toggle('no-video', !video || Boolean(tile.videoMuted));
    }

    function watchStream(stream) {
      if (watchedStreams.has(stream)) return;
      watchedStreams.add(stream);
      stream.addEventListener('removetrack', (e) => {
        if (trackOwner.get(e.track) === stream.id) detachTrack(e.track);
      });
    }

    // After every negotiation the remote SDP says who each receiving m-line belongs to; it
    // catches what events miss (a transceiver going inactive, or reused for someone else).
    function reconcileTracks() {
      const pc = conclave.pc;
      if (!pc || !pc.remoteDescription) return;
      const owners = msidOwners(pc.remoteDescription.sdp);
      for (const t of pc.getTransceivers()) {
        const track = t.receiver.track;
        const receiving = t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv';
        const owner = receiving && t.mid != null ? owners.get(t.mid) : undefined;
        if (owner && owner !== '-' && owner !== conclave.participantId) attachTrack(track, owner);
        else detachTrack(track);
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

    // ---------- local controls ----------

    function toggle(kind) {
      const track = localStream && localStream.getTracks().find((t) => t.kind === kind);
      if (!track) return;
      localMuted[kind] = !localMuted[kind];
      track.enabled = !localMuted[kind];
      if (ownTrackIds[kind]) send({ type: 'mute', track_id: ownTrackIds[kind], muted: localMuted[kind] });
      updateControls();
      renderPeople();
    }

    function updateControls() {
      const has = (kind) => Boolean(localStream && localStream.getTracks().some((t) => t.kind === kind));
      ui.mic.disabled = !has('audio');
      ui.cam.disabled = !has('video');
      ui.mic.textContent = localMuted.audio ? 'Unmute microphone' : 'Mute microphone';
      ui.cam.textContent = localMuted.video ? 'Turn camera on' : 'Turn camera off';
      ui.mic.setAttribute('aria-pressed', String(localMuted.audio));
      ui.cam.setAttribute('aria-pressed', String(localMuted.video));
      ui.localTile.classList.toggle('no-video', localMuted.video || !has('video'));
    }

    function leave({ byUser = false } = {}) {
      if (FINAL_STATES.has(conclave.state)) return;
      send({ type: 'leave' });
      setState('left');
      clearInterval(pingTimer);
      teardownMedia();
      if (conclave.ws) conclave.ws.close(1000, 'left');
      setStatus(text.left);
      showEnded(text.left, { rejoin: true });
      emit('leave', { byUser });
    }

    function showEnded(title, { detail = '', rejoin = true } = {}) {
      for (const id of [...tiles.keys()]) removeParticipant(id);
      showSection('ended');
      ui.endedTitle.textContent = title;
      if (ui.endedDetail) ui.endedDetail.textContent = detail;
      ui.rejoin.hidden = !rejoin;
    }

    function teardownMedia() {
      if (conclave.pc) conclave.pc.close();
      if (localStream) for (const t of localStream.getTracks()) t.stop();
      localStream = null;
      pendingCandidates = [];
      ui.localVideo.srcObject = null;
      ui.mic.disabled = true;
      ui.cam.disabled = true;
    }

    return conclave;
  }

  return { mount };
})();
