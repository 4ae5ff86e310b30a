// Our own media and the call's buttons: microphone and camera toggles, Leave (in the call
// and on the waiting screen) and Rejoin.
//
// The microphone and camera buttons keep a fixed label ("Microphone", "Camera"); their state
// is aria-pressed alone, "true" while the device is on. The stylesheet marks "false" with
// more than colour (the label is struck through).

/** Asks for the camera and microphone; rejects when they are refused or missing. */
export function openLocalMedia() {
  return navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: 640, height: 360 },
  });
}

/** Stops every track of `stream` (null is fine). */
export function stopStream(stream) {
  if (stream) for (const t of stream.getTracks()) t.stop();
}

/**
 * ui: the page's elements. send(msg): to the server. onLeave(): a Leave button was pressed.
 * onToggle(): our mute state changed (the participant list shows it).
 */
export function createControls({ ui, send, onLeave, onToggle }) {
  let localStream = null;
  // Our published track ids by kind, learnt from track_published about ourselves.
  const ownTrackIds = { audio: null, video: null };
  const localMuted = { audio: false, video: false };

  ui.mic.addEventListener('click', () => toggle('audio'));
  ui.cam.addEventListener('click', () => toggle('video'));
  ui.leave.addEventListener('click', () => onLeave());
  if (ui.waitingLeave) ui.waitingLeave.addEventListener('click', () => onLeave());
  // The page's address is enough to join again (query flags, the stored meeting join).
  ui.rejoin.addEventListener('click', () => location.reload());

  const has = (kind) => Boolean(localStream && localStream.getTracks().some((t) => t.kind === kind));

  /** Shows `stream` (null: we joined without devices) on our tile and drives the buttons from it. */
  function useStream(stream) {
    localStream = stream;
    if (stream) ui.localVideo.srcObject = stream;
    else ui.localTile.classList.add('no-media');
  }

  function toggle(kind) {
    const track = localStream && localStream.getTracks().find((t) => t.kind === kind);
    if (!track) return;
    localMuted[kind] = !localMuted[kind];
    track.enabled = !localMuted[kind];
    if (ownTrackIds[kind]) send({ type: 'mute', track_id: ownTrackIds[kind], muted: localMuted[kind] });
    update();
    onToggle();
  }

  function update() {
    ui.mic.disabled = !has('audio');
    ui.cam.disabled = !has('video');
    ui.mic.setAttribute('aria-pressed', String(has('audio') && !localMuted.audio));
    ui.cam.setAttribute('aria-pressed', String(has('video') && !localMuted.video));
    ui.localTile.classList.toggle('no-video', localMuted.video || !has('video'));
  }

  /** Kinds we have muted, counting only while we have devices at all. */
  function mutedKinds() {
    return new Set(['audio', 'video'].filter((k) => localMuted[k] && localStream));
  }

  function ownTrackPublished(track) {
    ownTrackIds[track.kind] = track.id;
    // A mute from before the server knew the track: pass it on now.
    if (localMuted[track.kind] !== Boolean(track.muted)) {
      send({ type: 'mute', track_id: track.id, muted: localMuted[track.kind] });
    }
  }

  function ownTrackUnpublished(trackId) {
    for (const kind of ['audio', 'video']) if (ownTrackIds[kind] === trackId) ownTrackIds[kind] = null;
  }

  /** Releases the devices and disables the toggles. */
  function teardown() {
    stopStream(localStream);
    localStream = null;
    ui.localVideo.srcObject = null;
    ui.mic.disabled = true;
    ui.cam.disabled = true;
  }

  return { useStream, update, mutedKinds, ownTrackPublished, ownTrackUnpublished, teardown };
}
