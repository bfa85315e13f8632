// Fault 2: PostgreSQL stops (pg_ctl stop -m fast) while clients keep sending through nginx,
// then starts again. Writes get a quick 503 JSON with Retry-After; cached reads keep working;
// both services recover by themselves, without a restart.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { accountViewKey, transactionViewKey } from '../lib/redis-keys.mjs';
import {
  Ledger,
  accounts,
  assertAllAlive,
  assertInvariants,
  describeResponse,
  figure,
  formatResponses,
  isDocumented503,
  log,
  pg,
  postAcked,
  reader,
  redis,
  request,
  sleep,
  staleReads,
  startLoad,
  startStack,
  stopStack,
  unexpected,
  writer,
} from './harness.mjs';

/** The writer's pool waits this long for a connection before answering 503 (its default). */
const ACQUIRE_TIMEOUT_MS = 2000;
/** The longest a POST may take to get its 503 while PostgreSQL is down ("within ~3 s"). */
const MAX_503_MS = 3500; // the 2 s acquire timeout plus slack for a busy 2-core machine

/** Everything the clients sent in this file: the invariants check all of it. */
const ledgers = [];

/** While PostgreSQL is down: uncached reads, the list and a POST each answer a documented 503,
 * quickly. Returns the probes' [what, response] pairs. */
async function probeWhileDown(uncached, uncachedOp) {
  await sleep(1000);
  const probes = await Promise.all([
    ['GET uncached account', `/accounts/${uncached.accounts[0]}`],
    ['GET uncached transaction', `/transactions/${uncachedOp.acked.transaction_id}`],
    ['GET /transactions', '/transactions'],
    ['POST without key', '/transactions', `{"account_id":"${uncached.accounts[0]}","amount":1}`],
  ].map(async ([what, path, body]) => [what, await request(body ? 'POST' : 'GET', path, { body })]));
  for (const [what, res] of probes) {
    assert.ok(isDocumented503(res), `${what} while PostgreSQL is down: expected a 503 JSON with Retry-After, got ${describeResponse(res)}`);
    assert.ok(res.ms <= MAX_503_MS, `${what} took ${Math.round(res.ms)} ms to answer 503 (max ${MAX_503_MS})`);
  }
  figure('pg-down.probes-ms', Object.fromEntries(probes.map(([what, res]) => [what, Math.round(res.ms)])));
  return probes;
}

/** After PostgreSQL is back: polls until a write, an uncached read and the list succeed by
 * themselves (no service restart), each within 30 s; returns how long each took. */
async function waitForRecovery(uncached, uncachedOp, upWall) {
  let writeRecoveryMs;
  let readRecoveryMs;
  let listRecoveryMs;
  const recoveryProbe = new Ledger(uncached.accounts);
  ledgers.push(recoveryProbe);
  const giveUpAt = upWall + 30_000;
  while (writeRecoveryMs === undefined || readRecoveryMs === undefined || listRecoveryMs === undefined) {
    assert.ok(Date.now() < giveUpAt, `no recovery within 30 s of PostgreSQL returning (write ${writeRecoveryMs}, read ${readRecoveryMs}, list ${listRecoveryMs})`);
    if (writeRecoveryMs === undefined) {
      const op = recoveryProbe.newOp(uncached.accounts[0], 1);
      recoveryProbe.markSent(op);
      const res = await request('POST', '/transactions', { body: '{"account_id":"' + op.account + '","amount":1}', headers: { 'idempotency-key': op.key } });
      if (res.status === 201) {
        recoveryProbe.markAcked(op, res.json, res);
        writeRecoveryMs = Date.now() - upWall;
      } else {
        assert.ok(isDocumented503(res), `POST after PostgreSQL returned: ${describeResponse(res)}`);
        recoveryProbe.ops.delete(op.key); // never acknowledged; retried below under a new key only if it was not applied
      }
    }
    if (readRecoveryMs === undefined) {
      const res = await request('GET', `/transactions/${uncachedOp.acked.transaction_id}`);
      if (res.status === 200) {
        assert.deepEqual(res.json, uncachedOp.acked);
        readRecoveryMs = Date.now() - upWall;
      } else assert.ok(isDocumented503(res), `GET uncached transaction after PostgreSQL returned: ${describeResponse(res)}`);
    }
    if (listRecoveryMs === undefined) {
      const res = await request('GET', '/transactions');
      if (res.status === 200) {
        assert.ok(Array.isArray(res.json), 'GET /transactions is an array');
        listRecoveryMs = Date.now() - upWall;
      } else assert.ok(isDocumented503(res), `GET /transactions after PostgreSQL returned: ${describeResponse(res)}`);
    }
    await sleep(100);
  }
  return { writeRecoveryMs, readRecoveryMs, listRecoveryMs };
}

describe('PostgreSQL outage', { timeout: 180_000 }, () => {
  before(() => startStack({ env: { DB_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_TIMEOUT_MS) } }));
  after(() => stopStack());

  test('PostgreSQL stopped under load: POST 503 + Retry-After quickly, cached reads 200; both services recover by themselves', async () => {
    const ledger = new Ledger(accounts(6));
    ledgers.push(ledger);
    // Cached: each account's view is published by its writes.
    for (const account of ledger.accounts) {
      await postAcked(ledger, account, 5);
      await postAcked(ledger, account, 7);
    }
    // Uncached: an account and a transaction whose views are evicted from Redis.
    const uncached = new Ledger(accounts(1));
    ledgers.push(uncached);
    const uncachedOp = await postAcked(uncached, uncached.accounts[0], 42);
    const accountKey = await accountViewKey((key) => redis.cli('GET', key), uncached.accounts[0]);
    assert.equal(Number(await redis.cli('DEL', accountKey, transactionViewKey(uncachedOp.acked.transaction_id))), 2, 'both views were cached');
    const pids = { writer: writer.pid, reader: reader.pid };

    const load = startLoad({ ledger, workers: 6, readers: 2, readRatio: 0.3, txReadRatio: 0.1, durationMs: 90_000 });
    await sleep(1500);

    const downAt = Date.now() - load.t0;
    await pg.stop('fast');
    const downDoneAt = Date.now() - load.t0;
    log(`PostgreSQL stopped (pg_ctl took ${downDoneAt - downAt} ms)`);

    const probes = await probeWhileDown(uncached, uncachedOp);
    await sleep(3000);

    const upAt = Date.now() - load.t0;
    await pg.start();
    const upWall = Date.now();
    log('PostgreSQL started again');

    const { writeRecoveryMs, readRecoveryMs, listRecoveryMs } = await waitForRecovery(uncached, uncachedOp, upWall);
    await sleep(2000);
    const summary = await load.stop();

    const outage = load.responses.filter((r) => r.sentAt >= downDoneAt && r.sentAt < upAt);
    const posts503 = load.responses.filter((r) => r.kind === 'post' && r.status === 503);
    const reads = outage.filter((r) => r.kind === 'get-account');
    const max503Ms = Math.round(Math.max(0, ...posts503.map((r) => r.ms), ...probes.map(([, r]) => r.ms)));
    figure('pg-down.summary', summary);
    figure('pg-down.outage-ms', upAt - downAt);
    figure('pg-down.post-503s', { count: posts503.length, maxMs: max503Ms, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS });
    figure('pg-down.cached-reads-during-outage', { count: reads.length, ok: reads.filter((r) => r.cls === 'ok').length, maxMs: Math.round(Math.max(0, ...reads.map((r) => r.ms))) });
    figure('pg-back.write-recovery-ms', writeRecoveryMs);
    figure('pg-back.uncached-read-recovery-ms', readRecoveryMs);
    figure('pg-back.list-recovery-ms', listRecoveryMs);

    assert.deepEqual(unexpected(load.responses), [], formatResponses(unexpected(load.responses)));
    assert.ok(posts503.length > 0, 'POSTs got 503s while PostgreSQL was down (the fault was real)');
    assert.ok(max503Ms <= MAX_503_MS, `slowest 503 took ${max503Ms} ms (max ${MAX_503_MS})`);
    // Cached account views keep being served, correct, while PostgreSQL is down.
    assert.ok(reads.length > 0, 'the clients read cached accounts during the outage');
    const failedReads = reads.filter((r) => r.cls !== 'ok');
    assert.equal(failedReads.length, 0, `cached reads during the outage:\n${formatResponses(failedReads)}`);
    const stale = staleReads(load);
    assert.deepEqual(stale, [], formatResponses(stale));
    // Same processes: they recovered by themselves.
    assert.equal(writer.pid, pids.writer, 'the writer was not restarted');
    assert.equal(reader.pid, pids.reader, 'the reader was not restarted');
    await assertAllAlive();

    const figures = await assertInvariants(ledgers);
    figure('pg-down.invariants', figures);
  });

  test('PostgreSQL crashes (pg_ctl stop -m immediate) under write load: every acknowledged write survives', async () => {
    const ledger = new Ledger(accounts(5));
    ledgers.push(ledger);
    const load = startLoad({ ledger, workers: 6, readers: 1, readRatio: 0.2, txReadRatio: 0.05, durationMs: 90_000 });
    await sleep(2000);
    const crashAt = Date.now() - load.t0;
    await pg.stop('immediate'); // no checkpoint: what was acknowledged must come back from the WAL
    log('PostgreSQL crashed (immediate stop)');
    await sleep(2000);
    await pg.start();
    const upWall = Date.now();
    const probe = new Ledger(accounts(1));
    ledgers.push(probe);
    await postAcked(probe, probe.accounts[0], 1);
    const recoveryMs = Date.now() - upWall;
    await sleep(2000);
    const summary = await load.stop();
    const acknowledgedBeforeCrash = ledger.acked().filter((op) => op.ackedAt - load.t0 <= crashAt).length;
    figure('pg-crash.summary', summary);
    figure('pg-crash.acknowledged-before-crash', acknowledgedBeforeCrash);
    figure('pg-crash.write-recovery-ms', recoveryMs);
    assert.deepEqual(unexpected(load.responses), [], formatResponses(unexpected(load.responses)));
    // A write committed just before the crash whose answer was lost is acknowledged later by a
    // replay, which does not publish: the known replay bug (writer-crash.test.mjs) is the only
    // stale read allowed.
    const stale = staleReads(load);
    figure('pg-crash.stale-reads', { total: load.responses.filter((r) => r.cls === 'stale').length, unexplained: stale.length });
    assert.deepEqual(stale, [], formatResponses(stale));
    await assertAllAlive();
    const figures = await assertInvariants(ledgers);
    figure('pg-crash.invariants', figures);
  });
});
