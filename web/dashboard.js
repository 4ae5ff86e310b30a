// The dashboard (/dashboard?host=<identity>): a host's scheduled meetings in the viewer's
// time zone, a form to schedule one in any zone, a live indicator of what is ready or
// ongoing (expanding into each meeting's agent status with quick actions), toasts for
// notifications, the auto-join log and lead scores. Live through the host's event stream
// (GET /api/hosts/<host>/events, server-sent events read with fetch so the API key can go in
// a header).

import { $, errorText, say, setStatus, startAdmin, timeEl } from '/assets/admin.js';

const api = window.ConclaveApi;
const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

let host = new URLSearchParams(location.search).get('host') || localStorage.getItem('conclave.dashboard.host') || '';
let streamFor = null;
let occurrences = [];

const page = startAdmin({ load });

function fillZones() {
  const select = $('zone-input');
  if (select.options.length) return;
  const zones = (Intl.supportedValuesOf && Intl.supportedValuesOf('timeZone')) || [viewerZone, 'UTC'];
  if (!zones.includes('UTC')) zones.unshift('UTC');
  for (const z of zones) {
    const o = document.createElement('option');
    o.value = z;
    o.textContent = z;
    select.append(o);
  }
  select.value = zones.includes(viewerZone) ? viewerZone : 'UTC';
  $('viewer-zone').textContent = `(times in ${viewerZone})`;
  $('host-input').value = host;
}

async function load() {
  fillZones();
  if (!host) {
    setStatus('Enter the host whose meetings to show');
    return;
  }
  const body = await api.admin('GET', `/api/schedules?host=${encodeURIComponent(host)}`);
  const series = (body && body.schedules) || [];
  const rows = [];
  for (const s of series) {
    for (const o of s.occurrences || []) rows.push({ s, o });
  }
  rows.sort((a, b) => String(a.o.start).localeCompare(String(b.o.start)));
  occurrences = rows;
  await render();
  if (streamFor !== host) follow(host);
}

async function scoreOf(code) {
  try {
    const a = await api.admin('GET', `/api/meetings/${encodeURIComponent(code)}/agent`);
    const score = a && a.score;
    return score && score.score != null ? `${score.score} (${score.band})` : '';
  } catch {
    return '';
  }
}

async function render() {
  const tbody = $('upcoming-list');
  const trs = [];
  const live = [];
  for (const { s, o } of occurrences) {
    const tr = document.createElement('tr');
    tr.dataset.occurrenceId = o.id == null ? '' : o.id;
    tr.dataset.status = o.status;
    const when = document.createElement('td');
    when.append(timeEl(o.start));
    const what = document.createElement('td');
    const link = document.createElement('a');
    link.href = s.meeting.url;
    link.textContent = s.title;
    what.append(link);
    const status = document.createElement('td');
    status.className = 'occurrence-status';
    status.textContent = o.status;
    const agent = document.createElement('td');
    agent.className = 'agent-status';
    agent.textContent = (o.bot && o.bot.status) || (s.auto_join ? 'waiting' : '—');
    if (o.bot && o.bot.reason) agent.textContent += ` (${o.bot.reason})`;
    const score = document.createElement('td');
    score.className = 'lead-score';
    tr.append(when, what, status, agent, score);
    trs.push(tr);
    if (o.status === 'ready' || o.status === 'ongoing') {
      live.push({ s, o });
      scoreOf(s.meeting.code).then((t) => { score.textContent = t; });
    }
  }
  tbody.replaceChildren(...trs);
  $('upcoming-table').hidden = trs.length === 0;
  $('upcoming-empty').hidden = trs.length !== 0;
  renderLive(live);
  renderLog(live);
}

function renderLive(live) {
  $('ongoing-count').textContent = String(live.length);
  $('ongoing-button').classList.toggle('active', live.length > 0);
  const items = live.map(({ s, o }) => {
    const li = document.createElement('li');
    li.className = 'live-meeting';
    li.dataset.occurrenceId = o.id;
    const title = document.createElement('strong');
    title.textContent = s.title;
    const agent = document.createElement('span');
    agent.className = 'live-agent-status';
    agent.textContent = ` agent: ${(o.bot && o.bot.status) || 'none'} `;
    const open = document.createElement('a');
    open.href = s.meeting.url;
    open.textContent = 'Open meeting';
    open.className = 'open-meeting';
    const stop = document.createElement('button');
    stop.type = 'button';
    stop.className = 'stop-agent';
    stop.textContent = 'Stop agent';
    stop.disabled = !(o.bot && ['dispatched', 'joining', 'in_call'].includes(o.bot.status));
    stop.addEventListener('click', async () => {
      try {
        await api.admin('POST', `/api/occurrences/${o.id}/override`, { action: 'stop_agent' });
        await load();
      } catch (err) {
        page.fail(err);
      }
    });
    li.append(title, agent, open, ' ', stop);
    return li;
  });
  $('ongoing-list').replaceChildren(...items);
  $('ongoing-empty').hidden = items.length !== 0;
}

async function renderLog(live) {
  const entries = [];
  for (const { s, o } of live) {
    try {
      const d = await api.admin('GET', `/api/occurrences/${o.id}`);
      for (const l of d.auto_join_log || []) entries.push({ s, l });
    } catch {
      // Shown again at the next refresh.
    }
  }
  $('autojoin-log').replaceChildren(...entries.map(({ s, l }) => {
    const li = document.createElement('li');
    li.append(timeEl(l.at), ` ${s.title}: attempt ${l.attempt} ${l.outcome}${l.error ? ` (${l.error})` : ''}`);
    return li;
  }));
}

function toast(text) {
  const t = document.createElement('div');
  t.className = 'toast';
  t.setAttribute('role', 'status');
  t.textContent = text;
  $('toasts').append(t);
  setTimeout(() => t.remove(), 8000);
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => load().catch((err) => page.fail(err)), 150);
}

// Reads the event stream until it ends, then reconnects after a pause.
async function follow(who) {
  streamFor = who;
  const key = api.storage.apiKey();
  if (!key) return;
  try {
    const res = await fetch(`/api/hosts/${encodeURIComponent(who)}/events`, {
      headers: { Authorization: api.basicAuth(key.key, key.secret) },
    });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    window.dashboardLive = true;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || streamFor !== who) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const kind = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (!kind) continue;
        if (kind === 'notification' && data) {
          try {
            toast(JSON.parse(data).title);
          } catch {
            // A malformed event is skipped.
          }
        }
        refreshSoon();
      }
    }
  } catch (err) {
    console.warn('event stream', err);
  }
  window.dashboardLive = false;
  if (streamFor === who) setTimeout(() => follow(who), 2000);
}

$('ongoing-button').addEventListener('click', () => {
  const panel = $('ongoing-panel');
  panel.hidden = !panel.hidden;
  $('ongoing-button').setAttribute('aria-expanded', String(!panel.hidden));
});

$('schedule-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  say('schedule-error', '');
  const who = $('host-input').value.trim();
  const body = {
    title: $('title-input').value.trim(),
    host_identity: who,
    time_zone: $('zone-input').value,
    start: $('start-input').value,
    duration_minutes: Number($('duration-input').value),
    auto_join: $('autojoin-input').checked,
  };
  const rrule = $('rrule-input').value.trim();
  if (rrule) body.rrule = rrule;
  try {
    const s = await api.admin('POST', '/api/schedules', body);
    say('schedule-status', `Scheduled: ${s.meeting.url}`);
    if (who !== host) {
      host = who;
      localStorage.setItem('conclave.dashboard.host', host);
      history.replaceState(null, '', `/dashboard?host=${encodeURIComponent(host)}`);
    }
    await load();
  } catch (err) {
    if (!page.fail(err, 'schedule-error')) say('schedule-error', errorText(err));
  }
});
