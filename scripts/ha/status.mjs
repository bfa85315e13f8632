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
// Every component has `host` (its network namespace on simulated hosts, HA_HOSTS > 0; null on
// the loopback) and `address` (where it listens; nginx's is the address clients use). On
// hosts, each store is asked from its own host's namespace, so a partitioned host still
// reports its view.
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

/** Where things run: host numbers (0 = the loopback), their namespaces and addresses. */
export function hostsOf(settings) {
  const count = Number(settings.HA_HOSTS || 0);
  const ns = (h) => (h === 0 ? null : `${settings.HA_NETNS_PREFIX}h${h}`);
  return {
    count,
    list: count > 0 ? Array.from({ length: count }, (_, i) => i + 1) : [0],
    ofNode: (n) => (count > 0 ? ((n - 1) % count) + 1 : 0),
    ns,
    addr: (h) => (h === 0 ? '127.0.0.1' : `${settings.HA_NET_PREFIX}.0.${h}`),
    edgeNs: count > 0 ? `${settings.HA_NETNS_PREFIX}edge` : null,
    edgeAddr: count > 0 ? `${settings.HA_NET_PREFIX}.1.2` : '127.0.0.1',
  };
}

/** execFile, in host h's namespace when h > 0. */
function runOn(settings, h, cmd, args, options) {
  const ns = hostsOf(settings).ns(h);
  return ns ? run('ip', ['netns', 'exec', ns, cmd, ...args], options) : run(cmd, args, options);
}

/** port -> pid of every TCP socket listening now (in host h's namespace). */
async function listeners(settings, h) {
  const { stdout } = await runOn(settings, h, 'ss', ['-Hltnp']).catch(() => ({ stdout: '' }));
  return parseListeners(stdout);
}

function parseListeners(stdout) {
  const byPort = new Map();
  for (const line of stdout.split('\n')) {
    const port = line.match(/\S+:(\d+)\s+\S+\s+users:/);
    const pid = line.match(/pid=(\d+)/);
    if (port && pid && !byPort.has(Number(port[1]))) byPort.set(Number(port[1]), Number(pid[1]));
  }
  return byPort;
}

async function postgresRole(settings, h, port) {
  try {
    const { stdout } = await runOn(
      settings, h, 'psql',
      ['-h', hostsOf(settings).addr(h), '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-tAc', 'SELECT pg_is_in_recovery()'],
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
async function redisInfo(settings, h, port) {
  try {
    const { stdout } = await runOn(settings, h, 'redis-cli', ['--no-auth-warning', '--user', 'monitor', '-h', hostsOf(settings).addr(h), '-p', String(port), 'INFO'], {
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

/** Every component with its pid, port, role, host and address now; `extra` adds {name, kind, port, role?, host?, address?}. */
export async function componentsStatus(settings, extra = []) {
  const hosts = hostsOf(settings);
  const listening = new Map(await Promise.all(hosts.list.map(async (h) => [h, await listeners(settings, h)])));
  if (hosts.edgeNs) {
    listening.set('edge', await run('ip', ['netns', 'exec', hosts.edgeNs, 'ss', '-Hltnp']).then(({ stdout }) => parseListeners(stdout), () => new Map()));
  }
  const pidOn = (h, port) => listening.get(h)?.get(port) ?? null;
  const place = (h) => ({ host: hosts.ns(h), address: hosts.addr(h) });
  const pgPorts = ports(settings.HA_PG_PORTS);
  const restPorts = ports(settings.HA_PATRONI_PORTS);
  const redisPorts = ports(settings.HA_REDIS_PORTS);
  const sentinelPorts = ports(settings.HA_SENTINEL_PORTS);

  const etcdPort = Number(settings.HA_ETCD_PORT);
  const components = hosts.list.map((h) => ({ name: h === 0 ? 'etcd' : `etcd${h}`, kind: 'etcd', role: null, pid: pidOn(h, etcdPort), port: etcdPort, ...place(h) }));
  const pgRoles = await Promise.all(pgPorts.map((port, i) => postgresRole(settings, hosts.ofNode(i + 1), port)));
  pgPorts.forEach((port, i) => {
    const h = hosts.ofNode(i + 1);
    components.push({ name: `patroni-pg${i + 1}`, kind: 'patroni', role: null, pid: pidOn(h, restPorts[i]), port: restPorts[i], ...place(h) });
    components.push({ name: `pg${i + 1}`, kind: 'postgres', role: pgRoles[i], pid: pgRoles[i] && pidOn(h, port), port, ...place(h) });
  });
  const writePort = Number(settings.HA_PG_WRITE_PORT);
  for (const h of hosts.list) {
    // Each host's HAProxy listens on that host's loopback, for its services.
    components.push({ name: h === 0 ? 'haproxy' : `haproxy-h${h}`, kind: 'haproxy', role: null, pid: pidOn(h, writePort), port: writePort, host: hosts.ns(h), address: '127.0.0.1' });
  }

  const redis = await Promise.all(redisPorts.map((port, i) => redisInfo(settings, hosts.ofNode(i + 1), port)));
  redisPorts.forEach((port, i) => {
    const role = { master: 'primary', slave: 'replica' }[redis[i].role] ?? null;
    components.push({ name: `redis${i + 1}`, kind: 'redis', role, pid: Number(redis[i].process_id) || null, port, ...place(hosts.ofNode(i + 1)) });
  });
  const sentinels = await Promise.all(sentinelPorts.map((port, i) => redisInfo(settings, hosts.ofNode(i + 1), port)));
  sentinelPorts.forEach((port, i) => {
    components.push({ name: `sentinel${i + 1}`, kind: 'sentinel', role: null, pid: Number(sentinels[i].process_id) || null, port, ...place(hosts.ofNode(i + 1)) });
  });

  for (const c of [...(await extraFromFiles(settings)), ...extra]) {
    const pid = c.pidFile ? await pidFromFile(c.pidFile) : pidOn(0, Number(c.port));
    components.push({ name: c.name, kind: c.kind, role: c.role ?? null, pid, port: Number(c.port), host: c.host ?? null, address: c.address ?? '127.0.0.1' });
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
