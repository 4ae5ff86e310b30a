// Signaling client: the WebSocket to /ws speaking protocol v1 (one JSON object per frame,
// each stamped with `v`), the join sent once it opens, and a keep-alive ping.

const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 20000;

/**
 * One client per mounted call. The socket in use is `conclave.ws` (null once dropped on
 * purpose); `send` writes to that one only, and only while it is open.
 *
 * onMessage(msg): every parsed frame. onClose(ws): after `ws` closed, for any reason.
 */
export function createSignaling({ conclave, room, onMessage, onClose }) {
  let pingTimer = null;
  let pingId = 0;

  function send(msg) {
    const ws = conclave.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
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
      onMessage(msg);
    };
    ws.onclose = () => {
      stopPing();
      onClose(ws);
    };
    return ws;
  }

  function stopPing() {
    clearInterval(pingTimer);
  }

  return { connect, send, stopPing };
}

/**
 * Runs tasks strictly one after another, in the order given. A task that throws is passed to
 * onError and the next one still runs. Returns enqueue(fn) → the promise of the queue's tail.
 */
export function serialQueue(onError) {
  let tail = Promise.resolve();
  return (fn) => {
    tail = tail.then(fn).catch(onError);
    return tail;
  };
}
