// Conclave call engine (entry module): joins a room over the signaling WebSocket (protocol
// v1) and shows everyone's media. It ties together room-signaling.js (the socket),
// room-negotiation.js (the RTCPeerConnection), room-tiles.js (tiles and participant list),
// room-captions.js, room-controls.js and agent-panel.js (the AI agent's lead score, for
// hosts), and owns the call's life: joining, waiting, leaving,
// the end. The room page (room-page.js) and the meeting page (meeting.js) drive it on the
// same element ids. No build step: every file is served as it is.
//
// Those pages load as plain deferred scripts after this module; module scripts are deferred
// too and run in document order with them, so `ConclaveRoom` exists by the time they run.

import { createSignaling, serialQueue } from '/assets/room-signaling.js';
import { createNegotiation } from '/assets/room-negotiation.js';
import { createTiles } from '/assets/room-tiles.js';
import { createCaptions } from '/assets/room-captions.js';
import { createControls, openLocalMedia, stopStream } from '/assets/room-controls.js';
import { showLeadScore } from '/assets/agent-panel.js';

// Once in one of these, the socket closing is expected and no disconnection to report.
const FINAL_STATES = new Set(['left', 'ended']);
const ENDED_DETAIL = {
  host_ended: 'The host ended the meeting.',
  empty: 'Everyone had left.',
  api: 'It was ended remotely.',
};
// Where focus goes when a section appears (the section it was in is hidden now).
const FOCUS_ON_SHOW = { waiting: 'waitingTitle', meeting: 'peopleTitle', ended: 'endedTitle' };

/**
 * Wires the call elements of the page and returns the live call state, also published as
 * `window.conclave`. It is an EventTarget: `meeting` (meeting info changed), `refused`
 * (detail {code, message}: the join was refused), `ended` (detail {reason}), `leave`
 * (detail {byUser}) and `lead_score` (detail: the message).
 *
 * Live captions (when the server transcribes) are kept in `captions`: {participant_id,
 * name, text, final}, oldest first; an interim entry is updated in place until it is final.
 * The last `lead_score` message (hosts only, while the AI agent interviews) is `leadScore`.
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
    waitingTitle: $('waiting-title'),
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
    peopleTitle: $('people-title'),
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
    leadScore: null,
    speaking: new Set(), // participant ids, ours included
    join,
    leave,
    fail,
    markEnded,
    updateMeeting,
  });
  window.conclave = conclave;

  const signaling = createSignaling({ conclave, room, onMessage: route, onClose: onSocketClosed });
  const send = signaling.send;
  // Signaling messages are handled strictly one at a time: an offer must never be applied
  // while an earlier answer (or getUserMedia at join) is still in progress.
  const enqueue = serialQueue((err) => {
    console.error(err);
    showError('client_error', err && err.message ? err.message : String(err));
  });
  const controls = createControls({
    ui,
    send,
    onLeave: () => leave({ byUser: true }),
    onToggle: () => tiles.renderPeople(),
  });
  const captions = createCaptions({ conclave, ui });
  const tiles = createTiles({
    conclave,
    ui,
    selfMuted: () => controls.mutedKinds(),
    onParticipantGone: (id) => captions.dropInterim(id),
  });
  const negotiation = createNegotiation({
    conclave,
    send,
    relay: options.relay,
    tiles,
    onConnectionState,
  });

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

  // Exactly one of the page's main sections is visible at a time. The one that appears
  // takes the focus, which would otherwise be lost with the section it was in.
  function showSection(which) {
    const appearing = Boolean(ui[which] && ui[which].hidden);
    for (const key of ['lobby', 'waiting', 'meeting', 'ended']) {
      if (ui[key]) ui[key].hidden = key !== which;
    }
    const target = appearing ? ui[FOCUS_ON_SHOW[which]] : null;
    if (target) target.focus();
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
      signaling.connect(name, token);
    } catch (err) {
      setState('error');
      if (ui.joinButton) ui.joinButton.disabled = false;
      showError(err.code || 'token_failed', err.message || String(err));
    }
  }

  function onSocketClosed(ws) {
    if (conclave.ws !== ws || FINAL_STATES.has(conclave.state)) return;
    // A refusal (bad token, full room) says more than "Disconnected": keep it on screen.
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
  }

  // ---------- server messages ----------

  function route(msg) {
    // The end must not wait behind a slow negotiation (or getUserMedia) in the queue; nor
    // must captions and voice activity, which touch no media state.
    if (msg.type === 'meeting_ended') markEnded(msg.reason);
    else if (msg.type === 'caption') captions.onCaption(msg);
    else if (msg.type === 'speaking') tiles.setSpeaking(msg.participant_id, msg.speaking);
    else if (msg.type === 'lead_score') onLeadScore(msg);
    else enqueue(() => handle(msg));
  }

  async function handle(msg) {
    switch (msg.type) {
      case 'joined':
        return onJoined(msg);
      case 'waiting':
        return onWaiting(msg);
      case 'answer':
        return negotiation.onAnswer(msg.sdp);
      case 'offer':
        return negotiation.onOffer(msg.sdp);
      case 'candidate':
        return negotiation.onCandidate(msg.candidate);
      case 'participant_joined':
        tiles.upsertParticipant(msg.participant);
        return tiles.renderPeople();
      case 'participant_left':
        return tiles.removeParticipant(msg.participant_id);
      case 'track_published':
        if (msg.participant_id !== conclave.participantId) return tiles.trackPublished(msg.participant_id, msg.track);
        controls.ownTrackPublished(msg.track);
        return tiles.renderPeople();
      case 'track_unpublished':
        if (msg.participant_id !== conclave.participantId) return tiles.trackUnpublished(msg.participant_id, msg.track_id);
        controls.ownTrackUnpublished(msg.track_id);
        return tiles.renderPeople();
      case 'track_muted':
        return tiles.trackMuted(msg.participant_id, msg.track_id, msg.muted);
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

  function onLeadScore(msg) {
    conclave.leadScore = msg;
    showLeadScore(msg);
    emit('lead_score', msg);
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
    for (const p of msg.participants || []) tiles.upsertParticipant(p);
    showSection('meeting');
    ui.localLabel.textContent = `${conclave.name} (you)`;
    setState('joined');
    setStatus('Connecting media…');
    tiles.renderPeople();

    const pc = negotiation.open(msg.ice_servers || []);
    let stream = null;
    if (!options.nomedia) {
      try {
        stream = await openLocalMedia();
      } catch (err) {
        // Better to join and watch and listen than not to join at all.
        console.warn('getUserMedia failed', err);
        setStatus(`No camera or microphone (${err.name}); joined to watch and listen`, true);
      }
    }
    if (pc.signalingState === 'closed') {
      // We left (or lost the socket) while the devices were being opened: let them go.
      stopStream(stream);
      return;
    }
    negotiation.publish(stream);
    controls.useStream(stream);
    controls.update();
    await negotiation.offer();
  }

  function onConnectionState(state) {
    if (conclave.state !== 'joined') return;
    if (state === 'connected') setStatus('Connected');
    else if (state === 'failed') showError('media_failed', 'media connection failed');
    else if (state === 'disconnected') setStatus('Media connection interrupted…');
  }

  function onServerError(code, message) {
    if (code === 'negotiation_collision') return negotiation.onCollision();
    showError(code, message);
    if (conclave.state === 'joining') {
      // A refused join leaves the socket open for another try; we start afresh instead.
      setState('error');
      const ws = conclave.ws;
      conclave.ws = null;
      if (ws) ws.close(1000, 'join refused');
      signaling.stopPing();
      if (ui.joinButton) ui.joinButton.disabled = false;
      emit('refused', { code, message });
    }
  }

  // ---------- meetings ----------

  /** Merges meeting info (from the REST API or signaling) and tells the page. */
  function updateMeeting(info) {
    conclave.meeting = { ...(conclave.meeting || {}), ...info };
    emit('meeting', conclave.meeting);
    if (conclave.state === 'joined') tiles.renderPeople();
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
    signaling.stopPing();
    teardownMedia();
    const ws = conclave.ws;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'meeting ended');
    if (conclave.meeting) conclave.meeting.status = 'ended';
    setStatus(text.ended);
    showEnded(text.ended, { detail: ENDED_DETAIL[reason] || '', rejoin: false });
    emit('ended', { reason: reason || null });
  }

  // ---------- leaving ----------

  function leave({ byUser = false } = {}) {
    if (FINAL_STATES.has(conclave.state)) return;
    send({ type: 'leave' });
    setState('left');
    signaling.stopPing();
    teardownMedia();
    if (conclave.ws) conclave.ws.close(1000, 'left');
    setStatus(text.left);
    showEnded(text.left, { rejoin: true });
    emit('leave', { byUser });
  }

  function showEnded(title, { detail = '', rejoin = true } = {}) {
    tiles.removeAll();
    // Filled in before it shows, so the heading reads right when it takes the focus.
    ui.endedTitle.textContent = title;
    if (ui.endedDetail) ui.endedDetail.textContent = detail;
    ui.rejoin.hidden = !rejoin;
    showSection('ended');
  }

  function teardownMedia() {
    negotiation.close();
    controls.teardown();
  }

  return conclave;
}

window.ConclaveRoom = { mount };
