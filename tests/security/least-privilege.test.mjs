// Least privilege on a running native stack (issue 21): the services hold the roles
// scripts/lib/roles.sh gave them, the stack works through nginx under them, and each role's
// credentials cannot do more than its service needs. Runs against npm test's native stack,
// with API keys on (scripts/test-security.sh: API_URL, DATABASE_URL, REDIS_URL,
// REDIS_KEY_PREFIX, STACK_STATE_DIR, and READ_WRITE_SECRET, sent when set).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

import { DEFAULTS, ROOT, localUrl } from '../lib/defaults.mjs';

const run = promisify(execFile);
const API_URL = process.env.API_URL || localUrl('PROXY_PORT');
const DATABASE_URL = process.env.DATABASE_URL || DEFAULTS.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL || DEFAULTS.REDIS_URL;
const PREFIX = process.env.REDIS_KEY_PREFIX || 'tm:';
const STATE = process.env.STACK_STATE_DIR || path.join(ROOT, '.stack');

/** url with its user (and password) replaced, as scripts/lib/roles.sh's with_user. */
function withUser(url, user, password = '') {
  const parsed = new URL(url);
  parsed.username = user;
  parsed.password = password;
  return parsed.toString();
}

/** Runs one SQL statement; resolves to { ok, stderr }. */
async function psql(url, sql) {
  try {
    const { stdout } = await run('psql', [url, '-XtAq', '-v', 'ON_ERROR_STOP=1', '-c', sql], { timeout: 10_000 });
    return { ok: true, stdout: stdout.trim(), stderr: '' };
  } catch (error) {
    return { ok: false, stdout: '', stderr: String(error.stderr) };
  }
}

/** One Redis command through redis-cli (arguments on its command line: test data only). */
async function redis(url, ...command) {
  const { stdout } = await run('redis-cli', ['-u', url, '--no-auth-warning', ...command], { timeout: 10_000 });
  return stdout.trim();
}

const redisUser = (kind) => `ledger-${kind}-${PREFIX.replace(/[^A-Za-z0-9]/g, '-')}`;
const redisPassword = (kind) => fs.readFileSync(path.join(STATE, 'secrets', `redis-${kind}.password`), 'utf8').trim();

const KEY = process.env.READ_WRITE_SECRET ? { authorization: `Bearer ${process.env.READ_WRITE_SECRET}` } : {};

test('the stack works through nginx with each service as its own role', async () => {
  const account = randomUUID();
  const posted = await fetch(`${API_URL}/transactions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...KEY },
    body: JSON.stringify({ account_id: account, amount: 12 }),
  });
  assert.equal(posted.status, 201, await posted.text());
  const read = await fetch(`${API_URL}/accounts/${account}`, { headers: KEY });
  assert.equal(read.status, 200);
  assert.equal((await read.json()).balance, 12);

  const sessions = await psql(DATABASE_URL,
    `SELECT DISTINCT application_name || '=' || usename FROM pg_stat_activity
     WHERE datname = current_database() AND application_name IN ('writer', 'reader') ORDER BY 1`);
  assert.ok(sessions.ok, sessions.stderr);
  assert.deepEqual(sessions.stdout.split('\n'), ['reader=ledger_reader', 'writer=ledger_writer']);

  const clients = await redis(REDIS_URL, 'CLIENT', 'LIST');
  for (const kind of ['writer', 'reader']) {
    assert.match(clients, new RegExp(`user=${redisUser(kind)} `), `a ${kind} connection as its ACL user`);
  }
});

test("the reader's PostgreSQL role can only read", async () => {
  const reader = withUser(DATABASE_URL, 'ledger_reader');
  assert.ok((await psql(reader, 'SELECT count(*) FROM transactions')).ok);
  for (const sql of [
    "INSERT INTO accounts (account_id, balance, version) VALUES (gen_random_uuid(), 1, 1)",
    'UPDATE accounts SET balance = balance + 1',
    'DELETE FROM publish_batches',
    'DELETE FROM transactions',
    'CREATE TABLE intruder (a int)',
  ]) {
    const result = await psql(reader, sql);
    assert.equal(result.ok, false, sql);
    assert.match(result.stderr, /permission denied/, sql);
  }
});

test("the writer's PostgreSQL role cannot delete, rewrite or drop the ledger", async () => {
  const writer = withUser(DATABASE_URL, 'ledger_writer');
  for (const sql of [
    'DELETE FROM transactions',
    'UPDATE transactions SET amount = amount + 1',
    'TRUNCATE transactions',
    'DROP TABLE transactions',
    'DELETE FROM accounts',
  ]) {
    const result = await psql(writer, sql);
    assert.equal(result.ok, false, sql);
    assert.match(result.stderr, /permission denied|must be owner/, sql);
  }
});

test("each service's Redis user is held to its own keys and commands", async () => {
  const as = (kind) => withUser(REDIS_URL, redisUser(kind), redisPassword(kind));
  const reader = as('reader');
  const writer = as('writer');
  assert.equal(await redis(reader, 'GET', `${PREFIX}transaction:${randomUUID()}`), '');
  const refused = [
    [reader, 'XADD', `${PREFIX}events`, '*', 'type', 'forged'],
    [reader, 'DEL', `${PREFIX}views-generation`],
    [reader, 'SET', `${PREFIX}events`, 'x'],
    [reader, 'FLUSHALL'],
    [writer, 'FLUSHALL'],
    [writer, 'DEL', `${PREFIX}events`],
    [writer, 'KEYS', '*'],
    [writer, 'CONFIG', 'GET', 'requirepass'],
    [writer, 'SET', `not-${PREFIX}${randomUUID()}`, 'x'],
    [writer, 'GET', `not-${PREFIX}${randomUUID()}`],
  ];
  for (const [url, ...command] of refused) {
    assert.match(await redis(url, ...command), /NOPERM/, command.join(' '));
  }
  // A wrong password is refused (redis-cli says so on stderr, then goes on unauthenticated).
  const wrong = await run('redis-cli', ['-u', withUser(REDIS_URL, redisUser('writer'), 'wrong'), '--no-auth-warning', 'PING']);
  assert.match(wrong.stderr, /WRONGPASS/);
});
