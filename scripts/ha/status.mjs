// `bash scripts/ha/stores.sh status`: prints one JSON object describing every component of the
// HA topology as it is NOW:
//
//   {"components":[{"name":"pg1","kind":"postgres","role":"primary","pid":123,"port":29432}, ...]}
//
// Nothing comes from a file the stores wrote at start: a pid is the process listening on the
// component's port (ss), a PostgreSQL role is the server's own pg_is_in_recovery(), a Redis
// role and pid are the server's INFO. A component that does not answer has pid and role null,
// so the object stays current through failovers and kills.
//
// More components (the launcher's writers, readers and nginx) join in two ways:
// - a file $HA_STATE_DIR/components/<name>.json holding {"name","kind","port"} (optionally
//   "role"); its pid is looked up on its port like the stores';
// - `status --extra '<JSON array of the same objects>'`, or componentsStatus(settings, extra)
//   from JavaScript.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

/** The stores' settings (ports, names, state dir) as `stores.sh env` resolves them. */
export async function loadSettings(env = process.env) {
  const { stdout } = await run('bash', [join(here, 'stores.sh'), 'env'], { env });
  return Object.fromEntries(
    stdout.trim().split('\n').map((line) => {
      const at = line.indexOf('=');
      return [line.slice(0, at), line.slice(at + 1)];
    }),
  );
}

const ports = (list) => list.trim().split(/\s+/).map(Number);

/** port -> pid of every TCP socket listening now. */
async function listeners() {
  const { stdout } = await run('ss', ['-Hltnp']);
  const byPort = new Map();
  for (const line of stdout.split('\n')) {
    const port = line.match(/\S+:(\d+)\s+\S+\s+users:/);
    const pid = line.match(/pid=(\d+)/);
    if (port && pid && !byPort.has(Number(port[1]))) byPort.set(Number(port[1]), Number(pid[1]));
  }
  return byPort;
}

async function postgresRole(settings, port) {
  try {
    const { stdout } = await run(
      'psql',
      ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-tAc', 'SELECT pg_is_in_recovery()'],
      { env: { ...process.env, PGPASSWORD: settings.HA_PG_SUPERUSER_PASSWORD, PGCONNECT_TIMEOUT: '2' }, timeout: 4000 },
    );
    return { t: 'replica', f: 'primary' }[stdout.trim()] ?? null;
  } catch {
    return null;
  }
}

/**
 * Redis INFO fields of the server (a node or a Sentinel) on `port`, asked as the `monitor`
 * user, which may run INFO, PING and ROLE only ({} when it does not answer).
 */
async function redisInfo(settings, port) {
  try {
    const { stdout } = await run('redis-cli', ['--no-auth-warning', '--user', 'monitor', '-p', String(port), 'INFO'], {
      env: { ...process.env, REDISCLI_AUTH: settings.HA_REDIS_MONITOR_PASSWORD }, timeout: 3000,
    });
    return Object.fromEntries(
      stdout.split('\n').filter((l) => l.includes(':')).map((l) => l.trim().split(':', 2)),
    );
  } catch {
    return {};
  }
}

/** The pid a pid file names, if that process runs (not a zombie); else null. */
async function pidFromFile(file) {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    if (!Number.isInteger(pid) || pid <= 0) return null;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z') ? null : pid;
  } catch {
    return null;
  }
}

async function extraFromFiles(settings) {
  const dir = join(settings.HA_STATE_DIR, 'components');
  let names = [];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    return [];
  }
  const found = await Promise.all(names.map(async (n) => JSON.parse(await readFile(join(dir, n), 'utf8'))));
  // The request path's order (writers, readers, nginx), then whatever else (monitoring).
  const rank = (c) => { const i = KIND_ORDER.indexOf(c.kind); return i < 0 ? KIND_ORDER.length : i; };
  return found.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

const KIND_ORDER = ['writer', 'reader', 'nginx'];

/** Every component with its pid, port and role now; `extra` adds {name, kind, port, role?}. */
export async function componentsStatus(settings, extra = []) {
  const listening = await listeners();
  const pidOn = (port) => listening.get(port) ?? null;
  const pgPorts = ports(settings.HA_PG_PORTS);
  const restPorts = ports(settings.HA_PATRONI_PORTS);
  const redisPorts = ports(settings.HA_REDIS_PORTS);
  const sentinelPorts = ports(settings.HA_SENTINEL_PORTS);

  const etcdPort = Number(settings.HA_ETCD_PORT);
  const components = [{ name: 'etcd', kind: 'etcd', role: null, pid: pidOn(etcdPort), port: etcdPort }];
  const pgRoles = await Promise.all(pgPorts.map((port) => postgresRole(settings, port)));
  pgPorts.forEach((port, i) => {
    components.push({ name: `patroni-pg${i + 1}`, kind: 'patroni', role: null, pid: pidOn(restPorts[i]), port: restPorts[i] });
    components.push({ name: `pg${i + 1}`, kind: 'postgres', role: pgRoles[i], pid: pgRoles[i] && pidOn(port), port });
  });
  const writePort = Number(settings.HA_PG_WRITE_PORT);
  components.push({ name: 'haproxy', kind: 'haproxy', role: null, pid: pidOn(writePort), port: writePort });

  const redis = await Promise.all(redisPorts.map((port) => redisInfo(settings, port)));
  redisPorts.forEach((port, i) => {
    const role = { master: 'primary', slave: 'replica' }[redis[i].role] ?? null;
    components.push({ name: `redis${i + 1}`, kind: 'redis', role, pid: Number(redis[i].process_id) || null, port });
  });
  const sentinels = await Promise.all(sentinelPorts.map((port) => redisInfo(settings, port)));
  sentinelPorts.forEach((port, i) => {
    components.push({ name: `sentinel${i + 1}`, kind: 'sentinel', role: null, pid: Number(sentinels[i].process_id) || null, port });
  });

  for (const c of [...(await extraFromFiles(settings)), ...extra]) {
    const pid = c.pidFile ? await pidFromFile(c.pidFile) : pidOn(Number(c.port));
    components.push({ name: c.name, kind: c.kind, role: c.role ?? null, pid, port: Number(c.port) });
  }
  return { components };
}

/** One object, one component per line: valid JSON that still reads well in a terminal. */
export function formatStatus(status) {
  return `{"components":[\n  ${status.components.map((c) => JSON.stringify(c)).join(',\n  ')}\n]}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--extra');
  const extra = at > 0 ? JSON.parse(process.argv[at + 1] ?? '[]') : [];
  console.log(formatStatus(await componentsStatus(await loadSettings(), extra)));
}
