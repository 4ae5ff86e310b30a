// Two browsers meet in a room: media flows both ways, each sees the other in the list, and
// leaving is reflected on the other page and in the server's room count. Run on both media
// stacks: the default (a PeerConnection per participant) and the media plane
// (`--media-plane worker`).

import test from 'node:test';
import assert from 'node:assert/strict';
import { inboundBytes, listedNames, roomName, scenario, sleep, waitFor } from './harness.mjs';

for (const plane of ['webrtc', 'worker']) {
test(`two pages exchange audio and video, then leave (media stack: ${plane})`, { timeout: 120000 }, async () => {
  await scenario(async (server, open) => {
    const room = roomName();
    const a = await open(`/room/${room}?name=A&autojoin=1`, 'A');
    const b = await open(`/room/${room}?name=B&autojoin=1`, 'B');

    for (const [label, page] of [['A', a], ['B', b]]) {
      await waitFor(() => page.evaluate(() => window.conclave.state === 'joined'), {
        timeout: 15000,
        message: `page ${label} to reach state 'joined'`,
      });
    }

    const first = {};
    for (const [label, page] of [['A', a], ['B', b]]) {
      first[label] = await waitFor(
        async () => {
          const bytes = await inboundBytes(page);
          return bytes.audio > 0 && bytes.video > 0 && bytes;
        },
        { timeout: 30000, message: `page ${label} to receive audio and video bytes (inbound-rtp)` },
      );
    }

    await sleep(2000);
    for (const [label, page] of [['A', a], ['B', b]]) {
      const later = await inboundBytes(page);
      assert.ok(
        later.audio > first[label].audio,
        `page ${label}: inbound audio stopped growing (${first[label].audio} -> ${later.audio} bytes)`,
      );
      assert.ok(
        later.video > first[label].video,
        `page ${label}: inbound video stopped growing (${first[label].video} -> ${later.video} bytes)`,
      );
    }

    // The plane's receiver reports and REMB let each browser's congestion control leave its
    // start rate (300 kbit/s in Chromium); without them a real camera was held there for the
    // whole call. Checked on the plane only: on the PeerConnection stack the rise rests on
    // webrtc-rs's transport-wide feedback and Chromium's probing of a fake camera that sends
    // ~200 kbit/s, and one CI run saw a page stay under 1 Mbit/s for 15 s there.
    for (const [label, page] of plane === 'worker' ? [['A', a], ['B', b]] : []) {
      await waitFor(
        () => page.evaluate(async () => {
          let target = 0;
          (await window.conclave.pc.getStats()).forEach((s) => {
            if (s.type === 'outbound-rtp' && s.kind === 'video') target = s.targetBitrate || 0;
          });
          return target > 1000000;
        }),
        { timeout: 15000, message: `page ${label}'s video send rate to rise above 1 Mbit/s (targetBitrate)` },
      );
    }

    for (const [label, page, other] of [['A', a, 'B'], ['B', b, 'A']]) {
      const names = await waitFor(
        async () => {
          const n = await listedNames(page);
          return n.includes(other) && n;
        },
        { timeout: 5000, message: `page ${label}'s participant list to show ${other}` },
      );
      assert.ok(names.includes(`${label} (you)`), `page ${label} lists itself as "${label} (you)": ${names}`);
    }

    await b.click('#leave-button');
    await waitFor(
      () => b.evaluate(() => window.conclave.state === 'left' && document.getElementById('status').textContent),
      { timeout: 5000, message: "page B to show it left" },
    ).then((status) => assert.match(status, /You left the room/));

    await waitFor(
      async () => {
        const n = await listedNames(a);
        return !n.includes('B') && (await a.evaluate(() => window.conclave.participants.size === 0));
      },
      { timeout: 10000, message: "page A's participant list to lose B" },
    );

    await a.click('#leave-button');
    const stats = await waitFor(
      async () => {
        const s = await server.stats();
        return s.rooms === 0 && s;
      },
      { timeout: 10000, message: 'GET /api/stats to report rooms 0 after both left' },
    );
    assert.equal(stats.participants, 0, `participants after everyone left: ${JSON.stringify(stats)}`);
  }, { extraArgs: ['--media-plane', plane] });
});
}
