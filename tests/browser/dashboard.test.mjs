// The dashboard in headless Chromium: a host schedules a meeting three minutes ahead in
// another time zone (New York) with the form; with a 5-minute lead time the room is ready at
// once, the live indicator counts it, the agent (auto-join, the host's 10-minute buffer) goes
// in_call on its own, a toast says so, and the host stops it from the expanded live list.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { scenario, waitFor } from './harness.mjs';

/** `ms` as YYYY-MM-DDTHH:MM on the wall clock of `zone`. */
function localIn(zone, ms) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', {
      timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
    }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

test('a meeting scheduled on the dashboard goes live on its own with the agent in the call', { timeout: 180000 }, async () => {
  await scenario(
    async (server, open) => {
      const toml = readFileSync(join(server.dir, 'data/dev-api-key.toml'), 'utf8');
      const value = (k) => new RegExp(`^${k}\\s*=\\s*"([^"]*)"`, 'm').exec(toml)[1];
      const prefs = await fetch(`${server.baseUrl}/api/hosts/sam/preferences`, {
        method: 'PUT',
        headers: { authorization: server.apiAuth(), 'content-type': 'application/json' },
        body: JSON.stringify({ auto_join: true, excluded_keywords: [], join_buffer_minutes: 10, question_set_id: null }),
      });
      assert.equal(prefs.status, 200);

      const page = await open('/dashboard?host=sam', 'dashboard');
      await page.fill('#api-key-input', value('api_key'));
      await page.fill('#api-secret-input', value('api_secret'));
      await page.click('#auth-button');
      await page.locator('#content').waitFor({ state: 'visible', timeout: 10000 });
      await waitFor(() => page.evaluate(() => window.dashboardLive === true), { timeout: 10000, message: 'the live feed' });

      const start = Math.ceil((Date.now() + 3 * 60_000) / 60_000) * 60_000;
      await page.fill('#title-input', 'Acme discovery');
      await page.fill('#start-input', localIn('America/New_York', start));
      await page.fill('#duration-input', '30');
      await page.selectOption('#zone-input', 'America/New_York');
      await page.click('#schedule-button');
      await waitFor(async () => ((await page.textContent('#schedule-status')) || '').includes('/m/'), {
        timeout: 10000, message: 'the meeting to be scheduled',
      });

      // The row shows the instant the New York wall-clock time names (in the viewer's zone).
      const row = page.locator('#upcoming-list tr').first();
      assert.equal(await row.locator('time').getAttribute('datetime'), new Date(start).toISOString());
      // Ready at once (lead time 5 minutes): counted live.
      await waitFor(async () => (await page.textContent('#ongoing-count')) === '1', { timeout: 15000, message: 'the live count' });
      // The agent goes in on its own.
      await waitFor(async () => (await row.locator('.agent-status').textContent()).startsWith('in_call'), {
        timeout: 30000, message: 'the agent to be in the call',
      });
      await waitFor(async () => (await page.locator('.toast').allTextContents()).some((t) => t.includes('Agent is in Acme discovery')), {
        timeout: 10000, message: 'the agent_in_call toast',
      });
      assert.ok((await page.textContent('#autojoin-log')).includes('in_call'), 'the auto-join log shows it');

      // Expand the indicator and stop the agent from there.
      await page.click('#ongoing-button');
      const live = page.locator('#ongoing-list li').first();
      await live.waitFor({ state: 'visible', timeout: 5000 });
      assert.ok((await live.locator('.live-agent-status').textContent()).includes('in_call'));
      assert.ok((await live.locator('.open-meeting').getAttribute('href')).startsWith('/m/'));
      await live.locator('.stop-agent').click();
      await waitFor(async () => (await row.locator('.agent-status').textContent()).startsWith('left'), {
        timeout: 15000, message: 'the agent to leave',
      });
    },
    { transcription: true, extraArgs: ['--voice', 'flite', '--scheduler-tick-ms', '500', '--ready-lead-minutes', '5'] },
  );
});
