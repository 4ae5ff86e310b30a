// Leads (/leads): everyone the AI agent may interview, newest first, each linking to its
// page (/leads/<id>); and a form to add one.

import { $, say, startAdmin, timeEl } from '/assets/admin.js';

const { leads } = window.ConclaveApi;

let all = [];

const page = startAdmin({ load });

async function load() {
  const body = await leads.list();
  all = (body && Array.isArray(body.leads)) ? body.leads : [];
  render();
}

const leadPath = (id) => `/leads/${encodeURIComponent(id)}`;

function render() {
  const rows = all.map((lead) => {
    const tr = document.createElement('tr');
    tr.dataset.leadId = lead.id;
    const name = document.createElement('td');
    const link = document.createElement('a');
    link.href = leadPath(lead.id);
    link.className = 'lead-link';
    link.textContent = lead.name || '(unnamed)';
    name.append(link);
    const company = document.createElement('td');
    company.textContent = lead.company || '';
    const email = document.createElement('td');
    email.textContent = lead.email || '';
    const added = document.createElement('td');
    added.append(timeEl(lead.created_at, { dateOnly: true }));
    tr.append(name, company, email, added);
    return tr;
  });
  $('lead-list').replaceChildren(...rows);
  $('lead-table').hidden = all.length === 0;
  $('leads-empty').hidden = all.length > 0;
}

$('lead-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = {
    name: $('lead-name-input').value.trim(),
    company: $('lead-company-input').value.trim(),
    email: $('lead-email-input').value.trim(),
  };
  say('lead-error', '');
  $('lead-status').textContent = '';
  if (!body.name) {
    say('lead-error', 'Enter the lead’s name');
    $('lead-name-input').focus();
    return;
  }
  const button = $('create-lead-button');
  button.disabled = true;
  try {
    const lead = await leads.create(body);
    all = [lead, ...all.filter((l) => l.id !== lead.id)];
    render();
    $('lead-form').reset();
    const status = $('lead-status');
    const link = document.createElement('a');
    link.href = leadPath(lead.id);
    link.textContent = lead.name;
    status.replaceChildren('Added ', link);
    $('lead-name-input').focus();
  } catch (err) {
    page.fail(err, 'lead-error');
  } finally {
    button.disabled = false;
  }
});
