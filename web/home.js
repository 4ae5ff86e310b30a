// Home page (/): create a meeting and share it, or go to one by its code.
'use strict';

(() => {
  const { meetings, storage, normalizeCode, joinPath } = ConclaveApi;
  const $ = (id) => document.getElementById(id);

  // The meeting made on this page: its code, host token, and the password typed for it
  // (sent again when the host joins, in case the server asks the host too).
  let created = null;

  $('host-name').value = storage.name();

  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = $('create-button');
    const body = { name: $('meeting-name').value.trim() || 'Meeting' };
    const password = $('meeting-password').value;
    if (password) body.password = password;
    const hostName = $('host-name').value.trim();
    if (hostName) body.host_name = hostName;
    say('create-error', '');
    button.disabled = true;
    try {
      const meeting = await meetings.create(body);
      created = { code: meeting.code, hostToken: meeting.host_token, password };
      storage.saveHostToken(meeting.code, meeting.host_token);
      showCreated(meeting);
    } catch (err) {
      say('create-error', `Could not create the meeting: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });

  function showCreated(meeting) {
    $('created-name').textContent = meeting.name;
    $('meeting-code').textContent = meeting.code;
    $('meeting-link').value = new URL(meeting.join_url || joinPath(meeting.code), location.origin).href;
    $('copy-status').textContent = '';
    say('start-error', '');
    $('created').hidden = false;
    // The next step is naming yourself, unless the name is already known.
    ($('host-name').value.trim() ? $('start-button') : $('host-name')).focus();
  }

  $('copy-button').addEventListener('click', async () => {
    const input = $('meeting-link');
    const copied = await copyText(input.value, input);
    $('copy-status').textContent = copied ? 'Link copied' : 'Select the link and copy it (Ctrl+C)';
  });

  async function copyText(value, input) {
    try {
      await navigator.clipboard.writeText(value);
      return true;
    } catch {
      // No clipboard API outside secure contexts, or permission refused: the old route
      // through a selection still works in most browsers.
    }
    input.focus();
    input.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    }
  }

  $('start-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!created) return;
    const name = $('host-name').value.trim();
    if (!name) {
      say('start-error', 'Please enter your name');
      $('host-name').focus();
      return;
    }
    storage.saveName(name);
    say('start-error', '');
    const button = $('start-button');
    button.disabled = true;
    try {
      const res = await meetings.join(created.code, {
        name,
        password: created.password,
        hostToken: created.hostToken,
      });
      location.assign(res.room_url);
    } catch (err) {
      say('start-error', `Could not start the meeting: ${err.message}`);
      button.disabled = false;
    }
  });

  $('code-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const code = normalizeCode($('join-code').value);
    if (!code) {
      say('code-error', 'That is not a meeting code: it looks like ABC-DEF-GHJ');
      $('join-code').focus();
      return;
    }
    location.assign(joinPath(code));
  });

  function say(id, message) {
    $(id).textContent = message;
    $(id).hidden = !message;
  }
})();
