// Join page (/join/<code>): the link people are sent. Asks for a name (and the password when
// the meeting has one), joins, and hands the token to the meeting page through this tab's
// sessionStorage. Whoever created the meeting in this browser joins as host without asking.
'use strict';

(() => {
  const { meetings, storage, normalizeCode, codeInPath, joinPath } = ConclaveApi;
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    form: $('join-form'),
    name: $('name-input'),
    passwordField: $('password-field'),
    password: $('password-input'),
    button: $('join-button'),
  };
  const MESSAGES = ['wrong-password', 'password-required', 'join-error'];

  const typed = codeInPath();
  const code = normalizeCode(typed);
  let hostToken = code ? storage.hostToken(code) : null;

  if (!code) {
    notFound(typed);
  } else {
    // One canonical address per meeting, whatever was typed.
    if (joinPath(code) !== location.pathname) history.replaceState(null, '', joinPath(code) + location.search);
    load();
  }

  async function load() {
    let meeting;
    try {
      meeting = await meetings.get(code);
    } catch (err) {
      if (err.code === 'meeting_not_found' || err.status === 404) return notFound(code);
      ui.status.textContent = `Could not look up the meeting: ${err.message}`;
      ui.status.classList.add('error');
      return;
    }
    if (meeting.status === 'ended') return ended();
    ui.status.textContent = '';
    document.title = `${meeting.name} · Conclave`;
    $('meeting-name').textContent = meeting.name;
    $('meeting-code').textContent = meeting.code || code;
    ui.passwordField.hidden = !meeting.has_password || Boolean(hostToken);
    $('host-note').hidden = !hostToken;
    ui.name.value = storage.name();
    ui.form.hidden = false;
    if (hostToken && ui.name.value.trim()) return submit();
    ui.name.focus();
  }

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });

  async function submit() {
    const name = ui.name.value.trim();
    if (!name) {
      show('join-error', 'Please enter your name');
      ui.name.focus();
      return;
    }
    show(null);
    ui.button.disabled = true;
    ui.status.textContent = 'Joining…';
    try {
      const res = await meetings.join(code, { name, password: ui.password.value, hostToken });
      storage.saveName(name);
      // The join page is a step, not a place: Back from the meeting skips it.
      location.replace(res.room_url);
    } catch (err) {
      ui.status.textContent = '';
      ui.button.disabled = false;
      refused(err);
    }
  }

  function refused(err) {
    switch (err.code) {
      case 'wrong_password':
        return askPassword('wrong-password');
      case 'password_required':
        return askPassword('password-required');
      case 'meeting_ended':
        return ended();
      case 'meeting_not_found':
        return notFound(code);
    }
    if (hostToken && (err.status === 401 || err.status === 403)) {
      // The stored host token is no longer accepted (a reset server, say): join as a guest.
      storage.forgetHostToken(code);
      hostToken = null;
      $('host-note').hidden = true;
      return submit();
    }
    show('join-error', `Could not join: ${err.message}`);
  }

  function askPassword(messageId) {
    show(messageId);
    ui.passwordField.hidden = false;
    ui.password.value = '';
    ui.password.focus();
  }

  function show(id, text) {
    for (const m of MESSAGES) $(m).hidden = m !== id;
    if (id === 'join-error') $(id).textContent = text;
  }

  function ended() {
    ui.status.textContent = '';
    ui.form.hidden = true;
    $('meeting-ended').hidden = false;
  }

  function notFound(shown) {
    ui.status.textContent = '';
    ui.form.hidden = true;
    $('missing-code').textContent = shown;
    $('meeting-not-found').hidden = false;
  }
})();
