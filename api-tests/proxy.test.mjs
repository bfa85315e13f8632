// What the proxy adds: private paths hidden, request ids, HEAD.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assertJsonError,
  call,
  postTransaction,
  randomUUID,
  sendJson,
} from './helpers.mjs';

/** The X-Request-Id of a response, asserting there is exactly one. */
function singleRequestId(res, what) {
  const value = res.headers.get('x-request-id');
  assert.ok(value, `${what}: expected an X-Request-Id header`);
  // fetch joins repeated headers with ", "; a well-formed id never contains a comma.
  assert.ok(!value.includes(','), `${what}: expected one X-Request-Id, got "${value}"`);
  assert.match(value, /^[A-Za-z0-9._:-]{1,128}$/, `${what}: malformed X-Request-Id "${value}"`);
  return value;
}

describe('private paths', () => {
  test('GET /metrics through the proxy is 404 with a JSON error', async () => {
    const res = await call('/metrics');
    assertJsonError(res, 404);
    assert.doesNotMatch(res.text, /# (HELP|TYPE)/);
  });

  test('GET /metrics/ and below through the proxy is 404 with a JSON error', async () => {
    assertJsonError(await call('/metrics/anything'), 404);
  });

  test('GET /health through the proxy is 404', async () => {
    assertJsonError(await call('/health'), 404);
  });
});

describe('request ids', () => {
  test('every response of the services carries exactly one X-Request-Id', async () => {
    const accountId = randomUUID();
    const cases = [
      ['GET /ping', () => call('/ping')],
      ['POST /transactions (201)', () => postTransaction(accountId, 1)],
      ['GET /accounts/<id> (200)', () => call(`/accounts/${accountId}`)],
      ['GET /transactions (200)', () => call('/transactions')],
      ['GET /accounts/<fresh id> (404)', () => call(`/accounts/${randomUUID()}`)],
      ['GET /transactions/123 (400)', () => call('/transactions/123')],
      ['POST /transactions (400)', () => sendJson('/transactions', { amount: 1 })],
      ['POST /transactions (415)', () => sendJson('/transactions', '{}', { contentType: 'text/plain' })],
      ['PUT /transactions (405)', () => call('/transactions', { method: 'PUT' })],
      ['GET /nope (404)', () => call('/nope')],
      ['POST /nope (404)', () => sendJson('/nope', {})],
    ];
    const seen = new Set();
    for (const [what, send] of cases) {
      const id = singleRequestId(await send(), what);
      assert.ok(!seen.has(id), `${what}: request id ${id} was already used by another request`);
      seen.add(id);
    }
  });

  test('the 404 the proxy makes itself for /metrics carries exactly one X-Request-Id', async () => {
    const res = await call('/metrics');
    assert.equal(res.status, 404);
    singleRequestId(res, 'GET /metrics (404)');
  });

  test('the 413 the proxy makes itself for a body over the limit carries exactly one X-Request-Id', async () => {
    const res = await sendJson('/transactions', {
      account_id: randomUUID(),
      amount: 1,
      padding: 'x'.repeat(20 * 1024),
    });
    assert.equal(res.status, 413);
    singleRequestId(res, 'POST /transactions over the limit (413)');
  });

  test('a well-formed X-Request-Id from the client is echoed back', async () => {
    const requestId = `test-${randomUUID()}`;
    const ping = await call('/ping', { headers: { 'x-request-id': requestId } });
    assert.equal(ping.status, 200);
    assert.equal(ping.headers.get('x-request-id'), requestId);

    const writeId = `test-${randomUUID()}`;
    const write = await postTransaction(randomUUID(), 1, { headers: { 'x-request-id': writeId } });
    assert.equal(write.status, 201, write.text);
    assert.equal(write.headers.get('x-request-id'), writeId);
  });

  test('a malformed X-Request-Id from the client is replaced by one the proxy makes', async () => {
    for (const malformed of ['has spaces in it', 'x'.repeat(129), 'semi;colon']) {
      const res = await call('/ping', { headers: { 'x-request-id': malformed } });
      assert.equal(res.status, 200);
      const id = singleRequestId(res, `X-Request-Id "${malformed.slice(0, 20)}"`);
      assert.notEqual(id, malformed);
    }
  });
});

describe('HEAD', () => {
  test('HEAD /ping is 200 with no body', async () => {
    const res = await call('/ping', { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.text, '');
    singleRequestId(res, 'HEAD /ping');
  });

  test('HEAD of an account that was never created is 404 with no body', async () => {
    const res = await call(`/accounts/${randomUUID()}`, { method: 'HEAD' });
    assert.equal(res.status, 404);
    assert.equal(res.text, '');
  });
});
