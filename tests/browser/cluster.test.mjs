// Two nodes of one cluster (one Redis), a Chromium page on each: the room lives on the first
// page's node, the second page's signaling is relayed by its own node, and media flows both
// ways straight to the room's node.

import test from 'node:test';
import assert from 'node:assert/strict';
import { inboundBytes, listedNames, openPage, roomName, sleep, startServer, waitFor } from './harness.mjs';

const REDIS = process.env.CONCLAVE_TEST_REDIS_URL || 'redis://127.0.0.1:6379';

test('pages on two nodes meet in one room', { timeout: 120000 }, async () => {
  const prefix = `conclave-e2e-${Math.random().toString(36).slice(2, 10)}`;
  const shared = [
    '--redis-url', REDIS, '--cluster-prefix', prefix, '--node-ttl-ms', '2000',
    '--turn-secret', 'e2e-shared-turn-secret',
    '--api-key', 'e2e-key', '--api-secret', 'e2e-secret-that-is-long-enough-0123456789',
  ];
  const one = await startServer({ extraArgs: [...shared, '--node-id', 'e2e-one'] });
  const two = await startServer({ extraArgs: [...shared, '--node-id', 'e2e-two'] });
  const pages = [];
  let failed = false;
  try {
    await waitFor(
      async () => {
        const view = await (await fetch(`${two.baseUrl}/api/nodes`)).json();
        return view.nodes.length === 2;
      },
      { timeout: 15000, message: 'both nodes to see each other in GET /api/nodes' },
    );
    const room = roomName('cluster');
    const a = await openPage(`${one.baseUrl}/room/${room}?name=A&autojoin=1`, 'A');
    pages.push(a);
    await waitFor(() => a.page.evaluate(() => window.conclave.state === 'joined'), {
      timeout: 15000,
      message: "page A (node one) to reach state 'joined'",
    });
    const b = await openPage(`${two.baseUrl}/room/${room}?name=B&autojoin=1`, 'B');
    pages.push(b);
    await waitFor(() => b.page.evaluate(() => window.conclave.state === 'joined'), {
      timeout: 15000,
      message: "page B (node two, relayed) to reach state 'joined'",
    });

    const first = {};
    for (const p of [a, b]) {
      first[p.label] = await waitFor(
        async () => {
          const bytes = await inboundBytes(p.page);
          return bytes.audio > 0 && bytes.video > 0 && bytes;
        },
        { timeout: 30000, message: `page ${p.label} to receive audio and video` },
      );
    }
    await sleep(2000);
    for (const p of [a, b]) {
      const later = await inboundBytes(p.page);
      assert.ok(later.audio > first[p.label].audio, `page ${p.label}: audio stopped`);
      assert.ok(later.video > first[p.label].video, `page ${p.label}: video stopped`);
    }
    for (const [p, other] of [[a, 'B'], [b, 'A']]) {
      await waitFor(async () => (await listedNames(p.page)).includes(other), {
        timeout: 5000,
        message: `page ${p.label} to list ${other}`,
      });
    }
    // Both members are the room's node's; the other node only holds B's socket.
    assert.equal((await one.stats()).participants, 2);
    assert.equal((await two.stats()).participants, 0);
    // The media is node one's alone: node two forwarded no packet (it has no peer connection).
    const packetsIn = async (node) => {
      const text = await (await fetch(`${node.baseUrl}/metrics`)).text();
      return Number(/^conclave_rtp_packets_in_total (\d+)/m.exec(text)?.[1] ?? NaN);
    };
    assert.ok((await packetsIn(one)) > 100, 'node one received the media');
    assert.equal(await packetsIn(two), 0, 'node two received media it should not have');
  } catch (err) {
    failed = true;
    for (const p of pages) console.error(`--- page ${p.label}\n${p.logs.slice(-30).join('\n')}`);
    console.error(`--- node one\n${one.tail()}\n--- node two\n${two.tail()}`);
    throw err;
  } finally {
    await Promise.all(pages.map((p) => p.browser.close().catch(() => {})));
    await one.stop();
    await two.stop();
    if (!failed) {
      one.cleanup();
      two.cleanup();
    }
  }
});
