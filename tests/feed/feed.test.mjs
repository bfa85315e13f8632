// The change feeds (GET /events, GET /accounts/{account_id}/events) through nginx, against the
// native stack npm test runs (scripts/test.sh; API_URL, STACK_STATE_DIR): streamed unbuffered,
// every commit once and in order across forced reconnects with concurrent writers, one account's
// feed only, resuming after the reader is killed and restarted by its supervisor, the
// per-client cap, and 400 JSON before any stream.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  assertJsonError,
  call,
  postTransaction,
  randomUUID,
  readJson,
  url,
} from '../../api-tests/helpers.mjs';
import { ROOT } from '../lib/defaults.mjs';
import { Feed as FeedClient, WAIT_MS } from './client.mjs';

const STATE = process.env.STACK_STATE_DIR || path.join(ROOT, '.stack');
const MAX_PER_CLIENT = Number(process.env.FEED_MAX_PER_CLIENT || 32);

/** The feed at `pathname` of the stack under test (API_URL). */
const Feed = { open: (pathname, options) => FeedClient.open(url(pathname), options) };

async function post(accountId, amount) {
  const res = await postTransaction(accountId, amount);
  assert.equal(res.status, 201, res.text);
  return res.body;
}

/** The pid of the native stack's (first) reader, from the launcher's pid file. */
function readerPid() {
  const file = path.join(STATE, 'reader.pid');
  assert.ok(fs.existsSync(file), `${file}: the stack's reader pid file (is STACK_STATE_DIR set?)`);
  return Number(fs.readFileSync(file, 'utf8').trim());
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

describe('change feeds through nginx', () => {
  test('malformed account ids and Last-Event-IDs get 400 JSON, not a stream', async () => {
    assertJsonError(await call('/accounts/not-a-uuid/events'), 400);
    const res = await call('/events', { headers: { 'last-event-id': 'abc' } });
    assert.match(assertJsonError(res, 400), /Last-Event-ID/);
    assertJsonError(await call('/events', { method: 'POST' }), 405);
  });

  test('events stream through nginx unbuffered, with the balance after each', async () => {
    const account = randomUUID();
    const feed = await Feed.open(`/accounts/${account}/events`);
    try {
      assert.equal(feed.res.status, 200);
      assert.match(feed.res.headers.get('content-type'), /^text\/event-stream/);
      assert.ok(feed.res.headers.get('x-request-id'), 'X-Request-Id on the stream too');
      const first = await post(account, 5);
      const [event] = await feed.take(1);
      assert.equal(event.data.transaction_id, first.transaction_id);
      assert.equal(event.data.balance, 5);
      assert.equal(event.data.amount, 5);
      assert.equal(event.data.created_at, first.created_at);
      // One at a time: each arrives before the next is posted, so nothing is held back.
      for (const [amount, balance] of [[-2, 3], [10, 13]]) {
        await post(account, amount);
        const [next] = await feed.take(1);
        assert.equal(next.data.balance, balance);
        assert.ok(next.id > event.id);
      }
    } finally {
      feed.close();
    }
  });

  test('every commit once, in order, across forced reconnects with concurrent writers', async () => {
    const accounts = [randomUUID(), randomUUID(), randomUUID()];
    const mine = new Set(accounts);
    let last;
    {
      // Where to start: the id of a commit made just now.
      const feed = await Feed.open('/events');
      await post(accounts[0], 1);
      [{ id: last }] = await feed.take(1);
      feed.close();
    }
    const WRITERS = 4;
    const PER_WRITER = 30;
    const posted = [];
    const writers = Array.from({ length: WRITERS }, async (_, w) => {
      for (let i = 0; i < PER_WRITER; i += 1) {
        posted.push((await post(accounts[(w + i) % accounts.length], 1 + ((w + i) % 5))).transaction_id);
      }
    });
    const done = Promise.all(writers);
    const received = [];
    const expected = WRITERS * PER_WRITER;
    let reconnects = 0;
    while (received.length < expected) {
      const feed = await Feed.open('/events', { lastEventId: last });
      assert.equal(feed.res.status, 200);
      reconnects += 1;
      try {
        // A few events, then the connection is dropped.
        for (let n = 0; n < 9 && received.length < expected; n += 1) {
          const event = await feed.next();
          assert.ok(event, 'the feed goes on');
          assert.equal(event.event, 'transaction');
          assert.ok(event.id > last, `ids increase: ${event.id} after ${last}`);
          last = event.id;
          if (mine.has(event.data.account_id)) received.push(event.data);
        }
      } finally {
        feed.close();
      }
    }
    await done;
    assert.ok(reconnects > 5, `reconnected ${reconnects} times`);
    const ids = received.map((data) => data.transaction_id);
    assert.equal(new Set(ids).size, ids.length, 'no transaction twice');
    assert.deepEqual([...ids].sort(), [...posted].sort(), 'every posted transaction');
    // In each account's commit order: the balances run.
    const balances = new Map([[accounts[0], 1]]);
    for (const data of received) {
      const balance = (balances.get(data.account_id) ?? 0) + data.amount;
      assert.equal(data.balance, balance, `balance after ${data.transaction_id}`);
      balances.set(data.account_id, balance);
    }
  });

  test("an account's feed never shows another account", async () => {
    const [mine, other] = [randomUUID(), randomUUID()];
    const feed = await Feed.open(`/accounts/${mine}/events`);
    try {
      for (let i = 1; i <= 5; i += 1) {
        await post(other, 100);
        await post(mine, i);
        await post(other, 100);
      }
      const events = await feed.take(5);
      assert.deepEqual(events.map((e) => e.data.account_id), Array(5).fill(mine));
      assert.deepEqual(events.map((e) => e.data.balance), [1, 3, 6, 10, 15]);
    } finally {
      feed.close();
    }
  });

  test('a feed resumes exactly after its last id once the killed reader is back', async () => {
    const account = randomUUID();
    const feed = await Feed.open(`/accounts/${account}/events`);
    let last;
    try {
      for (const amount of [1, 2, 3]) await post(account, amount);
      const events = await feed.take(3);
      last = events[2].id;
      process.kill(readerPid(), 'SIGKILL');
      // The stream breaks with the reader.
      assert.equal(await feed.next(), undefined, 'the stream ends when its reader dies');
    } finally {
      feed.close();
    }
    // Writes go on meanwhile (the writer is not the reader).
    for (const amount of [4, 5, 6]) await post(account, amount);
    // Reconnect as EventSource does, until the supervisor has the reader back.
    const deadline = Date.now() + 60_000;
    let resumed;
    for (;;) {
      resumed = await Feed.open(`/accounts/${account}/events`, { lastEventId: last });
      if (resumed.res.status === 200) break;
      resumed.close();
      assert.ok(Date.now() < deadline, `the reader came back (last status ${resumed.res.status})`);
      await sleep(250);
    }
    try {
      const events = await resumed.take(3);
      assert.deepEqual(events.map((e) => e.data.amount), [4, 5, 6]);
      assert.deepEqual(events.map((e) => e.data.balance), [10, 15, 21]);
      await post(account, 7);
      assert.equal((await resumed.take(1))[0].data.balance, 28);
    } finally {
      resumed.close();
    }
  });

  test(`a client gets 429 JSON for a feed beyond FEED_MAX_PER_CLIENT (${MAX_PER_CLIENT})`, async () => {
    const feeds = [];
    try {
      for (let i = 0; i < MAX_PER_CLIENT; i += 1) {
        const feed = await Feed.open('/events');
        assert.equal(feed.res.status, 200, `feed ${i + 1}`);
        feeds.push(feed);
      }
      const res = await call('/events');
      const message = assertJsonError(res, 429);
      assert.match(message, /too many change feeds/);
      readJson(res);
    } finally {
      for (const feed of feeds) feed.close();
    }
    // Closed feeds give their places back (the reader notices within a moment; at the latest
    // at its next heartbeat, 15 s).
    const deadline = Date.now() + 2 * WAIT_MS;
    for (;;) {
      const feed = await Feed.open('/events');
      feed.close();
      if (feed.res.status === 200) break;
      assert.ok(Date.now() < deadline, 'places are given back');
      await sleep(200);
    }
  });
});
