// The other participants as the page shows them: one video tile each (fed by the tracks
// negotiation hands over) and the participant list, us included, with host, mute and
// speaking marks. Speaking shows as a colour ring or dot and as a "speaking" badge.
// The AI agent (role "agent": one audio track, no video) gets an "AI agent" badge on its
// tile and row, and its tile carries data-role="agent".

/**
 * conclave: the call state (`participants`, `speaking`, `meeting` are read and kept here).
 * ui: the page's elements. selfMuted() → Set of our muted kinds, for our own list row.
 * onParticipantGone(id): someone left (or the call ended), after they are forgotten.
 */
export function createTiles({ conclave, ui, selfMuted, onParticipantGone }) {
  const tiles = new Map(); // participant id -> tile
  const trackOwner = new Map(); // remote MediaStreamTrack -> participant id
  const watchedStreams = new WeakSet();

  // Our own tile is in the page's markup; it gets its speaking badge here.
  if (ui.localTile && !ui.localTile.querySelector('.speaking-badge')) {
    ui.localLabel.after(speakingBadge(false));
  }

  // ---------- the participant model ----------

  function upsertParticipant(p) {
    if (!p || p.id === conclave.participantId) return;
    const prev = conclave.participants.get(p.id);
    conclave.participants.set(p.id, {
      id: p.id,
      identity: p.identity,
      name: p.name || p.identity || 'Guest',
      role: p.role || (prev ? prev.role : null),
      tracks: p.tracks ? p.tracks.map((t) => ({ ...t })) : prev ? prev.tracks : [],
    });
    ensureTile(p.id);
  }

  function removeParticipant(id) {
    conclave.participants.delete(id);
    conclave.speaking.delete(id);
    onParticipantGone(id);
    const tile = tiles.get(id);
    if (tile) {
      for (const track of tile.tracks) trackOwner.delete(track);
      tile.el.remove();
      tiles.delete(id);
    }
    renderPeople();
  }

  /** Everyone who has a tile goes (the call is over for us). */
  function removeAll() {
    for (const id of [...tiles.keys()]) removeParticipant(id);
  }

  // Track events about someone else; our own are the controls' business.
  function trackPublished(pid, track) {
    const p = conclave.participants.get(pid);
    if (!p) return;
    p.tracks = p.tracks.filter((t) => t.id !== track.id).concat([{ ...track }]);
    renderPeople();
  }

  function trackUnpublished(pid, trackId) {
    const p = conclave.participants.get(pid);
    if (!p) return;
    p.tracks = p.tracks.filter((t) => t.id !== trackId);
    renderPeople();
  }

  function trackMuted(pid, trackId, muted) {
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

  // ---------- the participant list ----------

  function renderPeople() {
    const rows = [];
    const self = document.createElement('li');
    self.className = 'self';
    self.dataset.participantId = conclave.participantId || '';
    fillPerson(self, `${conclave.name} (you)`, selfMuted(), isHost(null), conclave.speaking.has(conclave.participantId));
    rows.push(self);
    for (const p of conclave.participants.values()) {
      const li = document.createElement('li');
      li.dataset.participantId = p.id;
      const muted = mutedKinds(p);
      fillPerson(li, p.name, muted, isHost(p), conclave.speaking.has(p.id));
      if (isAgent(p)) {
        li.dataset.role = 'agent';
        li.querySelector('.person-name').after(agentBadge());
      }
      rows.push(li);
      updateTileLabel(p.id, p.name, muted);
    }
    ui.people.replaceChildren(...rows);
  }

  function fillPerson(li, name, muted, host, speaking) {
    const label = document.createElement('span');
    label.className = 'person-name';
    label.textContent = name;
    li.append(label, speakingBadge(speaking));
    if (host) li.append(badge('host', 'Meeting host', 'host'));
    li.append(...badges(muted));
    li.classList.toggle('speaking', speaking);
  }

  const isAgent = (p) => Boolean(p) && p.role === 'agent';

  function agentBadge() {
    return badge('AI agent', 'AI agent (automated participant)', 'agent');
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

  // Present on every tile and row, hidden (so also silent to screen readers) when quiet.
  function speakingBadge(speaking) {
    const b = badge('speaking', 'Speaking now', 'speaking-badge');
    b.hidden = !speaking;
    return b;
  }

  // Colour (the `speaking` class) and text (the badge) always change together.
  function showSpeaking(el, speaking) {
    el.classList.toggle('speaking', speaking);
    const b = el.querySelector('.speaking-badge');
    if (b) b.hidden = !speaking;
  }

  // ---------- voice activity ----------

  function setSpeaking(pid, speaking) {
    if (!pid) return;
    const on = Boolean(speaking);
    if (on) conclave.speaking.add(pid);
    else conclave.speaking.delete(pid);
    const self = pid === conclave.participantId;
    const tile = self ? ui.localTile : tiles.get(pid)?.el;
    if (tile) showSpeaking(tile, on);
    for (const li of ui.people.children) {
      if (li.dataset.participantId === pid) showSpeaking(li, on);
    }
  }

  // ---------- remote media ----------

  function ensureTile(pid) {
    let tile = tiles.get(pid);
    if (tile) return tile;
    const el = document.createElement('figure');
    el.className = 'tile remote no-video';
    el.dataset.participantId = pid;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // the <audio> element plays the sound, which keeps autoplay rules happy
    const audio = document.createElement('audio');
    audio.autoplay = true;
    const caption = document.createElement('figcaption');
    caption.className = 'label';
    const name = document.createElement('span');
    const role = document.createElement('span');
    const marks = document.createElement('span');
    caption.append(name, role, speakingBadge(false), marks);
    el.append(video, audio, caption);
    showSpeaking(el, conclave.speaking.has(pid));
    ui.tiles.append(el);
    tile = { el, video, audio, name, role, marks, tracks: new Set(), videoMuted: false };
    tiles.set(pid, tile);
    const p = conclave.participants.get(pid);
    updateTileLabel(pid, p ? p.name : '…', p ? mutedKinds(p) : new Set());
    return tile;
  }

  function updateTileLabel(pid, name, muted) {
    const tile = tiles.get(pid);
    if (!tile) return;
    tile.name.textContent = name;
    const agent = isAgent(conclave.participants.get(pid));
    if (agent) tile.el.dataset.role = 'agent';
    else delete tile.el.dataset.role;
    tile.role.replaceChildren(...(agent ? [agentBadge()] : []));
    tile.marks.replaceChildren(...badges(muted));
    tile.videoMuted = muted.has('video');
    refreshTile(tile);
    tile.video.setAttribute('aria-label', agent ? `${name} (AI agent, audio only)` : `Video of ${name}`);
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

  // A changed track set gets a new MediaStream on the element: browsers do not reliably
  // start playing tracks added to a stream that is already playing.
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
    // A camera turned off still sends black frames: show "Camera off" rather than black.
    tile.el.classList.toggle('no-video', !video || Boolean(tile.videoMuted));
  }

  function watchStream(stream) {
    if (watchedStreams.has(stream)) return;
    watchedStreams.add(stream);
    stream.addEventListener('removetrack', (e) => {
      if (trackOwner.get(e.track) === stream.id) detachTrack(e.track);
    });
  }

  return {
    upsertParticipant,
    removeParticipant,
    removeAll,
    trackPublished,
    trackUnpublished,
    trackMuted,
    renderPeople,
    setSpeaking,
    attachTrack,
    detachTrack,
    watchStream,
  };
}
