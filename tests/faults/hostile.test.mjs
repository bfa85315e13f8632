// Fault 5: hostile input through the proxy. Idle and slow clients must not keep others from
// being served; oversized headers, bodies and URLs, invalid UTF-8 and malformed requests get a
// 4xx JSON error, never a 5xx; no process crashes.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  LOGS,
  Ledger,
  PORTS,
  accounts,
  assertAllAlive,
  assertInvariants,
  describeResponse,
  figure,
  nginx,
  postAcked,
  randomUUID,
  rawExchange,
  reader,
  request,
  sleep,
  startStack,
  stopStack,
  sql,
  waitFor,
  writer,
} from './harness.mjs';

const ledger = new Ledger(accounts(3));

/** The resident memory of a process, in MiB. */
function rssMiB(pid) {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Math.round(Number(line.split(/\s+/)[1]) / 1024);
}

/** `n` account reads one after the other: their median and slowest, in ms. */
async function timedAccountReads(n) {
  const ms = [];
  for (let i = 0; i < n; i += 1) {
    const res = await request('GET', `/accounts/${ledger.accounts[i % ledger.accounts.length]}`);
    assert.equal(res.status, 200, describeResponse(res));
    ms.push(res.ms);
  }
  ms.sort((a, b) => a - b);
  return { n, medianMs: Math.round(ms[Math.floor(n / 2)]), maxMs: Math.round(ms[n - 1]) };
}
const seen = []; // every hostile answer: { name, status, json }

function openSocket() {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: PORTS.proxy });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

async function timedRequests(n) {
  const ms = [];
  for (let i = 0; i < n; i += 1) {
    const account = ledger.accounts[i % ledger.accounts.length];
    const cases = [
      () => request('GET', '/ping'),
      () => request('GET', `/accounts/${account}`),
      () => request('POST', '/transactions', { body: `{"account_id":"${account}","amount":1}`, headers: { 'idempotency-key': `hostile-${randomUUID()}` } }),
    ];
    const res = await cases[i % cases.length]();
    assert.ok(res.status === 200 || res.status === 201, `a normal request while hostile clients hang on: ${describeResponse(res)}`);
    ms.push(res.ms);
  }
  ms.sort((a, b) => a - b);
  return { n, medianMs: Math.round(ms[Math.floor(ms.length / 2)]), maxMs: Math.round(ms[ms.length - 1]) };
}

/** A hostile answer must be a 4xx with a JSON error body; never a 5xx. */
function assertJson4xx(name, res, statuses) {
  seen.push({ name, status: res.status, error: res.json?.error });
  assert.ok(res.status >= 400 && res.status < 500, `${name}: expected a 4xx, got ${res.status} ${res.text?.slice(0, 200)} ${res.error ?? ''}`);
  if (statuses) assert.ok(statuses.includes(res.status), `${name}: expected one of ${statuses}, got ${res.status} ${res.text?.slice(0, 200)}`);
  assert.ok(typeof res.json?.error === 'string', `${name}: expected a JSON {"error": …} body, got ${res.headers?.['content-type'] ?? res.contentType}: ${res.text?.slice(0, 200)}`);
}

const get = (path, headers = '') => `GET ${path} HTTP/1.1\r\nHost: faults\r\n${headers}Connection: close\r\n\r\n`;
/** A POST with a correct Content-Length for `body` (bytes taken as latin1). */
const post = (path, body, headers = '') =>
  `POST ${path} HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\n${headers}Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\nConnection: close\r\n\r\n${body}`;

const PATH_CASES = [
  ['percent-encoded %FF%FE account id', '/accounts/%FF%FE', [400]],
  ['overlong %C0%AF transaction id', '/transactions/%C0%AF', [400]],
  ['percent-encoded invalid UTF-8 on an unknown path', '/%FF%FF', [404]],
  ['encoded slashes in an id', `/accounts/${randomUUID()}%2F..%2F..`, [400]],
  ['dot segments inside the root (passed on as is)', '/accounts/../transactions/%FF', [400, 404]],
];

const MALFORMED_CASES = [
  ['HTTP/1.1 without Host', 'GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n', [400]],
  ['non-numeric Content-Length', 'POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Length: abc\r\nConnection: close\r\n\r\n', [400]],
  ['negative Content-Length', 'POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Length: -1\r\nConnection: close\r\n\r\n', [400]],
  ['Content-Length beyond 64 bits', 'POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n', [400, 413]],
  ['Content-Length and chunked together', 'POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n', [400]],
  ['bad chunk size', 'POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', [400]],
  ['space in a header name', get('/ping', 'Bad Header: x\r\n'), [400]],
  ['NUL in a header value', get('/ping', 'X-A: a\x00b\r\n'), [400]],
  ['obsolete line folding', get('/ping', 'X-A: a\r\n b\r\n'), [400]],
  ['two Host headers', 'GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n', [400]],
];

const ACCEPTED_CASES = [
  ['absolute-form request target', 'GET http://elsewhere.example/ping HTTP/1.1\r\nHost: faults\r\nConnection: close\r\n\r\n'],
  ['HTTP/1.0 without Host', 'GET /ping HTTP/1.0\r\n\r\n'],
  ['bare LF line ends', 'GET /ping HTTP/1.1\nHost: faults\nConnection: close\n\n'],
];

const REQUEST_LINE_CASES = [
  ['10 KiB path', get(`/${'a'.repeat(10 * 1024)}`), [414, 400]],
  ['64 KiB query string', get(`/ping?${'q=1&'.repeat(16 * 1024)}`), [414, 400]],
  ['garbage request line', 'HELLO THERE\r\n\r\n', [400]],
  ['NUL in the method', 'G\x00T /ping HTTP/1.1\r\nHost: faults\r\n\r\n', [400]],
  ['percent-encoded NUL in the path', get('/accounts/%00'), [400]],
  ['dot segments above the root', get('/accounts/../../etc/passwd'), [400]],
  ['CONNECT', 'CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example:443\r\nConnection: close\r\n\r\n', [400, 405]],
  ['TRACE', get('/ping').replace('GET', 'TRACE'), [405]],
];

const RAW_BYTES_CASES = [
  ['raw 0xFF 0xFE in an account id', get('/accounts/\xff\xfe')],
  ['raw 0xC3 0x28 in a transaction id', get('/transactions/\xc3\x28')],
  ['raw 0xFF on an unknown path', get('/\xff\xff\xff')],
  ['POST to a path with a raw 0xFF', post('/transactions/\xff', '{}')],
];

describe('hostile input through nginx', { timeout: 180_000 }, () => {
  before(async () => {
    await startStack();
    for (const account of ledger.accounts) await postAcked(ledger, account, 100);
  });
  after(() => stopStack());

  test('200 idle connections and 100 stalled bodies do not keep other requests from being served', async () => {
    const baseline = await timedRequests(30);
    const sockets = [];
    try {
      // Connected, sending nothing at all.
      for (let i = 0; i < 200; i += 1) sockets.push(await openSocket());
      // Headers of a POST promising a body that never comes: nginx buffers request bodies
      // (it waits, up to client_body_timeout), so the writer never sees these.
      for (let i = 0; i < 100; i += 1) {
        const socket = await openSocket();
        socket.on('error', () => {});
        socket.write(`POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"acc`);
        sockets.push(socket);
      }
      // A few that dribble header bytes (slowloris).
      const dribble = setInterval(() => {
        for (const socket of sockets.slice(0, 20)) socket.write('X');
      }, 500);
      dribble.unref();
      for (const socket of sockets.slice(0, 20)) socket.write('GET /ping HTTP/1.1\r\nHost: faults\r\nX-Slow: ');
      for (const socket of sockets) socket.on('error', () => {});
      await sleep(500);
      const loaded = await timedRequests(30);
      clearInterval(dribble);
      figure('hostile.idle-clients', { open: sockets.filter((s) => !s.destroyed).length, baseline, withIdleClients: loaded });
      const writerInFlight = await writer.metric('http_requests_in_flight');
      figure('hostile.writer-requests-in-flight-with-stalled-bodies', writerInFlight);
      assert.ok(loaded.maxMs < 5000, `a request took ${loaded.maxMs} ms with idle clients open`);
      assert.equal(writerInFlight, 0, 'stalled request bodies never reach the writer');
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });

  test('oversized headers: 4xx JSON, not 5xx', async () => {
    const big = 'a'.repeat(10 * 1024);
    assertJson4xx('one 10 KiB header (GET)', await rawExchange(get('/ping', `X-Big: ${big}\r\n`)), [400, 431]);
    assertJson4xx('one 10 KiB header (POST)', await rawExchange(post('/transactions', '{}', `X-Big: ${big}\r\n`)), [400, 431]);
    const many = Array.from({ length: 100 }, (_, i) => `X-H${i}: ${'b'.repeat(1000)}\r\n`).join('');
    assertJson4xx('100 headers of 1 KB', await rawExchange(get('/ping', many)), [400, 431]);
    assertJson4xx('20 KiB cookie', await rawExchange(get('/ping', `Cookie: c=${'c'.repeat(20 * 1024)}\r\n`)), [400, 431]);
    // Just under nginx's 8 KiB buffer: it reaches the service, which answers normally.
    const fits = await request('GET', '/ping', { headers: { 'x-fits': 'f'.repeat(7 * 1024) } });
    seen.push({ name: '7 KiB header', status: fits.status });
    assert.equal(fits.status, 200, describeResponse(fits));
    assertJson4xx('300-character Idempotency-Key', await request('POST', '/transactions', {
      body: `{"account_id":"${ledger.accounts[0]}","amount":1}`,
      headers: { 'idempotency-key': 'k'.repeat(300) },
    }), [400]);
  });

  test('1 MB body: 413 JSON (declared, chunked, and to a read path)', async () => {
    const mb = `{"account_id":"${ledger.accounts[0]}","amount":1,"pad":"${'x'.repeat(1024 * 1024)}"}`;
    assertJson4xx('1 MB POST body', await request('POST', '/transactions', { body: mb }), [413]);
    assertJson4xx('1 MB chunked POST body', await rawExchange(
      `POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${Buffer.byteLength(mb).toString(16)}\r\n${mb}\r\n0\r\n\r\n`,
    ), [413]);
    assertJson4xx('Content-Length of 1 MB, body never sent', await rawExchange(
      `POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n`,
    ), [413]);
    assertJson4xx('Expect: 100-continue with 2 MB announced', await rawExchange(
      `POST /transactions HTTP/1.1\r\nHost: faults\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n`,
    ), [413]);
    assertJson4xx('1 MB GET body', await rawExchange(`GET /ping HTTP/1.1\r\nHost: faults\r\nContent-Length: ${mb.length}\r\nConnection: close\r\n\r\n${mb}`), [413]);
  });

  test('odd bytes in the path (percent-encoded): 4xx JSON', async () => {
    for (const [name, path, statuses] of PATH_CASES) {
      assertJson4xx(`GET ${name}`, await rawExchange(get(path)), statuses);
    }
    assertJson4xx('POST body with invalid UTF-8', await rawExchange(post('/transactions', '{"account_id":"\xff\xfe","amount":1}')), [400]);
    assertJson4xx('Idempotency-Key with non-ASCII bytes', await rawExchange(post('/transactions', `{"account_id":"${ledger.accounts[0]}","amount":1}`, 'Idempotency-Key: \xff\xfe\r\n')), [400]);
  });

  test('long URLs below nginx\'s 8 KiB buffer reach the services: 404/400 JSON', async () => {
    assertJson4xx('7 KiB unknown path', await request('GET', `/${'a'.repeat(7 * 1024)}`), [404]);
    assertJson4xx('7 KiB account id', await request('GET', `/accounts/${'a'.repeat(7 * 1024)}`), [400]);
    assertJson4xx('7 KiB POST path', await request('POST', `/${'p'.repeat(7 * 1024)}`, { body: '{}' }), [404]);
    assertJson4xx('7 KiB query string', await request('GET', `/accounts/x?${'q'.repeat(7 * 1024)}`), [400]);
  });

  test('malformed headers and framing: 4xx JSON', async () => {
    for (const [name, payload, statuses] of MALFORMED_CASES) {
      assertJson4xx(name, await rawExchange(payload), statuses);
    }
    // Unusual but valid: served normally.
    for (const [name, payload] of ACCEPTED_CASES) {
      const res = await rawExchange(payload);
      seen.push({ name, status: res.status });
      assert.equal(res.status, 200, `${name}: ${res.status} ${res.text}`);
    }
  });

  test('request-line errors (URI > 8 KiB, garbage, NUL, %00, "/../" above the root, CONNECT, TRACE): 4xx JSON from nginx', async () => {
    // (Until 65fb433 nginx answered all of these with an HTML 500: an error_page to a named
    // location cannot be used before the request line is parsed.)
    for (const [name, payload, statuses] of REQUEST_LINE_CASES) {
      assertJson4xx(name, await rawExchange(payload), statuses);
    }
    // An unknown HTTP version: nginx's 505 is the protocol's answer; it must at least be JSON.
    const res = await rawExchange('GET /ping HTTP/9.9\r\nHost: faults\r\nConnection: close\r\n\r\n');
    seen.push({ name: 'HTTP/9.9', status: res.status });
    assert.ok([400, 505].includes(res.status), `HTTP/9.9: ${res.status}`);
    assert.equal(typeof res.json?.error, 'string', `HTTP/9.9: JSON error body, got ${res.headers['content-type']}: ${res.text}`);
  });

  // nginx refuses such targets itself (the services' HTTP parser would answer an empty 400).
  test('raw (not percent-encoded) non-ASCII bytes in the path get a 4xx JSON', async () => {
    const failures = [];
    for (const [name, payload] of RAW_BYTES_CASES) {
      const res = await rawExchange(payload);
      try {
        assertJson4xx(name, res, [400, 404]);
      } catch {
        failures.push(`${name}: ${res.status} content-type=${res.headers['content-type'] ?? 'none'} body=${JSON.stringify(res.text)}`);
      }
    }
    figure('hostile.known-bug.raw-bytes', failures);
    assert.deepEqual(failures, []);
  });

  test('16 slow unpaged listings: nothing spooled to disk, 503 JSON beyond the cap, account reads stay fast, the reader\'s memory flat', async () => {
    // A listing of ~20 MB: far more than the socket buffers between nginx and a client that
    // stops reading, so nginx would spool the rest to a temporary file if it were allowed to.
    const bulk = randomUUID();
    const rows = 150_000;
    await sql(`INSERT INTO accounts (account_id, balance, version) VALUES ('${bulk}', ${rows}, ${rows})`);
    await sql(`INSERT INTO transactions (transaction_id, account_id, amount)
               SELECT gen_random_uuid(), '${bulk}', 1 FROM generate_series(1, ${rows})`);
    const errorLog = path.join(LOGS, 'nginx.error.log');
    const logStart = fs.existsSync(errorLog) ? fs.statSync(errorLog).size : 0;
    const rssBefore = rssMiB(reader.pid);
    const baseline = await timedAccountReads(30);
    const sockets = [];
    try {
      const statuses = await Promise.all(Array.from({ length: 16 }, async () => {
        const socket = await openSocket();
        sockets.push(socket);
        socket.on('error', () => {});
        socket.write(get('/transactions'));
        // The status line and the first bytes, then the client stops reading.
        const first = await new Promise((resolve) => socket.once('data', resolve));
        socket.pause();
        const text = first.toString('latin1');
        return { status: Number(text.split(' ')[1]), head: text };
      }));
      await sleep(2000); // every buffer on the way fills
      const loaded = await timedAccountReads(30);
      const rssDuring = rssMiB(reader.pid);
      const streaming = statuses.filter((s) => s.status === 200).length;
      const refused = statuses.filter((s) => s.status === 503);
      const logged = fs.existsSync(errorLog) ? fs.readFileSync(errorLog, 'latin1').slice(logStart) : '';
      figure('hostile.slow-listings', {
        streaming, refused: refused.length, baseline, withSlowListings: loaded,
        readerRssMiB: { before: rssBefore, during: rssDuring },
      });
      assert.equal(streaming, 4, 'LIST_MAX_STREAMS (4) listings stream at once');
      assert.equal(refused.length, 12);
      for (const { head } of refused) {
        assert.match(head, /\r\nretry-after: \d+\r\n/i, head);
        assert.match(head, /"error":"too many unpaged transaction listings in progress/, head);
      }
      assert.doesNotMatch(logged, /buffered to a temporary file/, 'nginx spooled a listing to disk');
      assert.ok(loaded.maxMs < 1000, `an account read took ${loaded.maxMs} ms with slow listings open`);
      assert.ok(rssDuring - rssBefore < 30, `the reader grew from ${rssBefore} to ${rssDuring} MiB`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await sql(`DELETE FROM transactions WHERE account_id = '${bulk}'`);
      await sql(`DELETE FROM accounts WHERE account_id = '${bulk}'`);
    }
    // The slow clients gone, their places are free again.
    await waitFor('an unpaged listing is served again', async () => (await request('GET', '/transactions')).status === 200, { timeoutMs: 10_000 });
  });

  test('no service crashed; nothing the clients did changed the ledger behind their back', async () => {
    figure('hostile.answers', seen.map((s) => `${s.status} ${s.name}`));
    assert.ok(nginx.workersAlive(), 'nginx workers alive');
    assert.ok(writer.alive() && reader.alive(), 'writer and reader alive');
    await assertAllAlive();
    // The only transactions are the ledger's and the idle-client test's POSTs (own keys).
    const figures = await assertInvariants(ledger, { extraTransactions: 100 });
    figure('hostile.invariants', figures);
  });
});
