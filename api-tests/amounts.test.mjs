// Amounts at the edges: ±(2^53 - 1), the largest integers every JSON client holds exactly;
// balances that would leave that range; and zero.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_SAFE,
  assertCreated,
  assertJsonError,
  balanceOf,
  call,
  integerField,
  postTransaction,
  randomUUID,
} from './helpers.mjs';

for (const [label, extreme] of [
  ['2^53 - 1 (9007199254740991)', MAX_SAFE],
  ['-(2^53 - 1) (-9007199254740991)', -MAX_SAFE],
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

test('a deposit that would take the balance above 2^53 - 1 is refused with 422 naming the range, and the balance is unchanged', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, MAX_SAFE), accountId, MAX_SAFE);

  const refused = assertJsonError(await postTransaction(accountId, 1), 422);
  assert.match(refused, /9007199254740991/);

  assert.equal(await balanceOf(accountId), MAX_SAFE);
  // The account still takes transactions that fit.
  assertCreated(await postTransaction(accountId, -1), accountId, -1);
  assert.equal(await balanceOf(accountId), MAX_SAFE - 1n);
});

test('a withdrawal that would take the balance below -(2^53 - 1) is refused with 422 and the balance is unchanged', async () => {
  const accountId = randomUUID();
  assertCreated(await postTransaction(accountId, -MAX_SAFE), accountId, -MAX_SAFE);

  assertJsonError(await postTransaction(accountId, -1), 422);

  assert.equal(await balanceOf(accountId), -MAX_SAFE);
  assertCreated(await postTransaction(accountId, 1), accountId, 1);
  assert.equal(await balanceOf(accountId), -MAX_SAFE + 1n);
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
