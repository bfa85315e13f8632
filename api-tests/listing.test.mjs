// GET /transactions: every transaction created so far.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertCreated, getJson, postTransaction, randomUUID, readJson } from './helpers.mjs';

test('GET /transactions is a JSON array that contains the transactions just created', async () => {
  const first = randomUUID();
  const second = randomUUID();
  const created = [
    assertCreated(await postTransaction(first, 12), first, 12),
    assertCreated(await postTransaction(first, -5), first, -5),
    assertCreated(await postTransaction(second, 31), second, 31),
  ];

  const res = await getJson('/transactions');
  assert.equal(res.status, 200, res.text.slice(0, 500));
  const list = readJson(res);
  assert.ok(Array.isArray(list), 'the body must be a JSON array');

  for (const transaction of created) {
    const found = list.filter((item) => item.transaction_id === transaction.transaction_id);
    assert.equal(found.length, 1, `transaction ${transaction.transaction_id} must appear exactly once`);
    assert.deepEqual(found[0], transaction);
  }
});

test('every item of GET /transactions has the four fields of a Transaction', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, 1), accountId, 1);

  const list = readJson(await getJson('/transactions'));
  assert.ok(Array.isArray(list) && list.length > 0);
  for (const item of list) {
    assert.deepEqual(Object.keys(item).sort(), ['account_id', 'amount', 'created_at', 'transaction_id']);
    assert.equal(typeof item.transaction_id, 'string');
    assert.equal(typeof item.account_id, 'string');
    assert.equal(typeof item.amount, 'number');
    assert.ok(Number.isInteger(item.amount));
    assert.equal(typeof item.created_at, 'string');
  }
});
