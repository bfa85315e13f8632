// What API clients get beyond the contract (issue 7), through the proxy: CORS, filtering and
// keyset paging of GET /transactions, Location on 201, ETag / If-None-Match, and
// Idempotency-Key retries. The OpenAPI document is tested in openapi-document.test.mjs.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE_URL,
  assertCreated,
  assertJsonError,
  balanceOf,
  call,
  getJson,
  integerField,
  postTransaction,
  randomUUID,
  readJson,
  nextLink,
} from './helpers.mjs';

describe('CORS through the proxy', () => {
  const origin = process.env.CORS_TEST_ORIGIN ?? 'https://app.example.com';
  const listOf = (value) => (value ?? '').split(',').map((item) => item.trim().toLowerCase()).filter(Boolean);
  const assertOriginAllowed = (res, what) => {
    const allowed = res.headers.get('access-control-allow-origin');
    assert.ok(allowed === '*' || allowed === origin, `${what}: Access-Control-Allow-Origin is ${allowed}`);
  };

  test('the preflight of POST /transactions with Content-Type and Idempotency-Key is allowed', async () => {
    const res = await call('/transactions', {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type, idempotency-key',
      },
    });
    assert.ok(res.status >= 200 && res.status < 300, `preflight: ${res.status} ${res.text}`);
    assertOriginAllowed(res, 'preflight');
    const methods = listOf(res.headers.get('access-control-allow-methods'));
    assert.ok(methods.includes('post') || methods.includes('*'), `Access-Control-Allow-Methods: ${methods}`);
    const headers = listOf(res.headers.get('access-control-allow-headers'));
    for (const header of ['content-type', 'idempotency-key']) {
      assert.ok(headers.includes(header) || headers.includes('*'), `Access-Control-Allow-Headers lacks ${header}: ${headers}`);
    }
  });

  test('the preflight of a conditional GET allows If-None-Match', async () => {
    const res = await call(`/accounts/${randomUUID()}`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'if-none-match' },
    });
    assert.ok(res.status >= 200 && res.status < 300, `preflight: ${res.status} ${res.text}`);
    assertOriginAllowed(res, 'preflight');
    const headers = listOf(res.headers.get('access-control-allow-headers'));
    assert.ok(headers.includes('if-none-match') || headers.includes('*'), `Access-Control-Allow-Headers: ${headers}`);
  });

  test('a simple GET with Origin is allowed, and Location, ETag and Link are exposed to scripts', async () => {
    const res = await call('/ping', { headers: { origin } });
    assert.equal(res.status, 200);
    assertOriginAllowed(res, 'GET /ping');
    const exposed = listOf(res.headers.get('access-control-expose-headers'));
    for (const header of ['location', 'etag', 'link']) {
      assert.ok(exposed.includes(header), `Access-Control-Expose-Headers lacks ${header}: ${exposed}`);
    }
  });

  test('a cross-origin POST gets Access-Control-Allow-Origin and can read Location', async () => {
    const accountId = randomUUID();
    const res = await postTransaction(accountId, 2, { headers: { origin } });
    assertCreated(res, accountId, 2);
    assertOriginAllowed(res, 'POST /transactions');
    assert.ok(listOf(res.headers.get('access-control-expose-headers')).includes('location'));
  });

  test('errors carry the CORS headers too, so a browser client can read them', async () => {
    const res = await call('/accounts/not-a-uuid', { headers: { origin } });
    assertJsonError(res, 400);
    assertOriginAllowed(res, 'GET /accounts/not-a-uuid');
  });
});

// --- Location ---------------------------------------------------------------------------------

describe('Location on 201', () => {
  test('201 Created has Location: /transactions/{id}, and following it gives the transaction', async () => {
    const accountId = randomUUID();
    const res = await postTransaction(accountId, 41);
    const created = assertCreated(res, accountId, 41);
    const location = res.headers.get('location');
    assert.equal(location, `/transactions/${created.transaction_id}`);
    const followed = await getJson(new URL(location, BASE_URL + '/').pathname);
    assert.equal(followed.status, 200, followed.text);
    assert.deepEqual(readJson(followed), created);
  });
});

// --- filtering and paging -------------------------------------------------------------------

/** Creates `count` transactions on one account, one after the other; returns them oldest first. */
async function createMany(accountId, count, firstAmount = 1) {
  const created = [];
  for (let i = 0; i < count; i += 1) {
    created.push(assertCreated(await postTransaction(accountId, firstAmount + i), accountId, firstAmount + i));
  }
  return created;
}

describe('GET /transactions filtering and paging', () => {
  test('account_id returns exactly that account\'s transactions, newest first', async () => {
    const accountId = randomUUID();
    const other = randomUUID();
    const mine = [];
    for (let i = 0; i < 4; i += 1) {
      mine.push(assertCreated(await postTransaction(accountId, 10 + i), accountId, 10 + i));
      assertCreated(await postTransaction(other, 1), other, 1);
    }
    const res = await getJson(`/transactions?account_id=${accountId}`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers.get('link'), null, 'no Link without limit');
    const list = readJson(res);
    assert.deepEqual(list, [...mine].reverse());
    for (let i = 1; i < list.length; i += 1) {
      assert.ok(Date.parse(list[i - 1].created_at) >= Date.parse(list[i].created_at), 'newest first');
    }
  });

  test('an account id in another textual form selects the same account', async () => {
    const accountId = randomUUID();
    const created = assertCreated(await postTransaction(accountId, 5), accountId, 5);
    const list = readJson(await getJson(`/transactions?account_id=${accountId.toUpperCase()}`));
    assert.deepEqual(list, [created]);
  });

  test('an account without transactions gives an empty array', async () => {
    const res = await getJson(`/transactions?account_id=${randomUUID()}`);
    assert.equal(res.status, 200);
    assert.deepEqual(readJson(res), []);
  });

  test('limit with Link rel=next walks every transaction of an account exactly once, even with inserts between pages', async () => {
    const accountId = randomUUID();
    const original = await createMany(accountId, 7, 100);
    const insertedWhilePaging = [];
    const seen = [];
    let next = `/transactions?account_id=${accountId}&limit=3`;
    let pages = 0;
    while (next) {
      const res = await getJson(next);
      assert.equal(res.status, 200, `${next}: ${res.text}`);
      const page = readJson(res);
      assert.ok(page.length <= 3, `page of ${page.length} with limit=3`);
      assert.ok(page.every((item) => item.account_id === accountId), 'only the account\'s transactions');
      seen.push(...page);
      next = nextLink(res.headers);
      if (next) {
        assert.match(next, /[?&]limit=3(&|$)/, 'the next page keeps the limit');
        assert.match(next, new RegExp(`[?&]account_id=${accountId}(&|$)`, 'i'), 'the next page keeps the filter');
      }
      pages += 1;
      assert.ok(pages <= 10, 'paging must end');
      // A concurrent writer: new transactions of the same account between pages.
      const amount = 900 + pages;
      insertedWhilePaging.push(assertCreated(await postTransaction(accountId, amount), accountId, amount));
    }
    assert.equal(pages, 3, '7 transactions in pages of 3');
    assert.deepEqual(seen, [...original].reverse(), 'every original transaction once, newest first');
    const ids = new Set(seen.map((item) => item.transaction_id));
    assert.equal(ids.size, seen.length, 'no transaction twice');
    for (const inserted of insertedWhilePaging) {
      assert.ok(!ids.has(inserted.transaction_id), 'transactions recorded after the first page do not shift later pages');
    }
    // A new listing starts with them.
    const fresh = readJson(await getJson(`/transactions?account_id=${accountId}&limit=${insertedWhilePaging.length}`));
    assert.deepEqual(fresh, [...insertedWhilePaging].reverse());
  });

  test('an exact last page has no Link, and limit without account_id pages the whole list', async () => {
    const accountId = randomUUID();
    await createMany(accountId, 2);
    const res = await getJson(`/transactions?account_id=${accountId}&limit=2`);
    assert.equal(res.status, 200);
    assert.equal(readJson(res).length, 2);
    assert.equal(res.headers.get('link'), null, 'no next page');

    const first = await getJson('/transactions?limit=2');
    assert.equal(first.status, 200);
    const firstPage = readJson(first);
    assert.equal(firstPage.length, 2);
    const next = nextLink(first.headers);
    assert.ok(next, 'there are more than 2 transactions in all');
    assert.doesNotMatch(next, /account_id/);
    const second = readJson(await getJson(next));
    assert.ok(second.length > 0);
    const overlap = second.filter((item) => firstPage.some((seen) => seen.transaction_id === item.transaction_id));
    assert.deepEqual(overlap, [], 'pages do not overlap');
  });

  describe('invalid parameters give 400 with a JSON error', () => {
    for (const query of [
      'limit=0',
      'limit=1001',
      'limit=-1',
      'limit=abc',
      'limit=1.5',
      'limit=',
      'after=garbage',
      'after=c0',
      'after=c-5',
      'after=',
      'account_id=bad',
      'account_id=',
      'limit=1&limit=2',
    ]) {
      test(`GET /transactions?${query}`, async () => {
        const message = assertJsonError(await call(`/transactions?${query}`), 400);
        const named = query.startsWith('limit=1&') ? /query string/ : new RegExp(query.split('=')[0]);
        assert.match(message, named, 'the message names the parameter');
      });
    }
  });

  test('limit=1000 is accepted', async () => {
    const res = await getJson('/transactions?limit=1000');
    assert.equal(res.status, 200);
    assert.ok(readJson(res).length <= 1000);
  });

  test('plain GET /transactions still returns every transaction, including those just created', async () => {
    const accountId = randomUUID();
    const created = await createMany(accountId, 3);
    const res = await getJson('/transactions');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('link'), null, 'no Link without limit');
    const list = readJson(res);
    for (const transaction of created) {
      assert.equal(list.filter((item) => item.transaction_id === transaction.transaction_id).length, 1);
    }
  });
});

// --- conditional reads ------------------------------------------------------------------------

describe('ETag and If-None-Match', () => {
  test('an account read has an ETag; If-None-Match with it gives 304 without a body until the next write', async () => {
    const accountId = randomUUID();
    assertCreated(await postTransaction(accountId, 10), accountId, 10);
    const first = await getJson(`/accounts/${accountId}`);
    assert.equal(first.status, 200);
    const etag = first.headers.get('etag');
    assert.match(etag ?? '', /^(W\/)?"[^"]+"$/, `ETag: ${etag}`);

    const again = await call(`/accounts/${accountId}`);
    assert.equal(again.headers.get('etag'), etag, 'the same representation has the same tag');

    const cached = await call(`/accounts/${accountId}`, { headers: { 'if-none-match': etag } });
    assert.equal(cached.status, 304, cached.text);
    assert.equal(cached.text, '', '304 has no body');
    assert.equal(cached.headers.get('etag'), etag);

    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': '"other", ' + etag } })).status, 304);
    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': '"other"' } })).status, 200);

    assertCreated(await postTransaction(accountId, 5), accountId, 5);
    const changed = await getJson(`/accounts/${accountId}`, { headers: { 'if-none-match': etag } });
    assert.equal(changed.status, 200, 'the old tag no longer matches after a write');
    assert.equal(integerField(changed.text, 'balance'), 15n);
    assert.notEqual(changed.headers.get('etag'), etag);
    assert.equal((await call(`/accounts/${accountId}`, { headers: { 'if-none-match': changed.headers.get('etag') } })).status, 304);
  });

  test('a transaction read has an ETag; If-None-Match with it gives 304 without a body', async () => {
    const accountId = randomUUID();
    const created = assertCreated(await postTransaction(accountId, 3), accountId, 3);
    const path = `/transactions/${created.transaction_id}`;
    const first = await getJson(path);
    assert.equal(first.status, 200);
    assert.deepEqual(readJson(first), created);
    const etag = first.headers.get('etag');
    assert.match(etag ?? '', /^(W\/)?"[^"]+"$/, `GET ${path} must carry an ETag, got ${etag}`);
    const cached = await call(path, { headers: { 'if-none-match': etag } });
    assert.equal(cached.status, 304, cached.text);
    assert.equal(cached.text, '');
    assert.equal(cached.headers.get('etag'), etag);
  });

  test('If-None-Match on a missing account still gives 404', async () => {
    assertJsonError(await call(`/accounts/${randomUUID()}`, { headers: { 'if-none-match': '*' } }), 404);
  });
});

// --- Idempotency-Key --------------------------------------------------------------------------

describe('Idempotency-Key through the proxy', () => {
  test('the same key with the same body returns the same transaction once, marked as replayed', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    const first = await postTransaction(accountId, 25, { headers });
    const original = assertCreated(first, accountId, 25);
    assert.equal(first.headers.get('idempotent-replayed'), null, 'the first request is not a replay');

    const retry = await postTransaction(accountId, 25, { headers });
    assert.deepEqual(assertCreated(retry, accountId, 25), original, 'same transaction_id, same body');
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.equal(retry.headers.get('location'), `/transactions/${original.transaction_id}`);

    assert.equal(await balanceOf(accountId), 25n, 'applied once');
    assert.deepEqual(readJson(await getJson(`/transactions?account_id=${accountId}`)), [original]);
  });

  test('concurrent retries with one key apply it once', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    const results = await Promise.all(Array.from({ length: 6 }, () => postTransaction(accountId, 9, { headers })));
    const ids = new Set(results.map((res) => assertCreated(res, accountId, 9).transaction_id));
    assert.equal(ids.size, 1, 'every answer names the same transaction');
    assert.equal(results.filter((res) => res.headers.get('idempotent-replayed') === null).length, 1, 'one original');
    assert.equal(await balanceOf(accountId), 9n);
  });

  test('the same key with a different body is refused with 422 and records nothing', async () => {
    const accountId = randomUUID();
    const headers = { 'idempotency-key': `client-test-${randomUUID()}` };
    assertCreated(await postTransaction(accountId, 4, { headers }), accountId, 4);
    assertJsonError(await postTransaction(accountId, 5, { headers }), 422);
    const otherAccount = randomUUID();
    assertJsonError(await postTransaction(otherAccount, 4, { headers }), 422);
    assert.equal(await balanceOf(accountId), 4n);
    assertJsonError(await call(`/accounts/${otherAccount}`), 404);
  });

  test('an invalid key is refused with 400 and records nothing', async () => {
    const accountId = randomUUID();
    for (const key of ['k'.repeat(256), 'é', ' ']) {
      const message = assertJsonError(await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } }), 400);
      assert.match(message, /Idempotency-Key/);
    }
    assertJsonError(await call(`/accounts/${accountId}`), 404);
  });

  test('a key of 255 printable characters is accepted', async () => {
    const accountId = randomUUID();
    const key = `${randomUUID()} ~!`.padEnd(255, 'k');
    assertCreated(await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } }), accountId, 1);
    assert.equal((await postTransaction(accountId, 1, { headers: { 'idempotency-key': key } })).headers.get('idempotent-replayed'), 'true');
    assert.equal(await balanceOf(accountId), 1n);
  });

  test('without a key, the same request twice records two transactions', async () => {
    const accountId = randomUUID();
    const first = assertCreated(await postTransaction(accountId, 6), accountId, 6);
    const second = assertCreated(await postTransaction(accountId, 6), accountId, 6);
    assert.notEqual(first.transaction_id, second.transaction_id);
    assert.equal(await balanceOf(accountId), 12n);
  });
});
