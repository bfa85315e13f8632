// The scenarios of the contract's provided API test suite, as written there.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RFC3339_WITH_OFFSET_RE,
  UUID_RE,
  assertCreated,
  assertJsonError,
  call,
  getJson,
  postTransaction,
  randomUUID,
  readJson,
  sendJson,
} from './helpers.mjs';

test('GET /ping answers 200', async () => {
  const res = await call('/ping');
  assert.equal(res.status, 200);
});

test('a deposit of 7 to a fresh account is created and can be read back, and the balance is 7', async () => {
  const accountId = randomUUID();
  const created = await postTransaction(accountId, 7);
  assert.equal(created.status, 201, created.text);
  const transaction = readJson(created);
  assert.match(transaction.transaction_id, UUID_RE);
  assert.equal(transaction.account_id, accountId);
  assert.equal(transaction.amount, 7);
  assert.match(transaction.created_at, RFC3339_WITH_OFFSET_RE);
  assert.ok(!Number.isNaN(Date.parse(transaction.created_at)));

  const readBack = await getJson(`/transactions/${transaction.transaction_id}`);
  assert.equal(readBack.status, 200, readBack.text);
  const stored = readJson(readBack);
  assert.equal(stored.transaction_id, transaction.transaction_id);
  assert.equal(stored.account_id, accountId);
  assert.equal(stored.amount, 7);
  assert.equal(stored.created_at, transaction.created_at);

  const account = await getJson(`/accounts/${accountId}`);
  assert.equal(account.status, 200, account.text);
  assert.deepEqual(readJson(account), { account_id: accountId, balance: 7 });
});

test('a deposit of 4 then a withdrawal of 3 give balances 4 then 1, each read right after its write', async () => {
  const accountId = randomUUID();

  assertCreated(await postTransaction(accountId, 4), accountId, 4);
  const afterDeposit = await getJson(`/accounts/${accountId}`);
  assert.equal(afterDeposit.status, 200, afterDeposit.text);
  assert.equal(readJson(afterDeposit).balance, 4);

  assertCreated(await postTransaction(accountId, -3), accountId, -3);
  const afterWithdrawal = await getJson(`/accounts/${accountId}`);
  assert.equal(afterWithdrawal.status, 200, afterWithdrawal.text);
  assert.equal(readJson(afterWithdrawal).balance, 1);
});

test('an account that was never created is 404', async () => {
  assertJsonError(await call(`/accounts/${randomUUID()}`), 404);
});

test('a transaction that was never created is 404', async () => {
  assertJsonError(await call(`/transactions/${randomUUID()}`), 404);
});

test('PUT /transactions is 405', async () => {
  const res = await sendJson('/transactions', { account_id: randomUUID(), amount: 1 }, { method: 'PUT' });
  assertJsonError(res, 405);
});

test('POST /transactions with Content-Type application/xml is 415', async () => {
  const res = await call('/transactions', {
    method: 'POST',
    headers: { 'content-type': 'application/xml' },
    body: '<transaction><account_id>0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2</account_id><amount>7</amount></transaction>',
  });
  assertJsonError(res, 415);
});

test('a body without account_id is 400', async () => {
  assertJsonError(await sendJson('/transactions', { amount: 7 }), 400);
});

test('a body without amount is 400', async () => {
  assertJsonError(await sendJson('/transactions', { account_id: randomUUID() }), 400);
});

test('a body with account_id 10 is 400', async () => {
  assertJsonError(await sendJson('/transactions', { account_id: 10, amount: 7 }), 400);
});
