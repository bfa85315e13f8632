// The change feeds' bench phase (bench/README.md, "Change feeds"):
//
//   1. latency: one GET /events through nginx while POSTs arrive at a steady rate; for each POST,
//      the time from its 201 to its event on the feed (p50, p99, max);
//   2. held feeds: FEED_BENCH_HELD idle feeds opened straight on one reader (each with its own
//      X-Forwarded-For, so the per-client cap does not apply), the reader's RSS before and after,
//      and the time until one commit has reached every one of them.
//
//   node bench/feed.mjs          (npm run bench:feed; against a running stack)
//
// Environment: API_URL (nginx; else 127.0.0.1:PROXY_PORT), READER_URL (one reader's TCP
// listener; else 127.0.0.1:READER_PORT), READER_PID (else read from STACK_STATE_DIR/reader.pid),
// FEED_BENCH_RATE (POSTs/s, 100), FEED_BENCH_SECONDS (20), FEED_BENCH_HELD (10000; the
// reader's FEED_MAX_STREAMS must allow them). Prints one JSON line of results, and the figures.
// Only Node's built-ins.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { localUrl, ROOT } from '../tests/lib/defaults.mjs';

const API = (process.env.API_URL || localUrl('PROXY_PORT')).replace(/\/$/, '');
const READER = new URL(process.env.READER_URL || localUrl('READER_PORT'));
const RATE = Number(process.env.FEED_BENCH_RATE || 100);
const SECONDS = Number(process.env.FEED_BENCH_SECONDS || 20);
const HELD = Number(process.env.FEED_BENCH_HELD || 10000);
const STATE = process.env.STACK_STATE_DIR || path.join(ROOT, '.stack');

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

function readerPid() {
  if (process.env.READER_PID) return Number(process.env.READER_PID);
  return Number(fs.readFileSync(path.join(STATE, 'reader.pid'), 'utf8').trim());
}

function rssMiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) / 1024;
}

/** Calls `onEvent(data, id)` for each transaction event of a fetch-opened feed until aborted. */
async function follow(pathname, onEvent, signal) {
  const res = await fetch(API + pathname, { headers: { accept: 'text/event-stream' }, signal });
  if (res.status !== 200) throw new Error(`GET ${pathname}: ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (/^event: transaction$/m.test(block) && data) onEvent(JSON.parse(data), performance.now());
        }
      }
    } catch {
      // aborted
    }
  })();
}

async function latencyPhase() {
  const arrived = new Map();
  const created = new Map();
  const controller = new AbortController();
  await follow('/events', (data, at) => arrived.set(data.transaction_id, at), controller.signal);
  const account = randomUUID();
  const total = RATE * SECONDS;
  const started = performance.now();
  let failures = 0;
  const posts = [];
  for (let i = 0; i < total; i += 1) {
    const due = started + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    posts.push(fetch(`${API}/transactions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ account_id: account, amount: 1 }),
    }).then(async (res) => {
      const at = performance.now();
      const body = await res.json();
      if (res.status === 201) created.set(body.transaction_id, at);
      else failures += 1;
    }, () => { failures += 1; }));
  }
  await Promise.all(posts);
  const deadline = performance.now() + 10_000;
  while ([...created.keys()].some((id) => !arrived.has(id)) && performance.now() < deadline) await sleep(50);
  controller.abort();
  const latencies = [...created].filter(([id]) => arrived.has(id)).map(([id, at]) => arrived.get(id) - at).sort((a, b) => a - b);
  return {
    rate_per_s: RATE,
    seconds: SECONDS,
    posted: created.size,
    post_failures: failures,
    events_missing: created.size - latencies.length,
    latency_ms_p50: Number(quantile(latencies, 0.5)?.toFixed(1)),
    latency_ms_p99: Number(quantile(latencies, 0.99)?.toFixed(1)),
    latency_ms_max: Number(latencies.at(-1)?.toFixed(1)),
  };
}

/** Opens one idle feed on the reader's TCP listener; resolves with the socket once it has its 200. */
function openRaw(i, onEvent) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: READER.hostname, port: Number(READER.port) });
    let head = '';
    let open = false;
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      if (!open) {
        head += chunk;
        if (!head.includes('\r\n\r\n')) return;
        if (!head.startsWith('HTTP/1.1 200')) { socket.destroy(); reject(new Error(head.split('\r\n')[0])); return; }
        open = true;
        resolve(socket);
        chunk = head.slice(head.indexOf('\r\n\r\n') + 4);
      }
      if (chunk.includes('event: transaction')) onEvent(i);
    });
    socket.on('error', reject);
    const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    socket.write(`GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nX-Forwarded-For: ${address}\r\n\r\n`);
  });
}

async function heldPhase() {
  const pid = readerPid();
  const before = rssMiB(pid);
  const sockets = [];
  const got = new Set();
  let refused = 0;
  const openedAt = performance.now();
  for (let i = 0; i < HELD; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(HELD, i + 200); j += 1) batch.push(openRaw(j, (k) => got.add(k)).then((s) => sockets.push(s), () => { refused += 1; }));
    await Promise.all(batch);
  }
  const openSeconds = (performance.now() - openedAt) / 1000;
  await sleep(3000);
  const held = rssMiB(pid);
  // One commit reaches every held feed.
  const posted = performance.now();
  const res = await fetch(`${API}/transactions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ account_id: randomUUID(), amount: 1 }),
  });
  await res.text();
  const deadline = performance.now() + 30_000;
  while (got.size < sockets.length && performance.now() < deadline) await sleep(20);
  const fanOutMs = performance.now() - posted;
  const afterEvent = rssMiB(pid);
  for (const socket of sockets) socket.destroy();
  return {
    feeds_requested: HELD,
    feeds_held: sockets.length,
    feeds_refused: refused,
    open_seconds: Number(openSeconds.toFixed(1)),
    reader_rss_mib_before: Number(before.toFixed(1)),
    reader_rss_mib_held: Number(held.toFixed(1)),
    reader_rss_mib_per_10k_feeds: Number((((held - before) * 10000) / Math.max(1, sockets.length)).toFixed(1)),
    reader_rss_mib_after_one_event: Number(afterEvent.toFixed(1)),
    one_event_reached: got.size,
    one_event_fan_out_ms: Number(fanOutMs.toFixed(0)),
  };
}

const latency = await latencyPhase();
console.log(`feed latency from 201 to event at ${RATE}/s for ${SECONDS}s: p50 ${latency.latency_ms_p50} ms, p99 ${latency.latency_ms_p99} ms (${latency.posted} posts, ${latency.events_missing} events missing)`);
const held = HELD > 0 ? await heldPhase() : undefined;
if (held) {
  console.log(`held ${held.feeds_held} idle feeds on one reader (${held.feeds_refused} refused): RSS ${held.reader_rss_mib_before} -> ${held.reader_rss_mib_held} MiB (${held.reader_rss_mib_per_10k_feeds} MiB per 10,000); one commit reached ${held.one_event_reached} of them in ${held.one_event_fan_out_ms} ms`);
}
console.log(JSON.stringify({ latency, held }));
const ok = latency.events_missing === 0 && latency.post_failures === 0 && (!held || held.one_event_reached === held.feeds_held);
process.exit(ok ? 0 : 1);
