// Bad input to POST /transactions: each is refused with the right status and a JSON
// {"error": "..."} body, and nothing is recorded.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertCreated,
  assertJsonError,
  call,
  postTransaction,
  randomUUID,
  sendJson,
} from './helpers.mjs';

/** The request did not create the account: a refused write leaves no trace. */
async function assertAccountNotCreated(accountId) {
  assertJsonError(await call(`/accounts/${accountId}`), 404);
}

describe('the request body', () => {
  test('malformed JSON is refused with 400', async () => {
    const accountId = randomUUID();
    const res = await sendJson('/transactions', `{"account_id": "${accountId}", "amount": 7`);
    assertJsonError(res, 400);
    await assertAccountNotCreated(accountId);
  });

  test('an empty body is refused with 400', async () => {
    assertJsonError(await sendJson('/transactions', ''), 400);
  });

  test('a body of only whitespace is refused with 400', async () => {
    assertJsonError(await sendJson('/transactions', '  \n '), 400);
  });

  test('a body that is a JSON array is refused with 400', async () => {
    const accountId = randomUUID();
    const res = await sendJson('/transactions', [{ account_id: accountId, amount: 7 }]);
    assertJsonError(res, 400);
    await assertAccountNotCreated(accountId);
  });

  test('a body that is a JSON string, number or null is refused with 400', async () => {
    for (const body of ['"hello"', '7', 'null']) {
      assertJsonError(await sendJson('/transactions', body), 400);
    }
  });

  test('a body over the size limit (20 KB) is refused with 413 and a JSON error', async () => {
    const accountId = randomUUID();
    const res = await sendJson('/transactions', {
      account_id: accountId,
      amount: 7,
      padding: 'x'.repeat(20 * 1024),
    });
    assertJsonError(res, 413);
    await assertAccountNotCreated(accountId);
  });
});

describe('the Content-Type', () => {
  test('a request without a Content-Type is refused with 415', async () => {
    const accountId = randomUUID();
    // A byte body makes fetch send no Content-Type at all.
    const body = new TextEncoder().encode(JSON.stringify({ account_id: accountId, amount: 7 }));
    const res = await call('/transactions', { method: 'POST', body });
    assertJsonError(res, 415);
    await assertAccountNotCreated(accountId);
  });

  test('Content-Type text/plain is refused with 415', async () => {
    const accountId = randomUUID();
    const res = await sendJson('/transactions', { account_id: accountId, amount: 7 }, { contentType: 'text/plain' });
    assertJsonError(res, 415);
    await assertAccountNotCreated(accountId);
  });

  test('Content-Type application/json; charset=utf-8 is accepted with 201', async () => {
    const accountId = randomUUID();
    const res = await sendJson(
      '/transactions',
      { account_id: accountId, amount: 7 },
      { contentType: 'application/json; charset=utf-8' },
    );
    assertCreated(res, accountId, 7);
  });
});

describe('missing fields', () => {
  test('an empty object is refused with 400', async () => {
    assertJsonError(await sendJson('/transactions', {}), 400);
  });

  test('a body without account_id is refused with 400', async () => {
    assertJsonError(await sendJson('/transactions', { amount: 7 }), 400);
  });

  test('a body without amount is refused with 400', async () => {
    const accountId = randomUUID();
    assertJsonError(await sendJson('/transactions', { account_id: accountId }), 400);
    await assertAccountNotCreated(accountId);
  });

  test('an amount of null is refused with 400', async () => {
    const accountId = randomUUID();
    assertJsonError(await sendJson('/transactions', { account_id: accountId, amount: null }), 400);
    await assertAccountNotCreated(accountId);
  });
});

describe('amounts that are not integers', () => {
  for (const [label, amount] of [
    ['a float (1.5)', '1.5'],
    ['a float with a zero fraction (7.0)', '7.0'],
    ['a string ("7")', '"7"'],
    ['true', 'true'],
    ['an array ([7])', '[7]'],
    ['an object', '{"value": 7}'],
  ]) {
    test(`an amount that is ${label} is refused with 400`, async () => {
      const accountId = randomUUID();
      assertJsonError(await postTransaction(accountId, amount), 400);
      await assertAccountNotCreated(accountId);
    });
  }
});

describe('amounts beyond ±(2^53 - 1), the integers JSON clients hold exactly', () => {
  for (const [label, amount] of [
    ['2^53 (9007199254740992)', '9007199254740992'],
    ['-2^53 (-9007199254740992)', '-9007199254740992'],
    ['i64::MAX (9223372036854775807)', '9223372036854775807'],
    ['i64::MIN (-9223372036854775808)', '-9223372036854775808'],
    ['i64::MAX + 1 (9223372036854775808)', '9223372036854775808'],
    ['i64::MIN - 1 (-9223372036854775809)', '-9223372036854775809'],
    ['a 30-digit integer', '123456789012345678901234567890'],
    ['a negative 30-digit integer', '-123456789012345678901234567890'],
  ]) {
    test(`an amount of ${label} is out of range and refused with 400 naming the range`, async () => {
      const accountId = randomUUID();
      const refused = assertJsonError(await postTransaction(accountId, amount), 400);
      assert.match(refused, /amount must be an integer from -9007199254740991 to 9007199254740991/);
      await assertAccountNotCreated(accountId);
    });
  }
});

describe('account ids that are not UUID strings', () => {
  for (const [label, accountId] of [
    ['"abc"', 'abc'],
    ['an empty string', ''],
    ['a UUID with a character too many', `${randomUUID()}0`],
    ['the number 10', 10],
    ['null', null],
    ['an array', [randomUUID()]],
    ['an object', { id: randomUUID() }],
    ['true', true],
  ]) {
    test(`an account_id of ${label} is refused with 400`, async () => {
      assertJsonError(await sendJson('/transactions', { account_id: accountId, amount: 7 }), 400);
    });
  }
});
