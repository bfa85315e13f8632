// Fault 4: graceful restarts. SIGTERM to the writer, and separately to the reader, while
// clients keep sending through nginx: each process stops accepting, finishes what is in
// flight and exits within SHUTDOWN_TIMEOUT_MS; restarted, it serves again. While the only
// instance is down nginx answers "retry later" (JSON + Retry-After), and nothing else.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  Ledger,
  PORTS,
  SHUTDOWN_TIMEOUT_MS,
  accounts,
  assertAllAlive,
  assertInvariants,
  describeResponse,
  figure,
  formatResponses,
  holdAccountLock,
  isDocumented503,
  log,
  parseHttpResponse,
  postAcked,
  randomUUID,
  reader,
  request,
  sleep,
  sql,
  sqlValue,
  staleReads,
  startLoad,
  startStack,
  stopStack,
  unexpected,
  waitForLockWaiter,
  window503,
  writer,
} from './harness.mjs';

/** A process must be gone this long after SIGTERM (SHUTDOWN_TIMEOUT_MS is 10 s). */
const MAX_EXIT_MS = 12_000;
/** Rows seeded for the streaming list (tens of MB would be slow; this is ~8 MB of JSON). */
const BULK_ROWS = 60_000;

const ledgers = [];
const bulkAccount = randomUUID();

/** Every answer that is not a success must be "retry later": JSON + Retry-After. */
function assertOnlyRetryLater(load, what) {
  assert.deepEqual(unexpected(load.responses), [], `${what}:\n${formatResponses(unexpected(load.responses))}`);
  const stale = staleReads(load);
  assert.deepEqual(stale, [], `${what}: reads older than an acknowledged write:\n${formatResponses(stale)}`);
  const failures = load.responses.filter((r) => !(r.status >= 200 && r.status < 300) && r.cls === 'ok' && r.status !== 404);
  assert.deepEqual(failures, [], formatResponses(failures));
}

/** SIGTERM under load, restart, and the figures of the gap. */
async function restartUnderLoad(service, kinds) {
  const ledger = new Ledger(accounts(5));
  ledgers.push(ledger);
  const load = startLoad({ ledger, workers: 4, readers: 3, readRatio: 0.2, txReadRatio: 0.1, durationMs: 90_000 });
  await sleep(2000);
  const termAt = Date.now() - load.t0;
  const stopped = await service.stop('SIGTERM', 30_000);
  const exitedAt = Date.now() - load.t0;
  log(`${service.name} exited ${stopped.exitMs} ms after SIGTERM (code ${stopped.code})`);
  await service.start();
  const upAt = Date.now() - load.t0;
  await sleep(2000);
  const summary = await load.stop();
  const gap = window503(load.responses, kinds);
  const nonSuccess = load.responses.filter((r) => r.cls !== 'ok');
  const firstSuccessAfter = Math.min(
    ...load.responses.filter((r) => kinds.includes(r.kind) && r.cls === 'ok' && r.sentAt >= termAt && r.at > exitedAt).map((r) => r.at),
  );
  return { ledger, load, stopped, summary, termAt, exitedAt, upAt, gap, nonSuccess, firstSuccessAfter };
}

describe('graceful restarts (SIGTERM)', { timeout: 240_000 }, () => {
  before(async () => {
    await startStack();
    // A long list for GET /transactions: one account with BULK_ROWS transactions of 1.
    await sql(`INSERT INTO accounts (account_id, balance, version) VALUES ('${bulkAccount}', ${BULK_ROWS}, ${BULK_ROWS})`);
    await sql(`INSERT INTO transactions (transaction_id, account_id, amount) SELECT gen_random_uuid(), '${bulkAccount}', 1 FROM generate_series(1, ${BULK_ROWS})`);
  });
  after(() => stopStack());

  test('writer: SIGTERM under load, exit within the shutdown timeout, restart; only "retry later" answers meanwhile', async () => {
    const r = await restartUnderLoad(writer, ['post']);
    figure('writer-term.summary', r.summary);
    figure('writer-term.exit-ms', r.stopped.exitMs);
    figure('writer-term.down-ms (SIGTERM to healthy again)', r.upAt - r.termAt);
    figure('writer-term.retry-later-answers', { ...r.gap, statuses: [...new Set(r.nonSuccess.map((x) => x.status))] });
    figure('writer-term.first-201-after-exit-ms', r.firstSuccessAfter - r.exitedAt);
    assert.equal(r.stopped.code, 0, 'the writer exits cleanly (code 0)');
    assert.ok(r.stopped.exitMs <= MAX_EXIT_MS, `the writer took ${r.stopped.exitMs} ms to exit (max ${MAX_EXIT_MS})`);
    assertOnlyRetryLater(r.load, 'writer restart');
    const notAcked = [...r.ledger.ops.values()].filter((op) => !op.acked);
    assert.equal(notAcked.length, 0, 'every POST was eventually acknowledged (retried with its key)');
  });

  test('writer: a POST in flight at SIGTERM completes with 201 before the writer exits', async () => {
    const ledger = new Ledger(accounts(1));
    ledgers.push(ledger);
    const [account] = ledger.accounts;
    await postAcked(ledger, account, 10);
    // Held for less than the writer's DB_LOCK_TIMEOUT_MS (2 s), which would roll the POST back
    // with a 503 instead of letting it wait.
    const lock = holdAccountLock(account, 1500);
    await lock.locked;
    const op = ledger.newOp(account, 5);
    ledger.markSent(op);
    const inFlight = request('POST', '/transactions', {
      body: `{"account_id":"${account}","amount":5}`,
      headers: { 'idempotency-key': op.key },
    });
    await waitForLockWaiter('writer'); // the POST now waits for the row lock inside PostgreSQL
    const stopping = writer.stop('SIGTERM', 30_000);
    const res = await inFlight;
    const answeredAt = Date.now();
    const stopped = await stopping;
    const exitedAt = Date.now();
    await lock.done;
    figure('writer-term.in-flight-post', { status: res.status, ms: Math.round(res.ms), exitMs: stopped.exitMs });
    assert.equal(res.status, 201, `the in-flight POST: ${describeResponse(res)}`);
    ledger.markAcked(op, res.json, res);
    // (The 201 itself proves it: nginx answers 502 for a request whose writer went away.)
    assert.ok(answeredAt <= exitedAt + 1000, 'the writer exited after answering the in-flight POST');
    assert.ok(stopped.exitMs <= MAX_EXIT_MS, `exit took ${stopped.exitMs} ms`);
    await writer.start();
    const balance = (await request('GET', `/accounts/${account}`)).json?.balance;
    assert.equal(balance, 15, 'the in-flight write is applied and visible');
  });

  test('reader: SIGTERM under load, exit within the shutdown timeout, restart; only "retry later" answers meanwhile', async () => {
    const r = await restartUnderLoad(reader, ['get-account', 'get-transaction']);
    figure('reader-term.summary', r.summary);
    figure('reader-term.exit-ms', r.stopped.exitMs);
    figure('reader-term.down-ms (SIGTERM to healthy again)', r.upAt - r.termAt);
    figure('reader-term.retry-later-answers', { ...r.gap, statuses: [...new Set(r.nonSuccess.map((x) => x.status))] });
    figure('reader-term.first-200-after-exit-ms', r.firstSuccessAfter - r.exitedAt);
    assert.equal(r.stopped.code, 0, 'the reader exits cleanly (code 0)');
    assert.ok(r.stopped.exitMs <= MAX_EXIT_MS, `the reader took ${r.stopped.exitMs} ms to exit (max ${MAX_EXIT_MS})`);
    assertOnlyRetryLater(r.load, 'reader restart');
  });

  test('reader: a GET /transactions being streamed at SIGTERM completes (direct, with a client that reads slowly)', async () => {
    const expected = Number(await sqlValue('SELECT count(*) FROM transactions'));
    // Straight to the reader's port, reading nothing at first: the ~8 MB body cannot fit in
    // the socket buffers, so the response is certainly still being produced at SIGTERM.
    const chunks = [];
    const socket = net.connect({ host: '127.0.0.1', port: PORTS.reader });
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    socket.write(`GET /transactions HTTP/1.1\r\nHost: faults\r\nConnection: close\r\n\r\n`);
    await sleep(500);
    const stopping = reader.stop('SIGTERM', 30_000);
    await sleep(1500);
    const stillServing = reader.alive();
    socket.resume();
    await closed;
    const stopped = await stopping;
    const res = parseHttpResponse(Buffer.concat(chunks));
    let list;
    try {
      list = JSON.parse(res.body.toString('utf8'));
    } catch (error) {
      assert.fail(`the streamed list is not complete JSON (${res.body.length} bytes, status ${res.status}, complete chunking ${res.complete}): ${error.message}`);
    }
    figure('reader-term.in-flight-stream', { bytes: res.body.length, rows: list.length, exitMs: stopped.exitMs, readerWaitedForIt: stillServing });
    assert.ok(stillServing, 'the reader was still serving the stream 1.5 s after SIGTERM (it was really in flight)');
    assert.equal(res.status, 200);
    assert.ok(res.complete, 'the chunked body ended properly');
    assert.ok(Array.isArray(list));
    assert.equal(list.length, expected, 'every row was streamed');
    assert.equal(stopped.code, 0);
    assert.ok(stopped.exitMs <= MAX_EXIT_MS, `exit took ${stopped.exitMs} ms`);
    await reader.start();
  });

  test('reader: a GET /transactions through nginx started just before SIGTERM returns a complete array', async () => {
    const expected = Number(await sqlValue('SELECT count(*) FROM transactions'));
    const started = performance.now();
    const response = await fetch(`http://127.0.0.1:${PORTS.proxy}/transactions`, { signal: AbortSignal.timeout(60_000) });
    const stopping = reader.stop('SIGTERM', 30_000); // headers are in: the body is on its way
    const text = await response.text();
    const ms = performance.now() - started;
    const stopped = await stopping;
    const list = JSON.parse(text);
    figure('reader-term.in-flight-through-nginx', { status: response.status, bytes: text.length, rows: list.length, ms: Math.round(ms), exitMs: stopped.exitMs });
    assert.equal(response.status, 200);
    assert.equal(list.length, expected);
    assert.ok(stopped.exitMs <= MAX_EXIT_MS);
    await reader.start();
  });

  test('nginx answers 503 JSON with Retry-After (as the README documents) while an upstream is down', async () => {
    await reader.stop('SIGTERM');
    try {
      const res = await request('GET', '/ping');
      figure('nginx-upstream-down.status', res.status);
      assert.ok(isDocumented503(res), `GET /ping with the reader down: ${describeResponse(res)}`);
    } finally {
      await reader.start();
    }
  });

  test('invariants after all the restarts', async () => {
    const figures = await assertInvariants(ledgers, { extraTransactions: BULK_ROWS });
    figure('graceful.invariants', figures);
    assert.equal(Number(await sqlValue(`SELECT balance FROM accounts WHERE account_id = '${bulkAccount}'`)), BULK_ROWS);
    await assertAllAlive();
  });
});
