// The AI agent's lead score. In a call, the host (and only the host) is sent `lead_score`
// messages while the agent interviews a lead: showLeadScore(msg) renders each one into the
// #lead-score-panel, which stays hidden until the first arrives. The formatting helpers and
// renderCriteria are shared with the lead page (/leads/<id>), which shows past runs.
//
// A score: {budget, authority, need, timeline_by, sentiment, score (0-100), band (hot, warm,
// cold), rule, evidence: [{criterion, quote, at_ms}]}; a criterion still unknown is null.

export const CRITERIA = [
  ['budget', 'Budget'],
  ['authority', 'Authority'],
  ['need', 'Need'],
  ['timeline', 'Timeline'],
  ['sentiment', 'Sentiment'],
];

export const STATUS_TEXT = {
  running: 'In progress',
  finished: 'Finished',
  stopped: 'Stopped',
  failed: 'Failed',
};

export const BAND_TEXT = { hot: 'Hot', warm: 'Warm', cold: 'Cold' };

const AUTHORITY_TEXT = {
  decision_maker: 'Decision maker',
  influencer: 'Influencer',
  no_authority: 'No authority',
};

const UNKNOWN = 'Not known yet';

function money(amount, currency) {
  const n = Number(amount);
  if (!Number.isFinite(n)) return String(amount);
  try {
    return new Intl.NumberFormat(undefined, {
      style: 'currency',
      currency: currency || 'USD',
      maximumFractionDigits: 0,
    }).format(n);
  } catch {
    // An unknown currency code: the number and the code as they came.
    return `${n.toLocaleString()} ${currency || ''}`.trim();
  }
}

export function formatBudget(budget) {
  if (!budget) return UNKNOWN;
  switch (budget.kind) {
    case 'amount':
      return money(budget.amount, budget.currency);
    case 'range':
      return `${money(budget.min, budget.currency)} – ${money(budget.max, budget.currency)}`;
    case 'none':
      return 'No budget';
    default:
      return UNKNOWN;
  }
}

export function formatAuthority(authority) {
  if (!authority) return UNKNOWN;
  return AUTHORITY_TEXT[authority] || String(authority);
}

export function formatNeed(need) {
  if (need === true) return 'Yes, has the need';
  if (need === false) return 'No need';
  return UNKNOWN;
}

/** "2027-02-28" → "By 28 Feb 2027" (the date as written, not shifted by time zones). */
export function formatTimeline(date) {
  if (!date) return UNKNOWN;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(date));
  if (!m) return `By ${date}`;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return `By ${d.toLocaleDateString(undefined, { timeZone: 'UTC', day: 'numeric', month: 'short', year: 'numeric' })}`;
}

export function formatSentiment(sentiment) {
  const n = Number(sentiment);
  if (sentiment == null || !Number.isFinite(n)) return UNKNOWN;
  const word = n > 0.2 ? 'positive' : n < -0.2 ? 'negative' : 'neutral';
  return `${n > 0 ? '+' : ''}${n.toFixed(2)} (${word})`;
}

/** The value of one criterion of `score`, as text. */
export function criterionValue(score, criterion) {
  if (!score) return UNKNOWN;
  switch (criterion) {
    case 'budget':
      return formatBudget(score.budget);
    case 'authority':
      return formatAuthority(score.authority);
    case 'need':
      return formatNeed(score.need);
    case 'timeline':
      return formatTimeline(score.timeline_by);
    case 'sentiment':
      return formatSentiment(score.sentiment);
    default:
      return UNKNOWN;
  }
}

/** Whether the criterion has a value yet (unknown ones are shown muted). */
function known(score, criterion) {
  if (!score) return false;
  const key = criterion === 'timeline' ? 'timeline_by' : criterion;
  return score[key] !== null && score[key] !== undefined;
}

/** 83456 ms → "1:23" (an offset into the conversation). */
export function formatOffset(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return '';
  const total = Math.floor(n / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A "Hot" / "Warm" / "Cold" badge; data-band carries the band for styles and tests. */
export function bandBadge(band) {
  const b = el('span', 'band-badge', BAND_TEXT[band] || band || '—');
  if (band) b.dataset.band = band;
  b.title = `Band: ${BAND_TEXT[band] || band || 'none'}`;
  return b;
}

/**
 * A <dl class="criteria">: per criterion a <div data-criterion="…" data-known="true|false">
 * with its name (dt), value (dd.criterion-value) and the quotes it rests on
 * (dd.criterion-evidence > q.evidence, each with data-at-ms).
 */
export function renderCriteria(score) {
  const list = el('dl', 'criteria');
  const evidence = (score && Array.isArray(score.evidence)) ? score.evidence : [];
  for (const [key, label] of CRITERIA) {
    const row = el('div', 'criterion');
    row.dataset.criterion = key;
    row.dataset.known = String(known(score, key));
    row.append(el('dt', 'criterion-name', label), el('dd', 'criterion-value', criterionValue(score, key)));
    const quotes = evidence.filter((e) => e && e.criterion === key && e.quote);
    if (quotes.length) {
      const dd = el('dd', 'criterion-evidence');
      for (const e of quotes) {
        const line = el('span', 'evidence-line');
        const q = el('q', 'evidence', e.quote);
        if (e.at_ms != null) q.dataset.atMs = String(e.at_ms);
        line.append(q);
        const at = formatOffset(e.at_ms);
        if (at) line.append(' ', el('span', 'evidence-at hint', `at ${at}`));
        dd.append(line);
      }
      row.append(dd);
    }
    list.append(row);
  }
  return list;
}

/** "question 2 of 4", or '' when the message has no progress. */
export function progressText(msg) {
  const i = Number(msg.question_index);
  const n = Number(msg.questions_total);
  if (msg.question_index == null || !Number.isFinite(i)) return '';
  return msg.questions_total != null && Number.isFinite(n) ? `question ${i} of ${n}` : `question ${i}`;
}

// ---------- the live panel ----------

let panel = null; // {root, status, progress, value, band, criteria, rule, announce}
let announced = '';

function ensurePanel() {
  if (panel && panel.root.isConnected) return panel;
  let root = document.getElementById('lead-score-panel');
  if (!root) {
    root = document.createElement('section');
    root.id = 'lead-score-panel';
    root.hidden = true;
    (document.getElementById('meeting') || document.body).append(root);
  }
  root.classList.add('lead-score');
  root.setAttribute('aria-labelledby', 'lead-score-title');

  const title = el('h2', 'lead-score-title', 'Lead score');
  title.id = 'lead-score-title';
  const status = el('p', 'lead-score-status');
  status.id = 'lead-score-status';
  const statusText = el('span', 'lead-score-status-text');
  statusText.id = 'lead-score-status-text';
  const progress = el('span', 'lead-score-progress');
  progress.id = 'lead-score-progress';
  status.append(statusText, progress);

  const overall = el('p', 'lead-score-overall');
  const value = el('span', 'lead-score-value');
  value.id = 'lead-score-value';
  const band = el('span', 'lead-score-band');
  band.id = 'lead-score-band';
  overall.append(value, el('span', 'hint', ' / 100 '), band);

  const criteria = el('div', 'lead-score-criteria');
  criteria.id = 'lead-score-criteria';
  const rule = el('p', 'lead-score-rule hint');
  rule.id = 'lead-score-rule';
  // Only changes of status or band are read out, not every refinement of a quote.
  const announce = el('p', 'visually-hidden');
  announce.id = 'lead-score-announce';
  announce.setAttribute('role', 'status');
  announce.setAttribute('aria-live', 'polite');

  root.replaceChildren(title, status, overall, criteria, rule, announce);
  panel = { root, statusText, progress, value, band, criteria, rule, announce };
  return panel;
}

/**
 * Renders one `lead_score` message ({status, question_index, questions_total, score}).
 * The panel keeps showing the last score when a later message carries none.
 */
export function showLeadScore(msg) {
  if (!msg) return;
  const p = ensurePanel();
  const status = msg.status || 'running';
  const score = msg.score || null;
  p.root.dataset.status = status;
  p.statusText.textContent = STATUS_TEXT[status] || status;
  const progress = progressText(msg);
  p.progress.textContent = progress ? ` · ${progress}` : '';

  if (score || !p.root.dataset.band) {
    const band = score && score.band ? score.band : '';
    if (band) p.root.dataset.band = band;
    else delete p.root.dataset.band;
    p.value.textContent = score && score.score != null ? String(Math.round(Number(score.score))) : '—';
    p.band.replaceChildren(...(band ? [bandBadge(band)] : []));
    p.criteria.replaceChildren(renderCriteria(score));
    p.rule.textContent = score && score.rule ? score.rule : '';
  }
  p.root.hidden = false;

  const band = p.root.dataset.band;
  const summary = `Lead score ${p.value.textContent}${band ? `, ${BAND_TEXT[band] || band}` : ''}. ${p.statusText.textContent}.`;
  const key = `${status}|${band || ''}`;
  if (key !== announced) {
    announced = key;
    p.announce.textContent = summary;
  }
}

/** Hides the panel and forgets what it showed (a new call starts afresh). */
export function resetLeadScore() {
  const root = document.getElementById('lead-score-panel');
  if (root) {
    root.hidden = true;
    root.replaceChildren();
    delete root.dataset.band;
    delete root.dataset.status;
  }
  panel = null;
  announced = '';
}
