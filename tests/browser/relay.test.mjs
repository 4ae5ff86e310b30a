// A page restricted to TURN relay candidates still gets media through the embedded TURN
// server.

import test from 'node:test';
import assert from 'node:assert/strict';
import { inboundBytes, roomName, scenario, sleep, waitFor } from './harness.mjs';

test('a relay-only page connects through TURN and receives audio', { timeout: 120000 }, async () => {
  await scenario(async (_server, open) => {
    const room = roomName();
    const relayed = await open(`/room/${room}?name=Relayed&autojoin=1&relay=1`, 'relay');
    await open(`/room/${room}?name=Direct&autojoin=1`, 'direct');

    const pair = await waitFor(
      () =>
        relayed.evaluate(async () => {
          const pc = window.conclave.pc;
          if (!pc) return null;
          const report = await pc.getStats();
          let found = null;
          report.forEach((s) => {
            if (s.type !== 'candidate-pair' || s.state !== 'succeeded') return;
            const local = report.get(s.localCandidateId);
            if (local && local.candidateType === 'relay') {
              found = { local: `${local.address}:${local.port}`, relayProtocol: local.relayProtocol };
            }
          });
          return found;
        }),
      { timeout: 30000, message: "a succeeded candidate-pair with a 'relay' local candidate on the relay page" },
    );
    assert.ok(pair.local, `relay candidate has an address: ${JSON.stringify(pair)}`);

    const first = await waitFor(
      async () => {
        const bytes = await inboundBytes(relayed);
        return bytes.audio > 0 && bytes;
      },
      { timeout: 30000, message: 'inbound audio bytes on the relay page' },
    );
    await sleep(2000);
    const later = await inboundBytes(relayed);
    assert.ok(
      later.audio > first.audio,
      `inbound audio on the relay page stopped growing (${first.audio} -> ${later.audio} bytes)`,
    );

    const policy = await relayed.evaluate(() => window.conclave.pc.getConfiguration().iceTransportPolicy);
    assert.equal(policy, 'relay', 'the relay page asked for relay-only ICE');
  });
});
