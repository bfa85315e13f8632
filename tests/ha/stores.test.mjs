// The replicated stores (scripts/ha/stores.sh) under faults: a private copy on its own ports
// (HA_PORT_BASE 28000, scripts/lib/defaults.sh's DEFAULT_HA_STORES_TEST_PORT_BASE; state in
// .stack/ha-test), started here and stopped at the end even when a test fails. Every measured
// time is printed as `[ha-figure] name: value` (docs/ha.md quotes them).
//
//   node --test tests/ha/            (about 2 to 3 minutes; nothing else needs to run)
//
// The tests run in order and each leaves the stores whole for the next: a killed node is
// brought back by `stores.sh start`, which restarts only what died.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { componentsStatus, loadSettings } from '../../scripts/ha/status.mjs';
import { byName, waitFor, withRole } from './lib.mjs';
import { DEFAULTS } from '../lib/defaults.mjs';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const STORES = path.join(ROOT, 'scripts/ha/stores.sh');
const STATE = path.join(ROOT, '.stack', 'ha-test');
// Only what the stores need: none of the caller's PG* settings (the script drops them too).
const ENV = {
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  HA_PORT_BASE: process.env.HA_TEST_PORT_BASE ?? DEFAULTS.HA_STORES_TEST_PORT_BASE,
  HA_STATE_DIR: STATE,
};
let settings;

function figure(name, value) {
  console.log(`[ha-figure] ${name}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function stores(command, timeoutMs = 240_000) {
  return run('bash', [STORES, command], { env: ENV, timeout: timeoutMs, maxBuffer: 1 << 20 });
}

async function status() {
  return (await componentsStatus(settings)).components;
}

/** The generated password of each PostgreSQL role the stores make. */
const pgPassword = (user) => ({
  postgres: settings.HA_PG_SUPERUSER_PASSWORD,
  ledger_owner: settings.HA_DB_OWNER_PASSWORD,
  ledger_writer: settings.HA_DB_WRITER_PASSWORD,
  ledger_reader: settings.HA_DB_READER_PASSWORD,
}[user]);

/** Runs SQL through psql as `user` (the schema's owner: the probe table is its own) on `port`. */
async function sql(port, query, { user = 'ledger_owner', db = settings.HA_DB_NAME, password = pgPassword(user) } = {}) {
  const { stdout } = await run(
    'psql',
    ['-h', '127.0.0.1', '-p', String(port), '-U', user, '-d', db, '-v', 'ON_ERROR_STOP=1', '-qtAc', query],
    { env: { PATH: process.env.PATH, PGPASSWORD: password, PGCONNECT_TIMEOUT: '1' }, timeout: 5000 },
  );
  return stdout.trim();
}

/** redis-cli as `user` (null: no AUTH) on a Redis node or a Sentinel; resolves to { stdout }. */
function redisCli(port, user, ...args) {
  const password = {
    admin: settings.HA_REDIS_ADMIN_PASSWORD,
    reader: settings.HA_REDIS_READER_PASSWORD,
    writer: settings.HA_REDIS_WRITER_PASSWORD,
    ledger: settings.HA_SENTINEL_CLIENT_PASSWORD,
  }[user];
  const auth = user ? ['--no-auth-warning', '--user', user] : [];
  return run('redis-cli', [...auth, '-p', String(port), ...args], {
    env: { PATH: process.env.PATH, ...(user ? { REDISCLI_AUTH: password } : {}) }, timeout: 5000,
  });
}

const write = (query) => sql(settings.HA_PG_WRITE_PORT, query);
const read = (query) => sql(settings.HA_PG_READ_PORT, query);

/** What redis-cli printed (its answer or its error), whatever its exit status. */
const redisSays = (port, user, ...args) => redisCli(port, user, ...args).then(
  (r) => r.stdout.trim(),
  (e) => `${e.stdout ?? ''}${e.stderr ?? ''}`.trim(),
);

/** etcdctl as `user` ('name:password', or null: none); resolves to { ok, out }. */
function etcdctl(user, ...args) {
  const env = { PATH: process.env.PATH, ETCDCTL_API: '3', ...(user ? { ETCDCTL_USER: user } : {}) };
  return run('etcdctl', [`--endpoints=http://127.0.0.1:${settings.HA_ETCD_PORT}`, '--command-timeout=3s', ...args], { env, timeout: 10_000 })
    .then((r) => ({ ok: true, out: r.stdout.trim() }), (e) => ({ ok: false, out: `${e.stdout}${e.stderr}`.trim() }));
}

/** The primary PostgreSQL component and its node's Patroni, as status shows them now. */
async function primaryNode() {
  const components = await status();
  const [primary] = withRole(components, 'postgres', 'primary');
  assert.ok(primary, 'a PostgreSQL primary');
  return { primary, patroni: byName(components, `patroni-${primary.name}`) };
}

/**
 * Waits until writes pass the write port and status shows a primary other than `old`;
 * returns the status then and the time (Date.now()) writes were first accepted again.
 */
async function waitForNewPrimary(old, label) {
  await waitFor(`${label}: writes through the write port`, 30_000, async () => {
    await write('INSERT INTO ha_probe (n) VALUES (-1) ON CONFLICT DO NOTHING');
    return true;
  });
  const writesBackAt = Date.now();
  const [components] = await waitFor(`${label}: a new primary in status`, 30_000, async () => {
    const c = await status();
    const [p] = withRole(c, 'postgres', 'primary');
    return p && p.name !== old.name ? c : undefined;
  });
  return { components, writesBackAt };
}

/** Waits until node `name` is a streaming synchronous standby again (Patroni's /sync). */
async function waitForSyncStandby(name, label) {
  const rest = settings.HA_PATRONI_PORTS.split(' ')[Number(name.slice(2)) - 1];
  const [, ms] = await waitFor(`${label}: ${name} back as synchronous standby`, 90_000, async () => {
    const response = await fetch(`http://127.0.0.1:${rest}/sync`);
    const c = await status();
    return response.ok && byName(c, name).role === 'replica';
  }, 250);
  return ms;
}

/** How many times node `name` has run pg_rewind successfully (Patroni's log). */
function rewinds(name) {
  const log = readFileSync(path.join(STATE, 'logs', `patroni-${name}.log`), 'utf8');
  return log.match(/pg_rewind exit code=0/g)?.length ?? 0;
}

before(async () => {
  await stores('clean', 60_000);
  const start = Date.now();
  await stores('start');
  figure('stores start (fresh)', seconds(Date.now() - start));
  // After the start: the passwords are generated by the first start of a state folder.
  settings = await loadSettings({ ...ENV });
  await write('CREATE TABLE IF NOT EXISTS ha_probe (n integer PRIMARY KEY, at timestamptz DEFAULT now())');
});

after(async () => {
  await stores('stop', 120_000).catch((error) => console.error('stores stop failed:', error.message));
});

test('status shows every store with its pid, port and role now', async () => {
  const components = await status();
  const kinds = (kind) => components.filter((c) => c.kind === kind);
  assert.equal(kinds('postgres').length, 2);
  assert.equal(withRole(components, 'postgres', 'primary').length, 1);
  assert.equal(withRole(components, 'postgres', 'replica').length, 1);
  assert.equal(kinds('patroni').length, 2);
  assert.equal(kinds('redis').length, 3);
  assert.equal(withRole(components, 'redis', 'primary').length, 1);
  assert.equal(withRole(components, 'redis', 'replica').length, 2);
  assert.equal(kinds('sentinel').length, 3);
  assert.equal(kinds('etcd').length, 1);
  assert.equal(kinds('haproxy').length, 1);
  for (const c of components) {
    assert.ok(Number.isInteger(c.pid) && c.pid > 0, `${c.name} has a pid`);
    assert.doesNotThrow(() => process.kill(c.pid, 0), `${c.name}'s pid ${c.pid} is alive`);
    assert.ok(Number.isInteger(c.port), `${c.name} has a port`);
  }
  figure('status', components.map((c) => `${c.name}=${c.role ?? '-'}:${c.port}`).join(' '));
});

test('Patroni\'s REST API refuses its write endpoints without its credentials; the health checks stay open', async () => {
  const [rest] = settings.HA_PATRONI_PORTS.split(' ');
  const post = (path, auth) => fetch(`http://127.0.0.1:${rest}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } : {}) },
    body: JSON.stringify({ leader: 'no-such-node' }),
    signal: AbortSignal.timeout(5000),
  });
  for (const path of ['/switchover', '/restart', '/reinitialize']) {
    assert.equal((await post(path)).status, 401, `POST ${path} without credentials`);
    assert.equal((await post(path, `${settings.HA_PATRONI_REST_USER}:wrong`)).status, 401, `POST ${path} with a wrong password`);
  }
  // The right credentials get past the check: the switchover is then refused for its body
  // (no such leader), so nothing changes.
  const allowed = await post('/switchover', `${settings.HA_PATRONI_REST_USER}:${settings.HA_PATRONI_REST_PASSWORD}`);
  assert.notEqual(allowed.status, 401, `POST /switchover with the credentials: ${allowed.status} ${await allowed.text()}`);
  assert.ok(allowed.status >= 400, 'a switchover from a leader that does not exist is refused');
  // GET stays open by Patroni's design: HAProxy's checks read it.
  const health = await fetch(`http://127.0.0.1:${rest}/health`);
  assert.equal(health.status, 200, 'GET /health without credentials');
});

test('etcd refuses every read and write without a user, and Patroni\'s user outside Patroni\'s prefix', async () => {
  const patroni = `${settings.HA_ETCD_USER}:${settings.HA_ETCD_PASSWORD}`;
  const anonymousGet = await etcdctl(null, 'get', '--prefix', '--keys-only', settings.HA_ETCD_PREFIX);
  assert.ok(!anonymousGet.ok && /user name is empty/.test(anonymousGet.out), `get without a user: ${anonymousGet.out}`);
  const anonymousPut = await etcdctl(null, 'put', `${settings.HA_ETCD_PREFIX}probe`, 'x');
  assert.ok(!anonymousPut.ok, `put without a user: ${anonymousPut.out}`);
  const outside = await etcdctl(patroni, 'put', '/elsewhere', 'x');
  assert.ok(!outside.ok && /permission denied/.test(outside.out), `put outside the prefix: ${outside.out}`);
  const own = await etcdctl(patroni, 'get', '--prefix', '--keys-only', settings.HA_ETCD_PREFIX);
  assert.ok(own.ok && own.out.includes(`${settings.HA_ETCD_PREFIX}${settings.HA_PATRONI_SCOPE}/leader`), `Patroni's user reads the cluster's keys: ${own.out}`);
});

test('Redis and the Sentinels refuse the default user; each service user may run only its own commands', async () => {
  const [redisPort] = settings.HA_REDIS_PORTS.split(' ');
  const [sentinelPort] = settings.HA_SENTINEL_PORTS.split(' ');
  const master = (await status()).find((c) => c.kind === 'redis' && c.role === 'primary').port;
  const p = settings.HA_REDIS_KEY_PREFIX;
  assert.match(await redisSays(redisPort, null, 'PING'), /NOAUTH/, 'a Redis node without AUTH');
  assert.match(await redisSays(redisPort, null, 'AUTH', 'default', 'any-password'), /WRONGPASS/, 'a Redis node as the default user');
  assert.match(await redisSays(sentinelPort, null, 'SENTINEL', 'get-master-addr-by-name', settings.HA_REDIS_MASTER_NAME), /NOAUTH/, 'a Sentinel without AUTH');
  assert.match(await redisSays(sentinelPort, null, 'AUTH', 'default', 'any-password'), /WRONGPASS/, 'a Sentinel as the default user');
  // The services' Sentinel user asks where the master is, and nothing else.
  assert.equal((await redisSays(sentinelPort, 'ledger', 'SENTINEL', 'get-master-addr-by-name', settings.HA_REDIS_MASTER_NAME)).split('\n')[1], String(master));
  assert.match(await redisSays(sentinelPort, 'ledger', 'SENTINEL', 'failover', settings.HA_REDIS_MASTER_NAME), /NOPERM/, 'the services\' Sentinel user cannot fail over');
  // The reader fills views (SET of a transaction view is its fill) but writes no stream entry,
  // no key outside the views, and no server command.
  assert.equal(await redisSays(master, 'reader', 'SET', `${p}transaction:acl-probe`, '{}', 'EX', '5'), 'OK');
  assert.match(await redisSays(master, 'reader', 'XADD', `${p}events`, '*', 'type', 'forged'), /NOPERM/, 'the reader cannot XADD');
  assert.match(await redisSays(master, 'reader', 'SET', `${p}events`, 'x'), /NOPERM/, 'the reader cannot SET the stream\'s key');
  assert.match(await redisSays(master, 'reader', 'SET', 'elsewhere', 'x'), /NOPERM/, 'the reader cannot SET outside its prefix');
  assert.match(await redisSays(master, 'writer', 'SET', 'elsewhere', 'x'), /NOPERM/, 'the writer cannot SET outside its prefix');
  for (const user of ['reader', 'writer']) {
    assert.match(await redisSays(master, user, 'FLUSHALL'), /NOPERM/, `${user} cannot FLUSHALL`);
    assert.match(await redisSays(master, user, 'CONFIG', 'SET', 'maxmemory', '1'), /NOPERM/, `${user} cannot CONFIG SET`);
  }
});

test('PostgreSQL: no default password, and the services\' roles reach their database only', async () => {
  const refused = (promise) => promise.then((out) => `accepted: ${out}`, (e) => e.stderr ?? e.message);
  const port = settings.HA_PG_WRITE_PORT;
  assert.match(await refused(sql(port, 'SELECT 1', { user: 'postgres', db: 'postgres', password: 'postgres-local' })), /password authentication failed/, 'the old default superuser password');
  assert.match(await refused(sql(port, 'SELECT 1', { user: 'replicator', db: 'postgres', password: 'replicator-local' })), /no pg_hba.conf entry|password authentication failed/, 'the replication user outside replication');
  for (const user of ['ledger_owner', 'ledger_writer', 'ledger_reader']) {
    assert.equal(await sql(port, 'SELECT current_user', { user }), user, `${user} logs in to ${settings.HA_DB_NAME}`);
    assert.match(await refused(sql(port, 'SELECT 1', { user, db: 'postgres' })), /no pg_hba.conf entry/, `${user} may not connect to another database`);
  }
  assert.equal(await sql(port, "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = 'ledger_writer'"), 'f', 'ledger_writer has no power beyond its grants');
});

test('a write through the write port is readable on the replica through the read port', async () => {
  assert.equal(await read('SELECT pg_is_in_recovery()'), 't', 'the read port leads to a replica');
  assert.equal(await write('SELECT pg_is_in_recovery()'), 'f', 'the write port leads to the primary');
  await write('INSERT INTO ha_probe (n) VALUES (0)');
  // synchronous_commit = on waits for the standby's flush, not its replay: a read right after
  // the commit may still miss the row for a moment (docs/ha.md).
  const [, ms] = await waitFor('row on the replica', 5000, async () => (await read('SELECT count(*) FROM ha_probe WHERE n = 0')) === '1', 10);
  figure('write visible on the read port after', `${ms} ms`);
});

/**
 * Writes rows `from`..500 one commit each through the write port, through one psql session,
 * calling `onAck(n)` as each is acknowledged; resolves when psql ends (done or connection lost).
 */
function writeRows(from, onAck) {
  return new Promise((resolve) => {
    const psql = spawn('stdbuf', ['-oL', 'psql', '-h', '127.0.0.1', '-p', String(settings.HA_PG_WRITE_PORT),
      '-U', 'ledger_owner', '-d', settings.HA_DB_NAME, '-qtA', '-v', 'ON_ERROR_STOP=1'],
    { env: { PATH: process.env.PATH, PGPASSWORD: settings.HA_DB_OWNER_PASSWORD, PGCONNECT_TIMEOUT: '1' } });
    let pending = '';
    psql.stdout.on('data', (chunk) => {
      const lines = (pending + chunk).split('\n');
      pending = lines.pop();
      for (const line of lines) if (/^\d+$/.test(line)) onAck(Number(line));
    });
    psql.stderr.resume();
    psql.stdin.on('error', () => {});
    for (let n = from; n <= 500; n++) {
      psql.stdin.write(`INSERT INTO ha_probe (n) VALUES (${n}) ON CONFLICT (n) DO NOTHING RETURNING n;\n`);
    }
    psql.stdin.end();
    psql.on('close', resolve);
  });
}

test('kill -9 of the PostgreSQL primary: writes back within 30 s, no acknowledged row lost, the old primary rejoins', { timeout: 150_000 }, async () => {
  await write('DELETE FROM ha_probe WHERE n > 0');
  const { primary: old } = await primaryNode();
  const acked = new Set();
  const rewindsBefore = rewinds(old.name);
  let killedAt = 0;
  await writeRows(1, (n) => {
    acked.add(n);
    if (acked.size === 150 && !killedAt) {
      process.kill(old.pid, 'SIGKILL');
      killedAt = Date.now();
    }
  });
  assert.ok(killedAt, 'the primary was killed mid-way');
  const ackedBeforeKill = acked.size;
  const { components, writesBackAt } = await waitForNewPrimary(old, 'postmaster killed');
  figure('pg primary kill -9: writes back after', seconds(writesBackAt - killedAt));
  assert.ok(writesBackAt - killedAt < 30_000);
  const [newPrimary] = withRole(components, 'postgres', 'primary');
  assert.notEqual(newPrimary.name, old.name);

  const present = (await write('SELECT string_agg(n::text, \',\') FROM ha_probe WHERE n > 0')).split(',').filter(Boolean).map(Number);
  const presentSet = new Set(present);
  const lost = [...acked].filter((n) => !presentSet.has(n));
  figure('sync replication: rows acknowledged / present on the new primary', `${ackedBeforeKill} / ${present.length}`);
  assert.deepEqual(lost, [], 'every acknowledged row is on the new primary');
  // At most the one commit in flight when the primary died may be there without an answer.
  assert.ok(present.length - ackedBeforeKill <= 1, `at most one unacknowledged row present (${present.length - ackedBeforeKill})`);

  // The rest of the 500, retried under the same keys, as a client would.
  await writeRows(Math.max(...acked) + 1, (n) => acked.add(n));
  assert.equal(await write('SELECT count(*) FROM ha_probe WHERE n > 0'), '500');

  await waitForSyncStandby(old.name, 'postmaster killed');
  figure('pg primary kill -9: old primary back as synchronous standby after', seconds(Date.now() - killedAt));
  figure('pg primary kill -9: old primary needed pg_rewind', rewinds(old.name) > rewindsBefore);
  assert.equal(await sql(old.port, 'SELECT count(*) FROM ha_probe WHERE n > 0', { user: 'postgres' }), '500', 'the rejoined node has every row');
});

test('kill -9 of the whole primary node (Patroni and PostgreSQL): writes back within 30 s; `start` brings it back as replica', { timeout: 150_000 }, async () => {
  const { primary: old, patroni } = await primaryNode();
  const rewindsBefore = rewinds(old.name);
  const killedAt = Date.now();
  process.kill(patroni.pid, 'SIGKILL');
  process.kill(old.pid, 'SIGKILL');
  const { components, writesBackAt } = await waitForNewPrimary(old, 'node killed');
  const writesBack = writesBackAt - killedAt;
  figure('pg node kill -9: writes back after', seconds(writesBack));
  assert.ok(writesBack < 30_000);
  assert.equal(byName(components, old.name).role, null, 'the dead node has no role');

  const restartAt = Date.now();
  await stores('start');
  await waitForSyncStandby(old.name, 'node killed');
  figure('pg node kill -9: `stores.sh start` to synchronous standby', seconds(Date.now() - restartAt));
  figure('pg node kill -9: old primary needed pg_rewind', rewinds(old.name) > rewindsBefore);
});

test('a Patroni switchover hands the primary over in seconds', { timeout: 90_000 }, async () => {
  const { primary: old } = await primaryNode();
  const candidate = old.name === 'pg1' ? 'pg2' : 'pg1';
  const config = path.join(STATE, old.name, 'patroni.yml');
  const start = Date.now();
  await run(settings.HA_PATRONICTL, ['-c', config, 'switchover', '--leader', old.name, '--candidate', candidate, '--force'], { timeout: 60_000 });
  figure('pg switchover: patronictl returned after', seconds(Date.now() - start));
  const { writesBackAt } = await waitForNewPrimary(old, 'switchover');
  const done = writesBackAt - start;
  figure('pg switchover: writes back on the new primary after', seconds(done));
  assert.ok(done < 15_000, `switchover took ${done} ms`);
  await waitForSyncStandby(old.name, 'switchover');
  figure('pg switchover: old primary synchronous standby after', seconds(Date.now() - start));
});

test('a Redis master cut off from its replicas refuses writes (NOREPLICAS), and takes them again once one is back', { timeout: 90_000 }, async () => {
  const before = await status();
  const [master] = withRole(before, 'redis', 'primary');
  const replicas = withRole(before, 'redis', 'replica');
  const probe = `${settings.HA_REDIS_KEY_PREFIX}split-brain-probe`;
  assert.equal(await redisSays(master.port, 'admin', 'SET', probe, '1'), 'OK', 'writes accepted with both replicas');
  // Frozen replicas stop acknowledging the master's stream, as cut-off ones would. Shorter
  // than the Sentinels' down-after: the master is never failed over meanwhile.
  const frozenAt = Date.now();
  for (const r of replicas) process.kill(r.pid, 'SIGSTOP');
  try {
    const [answer, refusedAfter] = await waitFor('the master refusing writes', 4500, async () => {
      const said = await redisSays(master.port, 'admin', 'SET', probe, '2');
      return said.startsWith('NOREPLICAS') ? said : undefined;
    }, 100);
    figure('redis master without its replicas: refuses writes after', seconds(refusedAfter));
    assert.match(answer, /^NOREPLICAS/);
    // A script's write is refused alike (the services publish through Lua).
    assert.match(await redisSays(master.port, 'admin', 'EVAL', "return redis.call('SET', KEYS[1], '3')", '1', probe), /NOREPLICAS/);
    // Reads still answer; what was refused was not written (the last accepted value stays).
    assert.ok(['1', '2'].includes(await redisSays(master.port, 'admin', 'GET', probe)), 'nothing refused was written');
  } finally {
    for (const r of replicas) process.kill(r.pid, 'SIGCONT');
  }
  await waitFor('writes accepted again', 10_000, async () => (await redisSays(master.port, 'admin', 'SET', probe, '4')) === 'OK', 100);
  figure('redis replicas frozen for', seconds(Date.now() - frozenAt));
  await redisSays(master.port, 'admin', 'DEL', probe);
});

test('kill -9 of the Redis master: a Sentinel promotes a replica within 15 s; `start` brings the old one back as replica', { timeout: 90_000 }, async () => {
  const before = await status();
  const [old] = withRole(before, 'redis', 'primary');
  const replicas = withRole(before, 'redis', 'replica');
  const killedAt = Date.now();
  process.kill(old.pid, 'SIGKILL');
  // The Sentinels wait HA_SENTINEL_DOWN_AFTER_MS (5 s) before they fail it over.
  const [promotedName, promoted] = await waitFor('a replica promoted', 15_000, async () => {
    const now = await status();
    return replicas.map((r) => byName(now, r.name)).find((r) => r.role === 'primary')?.name;
  }, 50);
  const replica = byName(before, promotedName);
  figure('redis master kill -9: replica answers as master after', seconds(promoted));
  // What clients go by: every Sentinel names the new master.
  await waitFor('every Sentinel names the new master', 15_000 - (Date.now() - killedAt), async () => {
    const named = await Promise.all(settings.HA_SENTINEL_PORTS.split(' ').map(async (port) => {
      const { stdout } = await redisCli(port, 'admin', 'SENTINEL', 'get-master-addr-by-name', settings.HA_REDIS_MASTER_NAME);
      return stdout.trim().split('\n')[1];
    }));
    return named.every((port) => port === String(replica.port));
  }, 50);
  const failover = Date.now() - killedAt;
  figure('redis master kill -9: all 3 Sentinels name the new master after', seconds(failover));
  assert.ok(failover < 15_000);
  // The new master keeps its other replica, so it takes writes (min-replicas-to-write 1).
  assert.equal(await redisSays(replica.port, 'admin', 'SET', `${settings.HA_REDIS_KEY_PREFIX}after-failover`, '1'), 'OK', 'the new master takes writes');
  await redisSays(replica.port, 'admin', 'DEL', `${settings.HA_REDIS_KEY_PREFIX}after-failover`);

  await stores('start');
  const [, back] = await waitFor('the old master back as replica', 30_000, async () => byName(await status(), old.name).role === 'replica', 250);
  figure('redis old master back as replica after `start`', seconds(back));
});
