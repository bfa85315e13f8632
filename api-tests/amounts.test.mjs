// Amounts at the edges: the i64 extremes, balances that would overflow, and zero.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  I64_MAX,
  I64_MIN,
  assertCreated,
  assertJsonError,
  balanceOf,
  call,
  integerField,
  postTransaction,
  randomUUID,
} from './helpers.mjs';

for (const [label, extreme] of [
  ['i64::MAX (9223372036854775807)', I64_MAX],
  ['i64::MIN (-9223372036854775808)', I64_MIN],
]) {
  test(`a single transaction of ${label} is accepted and kept exactly`, async () => {
    const accountId = randomUUID();
    const created = assertCreated(await postTransaction(accountId, extreme), accountId, extreme);

    const stored = await call(`/transactions/${created.transaction_id}`);
    assert.equal(stored.status, 200, stored.text);
    assert.equal(integerField(stored.text, 'amount'), extreme);

    assert.equal(await balanceOf(accountId), extreme);
  });
}

test('a deposit that would take the balance above i64::MAX is refused with 422 and the balance is unchanged', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, I64_MAX), accountId, I64_MAX);

  assertJsonError(await postTransaction(accountId, 1), 422);

  assert.equal(await balanceOf(accountId), I64_MAX);
  // The account still takes transactions that fit.
  assertCreated(await postTransaction(accountId, -1), accountId, -1);
  assert.equal(await balanceOf(accountId), I64_MAX - 1n);
});

test('a withdrawal that would take the balance below i64::MIN is refused with 422 and the balance is unchanged', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, I64_MIN), accountId, I64_MIN);

  assertJsonError(await postTransaction(accountId, -1), 422);

  assert.equal(await balanceOf(accountId), I64_MIN);
  assertCreated(await postTransaction(accountId, 1), accountId, 1);
  assert.equal(await balanceOf(accountId), I64_MIN + 1n);
});

test('a transaction of 0 is accepted and leaves the balance unchanged', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, 5), accountId, 5);

  const zero = assertCreated(await postTransaction(accountId, 0), accountId, 0);
  assert.equal(await balanceOf(accountId), 5n);

  const stored = await call(`/transactions/${zero.transaction_id}`);
  assert.equal(stored.status, 200, stored.text);
  assert.equal(integerField(stored.text, 'amount'), 0n);
});

test('an account whose only transaction is 0 exists with balance 0', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, 0), accountId, 0);
  assert.equal(await balanceOf(accountId), 0n);
});

test('a balance may go negative', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, -25), accountId, -25);
  assert.equal(await balanceOf(accountId), -25n);
});
