// Fault 3: the writer is SIGKILLed under load (twice) and restarted. Clients retry failed
// POSTs with the same Idempotency-Key until acknowledged. Nothing acknowledged is lost,
// nothing is applied twice, nothing half-written remains.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Ledger,
  accounts,
  assertAllAlive,
  assertInvariants,
  figure,
  formatResponses,
  holdAccountLock,
  log,
  postAcked,
  request,
  sleep,
  sqlValue,
  startLoad,
  staleReads,
  startStack,
  stopStack,
  unexpected,
  waitFor,
  waitForLockWaiter,
  window503,
  writer,
} from './harness.mjs';

describe('writer killed with SIGKILL', { timeout: 180_000 }, () => {
  before(() => startStack());
  after(() => stopStack());

  test('8 clients POSTing with Idempotency-Keys; writer SIGKILLed twice and restarted; every acknowledged write exactly once', async () => {
    const ledger = new Ledger(accounts(5));
    const load = startLoad({ ledger, workers: 8, readers: 1, readRatio: 0, txReadRatio: 0, durationMs: 90_000, retryForMs: 60_000 });
    const kills = [];
    for (let round = 0; round < 2; round += 1) {
      await sleep(2000);
      const killedAt = Date.now() - load.t0;
      const stopped = await writer.kill();
      log(`writer SIGKILLed (exit signal ${stopped.signal})`);
      assert.equal(stopped.signal, 'SIGKILL');
      await sleep(500);
      await writer.start(); // waits for GET /ping
      const upAt = Date.now() - load.t0;
      kills.push({ killedAt, upAt, downMs: upAt - killedAt });
    }
    await sleep(3000);
    const summary = await load.stop();

    const posts = load.responses.filter((r) => r.kind === 'post');
    const ops = [...ledger.ops.values()];
    const retried = ops.filter((op) => op.attempts.length > 1);
    const replayed = ops.filter((op) => op.replayed);
    const notAcked = ops.filter((op) => !op.acked);
    const w = window503(load.responses, ['post']);
    const committedUnpublishedAtKill = await sqlValue('SELECT count(*) FROM publish_outbox');
    figure('writer-kill.summary', summary);
    for (const kill of kills) {
      const around = load.responses.filter((r) => r.kind === 'post' && r.at >= kill.killedAt - 100 && r.sentAt <= kill.upAt + 1000);
      kill.retryLaterAnswers = window503(around, ['post']);
    }
    figure('writer-kill.kills', kills);
    figure('writer-kill.post-retry-later-answers', { ...w, status: Object.fromEntries([...new Set(posts.map((r) => r.status))].map((st) => [st, posts.filter((r) => r.status === st).length])) });
    figure('writer-kill.ops', { total: ops.length, retried: retried.length, acknowledgedByReplay: replayed.length, neverAcknowledged: notAcked.length });
    figure('writer-kill.outbox-rows-left-at-end', Number(committedUnpublishedAtKill));

    // Every response: a correct 201 / read, or a documented 503 (nginx answers that while the
    // writer is gone, and for a POST the killed writer never answered; nginx never retries a
    // POST itself).
    assert.deepEqual(unexpected(load.responses), [], formatResponses(unexpected(load.responses)));
    assert.ok(posts.some((r) => r.cls === 'documented-503'), 'the kills were felt by the clients (some 503s)');
    // Retrying with the same key always ends in an acknowledgement.
    assert.equal(notAcked.length, 0, `operations never acknowledged: ${notAcked.map((op) => op.key).slice(0, 5)}`);
    const stale = load.responses.filter((r) => r.cls === 'stale');
    figure('writer-kill.stale-reads', stale.length);
    if (stale.length) log(`stale reads after a kill:\n${formatResponses(stale)}`);
    const unexplained = staleReads(load);
    assert.deepEqual(unexplained, [], `reads older than an acknowledged write:\n${formatResponses(unexplained)}`);

    // In the database exactly once, in the balance, readable through nginx; no duplicates.
    const figures = await assertInvariants(ledger);
    figure('writer-kill.invariants', figures);
    assert.equal(figures.committed, ops.length, 'one transaction per Idempotency-Key, none from retries');
    await assertAllAlive();
  });

  // A replayed 201 must be published like a first attempt. Deterministic
  // because the first attempt is held inside PostgreSQL (row lock) when the writer dies, and
  // PostgreSQL commits it anyway once the lock is released.
  test('a read right after a replayed 201 includes the replayed write', async () => {
    const ledger = new Ledger(accounts(1));
    const [account] = ledger.accounts;
    await postAcked(ledger, account, 10);
    const lock = holdAccountLock(account, 800);
    await lock.locked;
    const op = ledger.newOp(account, 5);
    ledger.markSent(op);
    const body = `{"account_id":"${account}","amount":5}`;
    const first = request('POST', '/transactions', { body, headers: { 'idempotency-key': op.key } });
    await waitForLockWaiter('writer'); // the INSERT now waits for the row lock inside PostgreSQL
    await writer.kill();
    const lost = await first;
    await lock.done; // lock released: PostgreSQL commits the orphaned statement
    await waitFor('the orphaned write to commit', async () => (await sqlValue(`SELECT count(*) FROM transactions WHERE idempotency_key = '${op.key}'`)) === '1', { timeoutMs: 10_000 });
    await writer.start();
    const replay = await request('POST', '/transactions', { body, headers: { 'idempotency-key': op.key } });
    const read = await request('GET', `/accounts/${account}`);
    figure('replay-bug.first-attempt', `${lost.status} ${lost.text.trim()}`);
    figure('replay-bug.replay', { status: replay.status, replayed: replay.replayed });
    figure('replay-bug.read-after-replay', { balance: read.json?.balance, sqlBalance: Number(await sqlValue(`SELECT balance FROM accounts WHERE account_id = '${account}'`)) });
    const replayedAt = Date.now();
    await waitFor('the view to catch up', async () => (await request('GET', `/accounts/${account}`)).json?.balance === 15, { timeoutMs: 15_000, intervalMs: 50 });
    figure('replay-bug.view-correct-after-replay-ms', Date.now() - replayedAt);
    assert.equal(replay.status, 201);
    assert.equal(replay.replayed, true);
    assert.equal(read.json?.balance, 15, 'GET /accounts after the replayed 201 shows the write');
  });
});
