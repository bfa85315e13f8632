// The long soak (not part of the test run): mixed load through nginx for SOAK_SECONDS
// (default 600) while a fault is injected every SOAK_FAULT_EVERY seconds (default 20), in
// turn: writer SIGKILL, writer SIGTERM, reader SIGKILL, reader SIGTERM, Redis stopped for 3 s
// (back empty), Redis CLIENT PAUSE WRITE 2 s, PostgreSQL stopped (fast) for 3 s, PostgreSQL
// crash (immediate). Then the same invariants as the fault tests. Run it with
// `npm run soak:faults` (scripts/soak-faults.sh); figures go to stdout and .stack/faults/soak-report.json.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Ledger,
  STATE,
  accounts,
  assertAllAlive,
  assertInvariants,
  figure,
  formatResponses,
  log,
  pg,
  reader,
  redis,
  sleep,
  staleReads,
  startLoad,
  startStack,
  stopStack,
  summarize,
  unbalancedAccounts,
  unexpected,
  window503,
  writer,
} from './harness.mjs';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const EVERY = Number(process.env.SOAK_FAULT_EVERY ?? 20);

const FAULTS = {
  async 'writer-kill'() {
    await writer.kill();
    await sleep(500);
    await writer.start();
  },
  async 'writer-term'() {
    const stopped = await writer.stop('SIGTERM', 30_000);
    assert.ok(stopped.exitMs <= 12_000, `writer exit took ${stopped.exitMs} ms`);
    await writer.start();
    return { exitMs: stopped.exitMs };
  },
  async 'reader-kill'() {
    await reader.kill();
    await sleep(500);
    await reader.start();
  },
  async 'reader-term'() {
    const stopped = await reader.stop('SIGTERM', 30_000);
    assert.ok(stopped.exitMs <= 12_000, `reader exit took ${stopped.exitMs} ms`);
    await reader.start();
    return { exitMs: stopped.exitMs };
  },
  async 'redis-restart'() {
    await redis.stop();
    await sleep(3000);
    await redis.start();
  },
  async 'redis-pause'() {
    await redis.cli('CLIENT', 'PAUSE', '2000', 'WRITE');
    await sleep(2000);
  },
  async 'pg-restart'() {
    await pg.stop('fast');
    await sleep(3000);
    await pg.start();
  },
  async 'pg-crash'() {
    await pg.stop('immediate');
    await sleep(1000);
    await pg.start();
  },
};

const report = { seconds: SECONDS, faultEvery: EVERY, faults: [] };
let failed = false;
try {
  await startStack();
  const ledger = new Ledger(accounts(20));
  const load = startLoad({ ledger, workers: 6, readers: 2, readRatio: 0.25, txReadRatio: 0.05, durationMs: SECONDS * 1000, retryForMs: 120_000, thinkMs: 10 });
  const names = Object.keys(FAULTS);
  const pauses = [];
  let n = 0;
  while (Date.now() - load.t0 < SECONDS * 1000 - EVERY * 1000) {
    await sleep(EVERY * 1000);
    const name = names[n % names.length];
    n += 1;
    const at = Date.now() - load.t0;
    log(`fault ${n}: ${name}`);
    const extra = (await FAULTS[name]()) ?? {};
    const recoveredAt = Date.now() - load.t0;
    if (name === 'redis-pause') pauses.push([at, recoveredAt]);
    // The ledger is always balanced, also right after a fault.
    const unbalanced = await unbalancedAccounts();
    assert.equal(unbalanced, 0, `after ${name}: accounts whose balance differs from their sum`);
    report.faults.push({ n, name, at, faultMs: recoveredAt - at, ...extra });
  }
  const summary = await load.stop();
  for (const fault of report.faults) {
    // From just before this fault until just before the next one.
    const end = (report.faults.find((f) => f.n === fault.n + 1)?.at ?? Infinity) - 100;
    const around = load.responses.filter((r) => r.sentAt >= fault.at - 100 && r.sentAt < end);
    fault.retryLater = window503(around);
    fault.notOkByKind = Object.fromEntries(['post', 'get-account', 'get-transaction'].map((k) => [k, around.filter((r) => r.kind === k && r.cls !== 'ok').length]));
  }
  report.summary = summary;
  figure('soak.summary', summary);
  for (const fault of report.faults) figure(`soak.fault.${fault.n}.${fault.name}`, fault);

  const bad = unexpected(load.responses);
  report.unexpected = bad.slice(0, 50);
  // Stale reads are allowed only inside a Redis write pause (+5 s of repair) and for the known
  // replay bug (docs/reliability.md).
  const stale = staleReads(load).filter((r) => !pauses.some(([from, to]) => r.sentAt >= from && r.sentAt <= to + 5000));
  report.staleUnexplained = stale.slice(0, 50);
  report.staleTotal = load.responses.filter((r) => r.cls === 'stale').length;
  figure('soak.stale-reads', { total: report.staleTotal, unexplained: stale.length });
  const notAcked = [...ledger.ops.values()].filter((op) => !op.acked);
  report.neverAcknowledged = notAcked.length;
  figure('soak.never-acknowledged', notAcked.length);

  await assertAllAlive();
  report.invariants = await assertInvariants(ledger, { convergeMs: 30_000 });
  figure('soak.invariants', report.invariants);
  assert.deepEqual(bad, [], `responses neither correct nor "retry later":\n${formatResponses(bad)}`);
  assert.deepEqual(stale, [], `stale reads:\n${formatResponses(stale)}`);
  assert.equal(notAcked.length, 0, 'operations never acknowledged despite retries');
  report.result = 'passed';
  log(`soak passed: ${summarize(load.responses, summary.elapsedMs).total} requests, ${report.faults.length} faults`);
} catch (error) {
  failed = true;
  report.result = 'failed';
  report.error = String(error.stack ?? error);
  console.error(error);
} finally {
  await stopStack();
  fs.writeFileSync(path.join(STATE, 'soak-report.json'), JSON.stringify(report, null, 2));
  log(`report: ${path.join(STATE, 'soak-report.json')}`);
}
process.exit(failed ? 1 : 0);
