// The history checker (tests/partitions/checker.mjs) on synthetic histories: a clean one
// passes, and a planted lost write, double, stale read, failed-but-present write, read of the
// future and non-monotonic pair of reads are each caught (alone: no other violation).
//
//   node --test tests/partitions/checker.test.mjs      (instant; no stack needed)

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { check, faultSummary, pairOperations, parseHistory } from './checker.mjs';

const A = 'a0000000-0000-4000-8000-000000000001';
const B = 'b0000000-0000-4000-8000-000000000002';

/** A small builder: w(process, key, account, amount, t0, t1, outcome) and r(process, account, t0, t1, value). */
function history() {
  const events = [];
  const api = {
    events,
    w(process, key, account, amount, t0, t1, type = 'ok', id = `id-${key}`) {
      events.push({ process, type: 'invoke', f: 'write', account, amount, key, time: t0 });
      if (type) events.push({ process, type, f: 'write', account, amount, key, ...(type === 'ok' ? { value: id } : {}), time: t1 });
      return api;
    },
    r(process, account, t0, t1, value, type = 'ok') {
      events.push({ process, type: 'invoke', f: 'read', account, time: t0 });
      events.push({ process, type, f: 'read', account, ...(type === 'ok' ? { value } : {}), time: t1 });
      return api;
    },
  };
  return api;
}

/** The final state: rows [key, account, amount]. */
const final = (...rows) => ({ transactions: rows.map(([key, account, amount]) => ({ account, amount, id: `id-${key}` })) });

/** Events sorted by time, as a recorder writes them (the builder adds them per operation). */
const sorted = (h) => [...h.events].sort((x, y) => x.time - y.time);

function clean() {
  // Process 1 writes 1, 2, 4 to A; process 2 writes 1, 2 to B; process 3 reads concurrently.
  const h = history()
    .w(1, 'k1', A, 1, 0, 10)
    .w(2, 'k2', B, 1, 0, 12)
    .r(3, A, 11, 13, 1)
    .w(1, 'k3', A, 2, 20, 30)
    .r(3, A, 25, 28, 1) // concurrent with k3: may or may not see it
    .r(4, A, 26, 40, 3) // concurrent with k3's end: sees it
    .w(2, 'k4', B, 2, 20, 25, 'info') // unknown outcome, retried under its key:
    .w(2, 'k4', B, 2, 60, 70)
    .r(3, B, 71, 72, 3)
    .w(1, 'k5', A, 4, 41, 50)
    .r(3, A, 51, 52, 7)
    .w(1, 'k6', A, 8, 53, 54, 'fail') // refused: not in the final state
    .r(4, A, 55, 56, 7);
  return { events: sorted(h), state: final(['k1', A, 1], ['k2', B, 1], ['k3', A, 2], ['k4', B, 2], ['k5', A, 4]) };
}

test('a clean history passes, and its counts add up', () => {
  const { events, state } = clean();
  const result = check(events, state);
  assert.deepEqual(result.violations, []);
  assert.equal(result.valid, true);
  assert.equal(result.counts.writes, 6);
  assert.equal(result.counts.writeAttempts, 7);
  assert.equal(result.counts.writesAcked, 5);
  assert.equal(result.counts.writesFailed, 1);
  assert.equal(result.counts.readsOk, 6);
  assert.equal(result.counts.accountsCheckedExactly, 2);
});

test('a planted lost write is caught', () => {
  const { events, state } = clean();
  state.transactions = state.transactions.filter((t) => t.id !== 'id-k3');
  // The reads that saw k3 are then reads of a write that vanished: reported too (future-read).
  const kinds = new Set(check(events, state).violations.map((v) => v.kind));
  assert.ok(kinds.has('lost'), [...kinds].join());
  const lost = check(events, state).violations.filter((v) => v.kind === 'lost');
  assert.deepEqual(lost.map((v) => v.key), ['k3']);
});

test('a planted double (an idempotent retry committed twice) is caught', () => {
  const { events, state } = clean();
  state.transactions.push({ account: B, amount: 2, id: 'id-k4-again' });
  const result = check(events, state);
  assert.deepEqual(result.violations.map((v) => [v.kind, v.key]), [['double', 'k4']]);
});

test('a planted stale read (older than an acknowledged write) is caught', () => {
  const { events, state } = clean();
  // Begins after k5 (4) was acknowledged at 50, yet shows only 1 + 2.
  events.push({ process: 9, type: 'invoke', f: 'read', account: A, time: 51 }, { process: 9, type: 'ok', f: 'read', account: A, value: 3, time: 52 });
  const result = check(events, state);
  assert.deepEqual(result.violations.map((v) => v.kind), ['stale-read']);
  assert.match(result.violations[0].detail, /misses 4 \(key k5/);
});

test('a write answered as failed but present is caught', () => {
  const { events, state } = clean();
  state.transactions.push({ account: A, amount: 8, id: 'id-k6' });
  assert.deepEqual(check(events, state).violations.map((v) => [v.kind, v.key]), [['failed-present', 'k6']]);
});

test('a read of a write not yet invoked, and a read going back in time, are caught', () => {
  const { events, state } = clean();
  // Sees k5 (4, invoked at 41) though it ended at 35.
  events.push({ process: 9, type: 'invoke', f: 'read', account: A, time: 33 }, { process: 9, type: 'ok', f: 'read', account: A, value: 7, time: 35 });
  assert.deepEqual(check(events, state).violations.map((v) => v.kind), ['future-read']);
  const back = clean();
  // Both concurrent with k3; the first saw it, the second (begun after the first ended) not.
  back.events.push(
    { process: 8, type: 'invoke', f: 'read', account: A, time: 21 }, { process: 8, type: 'ok', f: 'read', account: A, value: 3, time: 22 },
    { process: 9, type: 'invoke', f: 'read', account: A, time: 23 }, { process: 9, type: 'ok', f: 'read', account: A, value: 1, time: 24 },
  );
  // (the clean history's read at 25-28, which saw 1, is then behind the first one too)
  const kinds = check(back.events, back.state).violations.map((v) => v.kind);
  assert.ok(kinds.length >= 1 && kinds.every((k) => k === 'non-monotonic'), kinds.join());
});

test('without power-of-two amounts the bounds still catch a stale read and a double', () => {
  const h = history().w(1, 'x1', A, 5, 0, 10).w(1, 'x2', A, 7, 11, 20).r(2, A, 21, 22, 5);
  const state = final(['x1', A, 5], ['x2', A, 7]);
  const result = check(sorted(h), state);
  assert.equal(result.counts.accountsCheckedExactly, 0);
  assert.deepEqual(result.violations.map((v) => v.kind), ['stale-read']);
  state.transactions.push({ account: A, amount: 7, id: 'again' });
  assert.ok(check(sorted(history().w(1, 'x1', A, 5, 0, 10).w(1, 'x2', A, 7, 11, 20).r(2, A, 21, 22, 12)), state).violations.some((v) => v.kind === 'double'));
});

test('JSON lines parse; an invoke never completed counts as unknown; a bad history is refused', () => {
  const text = '{"process":1,"type":"invoke","f":"write","account":"a","amount":1,"key":"k","time":1}\n\n';
  const ops = pairOperations(parseHistory(text));
  assert.equal(ops[0].type, 'info');
  assert.throws(() => parseHistory('{"process":1,'), /history line 1/);
  assert.throws(() => pairOperations([{ process: 1, type: 'ok', f: 'read', time: 1 }]), /nothing invoked/);
});

test('the fault summary measures the time writes were unavailable', () => {
  const h = history().w(1, 'k1', A, 1, 0, 10).w(1, 'k2', A, 2, 100, 105, 'info').w(1, 'k2', A, 2, 110, 400).w(1, 'k3', A, 4, 401, 410);
  const [summary] = faultSummary(sorted(h), [{ name: 'cut', start: 100, end: 500 }], { settleMs: 0 });
  assert.equal(summary.writesNotOk, 1);
  assert.equal(summary.writesOk, 2);
  assert.equal(summary.writesBackMs, 300);
  assert.equal(summary.writeGapMs, 300);
});
