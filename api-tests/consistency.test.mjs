// Reads reflect writes, and concurrent writes are neither lost nor applied twice.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertCreated,
  balanceOf,
  getJson,
  postTransaction,
  randomUUID,
  readJson,
} from './helpers.mjs';

test('each of 50 sequential writes to one account is visible to the reads that follow it', async () => {
  const accountId = randomUUID();
  let expectedBalance = 0n;
  for (let i = 0; i < 50; i += 1) {
    const amount = (i % 3 === 2 ? -1 : 1) * (((i * 37) % 1000) + 1);
    const created = assertCreated(await postTransaction(accountId, amount), accountId, amount);
    expectedBalance += BigInt(amount);

    assert.equal(await balanceOf(accountId), expectedBalance, `balance after write #${i + 1}`);

    const stored = await getJson(`/transactions/${created.transaction_id}`);
    assert.equal(stored.status, 200, `transaction of write #${i + 1}: ${stored.text}`);
    assert.deepEqual(readJson(stored), created);
  }
});

test('100 concurrent writes to one account are all applied exactly once', async () => {
  const accountId = randomUUID();
  const amounts = Array.from({ length: 100 }, (_, i) => (i % 4 === 3 ? -(i + 1) : i + 1));
  const expectedBalance = amounts.reduce((sum, amount) => sum + BigInt(amount), 0n);

  const responses = await Promise.all(amounts.map((amount) => postTransaction(accountId, amount)));
  const created = responses.map((res, i) => assertCreated(res, accountId, amounts[i]));

  const ids = new Set(created.map((transaction) => transaction.transaction_id));
  assert.equal(ids.size, amounts.length, 'every transaction_id must be distinct');

  assert.equal(await balanceOf(accountId), expectedBalance);

  const reads = await Promise.all(created.map((t) => getJson(`/transactions/${t.transaction_id}`)));
  reads.forEach((res, i) => {
    assert.equal(res.status, 200, `transaction ${created[i].transaction_id}: ${res.text}`);
    assert.deepEqual(readJson(res), created[i]);
  });

  const listed = readJson(await getJson('/transactions')).filter((t) => t.account_id === accountId);
  assert.equal(listed.length, amounts.length, 'the list holds each of the account\'s transactions once');
  assert.deepEqual(new Set(listed.map((t) => t.transaction_id)), ids);
});
