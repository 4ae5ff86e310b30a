// Meetings end to end: a host creates a password-protected meeting on the home page and
// starts it; a guest follows the shared link, gets the password wrong once, then joins; both
// see and hear each other; the host ends the meeting for everyone. A second test covers the
// waiting screen of a guest who arrives before the host.

import test from 'node:test';
import assert from 'node:assert/strict';
import { inboundBytes, listedNames, scenario, waitFor } from './harness.mjs';

const CODE = /^[A-Z0-9]{3}-[A-Z0-9]{3}-[A-Z0-9]{3}$/;

async function api(server, method, path, { body, token } = {}) {
  const headers = {};
  if (body) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(server.baseUrl + path, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const state = (page) => page.evaluate(() => window.conclave && window.conclave.state);

async function waitJoined(page, label) {
  await waitFor(async () => (await state(page)) === 'joined', {
    timeout: 15000,
    message: `page ${label} to reach state 'joined'`,
  });
}

test('host creates and starts a meeting, a guest joins with the password, the host ends it', { timeout: 180000 }, async () => {
  await scenario(async (server, open) => {
    // Host: create on the home page.
    const host = await open('/', 'host');
    await host.fill('#meeting-name', 'Design review');
    await host.fill('#meeting-password', 'open sesame');
    await host.click('#create-button');
    await host.locator('#created').waitFor({ state: 'visible', timeout: 10000 });
    const code = (await host.textContent('#meeting-code')).trim();
    assert.match(code, CODE, 'the page shows the meeting code');
    const link = await host.inputValue('#meeting-link');
    assert.equal(link, `${server.baseUrl}/join/${code}`, 'the shareable link is the join page');
    await host.click('#copy-button');
    await waitFor(() => host.textContent('#copy-status'), { timeout: 5000, message: 'a copy result message' });
    const hostToken = await host.evaluate((c) => localStorage.getItem(`conclave.host.${c}`), code);
    assert.ok(hostToken, 'the host token is remembered in localStorage');

    const created = await api(server, 'GET', `/api/meetings/${code}`);
    assert.equal(created.status, 200, JSON.stringify(created.body));
    assert.equal(created.body.name, 'Design review');
    assert.equal(created.body.has_password, true);

    // Host: start, which joins the call as host.
    await host.fill('#host-name', 'Alice');
    await Promise.all([host.waitForURL(`**/m/${code}`, { timeout: 10000 }), host.click('#start-button')]);
    await waitJoined(host, 'host');
    assert.equal(await host.evaluate(() => window.conclave.meeting.role), 'host');
    assert.ok(await host.isVisible('#end-button'), 'the host sees End meeting');
    // The host's arrival starts the meeting, so there is nothing left to start.
    await waitFor(() => host.isHidden('#start-button'), { timeout: 5000, message: 'the Start button to go once active' });

    // Guest: the copied link, a wrong password first.
    const guest = await open(new URL(link).pathname, 'guest');
    await guest.locator('#password-input').waitFor({ state: 'visible', timeout: 10000 });
    assert.equal((await guest.textContent('#meeting-name')).trim(), 'Design review');
    await guest.fill('#name-input', 'Bob');
    await guest.fill('#password-input', 'open barley');
    await guest.click('#join-button');
    await guest.locator('#wrong-password').waitFor({ state: 'visible', timeout: 10000 });
    assert.equal((await guest.textContent('#wrong-password')).trim(), 'Wrong password');
    assert.match(guest.url(), /\/join\//, 'a wrong password stays on the join page');

    await guest.fill('#password-input', 'open sesame');
    await Promise.all([guest.waitForURL(`**/m/${code}`, { timeout: 10000 }), guest.click('#join-button')]);
    await waitJoined(guest, 'guest');
    assert.equal(await guest.evaluate(() => window.conclave.meeting.role), 'participant');
    assert.ok(await guest.isHidden('#host-controls'), 'a participant has no host controls');

    for (const [label, page, other] of [['host', host, 'Bob'], ['guest', guest, 'Alice']]) {
      await waitFor(async () => (await listedNames(page)).includes(other), {
        timeout: 10000,
        message: `the ${label}'s participant list to show ${other}`,
      });
      await waitFor(
        async () => {
          const bytes = await inboundBytes(page);
          return bytes.audio > 0 && bytes.video > 0 && bytes;
        },
        { timeout: 30000, message: `the ${label} to receive audio and video bytes (inbound-rtp)` },
      );
    }

    const hostJoin = await host.evaluate((c) => JSON.parse(sessionStorage.getItem(`conclave.meeting.${c}`)), code);
    assert.equal(hostJoin.role, 'host', 'the host join is kept in sessionStorage');
    const people = await api(server, 'GET', `/api/meetings/${code}/participants`, { token: hostJoin.token });
    assert.equal(people.status, 200, JSON.stringify(people.body));
    const roles = Object.fromEntries(people.body.participants.map((p) => [p.name, p.role]));
    assert.deepEqual(roles, { Alice: 'host', Bob: 'participant' }, JSON.stringify(people.body));

    // Host ends it for everyone.
    await host.click('#end-button');
    await guest.locator('#ended').waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await guest.textContent('#ended'), /The meeting has ended/);
    const after = await guest.evaluate(() => ({
      state: window.conclave.state,
      pc: window.conclave.pc && window.conclave.pc.signalingState,
      video: Boolean(document.getElementById('local-video').srcObject),
    }));
    assert.deepEqual(after, { state: 'ended', pc: 'closed', video: false }, 'the guest stopped its media');
    await host.locator('#ended').waitFor({ state: 'visible', timeout: 10000 });

    const ended = await api(server, 'GET', `/api/meetings/${code}`);
    assert.equal(ended.status, 200);
    assert.equal(ended.body.status, 'ended', JSON.stringify(ended.body));
    assert.ok(ended.body.ended_at, 'ended_at is set');

    // The link now says so instead of offering a form.
    await guest.goto(link);
    await guest.locator('#meeting-ended').waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await guest.textContent('#meeting-ended'), /This meeting has ended/);
  });
});

test('a guest who arrives first waits until the host starts the meeting', { timeout: 120000 }, async () => {
  await scenario(async (server, open) => {
    const created = await api(server, 'POST', '/api/meetings', { body: { name: 'Standup' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { code, host_token: hostToken } = created.body;

    const guest = await open('/join/ZZZ-ZZZ-ZZ2', 'guest');
    await guest.locator('#meeting-not-found').waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await guest.textContent('#meeting-not-found'), /No meeting with code ZZZ-ZZZ-ZZ2/);

    // The home page takes a code in any case and without dashes.
    await guest.goto(`${server.baseUrl}/`);
    await guest.fill('#join-code', ` ${code.replaceAll('-', '').toLowerCase()} `);
    await Promise.all([guest.waitForURL(`**/join/${code}`, { timeout: 10000 }), guest.click('#code-button')]);
    await guest.locator('#name-input').waitFor({ state: 'visible', timeout: 10000 });
    assert.ok(await guest.isHidden('#password-field'), 'no password asked for an open meeting');
    await guest.fill('#name-input', 'Carol');
    await Promise.all([guest.waitForURL(`**/m/${code}`, { timeout: 10000 }), guest.click('#join-button')]);
    await guest.locator('#waiting').waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await guest.textContent('#waiting'), /Waiting for the host to start the meeting/);
    assert.equal(await state(guest), 'waiting');

    const hostJoin = await api(server, 'POST', `/api/meetings/${code}/join`, {
      body: { name: 'Dave' },
      token: hostToken,
    });
    assert.equal(hostJoin.status, 200, JSON.stringify(hostJoin.body));
    assert.equal(hostJoin.body.role, 'host');
    const started = await api(server, 'POST', `/api/meetings/${code}/start`, { token: hostJoin.body.token });
    assert.equal(started.status, 200, JSON.stringify(started.body));

    await waitJoined(guest, 'guest');
    assert.ok(await guest.isHidden('#waiting'), 'the waiting screen is gone once joined');
    assert.equal(await guest.evaluate(() => window.conclave.meeting.status), 'active');
  });
});
