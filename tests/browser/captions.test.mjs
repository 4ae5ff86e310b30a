// Live captions end to end: page A's fake microphone plays espeak-ng speech, the server
// transcribes it with Whisper tiny.en, and both pages show the captions under the speaker's
// name; the listener sees A's speaking indicator, and the finals land in the room transcript.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { roomName, scenario, waitFor } from './harness.mjs';

const SPEECH =
  'We need the new contract signed before the end of March. ' +
  'The engineering team will ship the update next Tuesday.';
const KEY_WORDS = ['contract', 'march', 'engineering', 'tuesday'];

// Chromium reads the file as the microphone from getUserMedia on; the leading silence covers
// the time the media connection takes, so no words are lost before the server hears them.
function speechWav(dir) {
  const raw = join(dir, 'speech.wav');
  const out = join(dir, 'speech-48k.wav');
  execFileSync('espeak-ng', ['-w', raw, SPEECH]);
  execFileSync('sox', [raw, '-r', '48000', '-c', '1', out, 'pad', '3', '2']);
  return out;
}

const words = (text) => text.toLowerCase().match(/[a-z']+/g) || [];

function keyWordsIn(captions, name) {
  const heard = new Set(captions.filter((c) => c.final && c.name === name).flatMap((c) => words(c.text)));
  return KEY_WORDS.filter((w) => heard.has(w));
}

const captionsOf = (page) => page.evaluate(() => window.conclave.captions.map((c) => ({ ...c })));

test('speech on one page becomes live captions on both and a stored transcript', { timeout: 180000 }, async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'conclave-speech-'));
  try {
    const wav = speechWav(tmp);
    await scenario(
      async (server, open) => {
        const room = roomName('captions');
        // The listener goes first: captions only reach those in the room at the time.
        const b = await open(`/room/${room}?name=Lena&autojoin=1`, 'B');
        await waitFor(() => b.evaluate(() => window.conclave.state === 'joined'), {
          timeout: 15000,
          message: "page B to reach state 'joined'",
        });
        // The fake microphone's beep passes the server's voice detection as endless speech, and
        // its transcription jobs would compete with Sam's for a small machine's Whisper workers:
        // the listener mutes, so the timing depends on Sam's speech alone.
        await waitFor(() => b.isEnabled('#mic-button'), { timeout: 10000, message: "page B's microphone button" });
        await b.click('#mic-button');
        // %noloop: the file plays once, so the speech (and the captions) come to an end.
        const a = await open(`/room/${room}?name=Sam&autojoin=1`, 'A', {
          args: [`--use-file-for-fake-audio-capture=${wav}%noloop`],
        });
        await waitFor(() => a.evaluate(() => window.conclave.state === 'joined'), {
          timeout: 15000,
          message: "page A to reach state 'joined'",
        });
        const samId = await a.evaluate(() => window.conclave.participantId);

        // Speaking shows on A's tile and list row on B while A talks; poll alongside the captions.
        let speakingSeen = { tile: false, row: false };
        const heardOnB = await waitFor(
          async () => {
            const seen = await b.evaluate((id) => ({
              tile: Boolean(document.querySelector(`.tile.speaking[data-participant-id="${id}"]`)),
              row: Boolean(document.querySelector(`#participants li.speaking[data-participant-id="${id}"]`)),
            }), samId);
            speakingSeen = { tile: speakingSeen.tile || seen.tile, row: speakingSeen.row || seen.row };
            const captions = await captionsOf(b);
            const found = keyWordsIn(captions, 'Sam');
            const talking = captions.some((c) => c.name === 'Sam' && !c.final);
            return found.length >= 2 && !talking && found;
          },
          { timeout: 60000, interval: 200, message: `page B to get final captions from Sam with 2 of ${KEY_WORDS} (and no interim left)` },
        );
        const captions = await captionsOf(b);
        console.log(`key words heard on B: ${heardOnB}; captions: ${JSON.stringify(captions)}`);
        // B's beep before the mute may caption too (Whisper hears "you"): only Sam's are checked.
        assert.ok(
          captions.filter((c) => c.name === 'Sam').every((c) => c.participant_id === samId),
          `Sam's captions carry Sam's participant id: ${JSON.stringify(captions)}`,
        );
        // Interims were replaced in place by the final, not left alongside it.
        assert.ok(
          captions.filter((c) => c.name === 'Sam').every((c) => c.final),
          `Sam's captions on B are all final once Sam is done: ${JSON.stringify(captions)}`,
        );
        assert.ok(speakingSeen.tile, "B showed A's tile as speaking");
        assert.ok(speakingSeen.row, "B showed A's participant row as speaking");

        // The speaker gets its own captions too.
        await waitFor(async () => keyWordsIn(await captionsOf(a), 'Sam').length >= 1, {
          timeout: 20000,
          message: 'page A to get a final caption of its own speech',
        });

        const line = b.locator('#captions .caption:not(.interim)').first();
        await line.waitFor({ state: 'visible', timeout: 5000 });
        assert.match(await line.textContent(), /^Sam: \S/, 'a visible caption line names the speaker');
        assert.equal(await b.getAttribute('#caption-lines', 'aria-live'), 'polite');

        await waitFor(
          async () => {
            const res = await fetch(`${server.baseUrl}/api/rooms/${room}/transcript`, {
              headers: { authorization: server.apiAuth() },
            });
            if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
            const body = await res.json();
            return body.lines.length > 0 && body;
          },
          { timeout: 10000, message: `GET /api/rooms/${room}/transcript to return a line` },
        );
      },
      { transcription: true },
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
