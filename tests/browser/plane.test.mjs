// The new media plane (src/plane) against Chromium, before it carries rooms: the page sends
// its fake camera and microphone to `examples/plane_echo`, whose plane answers with its own
// SDP, connects (ICE-lite, DTLS with the page's fingerprint checked, SRTP) and sends both
// tracks back under its own SSRCs. The page must decode them: Chromium accepted our answer,
// our DTLS and our SRTP, and we decrypted its SRTP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { openPage, serverBinary, waitFor } from './harness.mjs';

function echoBinary() {
  if (process.env.CONCLAVE_PLANE_ECHO) return process.env.CONCLAVE_PLANE_ECHO;
  return join(dirname(serverBinary()), 'examples/plane_echo');
}

async function startEcho() {
  const bin = echoBinary();
  if (!existsSync(bin)) throw new Error(`${bin} not found: cargo build --example plane_echo`);
  const child = spawn(bin, [], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  child.stderr.on('data', (d) => log.push(String(d)));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('plane_echo printed no address in 10 s')), 10000);
    child.stdout.on('data', (d) => {
      const m = String(d).match(/listening on (http:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code) => reject(new Error(`plane_echo exited (${code}): ${log.join('')}`)));
  });
  return { url, log, stop: () => child.kill('SIGKILL') };
}

test('Chromium connects to the plane and decodes its own audio and video sent back', async () => {
  const echo = await startEcho();
  const p = await openPage(echo.url, 'echo');
  try {
    await waitFor(async () => (await p.page.evaluate(() => window.result.state)) === 'connected', {
      timeout: 15000,
      message: 'the page connected to the plane',
    });
    const stats = () =>
      p.page.evaluate(async () => {
        const out = { audioPackets: 0, audioEnergy: 0, framesDecoded: 0 };
        (await window.pc.getStats()).forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          if (s.kind === 'audio') {
            out.audioPackets += s.packetsReceived || 0;
            out.audioEnergy += s.totalAudioEnergy || 0;
          }
          if (s.kind === 'video') out.framesDecoded += s.framesDecoded || 0;
        });
        return out;
      });
    await waitFor(async () => {
      const s = await stats();
      return s.audioPackets >= 100 && s.framesDecoded >= 20;
    }, { timeout: 15000, message: 'audio and video came back and were decoded' });
    const s = await stats();
    assert.ok(s.audioEnergy > 0, `the echoed audio is not silence: ${JSON.stringify(s)}`);
    assert.equal(await p.page.evaluate(() => window.result.error), undefined);
  } catch (err) {
    console.error(p.logs.slice(-30).join('\n'));
    console.error('--- plane_echo stderr ---\n' + echo.log.join(''));
    throw err;
  } finally {
    await p.browser.close().catch(() => {});
    echo.stop();
  }
});
