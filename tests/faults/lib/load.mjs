// The bounded client loop: what the clients sent and were told (Ledger), concurrent clients
// through nginx (startLoad), and how their answers are classified and summed up.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, unavailableClass } from './http.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * What the clients know: every POST they made (one entry per Idempotency-Key, with every
 * attempt), per account the sum of what was acknowledged and of what was ever sent.
 */
export class Ledger {
  constructor(accounts) {
    this.accounts = accounts;
    this.ops = new Map(); // key -> op
    this.ackedSum = new Map(accounts.map((a) => [a, 0]));
    this.sentSum = new Map(accounts.map((a) => [a, 0]));
    this.ackedList = [];
  }

  newOp(account, amount) {
    const op = { key: `fault-${randomUUID()}`, account, amount, attempts: [], acked: undefined, ackedAt: undefined, sentAt: undefined };
    this.ops.set(op.key, op);
    return op;
  }

  markSent(op) {
    if (op.sentAt === undefined) {
      op.sentAt = Date.now();
      this.sentSum.set(op.account, this.sentSum.get(op.account) + op.amount);
    }
  }

  markAcked(op, transaction, res) {
    if (op.acked) {
      assert.equal(transaction.transaction_id, op.acked.transaction_id, `key ${op.key} acknowledged with two different ids`);
      return;
    }
    op.acked = transaction;
    op.ackedAt = Date.now();
    op.replayed = res.replayed;
    this.ackedList.push(op);
    this.ackedSum.set(op.account, this.ackedSum.get(op.account) + op.amount);
  }

  acked() {
    return this.ackedList;
  }
}

/**
 * Starts `workers` concurrent clients that, until stopped (or `durationMs` / `count` ops are
 * done), send through nginx:
 *   - POST /transactions with a fresh Idempotency-Key per operation, to a random account of
 *     `ledger.accounts`, amount 1..100 (positive, so balances only grow and every read can be
 *     bounded); on a 503 or a network error they retry the same key after Retry-After (if
 *     `retry`), for at most `retryForMs`;
 *   - GET /accounts/{id} (share `readRatio`), checked against what the clients know:
 *     sum(acked before the read was sent) <= balance <= sum(sent before the answer came);
 *   - GET /transactions/{id} of an acknowledged transaction (share `txReadRatio`).
 * `readers` more workers only read (80% accounts, 20% transactions), so reads go on while
 * every writer is busy retrying.
 * Every response is recorded in `responses` with its classification:
 *   ok | documented-503 | stale (a read below the acknowledged sum) | unexpected.
 * Returns { ledger, responses, stop(): Promise<summary>, done }.
 */
export function startLoad({
  ledger,
  workers = 8,
  readers = 0,
  durationMs = 60_000,
  count = Infinity,
  readRatio = 0.3,
  txReadRatio = 0.1,
  retry = true,
  retryForMs = 60_000,
  thinkMs = 5,
  maxRetryAfterMs = 1000,
} = {}) {
  const t0 = Date.now();
  const run = {
    ledger,
    responses: [],
    t0,
    options: { durationMs, count, readRatio, txReadRatio, retry, retryForMs, thinkMs, maxRetryAfterMs },
    stopping: false,
    started: 0,
  };
  const done = Promise.all([
    ...Array.from({ length: workers }, () => worker(run, false)),
    ...Array.from({ length: readers }, () => worker(run, true)),
  ]).then(() => summarize(run.responses, Date.now() - t0));
  return {
    ledger,
    responses: run.responses,
    t0,
    done,
    async stop() {
      run.stopping = true;
      return done;
    },
  };
}

/** Records one answer of a load `run` with its classification and times (ms since t0). */
function record(run, kind, res, { sentAt, ...extra } = {}) {
  const entry = {
    kind,
    at: Date.now() - run.t0, // when the answer came
    sentAt: sentAt === undefined ? undefined : sentAt - run.t0,
    status: res.status,
    ms: res.ms,
    retryAfter: res.retryAfter,
    error: res.error,
    text: res.status === 200 || res.status === 201 ? undefined : res.text?.slice(0, 300),
    ...extra,
  };
  run.responses.push(entry);
  return entry;
}

/** One client of a load: operations until the load stops, its time is up or `count` is reached. */
async function worker(run, readOnly) {
  const { durationMs, count, readRatio, txReadRatio, thinkMs } = run.options;
  while (!run.stopping && Date.now() - run.t0 < durationMs && run.started < count) {
    run.started += 1;
    const dice = Math.random();
    if (readOnly) {
      if (dice < 0.8) await readAccount(run);
      else await readTransaction(run);
    } else if (dice < readRatio) await readAccount(run);
    else if (dice < readRatio + txReadRatio) await readTransaction(run);
    else await post(run);
    if (thinkMs) await sleep(thinkMs);
  }
}

async function postOnce(run, op) {
  const body = `{"account_id":"${op.account}","amount":${op.amount}}`;
  const sentAt = Date.now();
  run.ledger.markSent(op);
  const res = await request('POST', '/transactions', { body, headers: { 'idempotency-key': op.key } });
  let cls = 'unexpected';
  if (res.status === 201) {
    const t = res.json;
    if (t && UUID_RE.test(t.transaction_id) && t.account_id === op.account && t.amount === op.amount && typeof t.created_at === 'string') {
      cls = 'ok';
      run.ledger.markAcked(op, t, res);
    }
  } else if (unavailableClass(res)) {
    cls = unavailableClass(res);
  }
  op.attempts.push({ status: res.status, ms: res.ms, cls, at: sentAt - run.t0 });
  record(run, 'post', res, { cls, sentAt, key: op.key, replayed: res.replayed });
  return { res, cls };
}

/** A POST to a random account, retried with the same key on "retry later" (if `retry`). */
async function post(run) {
  const { ledger } = run;
  const { retry, retryForMs, maxRetryAfterMs } = run.options;
  const account = ledger.accounts[Math.floor(Math.random() * ledger.accounts.length)];
  const op = ledger.newOp(account, 1 + Math.floor(Math.random() * 100));
  const giveUpAt = Date.now() + retryForMs;
  for (;;) {
    const { res, cls } = await postOnce(run, op);
    if (cls === 'ok') return;
    // 4xx other than a 503 would be a bug in the client or the service: do not retry those.
    const retriable = res.status === 0 || res.status === 503 || res.status === 502 || res.status === 504;
    if (!retry || !retriable || Date.now() > giveUpAt) return;
    const wait = Math.min(maxRetryAfterMs, 1000 * Number(res.retryAfter ?? 1) || 200);
    await sleep(wait);
  }
}

async function readAccount(run) {
  const { ledger } = run;
  const account = ledger.accounts[Math.floor(Math.random() * ledger.accounts.length)];
  const lower = ledger.ackedSum.get(account);
  const sentAt = Date.now();
  const res = await request('GET', `/accounts/${account}`);
  const upper = ledger.sentSum.get(account);
  let cls = 'unexpected';
  let balance;
  if (res.status === 200 && res.json?.account_id === account && Number.isSafeInteger(res.json?.balance)) {
    balance = res.json.balance;
    if (balance > upper) cls = 'unexpected';
    else if (balance < lower) cls = 'stale';
    else cls = 'ok';
  } else if (res.status === 404 && lower === 0 && typeof res.json?.error === 'string') {
    cls = 'ok';
  } else if (unavailableClass(res)) {
    cls = unavailableClass(res);
  }
  record(run, 'get-account', res, { cls, sentAt, account, balance, lower, upper });
}

async function readTransaction(run) {
  const recent = run.ledger.ackedList.slice(-200);
  if (!recent.length) return readAccount(run);
  const op = recent[Math.floor(Math.random() * recent.length)];
  const sentAt = Date.now();
  const res = await request('GET', `/transactions/${op.acked.transaction_id}`);
  let cls = 'unexpected';
  if (res.status === 200) {
    try {
      assert.deepEqual(res.json, op.acked);
      cls = 'ok';
    } catch {
      cls = 'unexpected';
    }
  } else if (unavailableClass(res)) {
    cls = unavailableClass(res);
  }
  record(run, 'get-transaction', res, { cls, sentAt });
}

/** Counts of a load's responses by kind, status and classification, and latency figures. */
export function summarize(responses, elapsedMs) {
  const byKind = {};
  for (const r of responses) {
    const k = (byKind[r.kind] ??= { total: 0, status: {}, cls: {}, maxMs: 0 });
    k.total += 1;
    k.status[r.status] = (k.status[r.status] ?? 0) + 1;
    k.cls[r.cls] = (k.cls[r.cls] ?? 0) + 1;
    k.maxMs = Math.max(k.maxMs, Math.round(r.ms));
  }
  return { elapsedMs, total: responses.length, byKind };
}

/**
 * Reads that showed a balance older than a write acknowledged before the read was sent. Every
 * 201 (first attempt or idempotent replay) is published before it is answered, so there must be
 * none outside a documented Redis write pause.
 */
export function staleReads(load) {
  return load.responses.filter((r) => r.cls === 'stale');
}

/** Responses that are neither correct nor a documented 503 (stale reads listed separately). */
export function unexpected(responses) {
  return responses.filter((r) => r.cls === 'unexpected');
}

export function formatResponses(list, max = 10) {
  return list
    .slice(0, max)
    .map((r) => `${r.kind} at ${r.at} ms: ${r.status}${r.error ? ` ${r.error}` : ''} ${r.text ?? ''}${r.balance !== undefined ? ` balance=${r.balance} bounds=[${r.lower},${r.upper}]` : ''}`)
    .join('\n');
}

/**
 * The [first sent, last answered] (ms since the load's t0) of the "retry later" answers
 * (documented 503s) in `responses`, with their count.
 */
export function window503(responses, kinds) {
  const list = responses.filter((r) => r.cls === 'documented-503' && (!kinds || kinds.includes(r.kind)));
  if (!list.length) return { count: 0, firstAt: undefined, lastAt: undefined, lengthMs: 0 };
  const firstAt = Math.min(...list.map((r) => r.sentAt ?? r.at));
  const lastAt = Math.max(...list.map((r) => r.at));
  return { count: list.length, firstAt, lastAt, lengthMs: lastAt - firstAt };
}

