// Scale-out behind the one nginx: `--scale writer=2 --scale reader=3`. Every instance must get
// requests (each one's own http_requests_total, read from its metrics port by container
// address, moves), 200 concurrent writes to one account must all count exactly once, and every
// read that follows a write (through nginx, to whichever reader) must reflect it. Scales back
// to one of each at the end.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PORTS, PROMETHEUS, addressOn, compose, containers, postTransaction, randomUUID, request, requestsServed, sleep, waitHealthy } from './stack.mjs';

const SCALE = { writer: 2, reader: 3 };
const CONCURRENT_WRITES = 200;
const SEQUENTIAL_ROUNDS = 60;

const scaleTo = (writers, readers) =>
  compose(['up', '-d', '--no-deps', '--scale', `writer=${writers}`, '--scale', `reader=${readers}`, 'writer', 'reader']);

/** { service: [{ id, address, served }] } for every writer and reader container. */
async function served() {
  const out = {};
  for (const service of Object.keys(SCALE)) {
    out[service] = await Promise.all(
      containers(service).map(async (id) => {
        const address = addressOn(id, 'monitoring');
        return { id, address, served: await requestsServed(address, PORTS[service].metrics) };
      }),
    );
  }
  return out;
}

let start;
before(async () => {
  scaleTo(SCALE.writer, SCALE.reader);
  const seconds = await waitHealthy([...containers('writer'), ...containers('reader')], 120);
  console.log(`scaled to ${SCALE.writer} writers and ${SCALE.reader} readers, healthy after ${seconds.toFixed(1)} s more`);
  start = await served();
});

after(async () => {
  scaleTo(1, 1);
  await waitHealthy(containers(), 120);
});

test(`${SCALE.writer} writer and ${SCALE.reader} reader containers run`, () => {
  assert.equal(start.writer.length, SCALE.writer);
  assert.equal(start.reader.length, SCALE.reader);
});

test(`${CONCURRENT_WRITES} concurrent writes to one account: all 201, the balance is their exact sum, each is readable`, async () => {
  const account = randomUUID();
  const amounts = Array.from({ length: CONCURRENT_WRITES }, (_, i) => i + 1);
  const answers = await Promise.all(amounts.map((amount) => postTransaction(account, amount)));
  const statuses = answers.map((a) => a.status);
  assert.deepEqual(statuses.filter((s) => s !== 201), [], 'writes that did not answer 201');
  const ids = new Set(answers.map((a) => a.json.transaction_id));
  assert.equal(ids.size, CONCURRENT_WRITES, 'transaction ids are not distinct');
  const account_ = await request(`/accounts/${account}`);
  assert.equal(account_.status, 200);
  assert.equal(account_.json.balance, amounts.reduce((a, b) => a + b, 0), 'balance after the concurrent writes');
  for (const answer of answers) {
    const read = await request(`/transactions/${answer.json.transaction_id}`);
    assert.equal(read.status, 200, `GET /transactions/${answer.json.transaction_id}`);
    assert.equal(read.json.amount, answer.json.amount);
  }
});

test(`read-your-writes on every read: ${SEQUENTIAL_ROUNDS} rounds of POST, then GET the transaction and the account at once`, async () => {
  const account = randomUUID();
  let balance = 0;
  for (let round = 1; round <= SEQUENTIAL_ROUNDS; round += 1) {
    const amount = round % 2 ? round : -round;
    const post = await postTransaction(account, amount);
    assert.equal(post.status, 201, `round ${round}: POST`);
    balance += amount;
    const [tx, acct] = [await request(`/transactions/${post.json.transaction_id}`), await request(`/accounts/${account}`)];
    assert.equal(tx.status, 200, `round ${round}: the transaction just written is not readable`);
    assert.equal(acct.status, 200, `round ${round}: GET account`);
    assert.equal(acct.json.balance, balance, `round ${round}: the balance does not reflect the write just made`);
  }
});

test('every writer and every reader instance served requests (its own http_requests_total moved)', async () => {
  const end = await served();
  const lines = [];
  const idle = [];
  for (const service of Object.keys(SCALE)) {
    for (const { id, address, served: count } of end[service]) {
      const was = start[service].find((s) => s.id === id)?.served ?? 0;
      lines.push(`${service} ${id.slice(0, 12)} ${address}: +${count - was} requests`);
      if (!(count > was)) idle.push(`${service} ${id.slice(0, 12)}`);
    }
  }
  console.log(lines.join('\n'));
  assert.deepEqual(idle, [], 'instances that served no request');
});

test('Prometheus finds every writer and reader container (DNS discovery) and scrapes each, up', async () => {
  const expected = {};
  for (const service of Object.keys(SCALE)) {
    expected[service] = containers(service).map((id) => `${addressOn(id, 'monitoring')}:${PORTS[service].metrics}`).sort();
  }
  // Discovery refreshes every 5 s, then a scrape every 5 s.
  const deadline = Date.now() + 30_000;
  let seen;
  for (;;) {
    const response = await fetch(`${PROMETHEUS}/api/v1/targets?state=active`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(response.status, 200);
    const targets = (await response.json()).data.activeTargets;
    seen = Object.fromEntries(Object.keys(SCALE).map((job) => [
      job,
      targets.filter((t) => t.labels.job === job && t.health === 'up').map((t) => t.labels.instance).sort(),
    ]));
    if (JSON.stringify(seen) === JSON.stringify(expected)) break;
    if (Date.now() > deadline) assert.deepEqual(seen, expected, 'targets up in Prometheus, by job');
    await sleep(1000);
  }
  console.log(`Prometheus scrapes ${seen.writer.length} writers and ${seen.reader.length} readers: ${JSON.stringify(seen)}`);
});

