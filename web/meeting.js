// Meeting page (/m/<code>): the call of one meeting, entered with the token the join page
// (or the home page, for the host) left in this tab's sessionStorage. Without one it sends
// people to the join page. Query flags relay and nomedia work as on the room page.
'use strict';

(() => {
  const { meetings, storage, normalizeCode, codeInPath, joinPath, meetingPath } = ConclaveApi;
  const $ = (id) => document.getElementById(id);

  const typed = codeInPath();
  const code = normalizeCode(typed);
  if (!code) {
    location.replace(joinPath(typed));
    return;
  }
  const stored = storage.join(code);
  if (!stored) {
    location.replace(joinPath(code));
    return;
  }
  if (meetingPath(code) !== location.pathname) history.replaceState(null, '', meetingPath(code) + location.search);

  const params = new URLSearchParams(location.search);
  const flag = (key) => ['1', 'true', 'yes'].includes((params.get(key) || '').toLowerCase());
  const call = ConclaveRoom.mount({
    room: code,
    relay: flag('relay'),
    nomedia: flag('nomedia'),
    identity: stored.identity,
    meeting: { ...(stored.meeting || {}), code, role: stored.role },
    getToken: async () => stored.token,
    text: { left: 'You left the meeting' },
  });

  const ui = {
    title: $('room-name'),
    hostControls: $('host-controls'),
    start: $('start-button'),
    end: $('end-button'),
    retry: $('join-button'),
  };
  $('share-code').textContent = code;
  render(call.meeting);

  call.addEventListener('meeting', (e) => render(e.detail));
  call.addEventListener('refused', (e) => {
    const { code: reason } = e.detail;
    if (reason === 'meeting_ended') return call.markEnded(null);
    if (['invalid_token', 'token_expired', 'meeting_not_found', 'room_not_found'].includes(reason) && !bouncedLately()) {
      // The stored join is of no use any more; the join page gets a fresh one or says why not.
      storage.forgetJoin(code);
      location.replace(joinPath(code));
    }
  });

  // The join page sends a host straight back here; should the server keep refusing the
  // fresh token too, the second refusal stays on screen instead of looping.
  function bouncedLately() {
    const key = `conclave.bounced.${code}`;
    try {
      const lately = Number(sessionStorage.getItem(key)) > Date.now() - 30000;
      sessionStorage.setItem(key, String(Date.now()));
      return lately;
    } catch {
      return true;
    }
  }
  call.addEventListener('ended', () => {
    // Nothing left to rejoin: a reload goes to the join page, which says the meeting ended.
    storage.forgetJoin(code);
    storage.forgetHostToken(code);
  });
  call.addEventListener('leave', (e) => {
    if (e.detail.byUser) meetings.leave(code, stored.token).catch((err) => console.warn('leave', err));
  });
  ui.retry.addEventListener('click', () => call.join(stored.name));

  ui.start.addEventListener('click', () =>
    hostAction(ui.start, async () => call.updateMeeting(await meetings.start(code, stored.token))),
  );
  ui.end.addEventListener('click', () =>
    hostAction(ui.end, async () => {
      await meetings.end(code, stored.token);
      // The server's meeting_ended usually wins the race; this covers a socket already gone.
      call.markEnded('host_ended');
    }),
  );

  async function hostAction(button, action) {
    button.disabled = true;
    try {
      await action();
    } catch (err) {
      $('status').textContent = `Error: ${err.message} (${err.code})`;
      $('status').classList.add('error');
    } finally {
      button.disabled = false;
    }
  }

  function render(meeting) {
    const name = meeting && meeting.name;
    ui.title.textContent = name ? `${name} · ${code}` : code;
    document.title = `${name || code} · Conclave`;
    const host = meeting && meeting.role === 'host';
    ui.hostControls.hidden = !host;
    ui.start.hidden = !host || meeting.status !== 'waiting';
  }

  // The meeting may have ended since this tab joined; then there is nothing to connect to.
  (async () => {
    try {
      const info = await meetings.get(code);
      if (info.status === 'ended') return call.markEnded(null);
      call.updateMeeting(info);
    } catch (err) {
      if (err.code === 'meeting_not_found') {
        storage.forgetJoin(code);
        return location.replace(joinPath(code));
      }
      // Anything else: the socket will tell.
      console.warn('meeting lookup failed', err);
    }
    call.join(stored.name || 'Guest');
  })();
})();
