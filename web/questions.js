// Question sets (/questions): the scripts the AI agent follows when it interviews a lead.
// Lists the sets, and edits one at a time: name, greeting ("{name}" is the lead's name),
// questions (text, category, optional follow-up; added, removed and reordered here), and
// closing. Saving POSTs a new set or PUTs an existing one; ?set=<id> names the one open.

import { $, say, setStatus, startAdmin, timeEl } from '/assets/admin.js';

const { questionSets } = window.ConclaveApi;

let sets = []; // as the server last listed them
let current = null; // the set open in the editor (null: a new one, not saved yet)
let questionKey = 0; // makes the ids of each question's fields unique

const form = $('set-form');
const list = $('question-list');

const page = startAdmin({ load });

async function load() {
  const body = await questionSets.list();
  sets = (body && Array.isArray(body.question_sets)) ? body.question_sets : [];
  const wanted = new URLSearchParams(location.search).get('set');
  const open = sets.find((s) => String(s.id) === wanted) || (current && sets.find((s) => s.id === current.id)) || sets[0];
  renderList();
  if (open) await openSet(open.id, { focus: false });
  else edit(null);
}

// ---------- the list ----------

function renderList() {
  const items = sets.map((s) => {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'set-item';
    button.dataset.setId = s.id;
    button.setAttribute('aria-current', String(Boolean(current && current.id === s.id)));
    const name = document.createElement('span');
    name.className = 'set-name';
    name.textContent = s.name || '(unnamed)';
    const info = document.createElement('span');
    info.className = 'hint';
    const n = Array.isArray(s.questions) ? s.questions.length : 0;
    info.append(`${n} question${n === 1 ? '' : 's'} · updated `, timeEl(s.updated_at || s.created_at, { dateOnly: true }));
    button.append(name, info);
    button.addEventListener('click', () => openSet(s.id, { focus: true }));
    li.append(button);
    return li;
  });
  $('set-list').replaceChildren(...items);
  $('sets-empty').hidden = sets.length > 0;
}

async function openSet(id, { focus }) {
  say('list-error', '');
  try {
    edit(await questionSets.get(id));
    if (focus) $('editor-title').focus();
  } catch (err) {
    page.fail(err, 'list-error');
  }
}

$('new-set-button').addEventListener('click', () => {
  edit(null);
  $('set-name').focus();
});

// ---------- the editor ----------

/** Fills the editor with `set` (null: an empty new one). */
function edit(set) {
  current = set;
  form.dataset.mode = set ? 'edit' : 'new';
  form.dataset.setId = set ? set.id : '';
  $('editor-title').textContent = set ? `Edit “${set.name}”` : 'New question set';
  $('set-name').value = set ? set.name || '' : '';
  $('set-greeting').value = set ? set.greeting || '' : '';
  $('set-closing').value = set ? set.closing || '' : '';
  list.replaceChildren();
  for (const q of (set && set.questions) || []) list.append(questionItem(q));
  if (!set) list.append(questionItem({ text: '', category: 'budget', follow_up: null }));
  renumber();
  $('delete-button').hidden = !set;
  $('delete-confirm').hidden = true;
  say('set-error', '');
  $('set-status').textContent = '';
  const url = new URL(location.href);
  if (set) url.searchParams.set('set', set.id);
  else url.searchParams.delete('set');
  history.replaceState(null, '', url.pathname + url.search);
  for (const b of document.querySelectorAll('#set-list .set-item')) {
    b.setAttribute('aria-current', String(Boolean(set && b.dataset.setId === String(set.id))));
  }
}

function questionItem(q) {
  const li = $('question-template').content.firstElementChild.cloneNode(true);
  const key = ++questionKey;
  for (const [cls, field] of [['q-text', 'text'], ['q-category', 'category'], ['q-follow-up', 'follow-up']]) {
    const input = li.querySelector(`.${cls}`);
    input.id = `q${key}-${field}`;
    li.querySelector(`.${cls}-label`).htmlFor = input.id;
  }
  li.querySelector('.q-text').value = q.text || '';
  const category = li.querySelector('.q-category');
  category.value = ['budget', 'authority', 'need', 'timeline', 'other'].includes(q.category) ? q.category : 'other';
  li.querySelector('.q-follow-up').value = q.follow_up || '';
  li.querySelector('.move-up').addEventListener('click', () => move(li, -1));
  li.querySelector('.move-down').addEventListener('click', () => move(li, 1));
  li.querySelector('.remove-question').addEventListener('click', () => remove(li));
  return li;
}

/** Numbers the questions, names their buttons after them, and disables moves off the ends. */
function renumber() {
  const items = [...list.children];
  items.forEach((li, i) => {
    const n = i + 1;
    li.dataset.index = String(i);
    li.querySelector('.question-title').textContent = `Question ${n}`;
    const up = li.querySelector('.move-up');
    const down = li.querySelector('.move-down');
    up.setAttribute('aria-label', `Move question ${n} up`);
    down.setAttribute('aria-label', `Move question ${n} down`);
    li.querySelector('.remove-question').setAttribute('aria-label', `Remove question ${n}`);
    up.disabled = i === 0;
    down.disabled = i === items.length - 1;
  });
  $('questions-empty').hidden = items.length > 0;
}

function move(li, delta) {
  const button = li.querySelector(delta < 0 ? '.move-up' : '.move-down');
  const sibling = delta < 0 ? li.previousElementSibling : li.nextElementSibling;
  if (!sibling) return;
  if (delta < 0) list.insertBefore(li, sibling);
  else list.insertBefore(sibling, li);
  renumber();
  // Keep the focus with the question moved; at an end its button is disabled, so the other.
  (button.disabled ? li.querySelector(delta < 0 ? '.move-down' : '.move-up') : button).focus();
  $('set-status').textContent = `Question moved to position ${Number(li.dataset.index) + 1}`;
}

function remove(li) {
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  renumber();
  (next ? next.querySelector('.q-text') : $('add-question-button')).focus();
  $('set-status').textContent = 'Question removed';
}

$('add-question-button').addEventListener('click', () => {
  const li = questionItem({ text: '', category: 'other', follow_up: null });
  list.append(li);
  renumber();
  li.querySelector('.q-text').focus();
});

/** The request body for the editor's contents. */
function draft() {
  return {
    name: $('set-name').value.trim(),
    greeting: $('set-greeting').value.trim(),
    closing: $('set-closing').value.trim(),
    questions: [...list.children].map((li) => {
      const followUp = li.querySelector('.q-follow-up').value.trim();
      return {
        text: li.querySelector('.q-text').value.trim(),
        category: li.querySelector('.q-category').value,
        follow_up: followUp || null,
      };
    }),
  };
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = draft();
  say('set-error', '');
  if (!body.name) {
    say('set-error', 'Give the question set a name');
    $('set-name').focus();
    return;
  }
  const blank = body.questions.findIndex((q) => !q.text);
  if (blank >= 0) {
    say('set-error', `Question ${blank + 1} has no text`);
    list.children[blank].querySelector('.q-text').focus();
    return;
  }
  const button = $('save-button');
  button.disabled = true;
  $('set-status').textContent = 'Saving…';
  try {
    const saved = current ? await questionSets.update(current.id, body) : await questionSets.create(body);
    const i = sets.findIndex((s) => s.id === saved.id);
    if (i >= 0) sets[i] = saved;
    else sets.push(saved);
    current = saved;
    renderList();
    edit(saved);
    $('set-status').textContent = `Saved “${saved.name}”`;
  } catch (err) {
    $('set-status').textContent = '';
    page.fail(err, 'set-error');
  } finally {
    button.disabled = false;
  }
});

// ---------- deleting ----------

$('delete-button').addEventListener('click', () => {
  $('delete-confirm').hidden = false;
  $('cancel-delete-button').focus();
});

$('cancel-delete-button').addEventListener('click', () => {
  $('delete-confirm').hidden = true;
  $('delete-button').focus();
});

$('confirm-delete-button').addEventListener('click', async () => {
  if (!current) return;
  const gone = current;
  const button = $('confirm-delete-button');
  button.disabled = true;
  say('set-error', '');
  try {
    await questionSets.remove(gone.id);
    sets = sets.filter((s) => s.id !== gone.id);
    edit(null);
    renderList();
    $('set-status').textContent = `Deleted “${gone.name}”`;
    setStatus('');
    $('new-set-button').focus();
  } catch (err) {
    page.fail(err, 'set-error');
  } finally {
    button.disabled = false;
  }
});
