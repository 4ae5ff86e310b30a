// The REST API as the pages use it, and what the meeting pages hand each other through
// browser storage (host tokens, join tokens, the last name typed). Shared by every page.
'use strict';

window.ConclaveApi = (() => {
  /** A refused or failed request; `code` is the server's stable error code. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.code = code;
    }
  }

  /**
   * token: a bearer token (join and host tokens). apiKey: {key, secret} for the admin API,
   * sent as HTTP Basic. Resolves to the parsed body (null for 204 or a non-JSON body).
   */
  async function request(method, path, { body, token, apiKey, keepalive = false } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (apiKey) headers.Authorization = basicAuth(apiKey.key, apiKey.secret);
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive,
      });
    } catch {
      throw new ApiError(0, 'network_error', 'the server could not be reached');
    }
    let data = null;
    if (res.status !== 204) {
      try {
        data = await res.json();
      } catch {
        // A proxy's HTML error page, say; the status line is all we have.
      }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(res.status, e.code || `http_${res.status}`, e.message || `HTTP ${res.status}`);
    }
    return data;
  }

  // btoa takes Latin-1 only: the UTF-8 bytes go through it one by one.
  function basicAuth(user, password) {
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return `Basic ${btoa(binary)}`;
  }

  // ---------- meeting codes ----------

  /**
   * The canonical form (ABC-DEF-GHJ) of what someone typed or pasted: any case, with or
   * without dashes or spaces, or a whole /join/ or /m/ link. Null when it cannot be a code.
   */
  function normalizeCode(input) {
    let text = String(input ?? '').trim();
    const link = /\/(?:join|m)\/([^/?#\s]+)/.exec(text);
    if (link) {
      try {
        text = decodeURIComponent(link[1]);
      } catch {
        return null;
      }
    }
    text = text.toUpperCase();
    const bare = text.replace(/[^A-Z0-9]/g, '');
    if (bare.length === 9) return `${bare.slice(0, 3)}-${bare.slice(3, 6)}-${bare.slice(6)}`;
    // Codes of another shape still pass when typed with their dashes, so a future code
    // format does not lock people out of the pages.
    return /^[A-Z0-9]+(?:-[A-Z0-9]+)*$/.test(text) && text.length <= 32 ? text : null;
  }

  /** The code in this page's address (/join/<code>, /m/<code>), as written there. */
  function codeInPath() {
    const m = /^\/(?:join|m)\/([^/]+)\/?$/.exec(location.pathname);
    if (!m) return '';
    try {
      return decodeURIComponent(m[1]);
    } catch {
      return m[1];
    }
  }

  const joinPath = (code) => `/join/${encodeURIComponent(code)}`;
  const meetingPath = (code) => `/m/${encodeURIComponent(code)}`;

  // ---------- storage ----------

  // Storage can be switched off (or full); the pages then work without remembering.
  function read(store, key) {
    try {
      return store.getItem(key);
    } catch {
      return null;
    }
  }

  function write(store, key, value) {
    try {
      if (value == null) store.removeItem(key);
      else store.setItem(key, value);
    } catch (err) {
      console.warn(`could not store ${key}`, err);
    }
  }

  // Host tokens outlive the tab (the host may come back later); join tokens are per tab, so
  // two tabs can be two different people.
  const hostKey = (code) => `conclave.host.${code}`;
  const joinKey = (code) => `conclave.meeting.${code}`;

  const storage = {
    hostToken: (code) => read(localStorage, hostKey(code)),
    saveHostToken: (code, token) => write(localStorage, hostKey(code), token),
    forgetHostToken: (code) => write(localStorage, hostKey(code), null),
    /** {token, role, identity, name, meeting} of this tab's join, or null. */
    join(code) {
      try {
        const join = JSON.parse(read(sessionStorage, joinKey(code)) || 'null');
        return join && typeof join.token === 'string' ? join : null;
      } catch {
        return null;
      }
    },
    saveJoin: (code, join) => write(sessionStorage, joinKey(code), JSON.stringify(join)),
    forgetJoin: (code) => write(sessionStorage, joinKey(code), null),
    name: () => read(localStorage, 'conclave.name') || '',
    saveName: (name) => write(localStorage, 'conclave.name', name),
    /** The admin pages' API key {key, secret}, kept for this tab only; null when none. */
    apiKey() {
      try {
        const k = JSON.parse(read(sessionStorage, 'conclave.apikey') || 'null');
        return k && typeof k.key === 'string' && typeof k.secret === 'string' ? k : null;
      } catch {
        return null;
      }
    },
    saveApiKey: (key, secret) => write(sessionStorage, 'conclave.apikey', JSON.stringify({ key, secret })),
    forgetApiKey: () => write(sessionStorage, 'conclave.apikey', null),
  };

  // ---------- the admin API (question sets, leads): API-key auth ----------

  function admin(method, path, body) {
    const apiKey = storage.apiKey();
    if (!apiKey) return Promise.reject(new ApiError(401, 'no_api_key', 'no API key entered'));
    return request(method, path, { body, apiKey });
  }

  const setAt = (id) => `/api/question-sets/${encodeURIComponent(id)}`;
  const questionSets = {
    list: () => admin('GET', '/api/question-sets'),
    get: (id) => admin('GET', setAt(id)),
    create: (body) => admin('POST', '/api/question-sets', body),
    update: (id, body) => admin('PUT', setAt(id), body),
    remove: (id) => admin('DELETE', setAt(id)),
  };

  const leadAt = (id) => `/api/leads/${encodeURIComponent(id)}`;
  const leads = {
    list: () => admin('GET', '/api/leads'),
    get: (id) => admin('GET', leadAt(id)),
    create: (body) => admin('POST', '/api/leads', body),
    update: (id, body) => admin('PUT', leadAt(id), body),
    remove: (id) => admin('DELETE', leadAt(id)),
  };

  // ---------- meetings ----------

  const at = (code, action = '') => `/api/meetings/${encodeURIComponent(code)}${action}`;
  const meetings = {
    create: (body) => request('POST', '/api/meetings', { body }),
    get: (code) => request('GET', at(code)),
    start: (code, token) => request('POST', at(code, '/start'), { token }),
    end: (code, token) => request('POST', at(code, '/end'), { token }),
    // keepalive: leaving usually comes right before the tab goes away.
    leave: (code, token) => request('POST', at(code, '/leave'), { token, keepalive: true }),
    participants: (code, token) => request('GET', at(code, '/participants'), { token }),

    /**
     * Joins (as host when hostToken is given) and keeps the result for the meeting page of
     * this tab. Resolves to the server's answer.
     */
    async join(code, { name, password, hostToken }) {
      const body = { name };
      if (password) body.password = password;
      const res = await request('POST', at(code, '/join'), { body, token: hostToken });
      const canonical = normalizeCode((res.meeting && res.meeting.code) || res.room || code) || code;
      storage.saveJoin(canonical, {
        token: res.token,
        role: res.role,
        identity: res.identity,
        name,
        meeting: res.meeting || null,
      });
      return { ...res, room_url: res.room_url || meetingPath(canonical) };
    },
  };

  return {
    ApiError,
    request,
    basicAuth,
    admin,
    normalizeCode,
    codeInPath,
    joinPath,
    meetingPath,
    storage,
    meetings,
    questionSets,
    leads,
  };
})();
