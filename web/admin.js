// What the admin pages (/questions, /leads, /leads/<id>) share: the API key they ask for
// once per tab (kept in sessionStorage by api.js), showing server errors, and dates.
//
// Each page has in its markup: #auth (a card with #auth-form, #api-key-input,
// #api-secret-input, #auth-error), #content (hidden while the key is asked for), #status
// and #api-key-button in the bar.

export const $ = (id) => document.getElementById(id);

/** "message (code)" of an ApiError or any other error. */
export function errorText(err) {
  if (!err) return '';
  const message = err.message || String(err);
  return err.code ? `${message} (${err.code})` : message;
}

/** Shows (or, with '', clears) a message in the element of that id; empty ones hide. */
export function say(id, message) {
  const node = typeof id === 'string' ? $(id) : id;
  if (!node) return;
  node.textContent = message || '';
  node.hidden = !message;
}

export function setStatus(message, isError = false) {
  const status = $('status');
  if (!status) return;
  status.textContent = message || '';
  status.classList.toggle('error', Boolean(isError));
}

/** A server timestamp (RFC 3339 text, or milliseconds since the epoch) as a Date, or null. */
export function toDate(value) {
  if (value == null || value === '') return null;
  let d;
  if (typeof value === 'number') d = new Date(value < 1e11 ? value * 1000 : value);
  else d = new Date(String(value));
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A <time> element for a server timestamp ('—' text when there is none). */
export function timeEl(value, { dateOnly = false } = {}) {
  const t = document.createElement('time');
  const d = toDate(value);
  if (!d) {
    t.textContent = '—';
    return t;
  }
  t.dateTime = d.toISOString();
  t.textContent = dateOnly
    ? d.toLocaleDateString(undefined, { dateStyle: 'medium' })
    : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  return t;
}

/**
 * Runs the page: asks for the API key when this tab has none, then calls load() (which
 * fetches and renders the page's data). Returns {fail(err, whereId)}: the way pages report
 * a failed request. A refused key (401) sends the page back to the key form.
 */
export function startAdmin({ load }) {
  const api = window.ConclaveApi;
  const auth = $('auth');
  const content = $('content');
  const keyButton = $('api-key-button');

  for (const a of document.querySelectorAll('.admin-nav a')) {
    if (a.getAttribute('href') === location.pathname) a.setAttribute('aria-current', 'page');
  }

  function askForKey(message) {
    api.storage.forgetApiKey();
    content.hidden = true;
    auth.hidden = false;
    if (keyButton) keyButton.hidden = true;
    say('auth-error', message || '');
    setStatus('');
    $('api-secret-input').value = '';
    const keyInput = $('api-key-input');
    (keyInput.value ? $('api-secret-input') : keyInput).focus();
  }

  async function run() {
    if (!api.storage.apiKey()) return askForKey('');
    auth.hidden = true;
    content.hidden = false;
    if (keyButton) keyButton.hidden = false;
    setStatus('Loading…');
    try {
      await load();
      setStatus('');
    } catch (err) {
      fail(err);
    }
  }

  /** Reports `err` in the element `whereId` (or the status line); true when it was the key. */
  function fail(err, whereId) {
    console.warn(err);
    if (err && (err.status === 401 || err.code === 'no_api_key')) {
      askForKey(`The server did not accept this API key: ${errorText(err)}`);
      return true;
    }
    if (whereId && $(whereId)) {
      say(whereId, errorText(err));
      setStatus('');
    } else {
      setStatus(`Error: ${errorText(err)}`, true);
    }
    return false;
  }

  $('auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('api-key-input').value.trim();
    const secret = $('api-secret-input').value;
    if (!key || !secret) {
      say('auth-error', 'Enter both the key and the secret');
      (key ? $('api-secret-input') : $('api-key-input')).focus();
      return;
    }
    api.storage.saveApiKey(key, secret);
    say('auth-error', '');
    run();
  });

  if (keyButton) keyButton.addEventListener('click', () => askForKey(''));

  run();
  return { fail, reload: run };
}
