// The history checker of the partition test (docs/ha.md, "What the checker proves"): given a
// JSON-lines history of client operations and the final state of the database, it says whether
// every write and every balance read is explained by one legal order of events.
//
//   node tests/partitions/checker.mjs HISTORY.jsonl FINAL.json    prints the result as JSON,
//                                                                 exits 1 on any violation
//
// A history line is one event of one operation:
//   {"process": 3, "type": "invoke", "f": "write", "account": "…", "amount": 8, "key": "…", "time": 1234.5}
//   {"process": 3, "type": "ok",     "f": "write", "account": "…", "amount": 8, "key": "…", "value": "<transaction id>", "time": 1240.1}
//   {"process": 5, "type": "invoke", "f": "read",  "account": "…", "time": 1250}
//   {"process": 5, "type": "ok",     "f": "read",  "account": "…", "value": 24, "time": 1251}
// `type` is invoke, then one of ok (acknowledged), fail (definitely not done: the request was
// refused before anything was written) or info (outcome unknown: a timeout, a 503 during a
// failover). A process has one operation in flight at a time, so an event completes that
// process's last invoke. A write is identified by its idempotency key: a retry under the same
// key is another invoke of the same write. Times are milliseconds on one clock.
// The final state: {"transactions": [{"account": "…", "amount": 8, "id": "…"}, ...]}, every row
// of the accounts the history touched.
//
// Checks (each violation names its kind):
// - lost: a write acknowledged is not in the final state;
// - double: a write (one key, one distinct amount) is in the final state more than once: an
//   idempotent retry committed twice;
// - failed-present: a write answered as failed (and never acknowledged) is in the final state;
// - wrong-id: a write's acknowledgement named a transaction id the final state does not have
//   for it;
// - read checks, on every acknowledged read of an account's balance, with S the set of writes
//   its value is the sum of:
//   - stale-read: S misses a write acknowledged before the read was invoked;
//   - future-read: S has a write invoked only after the read completed, or one that failed,
//     or one absent from the final state;
//   - non-monotonic: S misses a write that a read completed before this one was invoked saw;
//   - impossible-value: no set of the account's writes sums to the value.
//
// Finding S: when an account's writes have distinct power-of-two amounts (what the partition
// test's clients write), a balance names its set of writes exactly (its binary digits), and the
// checks above are exact. Otherwise (any positive amounts) the checker falls back on bounds:
// sum(writes acknowledged before the read) <= value <= sum(writes invoked before it ended),
// and a value never below that of a read completed before this one began; that catches the same
// faults whenever the amounts differ enough, but cannot prove every case.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Parses JSON lines (blank lines skipped). */
export function parseHistory(text) {
  return text.split('\n').filter((line) => line.trim() !== '').map((line, i) => {
    try {
      return JSON.parse(line);
    } catch (error) {
      throw new Error(`history line ${i + 1}: ${error.message}`);
    }
  });
}

/**
 * Pairs every invoke with its completion (per process). Returns the operations, each
 * {process, f, account, amount, key, invokeTime, type, completeTime, value}; an invoke never
 * completed counts as info (unknown), completing at infinity.
 */
export function pairOperations(history) {
  const open = new Map();
  const ops = [];
  for (const event of history) {
    if (event.type === 'invoke') {
      if (open.has(event.process)) throw new Error(`process ${event.process} invoked twice without a completion (time ${event.time})`);
      const op = { process: event.process, f: event.f, account: event.account, amount: event.amount, key: event.key, invokeTime: event.time, type: null, completeTime: Infinity, value: undefined };
      open.set(event.process, op);
      ops.push(op);
    } else if (['ok', 'fail', 'info'].includes(event.type)) {
      const op = open.get(event.process);
      if (!op) throw new Error(`process ${event.process} completed (${event.type}) with nothing invoked (time ${event.time})`);
      open.delete(event.process);
      op.type = event.type;
      op.completeTime = event.type === 'info' ? Infinity : event.time;
      op.value = event.value;
    } else {
      throw new Error(`unknown event type ${JSON.stringify(event.type)}`);
    }
  }
  for (const op of open.values()) op.type = 'info';
  return ops;
}

/** The logical writes (one per key): first invoke, first acknowledgement, outcome. */
function logicalWrites(ops) {
  const writes = new Map();
  for (const op of ops.filter((o) => o.f === 'write')) {
    let w = writes.get(op.key);
    if (!w) {
      w = { key: op.key, account: op.account, amount: op.amount, invokeTime: op.invokeTime, ackTime: Infinity, acked: false, failed: false, unknown: false, ids: new Set(), attempts: 0 };
      writes.set(op.key, w);
    }
    if (w.account !== op.account || w.amount !== op.amount) throw new Error(`key ${op.key} used for two different writes`);
    w.attempts++;
    w.invokeTime = Math.min(w.invokeTime, op.invokeTime);
    if (op.type === 'ok') {
      w.acked = true;
      w.ackTime = Math.min(w.ackTime, op.completeTime);
      if (op.value) w.ids.add(op.value);
    } else if (op.type === 'fail') w.failed = true;
    else w.unknown = true;
  }
  return [...writes.values()];
}

const isPowerOfTwo = (n) => Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n));

/**
 * Checks a history against the final state. Returns {valid, counts, violations}; violations are
 * {kind, account, key?, read?, detail}.
 */
export function check(history, finalState) {
  const ops = pairOperations(history);
  const writes = logicalWrites(ops);
  const violations = [];
  const rowsByAccount = new Map();
  for (const row of finalState.transactions) {
    if (!rowsByAccount.has(row.account)) rowsByAccount.set(row.account, []);
    rowsByAccount.get(row.account).push(row);
  }

  // Writes against the final state.
  const present = new Map(); // key -> number of rows
  for (const w of writes) {
    const rows = (rowsByAccount.get(w.account) ?? []).filter((r) => r.amount === w.amount);
    present.set(w.key, rows.length);
    if (w.acked && rows.length === 0) violations.push({ kind: 'lost', account: w.account, key: w.key, detail: `acknowledged at ${w.ackTime}, amount ${w.amount}, not in the final state` });
    if (rows.length > 1) violations.push({ kind: 'double', account: w.account, key: w.key, detail: `amount ${w.amount} is in the final state ${rows.length} times (${w.attempts} attempts under its key)` });
    if (w.failed && !w.acked && rows.length > 0) violations.push({ kind: 'failed-present', account: w.account, key: w.key, detail: `answered as failed, yet amount ${w.amount} is in the final state` });
    for (const id of w.ids) {
      if (rows.length > 0 && !rows.some((r) => r.id === id)) violations.push({ kind: 'wrong-id', account: w.account, key: w.key, detail: `acknowledged as ${id}, the final state has ${rows.map((r) => r.id).join(', ')}` });
    }
  }
  // Rows of the history's accounts that no write of the history explains (e.g. a write under a
  // key whose invoke was never recorded): a double of nothing, reported so they are not missed.
  const amountsByAccount = new Map();
  for (const w of writes) {
    if (!amountsByAccount.has(w.account)) amountsByAccount.set(w.account, new Set());
    amountsByAccount.get(w.account).add(w.amount);
  }
  for (const [account, rows] of rowsByAccount) {
    for (const r of rows) {
      if (!amountsByAccount.get(account)?.has(r.amount)) violations.push({ kind: 'unexplained-row', account, detail: `row ${r.id} (amount ${r.amount}) matches no write of the history` });
    }
  }

  // Reads.
  const readsByAccount = new Map();
  for (const op of ops.filter((o) => o.f === 'read' && o.type === 'ok')) {
    if (!readsByAccount.has(op.account)) readsByAccount.set(op.account, []);
    readsByAccount.get(op.account).push(op);
  }
  const writesByAccount = new Map();
  for (const w of writes) {
    if (!writesByAccount.has(w.account)) writesByAccount.set(w.account, []);
    writesByAccount.get(w.account).push(w);
  }
  let exactAccounts = 0;
  for (const [account, reads] of readsByAccount) {
    const ws = writesByAccount.get(account) ?? [];
    const amounts = ws.map((w) => w.amount);
    const exact = amounts.every(isPowerOfTwo) && new Set(amounts).size === amounts.length;
    if (exact) exactAccounts++;
    checkReads(account, reads, ws, present, exact, violations);
  }

  const counts = {
    events: history.length,
    writes: writes.length,
    writeAttempts: ops.filter((o) => o.f === 'write').length,
    writesAcked: writes.filter((w) => w.acked).length,
    writesFailed: writes.filter((w) => w.failed && !w.acked).length,
    writesUnknown: writes.filter((w) => !w.acked && !w.failed).length,
    writesUnknownPresent: writes.filter((w) => !w.acked && !w.failed && present.get(w.key) > 0).length,
    reads: ops.filter((o) => o.f === 'read').length,
    readsOk: ops.filter((o) => o.f === 'read' && o.type === 'ok').length,
    readsFailed: ops.filter((o) => o.f === 'read' && o.type !== 'ok').length,
    accountsRead: readsByAccount.size,
    accountsCheckedExactly: exactAccounts,
  };
  const byKind = {};
  for (const v of violations) byKind[v.kind] = (byKind[v.kind] ?? 0) + 1;
  return { valid: violations.length === 0, counts, violationsByKind: byKind, violations };
}

function checkReads(account, reads, ws, present, exact, violations) {
  const sorted = [...reads].sort((a, b) => a.invokeTime - b.invokeTime);
  const byAmount = new Map(ws.map((w) => [w.amount, w]));
  // Reads completed so far, by completion time, for the monotonicity check.
  const done = [...reads].sort((a, b) => a.completeTime - b.completeTime);
  const seen = new Map(); // read -> its set (exact) or value (bounds)
  const describe = (r) => `read by process ${r.process} [${r.invokeTime}, ${r.completeTime}] = ${r.value}`;
  for (const r of sorted) {
    const value = Number(r.value);
    const required = ws.filter((w) => w.acked && w.ackTime < r.invokeTime);
    const possible = ws.filter((w) => w.invokeTime < r.completeTime && !(w.failed && !w.acked) && present.get(w.key) > 0);
    const earlier = done.filter((e) => e.completeTime < r.invokeTime && seen.has(e));
    if (exact) {
      if (!Number.isSafeInteger(value) || value < 0) {
        violations.push({ kind: 'impossible-value', account, read: describe(r), detail: 'not a sum of the writes' });
        continue;
      }
      const set = new Set();
      let rest = value;
      for (let bit = 1; rest > 0; bit *= 2) {
        if (rest % 2 === 1) set.add(bit);
        rest = Math.floor(rest / 2);
        if (bit > 2 ** 52) break;
      }
      const unknownBits = [...set].filter((a) => !byAmount.has(a));
      if (unknownBits.length) {
        violations.push({ kind: 'impossible-value', account, read: describe(r), detail: `includes amounts no write has: ${unknownBits.join(', ')}` });
        continue;
      }
      const missing = required.filter((w) => !set.has(w.amount));
      if (missing.length) violations.push({ kind: 'stale-read', account, read: describe(r), detail: `misses ${missing.map((w) => `${w.amount} (key ${w.key}, acknowledged at ${w.ackTime})`).join(', ')}` });
      const possibleAmounts = new Set(possible.map((w) => w.amount));
      const extra = [...set].filter((a) => !possibleAmounts.has(a));
      if (extra.length) violations.push({ kind: 'future-read', account, read: describe(r), detail: `includes ${extra.map((a) => `${a} (key ${byAmount.get(a).key}, invoked at ${byAmount.get(a).invokeTime})`).join(', ')}, not possible before it ended` });
      for (const e of earlier) {
        const lost = [...seen.get(e)].filter((a) => !set.has(a));
        if (lost.length) {
          violations.push({ kind: 'non-monotonic', account, read: describe(r), detail: `an earlier ${describe(e)} saw ${lost.join(', ')}, this one does not` });
          break;
        }
      }
      seen.set(r, set);
    } else {
      const low = required.reduce((s, w) => s + w.amount, 0);
      const high = possible.reduce((s, w) => s + w.amount, 0);
      if (value < low) violations.push({ kind: 'stale-read', account, read: describe(r), detail: `below ${low}, the sum of the writes acknowledged before it began` });
      if (value > high) violations.push({ kind: 'future-read', account, read: describe(r), detail: `above ${high}, the sum of the writes begun before it ended` });
      const floor = Math.max(-Infinity, ...earlier.map((e) => seen.get(e)));
      if (value < floor) violations.push({ kind: 'non-monotonic', account, read: describe(r), detail: `below ${floor}, a value read by a read completed before it began` });
      seen.set(r, value);
    }
  }
}

/**
 * Per fault window [start, end): counts of the operations invoked in it, writesBackMs (from the
 * start to the acknowledgement of the first write invoked at least `settleMs` after it: a write
 * already past the cut when it came may still succeed, and says nothing) and writeGapMs (the
 * longest span of the window without any write acknowledged: the unavailability a client saw).
 */
export function faultSummary(history, faults, { settleMs = 1000 } = {}) {
  const ops = pairOperations(history);
  const acks = ops.filter((o) => o.f === 'write' && o.type === 'ok').map((o) => o.completeTime).sort((a, b) => a - b);
  return faults.map((fault) => {
    const inWindow = (o) => o.invokeTime >= fault.start && o.invokeTime < fault.end;
    const w = ops.filter((o) => o.f === 'write' && inWindow(o));
    const r = ops.filter((o) => o.f === 'read' && inWindow(o));
    const back = ops
      .filter((o) => o.f === 'write' && o.type === 'ok' && o.invokeTime >= fault.start + settleMs)
      .reduce((first, o) => Math.min(first, o.completeTime), Infinity);
    const points = [fault.start, ...acks.filter((t) => t > fault.start && t < fault.end), fault.end];
    let gap = 0;
    for (let i = 1; i < points.length; i++) gap = Math.max(gap, points[i] - points[i - 1]);
    return {
      fault: fault.name,
      writesOk: w.filter((o) => o.type === 'ok').length,
      writesNotOk: w.filter((o) => o.type !== 'ok').length,
      readsOk: r.filter((o) => o.type === 'ok').length,
      readsNotOk: r.filter((o) => o.type !== 'ok').length,
      writeGapMs: Math.round(gap),
      writesBackMs: back === Infinity ? null : Math.round(back - fault.start),
    };
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [historyFile, finalFile] = process.argv.slice(2);
  if (!historyFile || !finalFile) {
    console.error('usage: node tests/partitions/checker.mjs HISTORY.jsonl FINAL.json');
    process.exit(2);
  }
  const result = check(parseHistory(readFileSync(historyFile, 'utf8')), JSON.parse(readFileSync(finalFile, 'utf8')));
  console.log(JSON.stringify({ ...result, violations: result.violations.slice(0, 50) }, null, 2));
  process.exit(result.valid ? 0 : 1);
}
