// The invariants every fault test ends with, and the helpers they need.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql, sqlValue } from './datastores.mjs';
import { describeResponse, isRetryLater, request } from './http.mjs';
import { waitFor } from './proc.mjs';

// --- invariants ------------------------------------------------------------------------------

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i], i);
      }
    }),
  );
  return results;
}

/** Accounts whose balance differs from the sum of their transactions (SQL; must be 0). */
export async function unbalancedAccounts() {
  return Number(
    await sqlValue(
      'SELECT count(*) FROM accounts a WHERE balance <> (SELECT COALESCE(sum(amount),0) FROM transactions t WHERE t.account_id=a.account_id)',
    ),
  );
}

/** Waits until every account's balance read through nginx equals its SQL balance; returns ms taken. */
export async function waitViewsConverge({ timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  const rows = await sql('SELECT account_id, balance FROM accounts');
  const pending = new Map(rows.map(([id, balance]) => [id, Number(balance)]));
  let last = new Map();
  for (;;) {
    await pool([...pending.keys()], 16, async (id) => {
      const res = await request('GET', `/accounts/${id}`);
      last.set(id, describeResponse(res));
      if (res.status === 200 && res.json?.balance === pending.get(id)) pending.delete(id);
    });
    if (!pending.size) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      const detail = [...pending.entries()].slice(0, 5).map(([id, b]) => `${id}: SQL ${b}, nginx ${last.get(id)}`).join('\n');
      assert.fail(`${pending.size} account(s) still read differently through nginx than in SQL after ${timeoutMs} ms:\n${detail}`);
    }
    await sleep(100);
  }
}

/** Waits until the outbox is empty (everything published to Redis); returns ms taken. */
export async function waitOutboxDrained({ timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  await waitFor('the publish outbox to drain', async () => Number(await sqlValue('SELECT count(*) FROM publish_outbox')) === 0, { timeoutMs, intervalMs: 100 });
  return Date.now() - started;
}

/**
 * The invariants every fault test ends with:
 *   - every acknowledged transaction_id is in the database exactly once, with its account,
 *     amount and Idempotency-Key, and no key is in the database twice (no duplicate from a
 *     retry); no transaction the clients did not send;
 *   - balance = sum(amount) for every account (SQL);
 *   - through nginx, every account's balance equals its SQL balance (allowing the repair
 *     loop `convergeMs` to catch up), every acknowledged transaction reads back identical, and
 *     GET /transactions lists exactly the database's transactions;
 *   - the publish outbox drains (everything committed reaches Redis).
 * Returns figures: { acked, committed, committedUnacked, convergeMs, outboxDrainMs }.
 */
export async function assertInvariants(ledgerOrLedgers, { convergeMs = 15_000, extraTransactions = 0, checkList = true, outboxDrains = true } = {}) {
  const ledgers = Array.isArray(ledgerOrLedgers) ? ledgerOrLedgers : [ledgerOrLedgers];
  const ledger = {
    ops: new Map(ledgers.flatMap((l) => [...l.ops.entries()])),
    acked: () => ledgers.flatMap((l) => l.acked()),
  };
  const rows = await sql('SELECT transaction_id, account_id, amount, idempotency_key FROM transactions');
  const byId = new Map();
  const byKey = new Map();
  let withoutKey = 0;
  for (const [id, account, amount, key] of rows) {
    assert.ok(!byId.has(id), `transaction ${id} is in the database twice`);
    byId.set(id, { id, account, amount: Number(amount), key });
    if (key === '') withoutKey += 1;
    else {
      assert.ok(!byKey.has(key), `Idempotency-Key ${key} applied twice (${byKey.get(key)?.id} and ${id})`);
      byKey.set(key, { id, account, amount: Number(amount) });
    }
  }
  const acked = ledger.acked();
  const missing = [];
  for (const op of acked) {
    const row = byId.get(op.acked.transaction_id);
    if (!row) {
      missing.push(op);
      continue;
    }
    assert.equal(row.account, op.account, `transaction ${row.id}: account`);
    assert.equal(row.amount, op.amount, `transaction ${row.id}: amount`);
    assert.equal(row.key, op.key, `transaction ${row.id}: idempotency key`);
  }
  assert.equal(missing.length, 0, `${missing.length} acknowledged transaction(s) missing from the database, e.g. ${JSON.stringify(missing[0]?.acked)}`);
  let committedUnacked = 0;
  for (const [key, row] of byKey) {
    const op = ledger.ops.get(key);
    if (!op) continue;
    assert.equal(row.account, op.account, `key ${key}: account`);
    assert.equal(row.amount, op.amount, `key ${key}: amount`);
    if (!op.acked) committedUnacked += 1;
  }
  const foreign = [...byKey.keys()].filter((key) => !ledger.ops.has(key)).length + withoutKey;
  assert.ok(foreign <= extraTransactions, `${foreign} transaction(s) in the database that no client sent (expected at most ${extraTransactions})`);

  assert.equal(await unbalancedAccounts(), 0, 'accounts whose balance differs from the sum of their amounts');

  // Redis catches up with PostgreSQL (the repair loop), then every read through nginx agrees.
  const converge = await waitViewsConverge({ timeoutMs: convergeMs });
  const badReads = [];
  await pool(acked, 16, async (op) => {
    const res = await request('GET', `/transactions/${op.acked.transaction_id}`);
    try {
      assert.equal(res.status, 200);
      assert.deepEqual(res.json, op.acked);
    } catch {
      badReads.push(`${op.acked.transaction_id}: ${describeResponse(res)} (acknowledged ${JSON.stringify(op.acked)})`);
    }
  });
  assert.equal(badReads.length, 0, `acknowledged transactions not readable through nginx:\n${badReads.slice(0, 5).join('\n')}`);
  if (checkList) {
    const res = await request('GET', '/transactions', { timeoutMs: 60_000 });
    assert.equal(res.status, 200, `GET /transactions: ${describeResponse(res)}`);
    assert.ok(Array.isArray(res.json), 'GET /transactions is a JSON array');
    assert.equal(res.json.length, rows.length, 'GET /transactions lists every transaction of the database');
    assert.equal(new Set(res.json.map((t) => t.transaction_id)).size, rows.length, 'GET /transactions lists each transaction once');
  }
  // Nothing is left unpublished: the repair loop empties the outbox once Redis is reachable.
  const outboxDrainMs = outboxDrains ? await waitOutboxDrained({ timeoutMs: convergeMs }) : undefined;
  return { acked: acked.length, committed: rows.length, committedUnacked, convergeMs: converge, outboxDrainMs };
}

/**
 * POSTs one transaction with an Idempotency-Key through nginx, retrying the same key on 503 or
 * a network error until it is acknowledged (bounded); records it in `ledger`. Returns the op.
 */
export async function postAcked(ledger, account, amount, { timeoutMs = 60_000 } = {}) {
  const op = ledger.newOp(account, amount);
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    ledger.markSent(op);
    const res = await request('POST', '/transactions', {
      body: `{"account_id":"${account}","amount":${amount}}`,
      headers: { 'idempotency-key': op.key },
    });
    op.attempts.push({ status: res.status, ms: res.ms });
    if (res.status === 201) {
      assert.equal(res.json?.account_id, account, `POST answered for another account: ${res.text}`);
      assert.equal(res.json?.amount, amount, `POST answered another amount: ${res.text}`);
      ledger.markAcked(op, res.json, res);
      return op;
    }
    assert.ok(res.status === 0 || isRetryLater(res), `POST /transactions: neither 201 nor a documented 503: ${describeResponse(res)}`);
    assert.ok(Date.now() < giveUpAt, `POST /transactions not acknowledged within ${timeoutMs} ms: ${describeResponse(res)}`);
    await sleep(500);
  }
}

/** Fresh account ids. */
export function accounts(n) {
  return Array.from({ length: n }, () => randomUUID());
}
