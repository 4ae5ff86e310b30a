// Shared harness of the browser end-to-end tests: a real `conclave serve` on loopback and
// one headless Chromium process per page (Chromium refuses several targets in one process
// without a driver, and separate processes also keep the fake devices apart).

import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import dgram from 'node:dgram';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// --user-data-dir is left out on purpose: launch() makes a fresh one per browser itself.
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Without it Chromium gathers no candidates on loopback and never connects.
  '--allow-loopback-in-peer-connection',
];

/** The server binary: $CONCLAVE_BIN, else $CARGO_TARGET_DIR's debug build, else the repo's. */
export function serverBinary() {
  if (process.env.CONCLAVE_BIN) return resolve(process.env.CONCLAVE_BIN);
  const candidates = [];
  // A relative CARGO_TARGET_DIR is cargo's: relative to the repository, not to this folder.
  if (process.env.CARGO_TARGET_DIR) candidates.push(resolve(repo, process.env.CARGO_TARGET_DIR, 'debug/conclave'));
  candidates.push(join(repo, 'target/debug/conclave'));
  return candidates.find((p) => existsSync(p)) ?? candidates[candidates.length - 1];
}

export async function freeTcpPort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

export async function freeUdpPort() {
  const sock = dgram.createSocket('udp4');
  sock.bind(0, '127.0.0.1');
  await once(sock, 'listening');
  const { port } = sock.address();
  await new Promise((r) => sock.close(r));
  return port;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `probe` until it returns a truthy value and returns that value; otherwise fails with
 * `message` and the last value seen (or the last error thrown).
 */
export async function waitFor(probe, { timeout = 10000, interval = 250, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await probe();
      lastErr = undefined;
      if (last) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const seen = lastErr ? `last error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${message} (${seen})`);
    }
    await sleep(interval);
  }
}

// Shared with the Rust tests, so the model is downloaded and converted once per machine.
export const MODEL_CACHE = process.env.CONCLAVE_MODEL_CACHE || join(homedir(), '.cache/conclave-models');

/**
 * Installs a Whisper model (`tiny.en` or `base`) and Silero VAD into MODEL_CACHE if missing
 * (`conclave model install`) and returns the server flags that use them.
 */
/** The agents' Piper voice, installed into MODEL_CACHE by `modelArgs`'s `conclave model install`. */
export const PIPER_MODEL = join(MODEL_CACHE, 'voices/en_US-joe-medium.onnx');

export async function modelArgs(bin = serverBinary(), model = 'tiny.en') {
  const proc = spawn(bin, ['model', 'install', '--data-dir', MODEL_CACHE, '--model', model], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  const [code] = await once(proc, 'exit');
  if (code !== 0) throw new Error(`conclave model install failed (exit ${code}):\n${output}`);
  const file = model === 'base' ? 'ggml-base.bin' : 'ggml-tiny.en.bin';
  return [
    '--whisper-model', join(MODEL_CACHE, 'models', file),
    '--silero-model', join(MODEL_CACHE, 'models/silero_vad.onnx'),
    '--onnxruntime', join(MODEL_CACHE, 'models/libonnxruntime.so.1.31.1'),
  ];
}

/**
 * Starts `conclave serve --dev` on free loopback ports with a fresh data directory.
 * `transcription: true` gives it the Whisper model (`model`, default tiny.en) and Silero VAD;
 * otherwise it has none and sends no captions. `extraArgs` go to `conclave serve`.
 */
export async function startServer({ transcription = false, model = 'tiny.en', extraArgs = [] } = {}) {
  const bin = serverBinary();
  if (!existsSync(bin)) {
    throw new Error(`server binary ${bin} not found: build it (cargo build) or set CONCLAVE_BIN`);
  }
  const models = transcription ? await modelArgs(bin, model) : [];
  const dir = mkdtempSync(join(tmpdir(), 'conclave-e2e-'));
  const httpPort = await freeTcpPort();
  const turnPort = await freeUdpPort();
  const logPath = join(dir, 'server.log');
  const log = createWriteStream(logPath);
  const args = [
    'serve', '--dev',
    '--http-addr', `127.0.0.1:${httpPort}`,
    '--udp-ip', '127.0.0.1',
    '--turn-port', String(turnPort),
    '--data-dir', join(dir, 'data'),
    '--log-level', 'info',
  ];
  args.push(...models, ...extraArgs);
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.pipe(log, { end: false });
  proc.stderr.pipe(log, { end: false });
  let exited = null;
  const exitedP = once(proc, 'exit').then(([code, signal]) => {
    exited = { code, signal };
  });
  // A crashed test run must not leave servers behind.
  const killOnExit = () => proc.kill('SIGKILL');
  process.on('exit', killOnExit);

  const baseUrl = `http://127.0.0.1:${httpPort}`;
  const server = {
    baseUrl,
    httpPort,
    turnPort,
    dir,
    logPath,
    proc,
    tail(lines = 80) {
      try {
        return readFileSync(logPath, 'utf8').split('\n').slice(-lines).join('\n');
      } catch {
        return '(no server log)';
      }
    },
    /** `Authorization` header value for the dev API key pair the server generated. */
    apiAuth() {
      const toml = readFileSync(join(dir, 'data/dev-api-key.toml'), 'utf8');
      const value = (key) => new RegExp(`^${key}\\s*=\\s*"([^"]*)"`, 'm').exec(toml)?.[1];
      return `Basic ${Buffer.from(`${value('api_key')}:${value('api_secret')}`).toString('base64')}`;
    },
    async stats() {
      const res = await fetch(`${baseUrl}/api/stats`);
      if (!res.ok) throw new Error(`GET /api/stats: HTTP ${res.status}`);
      return res.json();
    },
    async stop() {
      process.off('exit', killOnExit);
      if (!exited) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exitedP;
        clearTimeout(timer);
      }
      log.end();
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`server exited early (${JSON.stringify(exited)})`);
        const res = await fetch(`${baseUrl}/healthz`);
        return res.status === 200;
      },
      { timeout: 30000, interval: 200, message: `GET ${baseUrl}/healthz to return 200` },
    );
  } catch (err) {
    await server.stop();
    err.message += `\n--- server log (${logPath}) ---\n${server.tail()}`;
    throw err;
  }
  return server;
}

/**
 * Opens `url` in its own Chromium process; console output is kept for failure reports.
 * `args` are extra Chromium flags (e.g. a file for the fake microphone).
 */
export async function openPage(url, label, { args = [] } = {}) {
  const fromDisk = process.env.CONCLAVE_E2E_WEB_DIR;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // A page fulfilled by page.route() has no network origin, so Chromium's local network
    // access checks would block its WebSocket to loopback.
    args: [...CHROMIUM_ARGS, ...(fromDisk ? ['--disable-features=LocalNetworkAccessChecks'] : []), ...args],
  });
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[${label}] pageerror: ${e.message}`));
  if (fromDisk) await serveWebFromDisk(page, fromDisk);
  await page.goto(url);
  return { browser, page, label, logs };
}

// For iterating on web/ without rebuilding the server (which embeds the files): the pages
// and their assets come from disk, everything else from the server. CI leaves this unset.
// The routes mirror the server's: keep them in step with src/http.
const PAGE_ROUTES = [
  [/^\/$/, 'home.html'],
  [/^\/room\/[^/]+$/, 'room.html'],
  [/^\/join\/[^/]+$/, 'join.html'],
  [/^\/m\/[^/]+$/, 'meeting.html'],
];

async function serveWebFromDisk(page, dir) {
  const types = { html: 'text/html', js: 'text/javascript', css: 'text/css' };
  const fulfil = (route, file) => {
    const path = join(dir, file);
    if (!existsSync(path)) return route.fulfill({ status: 404, body: `${file} is not in ${dir}` });
    return route.fulfill({
      status: 200,
      contentType: `${types[file.split('.').pop()]}; charset=utf-8`,
      body: readFileSync(path, 'utf8'),
    });
  };
  const pageFor = (url) => PAGE_ROUTES.find(([re]) => re.test(url.pathname))?.[1];
  await page.route(pageFor, (route) => fulfil(route, pageFor(new URL(route.request().url()))));
  const asset = (url) => /^\/assets\/[\w.-]+$/.test(url.pathname);
  await page.route(asset, (route) =>
    fulfil(route, new URL(route.request().url()).pathname.split('/').pop()),
  );
}

/**
 * Runs `body(server, open)` against a fresh server (`serverOptions` as for startServer);
 * `open(path, label, pageOptions)` opens pages (see openPage) that are closed afterwards. On
 * failure the server log tail and the pages' console output are printed, and the data
 * directory is kept for inspection.
 */
export async function scenario(body, serverOptions) {
  const server = await startServer(serverOptions);
  const pages = [];
  const open = async (path, label, pageOptions) => {
    const p = await openPage(server.baseUrl + path, label, pageOptions);
    pages.push(p);
    return p.page;
  };
  let failed = false;
  try {
    await body(server, open);
  } catch (err) {
    failed = true;
    for (const p of pages) {
      const state = await p.page
        .evaluate(() => ({
          state: window.conclave?.state,
          status: document.getElementById('status')?.textContent,
          lastError: window.conclave?.lastError,
          signaling: window.conclave?.pc?.signalingState,
          connection: window.conclave?.pc?.connectionState,
        }))
        .catch((e) => `(page unavailable: ${e.message})`);
      console.error(`--- page ${p.label}: ${JSON.stringify(state)}`);
      console.error(p.logs.slice(-40).join('\n'));
    }
    console.error(`--- server log tail (${server.logPath}) ---\n${server.tail()}`);
    throw err;
  } finally {
    await Promise.all(pages.map((p) => p.browser.close().catch(() => {})));
    await server.stop();
    if (!failed) server.cleanup();
  }
}

/** Room names unique per run, so reruns against one server never meet old rooms. */
export function roomName(prefix = 'e2e') {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Bytes received so far per media kind, summed over the page's inbound RTP streams. */
export function inboundBytes(page) {
  return page.evaluate(async () => {
    const pc = window.conclave && window.conclave.pc;
    const out = { audio: 0, video: 0 };
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind in out) out[s.kind] += s.bytesReceived || 0;
    });
    return out;
  });
}

/** Names in the page's participant list, ours included as "<name> (you)". */
export function listedNames(page) {
  return page.$$eval('#participants .person-name', (els) => els.map((e) => e.textContent));
}
