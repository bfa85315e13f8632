// The replicated topology (scripts/ha/topology.sh: the stores, 2 writers, 2 readers, nginx)
// under faults, each under a bounded idempotent write load with concurrent reads through nginx
// (tests/faults/lib/load.mjs). A private copy on its own ports (HA_PORT_BASE 27000, scripts/lib/
// defaults.sh's DEFAULT_HA_TOPOLOGY_TEST_PORT_BASE; nginx on 27080, state in
// .stack/ha-topology-test), started here and stopped at the end even when a test fails. Every measured time is printed as `[ha-figure] name: value` (docs/ha.md quotes them).
//
//   node --test tests/ha/topology.test.mjs      (about 2 minutes)
//
// After each fault, every write the clients never got an answer for is retried under its
// Idempotency-Key, then: every acknowledged write is in the database exactly once, every balance
// equals the sum of its writes, every read through nginx agrees with PostgreSQL, and no read
// during the load showed a balance older than a write acknowledged before the read was sent
// (read-your-writes across clients). "Writes back after" is the time from the fault to the
// answer of the last POST that failed.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { componentsStatus, loadSettings } from '../../scripts/ha/status.mjs';
import { byName, waitFor, withRole } from './lib.mjs';
import { DEFAULTS } from '../lib/defaults.mjs';
import { accountViewKey } from '../lib/redis-keys.mjs';
import { useDatabaseUrl } from '../faults/lib/datastores.mjs';
import { describeResponse, request, useApi } from '../faults/lib/http.mjs';
import { accounts, assertInvariants, postAcked } from '../faults/lib/invariants.mjs';
import { Ledger, formatResponses, startLoad, staleReads, unexpected } from '../faults/lib/load.mjs';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TOPOLOGY = path.join(ROOT, 'scripts/ha/topology.sh');
const STORES = path.join(ROOT, 'scripts/ha/stores.sh');
const STATE = path.join(ROOT, '.stack', 'ha-topology-test');
const SERVICES = path.join(STATE, 'services');
const BASE = Number(process.env.HA_TOPOLOGY_TEST_PORT_BASE ?? DEFAULTS.HA_TOPOLOGY_TEST_PORT_BASE);
// Only what the topology needs: none of the caller's PG* or service settings.
const ENV = {
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  HA_PORT_BASE: String(BASE),
  HA_PROXY_PORT: String(BASE + 80),
  HA_STATE_DIR: STATE,
  HA_BUILD: 'no',
  HA_MONITORING: 'no',
  LOG_FORMAT: 'text',
  ...(process.env.CARGO_TARGET_DIR ? { CARGO_TARGET_DIR: process.env.CARGO_TARGET_DIR } : {}),
};
let settings;
// Every load's ledger: the invariants are checked over all of them (the database keeps the
// earlier tests' writes, which must still be there exactly once).
const ledgers = [];

function figure(name, value) {
  console.log(`[ha-figure] ${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
}
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function topology(command, timeoutMs = 300_000) {
  return run('bash', [TOPOLOGY, command], { env: ENV, timeout: timeoutMs, maxBuffer: 1 << 22 });
}

const status = async () => (await componentsStatus(settings)).components;
/** The stores whole again: a PostgreSQL primary with a synchronous standby, a Redis master with a replica. */
async function waitStoresWhole(label, timeoutMs = 90_000) {
  const [, ms] = await waitFor(`${label}: the stores whole again`, timeoutMs, async () => {
    const c = await status();
    const [replica] = withRole(c, 'postgres', 'replica');
    if (withRole(c, 'postgres', 'primary').length !== 1 || !replica) return false;
    if (withRole(c, 'redis', 'primary').length !== 1 || withRole(c, 'redis', 'replica').length !== 2) return false;
    const rest = byName(c, `patroni-${replica.name}`).port;
    return (await fetch(`http://127.0.0.1:${rest}/sync`, { signal: AbortSignal.timeout(1000) })).ok;
  }, 500);
  return ms;
}

/** The pid of a launcher instance (writer, writer-2, reader, ...) from its supervisor's file. */
const instancePid = (name) => Number(readFileSync(path.join(SERVICES, `${name}.pid`), 'utf8').trim());

/**
 * Runs a load (4 writing clients, 2 reading clients, 24 accounts), applies `fault` after 2 s,
 * keeps the load going `afterMs` more, stops it, retries every unanswered write under its key,
 * and checks the invariants. Returns { load, faultAt, summary, writesBackMs, failed }.
 */
async function underLoad(label, fault, { afterMs }) {
  const ledger = new Ledger(accounts(24));
  ledgers.push(ledger);
  const load = startLoad({ ledger, workers: 4, readers: 2, durationMs: 120_000, thinkMs: 10, retryForMs: 40_000 });
  await sleep(2000);
  const faultAt = Date.now() - load.t0;
  const faultResult = await fault();
  await sleep(afterMs);
  const summary = await load.stop();
  await retryUnanswered(ledger);
  const failed = load.responses.filter((r) => r.cls !== 'ok' && r.at >= faultAt);
  const failedPosts = failed.filter((r) => r.kind === 'post');
  const writesBackMs = failedPosts.length ? Math.max(...failedPosts.map((r) => r.at)) - faultAt : 0;
  figure(`${label}: load`, summary.byKind);
  figure(`${label}: writes back after`, seconds(writesBackMs));
  figure(`${label}: failed answers after the fault (all retried)`, { posts: failedPosts.length, reads: failed.length - failedPosts.length });

  assert.deepEqual(unexpected(load.responses).map((r) => r.status), [], `${label}: answers neither correct nor a documented 503:\n${formatResponses(unexpected(load.responses))}`);
  const stale = staleReads(load);
  assert.equal(stale.length, 0, `${label}: reads older than an acknowledged write:\n${formatResponses(stale)}`);
  const invariants = await assertInvariants(ledgers, { convergeMs: 20_000, checkList: false });
  figure(`${label}: invariants`, invariants);
  assert.ok(summary.byKind.post?.cls.ok > 0 && invariants.acked > 0, `${label}: writes were acknowledged`);
  return { load, faultAt, faultResult, summary, writesBackMs, failed };
}

/** Every write without an answer, retried under its Idempotency-Key until acknowledged (bounded). */
async function retryUnanswered(ledger) {
  for (const op of [...ledger.ops.values()].filter((o) => !o.acked)) {
    const giveUpAt = Date.now() + 30_000;
    for (;;) {
      const res = await request('POST', '/transactions', {
        body: `{"account_id":"${op.account}","amount":${op.amount}}`,
        headers: { 'idempotency-key': op.key },
      });
      if (res.status === 201) {
        ledger.markAcked(op, res.json, res);
        break;
      }
      assert.ok(Date.now() < giveUpAt, `retry of ${op.key} not acknowledged within 30 s: ${describeResponse(res)}`);
      await sleep(500);
    }
  }
}

/**
 * After a Redis failover: writes one transaction at a time to a probe account (retried under
 * its key) until the promoted replica on `port` holds that account's view at the version of the
 * last acknowledged write, i.e. the writers publish to the new master. Returns when (Date.now()).
 */
async function viewsOnNewMaster(port, since, timeoutMs = 15_000) {
  const probe = new Ledger(accounts(1));
  ledgers.push(probe);
  const [account] = probe.accounts;
  for (let n = 1; ; n++) {
    await postAcked(probe, account, 1, { timeoutMs: 10_000 });
    const cli = (...args) => redisAdmin(port, ...args);
    const key = await accountViewKey((name) => cli('GET', name), account).catch(() => '');
    const stdout = key ? await cli('HGET', key, 'version').catch(() => '') : '';
    if (Number(stdout.trim()) >= n) return Date.now();
    assert.ok(Date.now() - since < timeoutMs, `no view of account ${account} at version ${n} on the promoted replica within ${timeoutMs} ms`);
    await sleep(100);
  }
}

before(async () => {
  useApi(`http://127.0.0.1:${ENV.HA_PROXY_PORT}`);
  await topology('stop', 120_000).catch(() => {});
  await run('bash', [STORES, 'clean'], { env: ENV, timeout: 120_000 });
  rmSync(STATE, { recursive: true, force: true });
  const start = Date.now();
  await topology('start');
  figure('topology start (fresh stores)', seconds(Date.now() - start));
  // After the start: the passwords are generated by the first start of a state folder.
  settings = await loadSettings({ ...ENV });
  useDatabaseUrl(settings.HA_DATABASE_URL);
});

/** psql as `user` through the write port; resolves to its output, or `refused: <error>`. */
function psqlAs(user, query) {
  const password = {
    postgres: settings.HA_PG_SUPERUSER_PASSWORD,
    ledger_owner: settings.HA_DB_OWNER_PASSWORD,
    ledger_writer: settings.HA_DB_WRITER_PASSWORD,
    ledger_reader: settings.HA_DB_READER_PASSWORD,
  }[user];
  return run('psql', ['-h', '127.0.0.1', '-p', settings.HA_PG_WRITE_PORT, '-U', user, '-d', settings.HA_DB_NAME, '-v', 'ON_ERROR_STOP=1', '-qtAc', query], {
    env: { PATH: process.env.PATH, PGPASSWORD: password, PGCONNECT_TIMEOUT: '2' }, timeout: 5000,
  }).then((r) => r.stdout.trim(), (e) => `refused: ${e.stderr}`);
}

/** redis-cli as the admin user on `port`; resolves to its output. */
const redisAdmin = (port, ...args) => run('redis-cli', ['--no-auth-warning', '--user', 'admin', '-p', String(port), ...args], {
  env: { PATH: process.env.PATH, REDISCLI_AUTH: settings.HA_REDIS_ADMIN_PASSWORD }, timeout: 5000,
}).then((r) => r.stdout);

after(async () => {
  await topology('stop', 180_000).catch((error) => console.error('topology stop failed:', error.message));
});

test('ha:status lists every component with its pid, port and role', async () => {
  const components = await status();
  const count = (kind) => components.filter((c) => c.kind === kind).length;
  const KINDS = ['postgres', 'redis', 'sentinel', 'etcd', 'patroni', 'haproxy', 'writer', 'reader', 'nginx'];
  assert.deepEqual(components.filter((c) => !KINDS.includes(c.kind)).map((c) => c.name), [], 'every kind is one of the documented set');
  for (const [kind, n] of Object.entries({ postgres: 2, patroni: 2, redis: 3, sentinel: 3, etcd: 1, haproxy: 1, writer: 2, reader: 2, nginx: 1 })) {
    assert.equal(count(kind), n, `${n} ${kind}`);
  }
  assert.equal(withRole(components, 'postgres', 'primary').length, 1);
  assert.equal(withRole(components, 'redis', 'primary').length, 1);
  for (const c of components) {
    assert.ok(Number.isInteger(c.pid) && c.pid > 0, `${c.name} has a pid`);
    assert.doesNotThrow(() => process.kill(c.pid, 0), `${c.name}'s pid ${c.pid} is alive`);
  }
  assert.equal(byName(components, 'writer-2').pid, instancePid('writer-2'), 'a service\'s pid is the instance the launcher runs');
  const res = await request('GET', '/ping');
  assert.equal(res.status, 200, `GET /ping through nginx: ${describeResponse(res)}`);
});

test('each kind of service logs in to the Redis master as its own user, none as the default one', async () => {
  // A write and a read through nginx, so that both kinds hold a link to the master.
  // (A ledger of its own: the invariants at the end count this write too.)
  const probe = new Ledger(accounts(1));
  ledgers.push(probe);
  const [account] = probe.accounts;
  await postAcked(probe, account, 5, { timeoutMs: 10_000 });
  const read = await request('GET', `/accounts/${account}`);
  assert.equal(read.status, 200, describeResponse(read));
  const [master] = withRole(await status(), 'redis', 'primary');
  const users = await waitFor('writer and reader connections on the master', 10_000, async () => {
    const list = await redisAdmin(master.port, 'CLIENT', 'LIST');
    const names = new Set([...list.matchAll(/ user=(\S+)/g)].map((m) => m[1]));
    return names.has('writer') && names.has('reader') ? names : undefined;
  });
  assert.ok(!users[0].has('default'), `no connection as the default user: ${[...users[0]].join(', ')}`);
});

test('each kind of service runs as its own PostgreSQL role, which may do only what that service does', async () => {
  // A read of an account nobody wrote is a cache miss: the reader asks PostgreSQL.
  const missing = await request('GET', '/accounts/0b7e0a3c-5d47-4a8e-9f61-2f3c4d5e6a7b');
  assert.equal(missing.status, 404, describeResponse(missing));
  const [sessions] = await waitFor('writer and reader sessions', 10_000, async () => {
    const rows = await psqlAs('postgres', "SELECT DISTINCT application_name || ' ' || usename FROM pg_stat_activity WHERE datname = current_database() AND application_name IN ('writer', 'reader') ORDER BY 1");
    return rows.includes('reader ') && rows.includes('writer ') ? rows : undefined;
  });
  assert.equal(sessions, 'reader ledger_reader\nwriter ledger_writer', 'the readers as ledger_reader, the writers as ledger_writer');
  assert.equal(await psqlAs('postgres', "SELECT tableowner FROM pg_tables WHERE tablename = 'transactions'"), 'ledger_owner', 'the writers migrated as the owner');
  assert.match(await psqlAs('ledger_reader', "INSERT INTO publish_batches (transaction_ids) VALUES ('{}')"), /permission denied/, 'the reader cannot write');
  assert.match(await psqlAs('ledger_writer', 'DELETE FROM transactions'), /permission denied/, 'the writer cannot delete a transaction');
  assert.match(await psqlAs('ledger_writer', 'CREATE TABLE elsewhere (n int)'), /permission denied/, 'the writer cannot change the schema');
});

test('kill -9 of one writer and then one reader: reads and writes sent after the kill never fail', { timeout: 120_000 }, async () => {
  let writerKilledAt;
  let readerKilledAt;
  const { load, failed } = await underLoad('writer and reader kill -9', async () => {
    const t0 = Date.now();
    process.kill(instancePid('writer-2'), 'SIGKILL');
    writerKilledAt = t0;
    await sleep(3000);
    process.kill(instancePid('reader'), 'SIGKILL');
    readerKilledAt = Date.now();
  }, { afterMs: 4000 });
  // A request already at the killed instance cannot be answered (nginx never resends a POST
  // that may have reached a writer; it answers 503 and the client retries under its key). A
  // request sent after the kill must find the other instance (a refused connection is retried).
  const sentAfter = (r, at) => r.sentAt !== undefined && r.sentAt + load.t0 > at + 50;
  const failedAfterKill = failed.filter((r) => sentAfter(r, r.kind === 'post' ? writerKilledAt : readerKilledAt));
  assert.deepEqual(failedAfterKill.map((r) => `${r.kind} ${r.status}`), [], `requests sent after the kill failed:\n${formatResponses(failedAfterKill)}`);
  assert.equal(failed.filter((r) => r.kind !== 'post').length, 0, 'no read failed: nginx retries a read on the other reader');
  const c = await status();
  await waitFor('the killed instances restarted by their supervisors', 15_000, async () => byName(await status(), 'writer-2').pid && byName(await status(), 'reader').pid);
  assert.ok(byName(c, 'writer').pid, 'the other writer runs');
});

test('kill -9 of the PostgreSQL primary: writes back within 30 s, nothing acknowledged lost or doubled', { timeout: 180_000 }, async () => {
  await waitStoresWhole('before the primary kill');
  const old = withRole(await status(), 'postgres', 'primary')[0];
  const { writesBackMs } = await underLoad('pg primary kill -9', async () => process.kill(old.pid, 'SIGKILL'), { afterMs: 20_000 });
  assert.ok(writesBackMs < 30_000, `writes back after ${writesBackMs} ms`);
  const [now] = withRole(await status(), 'postgres', 'primary');
  figure('pg primary kill -9: primary before / after', `${old.name} / ${now?.name}`);
  const rejoinMs = await waitStoresWhole('after the primary kill');
  figure('pg primary kill -9: old primary back as synchronous standby after the test, +', seconds(rejoinMs));
});

test('a Patroni switchover under load: writes back within 30 s, nothing acknowledged lost or doubled', { timeout: 150_000 }, async () => {
  await waitStoresWhole('before the switchover');
  const old = withRole(await status(), 'postgres', 'primary')[0];
  const candidate = old.name === 'pg1' ? 'pg2' : 'pg1';
  const config = path.join(STATE, old.name, 'patroni.yml');
  const { writesBackMs } = await underLoad('pg switchover', () => run(settings.HA_PATRONICTL, ['-c', config, 'switchover', '--leader', old.name, '--candidate', candidate, '--force'], { timeout: 60_000 }), { afterMs: 8000 });
  assert.ok(writesBackMs < 30_000, `writes back after ${writesBackMs} ms`);
  assert.equal(withRole(await status(), 'postgres', 'primary')[0]?.name, candidate, 'the candidate is the primary');
  await waitStoresWhole('after the switchover');
});

test('kill -9 of the Redis master: writes back within 20 s, no stale read (needs the services to follow Sentinel)', { timeout: 150_000 }, async () => {
  await waitStoresWhole('before the Redis master kill');
  const components = await status();
  const [old] = withRole(components, 'redis', 'primary');
  const replicas = withRole(components, 'redis', 'replica');
  let viewsBackMs;
  let promoted;
  const { writesBackMs } = await underLoad('redis master kill -9', async () => {
    const killedAt = Date.now();
    process.kill(old.pid, 'SIGKILL');
    // The Sentinels wait HA_SENTINEL_DOWN_AFTER_MS (5 s) before they promote one of the two.
    [promoted] = await waitFor('a replica promoted', 20_000, async () => {
      const now = await status();
      return replicas.map((r) => byName(now, r.name)).find((r) => r.role === 'primary');
    }, 100);
    viewsBackMs = (await viewsOnNewMaster(promoted.port, killedAt, 20_000)) - killedAt;
  }, { afterMs: 5_000 });
  figure('redis master kill -9: writes published to the promoted replica after', seconds(viewsBackMs));
  assert.ok(writesBackMs < 20_000, `writes back after ${writesBackMs} ms`);
  assert.ok(viewsBackMs < 20_000, `views current on the new master after ${viewsBackMs} ms`);
  // The old master comes back as the new master's replica (`stores.sh start` restarts what died).
  await run('bash', [STORES, 'start'], { env: ENV, timeout: 180_000 });
  await waitStoresWhole('after the Redis master kill');
});
