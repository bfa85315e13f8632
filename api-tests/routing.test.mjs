// Paths and methods: malformed ids, unknown paths and methods a path does not have.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  allowedMethods,
  assertCreated,
  assertJsonError,
  call,
  getJson,
  postTransaction,
  randomUUID,
  readJson,
  sendJson,
} from './helpers.mjs';

describe('ids in paths', () => {
  test('GET /accounts/not-a-uuid is refused with 400', async () => {
    assertJsonError(await call('/accounts/not-a-uuid'), 400);
  });

  test('GET /transactions/123 is refused with 400', async () => {
    assertJsonError(await call('/transactions/123'), 400);
  });

  test('an account id in upper case names the same account', async () => {
    const accountId = randomUUID();
    assertCreated(await postTransaction(accountId, 3), accountId, 3);
    const res = await getJson(`/accounts/${accountId.toUpperCase()}`);
    assert.equal(res.status, 200, res.text);
    assert.equal(readJson(res).balance, 3);
  });
});

describe('unknown paths', () => {
  for (const [method, path] of [
    ['GET', '/nope'],
    ['POST', '/nope'],
    ['GET', '/accounts'],
    ['GET', '/transactions/'],
    ['GET', `/accounts/${randomUUID()}/transactions`],
  ]) {
    test(`${method} ${path.replace(/[0-9a-f-]{36}/, '<uuid>')} is 404`, async () => {
      const res = method === 'POST'
        ? await sendJson(path, { account_id: randomUUID(), amount: 1 })
        : await call(path, { method });
      assertJsonError(res, 404);
    });
  }
});

describe('methods a path does not have', () => {
  for (const [method, path, allow] of [
    ['PUT', '/transactions', ['GET', 'HEAD', 'POST']],
    ['PATCH', '/transactions', ['GET', 'HEAD', 'POST']],
    ['DELETE', '/transactions', ['GET', 'HEAD', 'POST']],
    ['DELETE', `/transactions/${randomUUID()}`, ['GET', 'HEAD']],
    ['PUT', `/transactions/${randomUUID()}`, ['GET', 'HEAD']],
    ['POST', `/accounts/${randomUUID()}`, ['GET', 'HEAD']],
    ['DELETE', `/accounts/${randomUUID()}`, ['GET', 'HEAD']],
    ['POST', '/ping', ['GET', 'HEAD']],
  ]) {
    test(`${method} ${path.replace(/[0-9a-f-]{36}/, '<uuid>')} is 405 with Allow: ${allow.join(', ')}`, async () => {
      const res = await sendJson(path, { account_id: randomUUID(), amount: 1 }, { method });
      assertJsonError(res, 405);
      assert.deepEqual(allowedMethods(res.headers), allow);
    });
  }

  test('a refused PUT /transactions records nothing', async () => {
    const accountId = randomUUID();
    assertJsonError(await sendJson('/transactions', { account_id: accountId, amount: 1 }, { method: 'PUT' }), 405);
    assertJsonError(await call(`/accounts/${accountId}`), 404);
  });
});
