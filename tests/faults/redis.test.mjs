// Fault 1: Redis goes away (stopped), comes back empty, and refuses writes for a while
// (CLIENT PAUSE WRITE) while clients keep sending through nginx. PostgreSQL is the source of
// truth: writes keep succeeding, reads stay correct, the views are repaired afterwards, and a
// change feed resumes exactly after its last id across the restart.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  API,
  Ledger,
  accounts,
  assertAllAlive,
  assertInvariants,
  figure,
  formatResponses,
  log,
  postAcked,
  redis,
  request,
  sleep,
  sql,
  sqlValue,
  startLoad,
  startStack,
  stopStack,
  summarize,
  unexpected,
  waitFor,
  writer,
} from './harness.mjs';
import { Feed } from '../feed/client.mjs';

const ledgers = [];

describe('Redis outage', { timeout: 180_000 }, () => {
  before(() => startStack());
  after(() => stopStack());

  test('Redis stopped under load: writes stay 201, reads correct from PostgreSQL; back empty: reads correct, backlog republished', async () => {
    const ledger = new Ledger(accounts(6));
    ledgers.push(ledger);
    const load = startLoad({ ledger, workers: 6, readRatio: 0.4, txReadRatio: 0.1, durationMs: 60_000 });
    await sleep(2000);

    const downAt = Date.now() - load.t0;
    await redis.stop();
    log('Redis stopped');
    await sleep(5000);
    const upAt = Date.now() - load.t0;
    await redis.start();
    const redisBackSql = await sqlValue('SELECT now()');
    const upWall = Date.now();
    log('Redis started again (empty)');

    // The writer publishes again: the first view lands in the new, empty Redis.
    await waitFor('a view in the restarted Redis', async () => Number(await redis.cli('dbsize')) > 0, { timeoutMs: 15_000, intervalMs: 50 });
    const firstPublishMs = Date.now() - upWall;
    // Every change committed while Redis was down is republished by the repair loop.
    await waitFor(
      'the outage backlog to be republished',
      async () => Number(await sqlValue(`SELECT count(*) FROM publish_outbox WHERE created_at <= '${redisBackSql}'`)) === 0,
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    const backlogMs = Date.now() - upWall;
    await sleep(2000);
    const summary = await load.stop();

    const during = load.responses.filter((r) => r.sentAt >= downAt && r.sentAt < upAt);
    const postsDuring = during.filter((r) => r.kind === 'post');
    const readsDuring = during.filter((r) => r.kind !== 'post');
    figure('redis-down.summary', summary);
    figure('redis-down.outage-ms', upAt - downAt);
    figure('redis-down.posts-during-outage', { count: postsDuring.length, maxMs: Math.round(Math.max(0, ...postsDuring.map((r) => r.ms))) });
    figure('redis-down.reads-during-outage', { count: readsDuring.length, maxMs: Math.round(Math.max(0, ...readsDuring.map((r) => r.ms))) });
    figure('redis-back.first-publish-ms', firstPublishMs);
    figure('redis-back.backlog-republished-ms', backlogMs);
    figure('redis-down.publish-failures', await writer.metric('publish_failures_total'));

    assert.ok(postsDuring.length > 0 && readsDuring.length > 0, 'the load kept sending during the outage');
    assert.deepEqual(unexpected(load.responses), [], formatResponses(unexpected(load.responses)));
    const posts = load.responses.filter((r) => r.kind === 'post');
    assert.ok(posts.every((r) => r.status === 201), `every POST is 201 while Redis is down: ${JSON.stringify(summary.byKind.post)}`);
    const stale = load.responses.filter((r) => r.cls === 'stale');
    assert.equal(stale.length, 0, `reads older than an acknowledged write:\n${formatResponses(stale)}`);
    const unavailable = load.responses.filter((r) => r.status === 503);
    assert.equal(unavailable.length, 0, `a Redis outage must not cause 503s:\n${formatResponses(unavailable)}`);

    const figures = await assertInvariants(ledgers);
    figure('redis-down.invariants', figures);
    await assertAllAlive();
  });

  test('change feeds resume exactly after their last id across a Redis restart (the ids are PostgreSQL positions)', async () => {
    // Its writes go through a ledger, like every other test's, so the invariants count them.
    const ledger = new Ledger(accounts(1));
    ledgers.push(ledger);
    const [account] = ledger.accounts;
    const posted = [];
    const post = async (amount) => {
      const op = await postAcked(ledger, account, amount);
      posted.push(op.acked.transaction_id);
    };
    const feed = await Feed.open(`${API}/accounts/${account}/events`);
    assert.equal(feed.res.status, 200);
    let seen;
    try {
      await post(1);
      await post(2);
      seen = await feed.take(2);
    } finally {
      feed.close();
    }
    const lastId = seen.at(-1).id;

    // Commits while Redis is down and after it comes back empty: none may be missed or repeated.
    await redis.stop();
    log('Redis stopped (feed test)');
    await post(4);
    const whileDown = await Feed.open(`${API}/accounts/${account}/events`, { lastEventId: lastId });
    try {
      assert.equal(whileDown.res.status, 200, 'a feed opens while Redis is down');
      const [event] = await whileDown.take(1);
      assert.equal(event.data.transaction_id, posted[2]);
    } finally {
      whileDown.close();
    }
    await redis.start();
    log('Redis started again (feed test)');
    await post(8);

    const resumed = await Feed.open(`${API}/accounts/${account}/events`, { lastEventId: lastId });
    try {
      const events = await resumed.take(2);
      assert.deepEqual(events.map((e) => e.data.transaction_id), posted.slice(2), 'exactly the commits after the last id, in order');
      assert.deepEqual(events.map((e) => e.data.balance), [7, 15], 'the balance right after each');
      assert.ok(events[0].id > lastId && events[1].id > events[0].id, `ids increase: ${lastId}, ${events.map((e) => e.id)}`);
      // Nothing more: the next event, if any, would be a repeat or another account's.
      await post(16);
      const [next] = await resumed.take(1);
      assert.equal(next.data.transaction_id, posted[4]);
      assert.equal(next.data.balance, 31);
    } finally {
      resumed.close();
    }
    figure('redis-restart.feed-events-resumed', posted.length);
  });

  test('Redis refusing writes (CLIENT PAUSE 3000 WRITE): views repaired within ~5 s of the pause ending', async () => {
    const ledger = new Ledger(accounts(6));
    ledgers.push(ledger);
    // Every account has a view in Redis before the pause: the pause leaves old views behind.
    for (const account of ledger.accounts) await postAcked(ledger, account, 10);
    for (const account of ledger.accounts) {
      const res = await request('GET', `/accounts/${account}`);
      assert.equal(res.json?.balance, 10, `warm-up read of ${account}`);
    }
    const failuresBefore = await writer.metric('publish_failures_total');

    const load = startLoad({ ledger, workers: 6, readRatio: 0.4, txReadRatio: 0, durationMs: 60_000 });
    await sleep(1000);
    await redis.cli('CLIENT', 'PAUSE', '3000', 'WRITE');
    const pausedAt = Date.now();
    const pauseStart = pausedAt - load.t0;
    log('Redis paused for writes (3000 ms)');
    await sleep(Math.max(0, pausedAt + 3000 - Date.now()));
    const pauseEndWall = pausedAt + 3000;
    const summary = await load.stop(); // the clients stop writing when the pause ends
    const settledMs = Date.now() - pauseEndWall;

    // From the end of the pause until every account read through nginx equals SQL.
    const rows = await sql(`SELECT account_id, balance FROM accounts WHERE account_id IN (${ledger.accounts.map((a) => `'${a}'`).join(',')})`);
    const expected = new Map(rows.map(([id, balance]) => [id, Number(balance)]));
    let lastMismatch = '';
    await waitFor(
      'every account view to equal its SQL balance',
      async () => {
        const reads = await Promise.all(ledger.accounts.map((a) => request('GET', `/accounts/${a}`)));
        const wrong = reads.map((res, i) => [ledger.accounts[i], res]).filter(([a, res]) => res.json?.balance !== expected.get(a));
        lastMismatch = wrong.map(([a, res]) => `${a}: SQL ${expected.get(a)}, read ${res.status} ${res.text}`).join('\n');
        return wrong.length === 0;
      },
      { timeoutMs: 15_000, intervalMs: 50 },
    ).catch((error) => assert.fail(`${error.message}\n${lastMismatch}`));
    const recoveryMs = Date.now() - pauseEndWall;

    const duringPause = load.responses.filter((r) => r.sentAt >= pauseStart && r.sentAt < pauseStart + 3000);
    const postsDuring = duringPause.filter((r) => r.kind === 'post');
    const staleDuring = duringPause.filter((r) => r.cls === 'stale');
    const failures = (await writer.metric('publish_failures_total')) - failuresBefore;
    figure('redis-pause.repairs-total', await writer.metric('publish_repairs_total'));
    figure('redis-pause.summary', summary);
    figure('redis-pause.posts-during-pause', { count: postsDuring.length, status: summarize(postsDuring, 0).byKind.post?.status, maxMs: Math.round(Math.max(0, ...postsDuring.map((r) => r.ms))) });
    figure('redis-pause.publish-failures', failures);
    figure('redis-pause.stale-reads-during-pause', staleDuring.length);
    figure('redis-pause.clients-settled-after-pause-ms', settledMs);
    figure('redis-pause.views-equal-sql-after-pause-ms', recoveryMs);

    // The fault was real: publishes timed out while the old views stayed readable.
    assert.ok(failures > 0, 'the writer saw publish failures during the pause');
    assert.ok(postsDuring.length > 0, 'the clients wrote during the pause');
    assert.deepEqual(unexpected(load.responses), [], formatResponses(unexpected(load.responses)));
    assert.ok(postsDuring.every((r) => r.status === 201), 'writes keep returning 201 while Redis refuses writes');
    // Stale reads are the documented partial-partition window (docs/decisions.md, entry 4),
    // and only while the pause lasts: none may be served after it ends plus the repair time.
    const staleAfter = load.responses.filter((r) => r.cls === 'stale' && r.sentAt >= pauseStart + 3000 + 5000);
    assert.equal(staleAfter.length, 0, formatResponses(staleAfter));
    assert.ok(recoveryMs <= 5000 + 1000, `views equal SQL ${recoveryMs} ms after the pause (expected within ~5 s)`);

    const figures = await assertInvariants(ledgers);
    figure('redis-pause.invariants', figures);
    await assertAllAlive();
  });

  test('Redis rejecting writes (maxmemory exhausted, noeviction): only the repair loop can fix the views', async () => {
    // Unlike a pause, a rejected publish never lands later: the views in Redis stay old until
    // the writer's repair loop republishes the outbox (rows older than 2 s, every 1 s); reads
    // must not serve them meanwhile.
    const ledger = new Ledger(accounts(4));
    ledgers.push(ledger);
    for (const account of ledger.accounts) await postAcked(ledger, account, 10);
    const repairsBefore = await writer.metric('publish_repairs_total');
    const failuresBefore = await writer.metric('publish_failures_total');
    const policy = (await redis.cli('CONFIG', 'GET', 'maxmemory-policy')).split('\n')[1];
    await redis.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
    const rejectStart = Date.now();
    let writes = 0;
    try {
      // Sequential writes for 3 s: each is acknowledged although its publish is refused.
      while (Date.now() - rejectStart < 3000) {
        await postAcked(ledger, ledger.accounts[writes % ledger.accounts.length], 1 + (writes % 50));
        writes += 1;
      }
      const stale = [];
      for (const account of ledger.accounts) {
        const res = await request('GET', `/accounts/${account}`);
        if (res.json?.balance < ledger.ackedSum.get(account)) stale.push(account);
      }
      const failures = (await writer.metric('publish_failures_total')) - failuresBefore;
      figure('redis-oom.publish-failures', failures);
      assert.ok(failures > 0, 'Redis refused the publishes (the fault was real)');
      // The views in Redis are now older than acknowledged writes, but the reader sees the
      // writer's outbox lagging (> 1 s) and reads those accounts from PostgreSQL.
      figure('redis-oom.stale-reads-while-rejecting', stale.length);
      assert.equal(stale.length, 0, `reads bypass the stale views while the writer cannot publish: ${stale}`);
    } finally {
      await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
      await redis.cli('CONFIG', 'SET', 'maxmemory-policy', policy || 'noeviction');
    }
    const acceptAgain = Date.now();
    let lastMismatch = '';
    await waitFor(
      'every account view to equal its SQL balance',
      async () => {
        const reads = await Promise.all(ledger.accounts.map((a) => request('GET', `/accounts/${a}`)));
        const wrong = reads.map((res, i) => [ledger.accounts[i], res]).filter(([a, res]) => res.json?.balance !== ledger.ackedSum.get(a));
        lastMismatch = wrong.map(([a, res]) => `${a}: acknowledged sum ${ledger.ackedSum.get(a)}, read ${res.status} ${res.text}`).join('\n');
        return wrong.length === 0;
      },
      { timeoutMs: 15_000, intervalMs: 50 },
    ).catch((error) => assert.fail(`${error.message}\n${lastMismatch}`));
    const recoveryMs = Date.now() - acceptAgain;
    // The counter is bumped after the outbox rows are deleted, just after the views changed.
    let repairs = 0;
    await waitFor('publish_repairs_total to grow', async () => {
      repairs = (await writer.metric('publish_repairs_total')) - repairsBefore;
      return repairs > 0;
    }, { timeoutMs: 10_000 }).catch(() => {});
    figure('redis-oom.writes-while-rejecting', writes);
    figure('redis-oom.republished-by-repair-loop', repairs);
    figure('redis-oom.views-equal-sql-after-redis-accepts-ms', recoveryMs);
    assert.ok(repairs > 0, 'the repair loop republished the rejected changes');
    assert.ok(recoveryMs <= 5000 + 1000, `views equal SQL ${recoveryMs} ms after Redis accepts writes again (expected within ~5 s)`);

    const figures = await assertInvariants(ledgers);
    figure('redis-oom.invariants', figures);
    await assertAllAlive();
  });
});
