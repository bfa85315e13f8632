// API keys through nginx, on a native stack started with API_KEYS_FILE (scripts/test-security.sh
// starts it and passes the secrets of the keys it made: READ_SECRET, WRITE_SECRET,
// READ_WRITE_SECRET). 401/403 JSON with WWW-Authenticate, /ping open, idempotency keys per API
// key, a reload that drops no request, and no secret in any log or metric.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, localUrl } from '../lib/defaults.mjs';

const API = (process.env.API_URL ?? localUrl('PROXY_PORT')).replace(/\/+$/, '');
const { READ_SECRET, WRITE_SECRET, READ_WRITE_SECRET, API_KEYS_FILE, STACK_STATE_DIR } = process.env;
for (const [name, value] of Object.entries({ READ_SECRET, WRITE_SECRET, READ_WRITE_SECRET, API_KEYS_FILE, STACK_STATE_DIR })) {
  assert.ok(value, `${name} is not set: run these tests with scripts/test-security.sh`);
}

async function call(pathname, { method = 'GET', secret, headers = {}, body } = {}) {
  const all = { ...headers };
  if (secret) all.authorization = `Bearer ${secret}`;
  if (body !== undefined) all['content-type'] = 'application/json';
  const response = await fetch(API + pathname, { method, headers: all, body });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text };
}

const post = (secret, accountId, amount, headers = {}) =>
  call('/transactions', { method: 'POST', secret, headers, body: JSON.stringify({ account_id: accountId, amount }) });

function jsonError(res, status) {
  assert.equal(res.status, status, res.text);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const body = JSON.parse(res.text);
  assert.equal(typeof body.error, 'string', res.text);
  return body.error;
}

test('GET /ping stays open without a key', async () => {
  assert.equal((await call('/ping')).status, 200);
});

test('without a key, or with a wrong one, every other request is a 401 JSON with WWW-Authenticate: Bearer', async () => {
  const account = `/accounts/${randomUUID()}`;
  for (const [res, challenge] of [
    [await call(account), /^Bearer realm="transactions"$/],
    [await call('/transactions'), /^Bearer realm="transactions"$/],
    [await post(undefined, randomUUID(), 1), /^Bearer realm="transactions"$/],
    [await call(account, { secret: 'not-a-key' }), /error="invalid_token"/],
    [await call(account, { headers: { authorization: `Basic ${READ_SECRET}` } }), /^Bearer realm/],
  ]) {
    assert.match(jsonError(res, 401), /API key/);
    assert.match(res.headers.get('www-authenticate') ?? '', challenge);
  }
});

test('a key without the scope gets 403 JSON; with it the request goes through', async () => {
  const accountId = randomUUID();
  const readOnly = await post(READ_SECRET, accountId, 5);
  assert.match(jsonError(readOnly, 403), /write scope/);
  assert.match(readOnly.headers.get('www-authenticate') ?? '', /insufficient_scope/);
  assert.match(jsonError(await call(`/accounts/${accountId}`, { secret: WRITE_SECRET }), 403), /read scope/);

  assert.equal((await post(WRITE_SECRET, accountId, 5)).status, 201);
  assert.equal((await post(READ_WRITE_SECRET, accountId, 2)).status, 201);
  const account = await call(`/accounts/${accountId}`, { secret: READ_SECRET });
  assert.equal(account.status, 200, account.text);
  assert.equal(JSON.parse(account.text).balance, 7);
});

test('two API keys that pick the same Idempotency-Key get a transaction each', async () => {
  const accountId = randomUUID();
  const key = { 'idempotency-key': `order-${randomUUID()}` };
  const first = await post(WRITE_SECRET, accountId, 10, key);
  const other = await post(READ_WRITE_SECRET, accountId, 10, key);
  assert.equal(first.status, 201, first.text);
  assert.equal(other.status, 201, other.text);
  assert.equal(other.headers.get('idempotent-replayed'), null);
  assert.notEqual(JSON.parse(first.text).transaction_id, JSON.parse(other.text).transaction_id);
  const retry = await post(WRITE_SECRET, accountId, 10, key);
  assert.equal(retry.headers.get('idempotent-replayed'), 'true');
  assert.equal(JSON.parse(retry.text).transaction_id, JSON.parse(first.text).transaction_id);
  const account = await call(`/accounts/${accountId}`, { secret: READ_SECRET });
  assert.equal(JSON.parse(account.text).balance, 20);
});

test('a key added to the file works after npm run reload, and reads under way are not dropped', async () => {
  const secret = execFileSync('bash', [path.join(ROOT, 'scripts/api-key.sh'), `late-${Date.now()}`, 'read,write', API_KEYS_FILE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const accountId = randomUUID();
  assert.equal((await post(READ_WRITE_SECRET, accountId, 1)).status, 201);
  let stop = false;
  const statuses = [];
  const reads = (async () => {
    while (!stop) statuses.push((await call(`/accounts/${accountId}`, { secret: READ_SECRET })).status);
  })();
  execFileSync('bash', [path.join(ROOT, 'scripts/stack.sh'), 'reload'], { stdio: 'ignore' });
  const deadline = Date.now() + 5000;
  let status;
  do {
    status = (await post(secret, accountId, 1)).status;
    if (status === 201) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  } while (Date.now() < deadline);
  stop = true;
  await reads;
  assert.equal(status, 201, 'the new key did not work within 5 s of the reload');
  assert.ok(statuses.length > 0);
  assert.deepEqual([...new Set(statuses)], [200], `reads during the reload answered ${[...new Set(statuses)]}`);
  // The services are still the same processes (a reload restarts nothing).
  const supervisor = fs.readFileSync(path.join(STACK_STATE_DIR, 'logs', 'supervisor.log'), 'utf8');
  assert.doesNotMatch(supervisor, /(writer|reader)-\d+ \(pid \d+\) .*restarting/);
});

test('no secret appears in any log, and no key id in any metric', async () => {
  const logs = path.join(STACK_STATE_DIR, 'logs');
  for (const file of fs.readdirSync(logs)) {
    const text = fs.readFileSync(path.join(logs, file), 'utf8');
    for (const secret of [READ_SECRET, WRITE_SECRET, READ_WRITE_SECRET]) {
      assert.ok(!text.includes(secret), `${file} contains a secret`);
    }
  }
  for (const port of [process.env.WRITER_METRICS_PORT, process.env.READER_METRICS_PORT]) {
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.doesNotMatch(metrics, /reporting|ingest|both/, 'a key id in the metrics');
    if (port === process.env.WRITER_METRICS_PORT) {
      assert.match(metrics, /http_auth_refusals_total\{[^}]*reason="scope"[^}]*\} [1-9]/);
    }
  }
});
