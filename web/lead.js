// One lead (/leads/<id>): who they are (editable), their score over time, and every run
// (a meeting the AI agent held with them): its score with the evidence for each criterion,
// the summary, and the conversation as a transcript.

import { $, say, startAdmin, timeEl, toDate } from '/assets/admin.js';
import { BAND_TEXT, STATUS_TEXT, bandBadge, formatOffset, renderCriteria } from '/assets/agent-panel.js';

const { leads } = window.ConclaveApi;

const KIND_TEXT = {
  greeting: 'greeting',
  question: 'question',
  answer: 'answer',
  follow_up: 'follow-up',
  backchannel: 'backchannel',
  interruption: 'interruption',
  reprompt: 'reprompt',
  acknowledgement: 'acknowledgement',
  summary: 'summary',
  closing: 'closing',
};

const leadId = idFromPath(location.pathname);
let lead = null;

const page = startAdmin({ load });

function idFromPath(path) {
  const m = /^\/leads\/([^/]+)\/?$/.exec(path);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return m[1];
  }
}

async function load() {
  if (!leadId) throw Object.assign(new Error('this address names no lead (expected /leads/<id>)'), { code: 'bad_address' });
  lead = await leads.get(leadId);
  renderLead();
  renderRuns(Array.isArray(lead.runs) ? lead.runs : []);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// ---------- who ----------

function renderLead() {
  $('lead-name').textContent = lead.name || '(unnamed)';
  document.title = `${lead.name || 'Lead'} · Conclave`;
  $('lead-company').textContent = lead.company || '—';
  const email = $('lead-email');
  if (lead.email) {
    const a = el('a', '', lead.email);
    a.href = `mailto:${lead.email}`;
    email.replaceChildren(a);
  } else {
    email.textContent = '—';
  }
  $('lead-created').replaceChildren(timeEl(lead.created_at));
}

function showEditForm(open) {
  $('lead-edit-form').hidden = !open;
  $('edit-lead-button').setAttribute('aria-expanded', String(open));
  if (open) {
    $('edit-name-input').value = lead.name || '';
    $('edit-company-input').value = lead.company || '';
    $('edit-email-input').value = lead.email || '';
    $('edit-name-input').focus();
  }
}

$('edit-lead-button').addEventListener('click', () => {
  if (lead) showEditForm($('lead-edit-form').hidden);
});
$('cancel-edit-button').addEventListener('click', () => {
  showEditForm(false);
  $('edit-lead-button').focus();
});

$('lead-edit-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = {
    name: $('edit-name-input').value.trim(),
    company: $('edit-company-input').value.trim(),
    email: $('edit-email-input').value.trim(),
  };
  say('lead-error', '');
  if (!body.name) {
    say('lead-error', 'Enter the lead’s name');
    $('edit-name-input').focus();
    return;
  }
  const button = $('save-lead-button');
  button.disabled = true;
  try {
    const saved = await leads.update(leadId, body);
    lead = { ...lead, ...(saved || body) };
    renderLead();
    showEditForm(false);
    $('lead-status').textContent = 'Saved';
    $('edit-lead-button').focus();
  } catch (err) {
    page.fail(err, 'lead-error');
  } finally {
    button.disabled = false;
  }
});

$('delete-lead-button').addEventListener('click', () => {
  $('delete-confirm').hidden = false;
  $('cancel-delete-button').focus();
});
$('cancel-delete-button').addEventListener('click', () => {
  $('delete-confirm').hidden = true;
  $('delete-lead-button').focus();
});
$('confirm-delete-button').addEventListener('click', async () => {
  const button = $('confirm-delete-button');
  button.disabled = true;
  say('lead-error', '');
  try {
    await leads.remove(leadId);
    location.assign('/leads');
  } catch (err) {
    page.fail(err, 'lead-error');
    button.disabled = false;
  }
});

// ---------- runs ----------

const startOf = (run) => toDate(run.started_at) || toDate(run.ended_at);

function renderRuns(runs) {
  // Oldest first for the history; the newest run is shown first below it.
  const ordered = runs
    .map((run, i) => ({ run, i, at: startOf(run) }))
    .sort((a, b) => (a.at && b.at ? a.at - b.at : a.i - b.i))
    .map((x) => x.run);
  renderHistory(ordered.filter((r) => r.score && r.score.score != null));
  $('runs').replaceChildren(...ordered.slice().reverse().map(runArticle));
  $('runs-empty').hidden = runs.length > 0;
}

function runLabel(run) {
  const d = startOf(run);
  return d ? d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : 'Not started';
}

function renderHistory(scored) {
  const items = scored.map((run) => {
    const li = el('li');
    li.dataset.band = run.score.band || '';
    li.dataset.score = String(run.score.score);
    li.append(
      timeEl(run.started_at || run.ended_at),
      el('span', 'history-score', String(Math.round(Number(run.score.score)))),
      bandBadge(run.score.band),
    );
    if (run.meeting_code) li.append(el('span', 'hint mono', run.meeting_code));
    return li;
  });
  $('score-history').replaceChildren(...items);
  $('score-history').hidden = scored.length === 0;
  $('history-empty').hidden = scored.length > 0;
  $('score-chart').replaceChildren(...(scored.length ? [chart(scored)] : []));
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** Score (0-100) per scored run, evenly spaced in time order, as an inline SVG line. */
function chart(scored) {
  const W = 600;
  const H = 180;
  const left = 34;
  const right = 16;
  const top = 12;
  const bottom = 28;
  const x = (i) => (scored.length === 1 ? (left + W - right) / 2 : left + (i * (W - left - right)) / (scored.length - 1));
  const y = (v) => top + ((100 - Math.max(0, Math.min(100, v))) * (H - top - bottom)) / 100;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'score-chart-svg' });
  const first = scored[0].score.score;
  const last = scored[scored.length - 1].score.score;
  root.setAttribute(
    'aria-label',
    `Line chart of ${scored.length} score${scored.length === 1 ? '' : 's'}, from ${Math.round(first)} to ${Math.round(last)}; listed below`,
  );
  for (const v of [0, 50, 100]) {
    root.append(svg('line', { class: 'axis', x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    const label = svg('text', { class: 'axis-label', x: left - 6, y: y(v) + 4, 'text-anchor': 'end' });
    label.textContent = String(v);
    root.append(label);
  }
  const points = scored.map((r, i) => `${x(i).toFixed(1)},${y(Number(r.score.score)).toFixed(1)}`);
  if (scored.length > 1) root.append(svg('polyline', { class: 'line', points: points.join(' ') }));
  scored.forEach((r, i) => {
    const dot = svg('circle', { class: 'point', cx: x(i).toFixed(1), cy: y(Number(r.score.score)).toFixed(1), r: 5 });
    if (r.score.band) dot.setAttribute('data-band', r.score.band);
    const title = svg('title');
    title.textContent = `${runLabel(r)}: ${Math.round(Number(r.score.score))} (${BAND_TEXT[r.score.band] || r.score.band || 'no band'})`;
    dot.append(title);
    root.append(dot);
  });
  // Dates under the first and the last point.
  const ends = scored.length > 1 ? [0, scored.length - 1] : [0];
  for (const i of ends) {
    const d = startOf(scored[i]);
    const anchor = scored.length === 1 ? 'middle' : i === 0 ? 'start' : 'end';
    const label = svg('text', { class: 'axis-label', x: x(i), y: H - 8, 'text-anchor': anchor });
    label.textContent = d ? d.toLocaleDateString(undefined, { dateStyle: 'medium' }) : '';
    root.append(label);
  }
  return root;
}

function runArticle(run, index) {
  const article = el('article', 'panel run');
  const id = `run-${index}`;
  article.dataset.status = run.status || '';
  if (run.room) article.dataset.room = run.room;
  if (run.meeting_code) article.dataset.meetingCode = run.meeting_code;
  if (run.score && run.score.band) article.dataset.band = run.score.band;
  article.setAttribute('aria-labelledby', `${id}-title`);

  const title = el('h3', '', `Meeting of ${runLabel(run)}`);
  title.id = `${id}-title`;
  const meta = el('p', 'run-meta');
  meta.append(el('span', 'run-status', `Status: ${STATUS_TEXT[run.status] || run.status || 'unknown'}`));
  if (run.meeting_code) {
    const code = el('span', '', 'Code ');
    code.append(el('span', 'mono', run.meeting_code));
    meta.append(code);
  } else if (run.room) {
    meta.append(el('span', '', `Room ${run.room}`));
  }
  const duration = durationText(run);
  if (duration) meta.append(el('span', '', `Length ${duration}`));
  article.append(title, meta);

  // Score and the evidence for it.
  const scoreBox = el('section', 'run-score-box');
  scoreBox.append(el('h4', '', 'Score'));
  if (run.score) {
    const overall = el('p', 'run-score');
    overall.append(
      el('span', 'lead-score-value', run.score.score != null ? String(Math.round(Number(run.score.score))) : '—'),
      el('span', 'hint', ' / 100 '),
      bandBadge(run.score.band),
    );
    scoreBox.append(overall, renderCriteria(run.score));
    if (run.score.rule) scoreBox.append(el('p', 'hint lead-score-rule', run.score.rule));
  } else {
    scoreBox.append(el('p', 'hint', 'No score for this meeting.'));
  }
  article.append(scoreBox);

  article.append(summarySection(run.summary));
  article.append(transcript(run.events || []));
  return article;
}

function durationText(run) {
  const a = toDate(run.started_at);
  const b = toDate(run.ended_at);
  if (!a || !b || b < a) return '';
  return formatOffset(b - a);
}

function summarySection(summary) {
  const box = el('section', 'summary');
  box.append(el('h4', '', 'Summary'));
  if (!summary) {
    box.append(el('p', 'hint', 'No summary for this meeting.'));
    return box;
  }
  const list = (heading, items, cls) => {
    if (!Array.isArray(items) || !items.length) return;
    box.append(el('p', 'hint', heading));
    const ul = el('ul', cls);
    for (const item of items) ul.append(el('li', '', item));
    box.append(ul);
  };
  list('Key points', summary.key_points, 'summary-key-points');
  list('Action items', summary.action_items, 'summary-action-items');
  if (summary.next_step) {
    const p = el('p', 'summary-next-step');
    p.append(el('strong', '', 'Next step: '), summary.next_step);
    box.append(p);
  }
  return box;
}

function transcript(events) {
  const details = el('details', 'conversation');
  details.open = true;
  details.append(el('summary', '', `Conversation (${events.length} turn${events.length === 1 ? '' : 's'})`));
  if (!events.length) {
    details.append(el('p', 'hint', 'Nothing was said.'));
    return details;
  }
  const ol = el('ol', 'transcript');
  const sorted = events.slice().sort((a, b) => (Number(a.at_ms) || 0) - (Number(b.at_ms) || 0));
  for (const ev of sorted) {
    const li = el('li', 'event');
    li.dataset.who = ev.who || '';
    li.dataset.kind = ev.kind || '';
    const at = el('span', 'event-at', formatOffset(ev.at_ms));
    const who = el('span', 'event-who', ev.who === 'agent' ? 'Agent' : ev.who === 'lead' ? (lead && lead.name) || 'Lead' : ev.who || '');
    const text = el('span', 'event-text', ev.text || '');
    if (ev.kind) {
      text.append(el('span', 'event-kind', KIND_TEXT[ev.kind] || ev.kind));
    }
    li.append(at, who, text);
    ol.append(li);
  }
  details.append(ol);
  return details;
}
