// The resource soak (npm run soak; a CI-sized run in npm test): sustained mixed load through
// nginx on the fault-test stack (its own PostgreSQL, a Redis capped at SOAK_REDIS_MAXMEMORY, the
// launcher's writer, reader and nginx), sampling what could grow without bound. It fails when:
//
//   - Redis's used memory passes its maxmemory;
//   - a service's RSS grows more than 10 % after warm-up (its peak in the last quarter of the run
//     against its peak in the first);
//   - the services' metric series grow after warm-up;
//   - the last window's p99 (the last fifth of the run) exceeds twice the first window's;
//   - any answer is not what the ledger says: every write must get 201, and every read of an
//     account must give its exact balance (each client owns its accounts, so it knows it).
//
// Settings (environment): SOAK_SECONDS (run this long; default 600) or SOAK_WRITES (stop after
// this many acknowledged writes instead), SOAK_CLIENTS (concurrent clients, 32),
// SOAK_SAMPLE_MS (1000), SOAK_REDIS_MAXMEMORY (64mb), SOAK_STREAM_MAX_LEN (the services'
// REDIS_STREAM_MAX_LEN, 20000), SOAK_REPORT (where the JSON report goes,
// .stack/soak/report.json). scripts/soak.sh runs it and draws the report (tests/soak/plot.py).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

const settings = {
  seconds: Number(process.env.SOAK_SECONDS || 0) || (process.env.SOAK_WRITES ? 0 : 600),
  writes: Number(process.env.SOAK_WRITES || 0),
  clients: Number(process.env.SOAK_CLIENTS || 32),
  sampleMs: Number(process.env.SOAK_SAMPLE_MS || 1000),
  redisMaxmemory: process.env.SOAK_REDIS_MAXMEMORY || '64mb',
  streamMaxLen: process.env.SOAK_STREAM_MAX_LEN || '20000',
  accountsPerClient: 40,
};
// The fault-test stack's Redis reads REDIS_MAXMEMORY when it starts (tests/faults/lib/datastores.mjs).
process.env.REDIS_MAXMEMORY = settings.redisMaxmemory;

const { PORTS, reader, redis, sql, sqlValue, startStack, stopStack, writer } = await import('../faults/harness.mjs');
const { ROOT } = await import('../lib/defaults.mjs');
const reportPath = process.env.SOAK_REPORT || path.join(ROOT, '.stack', 'soak', 'report.json');

const agent = new http.Agent({ keepAlive: true, maxSockets: settings.clients + 4 });

/** One request through nginx: { status, body, ms }. */
function call(method, pathname, body) {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port: PORTS.proxy, method, path: pathname, agent, timeout: 20_000,
        headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {} },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), ms: performance.now() - started }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (error) => resolve({ status: 0, body: String(error.message), ms: performance.now() - started }));
    if (body) req.write(body);
    req.end();
  });
}

const totals = { writes: 0, reads: 0, transactionReads: 0, wrong: [] };
let window = [];
let stopping = false;

/** Records an answer that is not what the ledger says (the first 20 are kept). */
function wrong(what) {
  if (totals.wrong.length < 20) totals.wrong.push(what);
  totals.wrongCount = (totals.wrongCount ?? 0) + 1;
}

/** A client: POST to one of its own accounts, read the account back (it must be exact), and
 * every fifth round read the transaction back too. */
async function client() {
  const accounts = Array.from({ length: settings.accountsPerClient }, () => ({ id: randomUUID(), balance: 0 }));
  for (let round = 0; !stopping; round += 1) {
    const account = accounts[round % accounts.length];
    const amount = 1 + Math.floor(Math.random() * 1000);
    const posted = await call('POST', '/transactions', JSON.stringify({ account_id: account.id, amount }));
    window.push(posted.ms);
    if (posted.status !== 201) {
      wrong(`POST ${posted.status} ${posted.body.slice(0, 200)}`);
      await sleep(100);
      continue;
    }
    account.balance += amount;
    totals.writes += 1;
    if (settings.writes && totals.writes >= settings.writes) stopping = true;
    const read = await call('GET', `/accounts/${account.id}`);
    window.push(read.ms);
    totals.reads += 1;
    const balance = read.status === 200 ? JSON.parse(read.body).balance : undefined;
    if (balance !== account.balance) wrong(`GET /accounts/${account.id}: ${read.status} ${read.body.slice(0, 120)}, expected balance ${account.balance}`);
    if (round % 5 === 0) {
      const { transaction_id: id } = JSON.parse(posted.body);
      const again = await call('GET', `/transactions/${id}`);
      window.push(again.ms);
      totals.transactionReads += 1;
      if (again.status !== 200 || JSON.parse(again.body).amount !== amount) wrong(`GET /transactions/${id}: ${again.status} ${again.body.slice(0, 120)}`);
    }
  }
}

function rssMiB(pid) {
  if (!pid) return null;
  try {
    const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
    return Number(line.split(/\s+/)[1]) / 1024;
  } catch {
    return null;
  }
}

function infoField(text, name) {
  const line = text.split('\r\n').find((l) => l.startsWith(`${name}:`));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

async function seriesOf(port) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => null);
  if (!res || res.status !== 200) return null;
  return (await res.text()).split('\n').filter((l) => l && !l.startsWith('#')).length;
}

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function sample(started) {
  const latencies = window;
  window = [];
  const memory = await redis.cli('INFO', 'memory');
  const stats = await redis.cli('INFO', 'stats');
  const errors = await redis.cli('INFO', 'errorstats');
  const oom = /errorstat_OOM:count=(\d+)/.exec(errors);
  return {
    t: (Date.now() - started) / 1000,
    writes: totals.writes,
    redisUsedBytes: infoField(memory, 'used_memory'),
    redisMaxBytes: infoField(memory, 'maxmemory'),
    redisKeys: Number(await redis.cli('DBSIZE')),
    redisEvicted: infoField(stats, 'evicted_keys'),
    redisOomRefusals: oom ? Number(oom[1]) : 0,
    writerRssMiB: rssMiB(writer.pid),
    readerRssMiB: rssMiB(reader.pid),
    postgresBytes: Number(await sqlValue('SELECT pg_database_size(current_database())')),
    series: (await seriesOf(PORTS.writerMetrics)) + (await seriesOf(PORTS.readerMetrics)),
    requests: latencies.length,
    p99Ms: percentile(latencies, 99),
  };
}

/** The verdicts, from the samples. */
function judge(samples) {
  const end = samples[samples.length - 1].t;
  const after = (fraction) => samples.filter((s) => s.t >= end * fraction);
  // What warm-up reached: the peak of each figure over the first quarter (a peak, so that the
  // allocator's ups and downs are not read as growth).
  const warmWindow = samples.filter((s) => s.t <= end * 0.25);
  const warm = Object.fromEntries(['writerRssMiB', 'readerRssMiB', 'series'].map((key) => [key, Math.max(...warmWindow.map((s) => s[key]))]));
  const lastQuarter = after(0.75);
  const firstFifth = samples.filter((s) => s.t <= end * 0.2 && s.requests > 0);
  const lastFifth = samples.filter((s) => s.t >= end * 0.8 && s.requests > 0);
  const weightedP99 = (list) => Math.max(...list.map((s) => s.p99Ms ?? 0));
  const checks = [];
  const check = (name, pass, detail) => checks.push({ name, pass, detail });
  // Redis evicts before each command, so one command (a publish of a whole batch) can take it
  // past maxmemory by its own size until the next: 1 % is allowed for that. A Redis that could
  // not evict enough would refuse commands (OOM): none may be.
  const maxUsed = Math.max(...samples.map((s) => s.redisUsedBytes));
  const limit = samples[0].redisMaxBytes;
  const last = samples[samples.length - 1];
  check('Redis stays within its maxmemory, refusing nothing', maxUsed <= limit * 1.01 && last.redisOomRefusals === 0,
    `peak used_memory ${maxUsed} B (${((maxUsed / limit - 1) * 100).toFixed(2)} % over ${limit} B at most), ${last.redisEvicted} keys evicted, ${last.redisOomRefusals} commands refused for memory`);
  for (const service of ['writer', 'reader']) {
    const key = `${service}RssMiB`;
    const peak = Math.max(...lastQuarter.map((s) => s[key]));
    check(`${service} RSS grows at most 10 % after warm-up`, peak <= warm[key] * 1.1,
      `${warm[key].toFixed(1)} MiB peak in warm-up, ${peak.toFixed(1)} MiB peak in the last quarter`);
  }
  const lastSeries = samples[samples.length - 1].series;
  check('metric series do not grow after warm-up', lastSeries <= warm.series, `${warm.series} after warm-up, ${lastSeries} at the end`);
  const firstP99 = weightedP99(firstFifth);
  const lastP99 = weightedP99(lastFifth);
  check("the last fifth's p99 is at most twice the first fifth's", lastP99 <= 2 * firstP99,
    `worst per-sample p99: first fifth ${firstP99.toFixed(1)} ms, last fifth ${lastP99.toFixed(1)} ms`);
  check('every write 201, every read exact', !totals.wrongCount,
    `${totals.writes} writes, ${totals.reads} account reads, ${totals.transactionReads} transaction reads; ${totals.wrongCount ?? 0} wrong${totals.wrong.length ? `: ${totals.wrong.slice(0, 3).join(' | ')}` : ''}`);
  return checks;
}

/** Counts, every 250 ms, the sessions waiting on WAL segment initialisation or WAL writes: a
 * write stall shows up there (IO:WALInitWrite/WALInitSync when a new segment is zero-filled). */
const walWaits = { polls: 0, WALInitWrite: 0, WALInitSync: 0, WALWrite: 0, WALSync: 0 };
async function sampleWalWaits() {
  while (!stopping) {
    const rows = await sql(`SELECT wait_event, count(*) FROM pg_stat_activity
                            WHERE wait_event IN ('WALInitWrite', 'WALInitSync', 'WALWrite', 'WALSync')
                            GROUP BY wait_event`).catch(() => []);
    walWaits.polls += 1;
    for (const [event, count] of rows) walWaits[event] += Number(count);
    await sleep(250);
  }
}

async function main() {
  fs.mkdirSync(path.dirname(reportPath), { recursive: true });
  await startStack({ env: { REDIS_STREAM_MAX_LEN: settings.streamMaxLen } });
  let samples = [];
  let checks;
  let walSettings;
  try {
    const started = Date.now();
    const clients = Array.from({ length: settings.clients }, () => client());
    const walSampler = sampleWalWaits();
    const deadline = settings.seconds ? started + settings.seconds * 1000 : Infinity;
    // A write-count run (CI) is bounded in time too.
    const hardStop = started + Math.max(settings.seconds, 900) * 1000;
    while (!stopping) {
      await sleep(settings.sampleMs);
      samples.push(await sample(started));
      const last = samples[samples.length - 1];
      if (samples.length % Math.max(1, Math.round(10_000 / settings.sampleMs)) === 0) {
        console.log(`[soak] ${last.t.toFixed(0)} s: ${last.writes} writes, Redis ${(last.redisUsedBytes / 2 ** 20).toFixed(1)} MiB / ${last.redisKeys} keys, writer ${last.writerRssMiB?.toFixed(1)} MiB, reader ${last.readerRssMiB?.toFixed(1)} MiB, ${last.series} series, p99 ${last.p99Ms?.toFixed(1)} ms`);
      }
      if (Date.now() >= deadline || Date.now() >= hardStop) stopping = true;
    }
    await Promise.all([...clients, walSampler]);
    samples.push(await sample(started));
    samples = samples.filter((s) => s.t > 0);
    checks = judge(samples);
    walSettings = await sqlValue(`SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name)
      FROM pg_settings WHERE name IN ('wal_init_zero', 'wal_recycle', 'min_wal_size', 'max_wal_size')`);
  } finally {
    agent.destroy();
    await stopStack();
  }
  const report = { settings, totals: { ...totals }, checks, samples, postgres: { walWaits, walSettings } };
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 1));
  console.log(`[soak] report: ${reportPath}`);
  console.log(`[soak] PostgreSQL (${walSettings}): sessions seen waiting on WAL in ${walWaits.polls} polls: ${JSON.stringify(walWaits)}`);
  for (const c of checks) console.log(`[soak] ${c.pass ? 'PASS' : 'FAIL'} ${c.name}: ${c.detail}`);
  process.exitCode = checks.every((c) => c.pass) ? 0 : 1;
}

await main();
