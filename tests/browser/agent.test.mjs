// The AI agent in a browser meeting: the host starts a meeting, a lead joins with a fake
// microphone that answers once (espeak-ng, after the agent's greeting), an agent is
// dispatched over the REST API. Both pages list the agent; the host receives its audio
// (inbound-rtp bytes grow, audio level above silence) and watches the lead-score panel fill
// in with the budget the lead said and its quote.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PIPER_MODEL, inboundBytes, scenario, waitFor } from './harness.mjs';

const ANSWER = 'Our budget is about one hundred thousand dollars for the first year.';

// Silence first: the lead answers after the agent's greeting and first question.
function answerWav(dir) {
  const raw = join(dir, 'answer.wav');
  const out = join(dir, 'answer-48k.wav');
  execFileSync('espeak-ng', ['-w', raw, ANSWER]);
  execFileSync('sox', [raw, '-r', '48000', '-c', '1', out, 'pad', '16', '3']);
  return out;
}

const state = (page) => page.evaluate(() => window.conclave && window.conclave.state);

async function waitJoined(page, label) {
  await waitFor(async () => (await state(page)) === 'joined', { timeout: 20000, message: `page ${label} to join` });
}

/** Largest inbound audio level (0..1) over the page's audio streams right now. */
function audioLevel(page) {
  return page.evaluate(async () => {
    const report = await window.conclave.pc.getStats();
    let level = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') level = Math.max(level, s.audioLevel || 0);
    });
    return level;
  });
}

test('a dispatched agent speaks to a browser and the host sees the lead score', { timeout: 240000 }, async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'conclave-agent-'));
  try {
    const wav = answerWav(tmp);
    await scenario(
      async (server, open) => {
        const host = await open('/', 'host');
        await host.fill('#meeting-name', 'Discovery call');
        await host.click('#create-button');
        await host.locator('#created').waitFor({ state: 'visible', timeout: 10000 });
        const code = (await host.textContent('#meeting-code')).trim();
        const link = await host.inputValue('#meeting-link');
        await host.fill('#host-name', 'Sam');
        await Promise.all([host.waitForURL(`**/m/${code}`, { timeout: 10000 }), host.click('#start-button')]);
        await waitJoined(host, 'host');
        // The host's fake microphone beeps; muted, it stays out of the agent's way.
        await waitFor(() => host.isEnabled('#mic-button'), { timeout: 10000, message: "the host's mic button" });
        await host.click('#mic-button');

        const lead = await open(new URL(link).pathname, 'lead', {
          args: [`--use-file-for-fake-audio-capture=${wav}%noloop`],
        });
        await lead.fill('#name-input', 'Dana');
        await Promise.all([lead.waitForURL(`**/m/${code}`, { timeout: 10000 }), lead.click('#join-button')]);
        await waitJoined(lead, 'lead');

        // The Piper voice loads in the background after start: retry while it does.
        let dispatched;
        await waitFor(
          async () => {
            const res = await fetch(`${server.baseUrl}/api/meetings/${code}/agent`, {
              method: 'POST',
              headers: { authorization: server.apiAuth(), 'content-type': 'application/json' },
              body: JSON.stringify({ name: 'Ava', lead_name: 'Dana' }),
            });
            dispatched = { status: res.status, body: await res.json() };
            if (res.status === 503 && dispatched.body.error.code === 'voice_loading') return false;
            return true;
          },
          { timeout: 60000, interval: 1000, message: 'the agent to be dispatched' },
        );
        assert.equal(dispatched.status, 202, JSON.stringify(dispatched.body));
        assert.equal(dispatched.body.voice, 'piper', 'the default voice is Piper');

        for (const [label, page] of [['host', host], ['lead', lead]]) {
          await page.locator('.tile[data-role="agent"]').waitFor({ state: 'attached', timeout: 15000 });
          assert.match(await page.textContent('.tile[data-role="agent"]'), /AI agent/, `${label} labels the agent`);
        }
        const before = await inboundBytes(host);
        const level = await waitFor(async () => {
          const l = await audioLevel(host);
          return l > 0.01 && l;
        }, { timeout: 20000, interval: 100, message: 'the agent to be heard above silence at the host' });
        const after = await inboundBytes(host);
        assert.ok(after.audio > before.audio, `inbound audio bytes grow (${before.audio} -> ${after.audio})`);
        console.log(`agent audio level at the host: ${level.toFixed(3)}`);

        // The lead's answer comes in; the host's panel shows the budget with its quote.
        const panel = host.locator('#lead-score-panel');
        await panel.waitFor({ state: 'visible', timeout: 60000 });
        const budget = host.locator('#lead-score-criteria .criterion[data-criterion="budget"]');
        await waitFor(async () => /100/.test(await budget.textContent()), {
          timeout: 60000,
          message: 'the budget row to show 100k',
        });
        assert.match(await budget.textContent(), /first year/i, 'the budget row quotes the lead');
        assert.ok(await host.getAttribute('#lead-score-panel', 'data-band'), 'the panel shows a band');
        // Only hosts get the score.
        assert.equal(await lead.evaluate(() => window.conclave.leadScore), null, 'the lead never sees the score');
        assert.ok(await lead.isHidden('#lead-score-panel'), "the lead's panel stays hidden");

        const res = await fetch(`${server.baseUrl}/api/meetings/${code}/agent`, { headers: { authorization: server.apiAuth() } });
        const status = await res.json();
        assert.equal(status.score.budget.amount, 100000, JSON.stringify(status.score));
      },
      // Only this test loads the Piper voice (seconds of CPU at start the caption tests do without).
      { transcription: true, extraArgs: ['--voice', 'piper', '--piper-model', PIPER_MODEL] },
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
