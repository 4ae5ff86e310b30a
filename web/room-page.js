// The room page (/room/<name>): ad-hoc rooms entered by name. Query flags: name, autojoin,
// relay, nomedia, and token (otherwise a guest token is fetched for the name typed).
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const flag = (key) => ['1', 'true', 'yes'].includes((params.get(key) || '').toLowerCase());
  const opts = {
    name: params.get('name') || '',
    autojoin: flag('autojoin'),
    token: params.get('token') || '',
  };
  const room = roomFromPath(location.pathname);
  const form = document.getElementById('join-form');
  const nameInput = document.getElementById('name-input');

  const call = ConclaveRoom.mount({
    room,
    relay: flag('relay'),
    nomedia: flag('nomedia'),
    getToken: (name) => opts.token || fetchGuestToken(name),
  });
  call.addEventListener('refused', (e) => {
    // A rejected ?token= would fail the same way again; a retry asks for a guest token.
    if (e.detail.code === 'invalid_token' || e.detail.code === 'token_expired') opts.token = '';
  });

  document.getElementById('room-name').textContent = room ? `Room: ${room}` : '';
  if (room) document.title = `${room} · Conclave`;
  nameInput.value = opts.name;
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    if (!name) nameInput.focus();
    call.join(name);
  });

  if (!room) {
    call.fail('this address names no room (expected /room/<name>)');
  } else if (opts.autojoin && opts.name) {
    call.join(opts.name);
  } else {
    nameInput.focus();
  }

  function roomFromPath(path) {
    const m = /^\/room\/([^/]+)\/?$/.exec(path);
    if (!m) return '';
    try {
      return decodeURIComponent(m[1]);
    } catch {
      return '';
    }
  }

  async function fetchGuestToken(name) {
    const body = await ConclaveApi.request('POST', `/api/rooms/${encodeURIComponent(room)}/guest-token`, {
      body: { name },
    });
    if (!body || typeof body.token !== 'string') {
      throw Object.assign(new Error('the server sent no token'), { code: 'token_failed' });
    }
    return body.token;
  }
})();
